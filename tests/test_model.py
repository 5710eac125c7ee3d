"""The model against independent references: HF's own LLaVA, the dense model, and a dense forward
that *masks* the tokens Dynamic-LLaVA drops (drop ≡ mask)."""

import itertools

import pytest
import torch
from transformers import GenerationConfig, LlavaForConditionalGeneration

from dynbench.models.llava import DropConfig
from dynbench.modes import run_mode

KEEP_ALL = DropConfig(vision_keep=1.0, text_keep=1.0, text_policy="budget")
BUDGET = DropConfig(vision_keep=0.2, text_keep=0.5, text_policy="budget")


def embed(model, inputs):
    feats = model.encode_image(inputs.pixel_values)
    return model.embed_prompt(inputs.input_ids, feats, inputs.layout)


def masked_reference(model, hidden, keep_cols, sparse_layer):
    """Dense forward over every token with absolute positions; from `sparse_layer` on, a query
    sees only the kept keys (and itself). Written without the code's layer loop."""
    lm = model.model.language_model
    batch, n, _ = hidden.shape
    pos = torch.arange(n).expand(batch, n)
    cos_sin = lm.rotary_emb(hidden, pos)
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    sparse = causal & (keep_cols[None, :] | torch.eye(n, dtype=torch.bool))
    for i, layer in enumerate(lm.layers):
        allowed = causal if i < sparse_layer else sparse
        mask = torch.zeros(n, n).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
        hidden = layer(hidden, mask, pos, None, position_embeddings=cos_sin)
    return lm.norm(hidden)


@torch.inference_mode()
def test_llava_prefill_logits_equal_hf(pair, prompt):
    llava, _ = pair
    hf = LlavaForConditionalGeneration(llava.preset.llava_config("sdpa")).eval()
    hf.load_state_dict(llava.state_dict())
    ref = hf(input_ids=prompt.input_ids, pixel_values=prompt.pixel_values).logits  # (1, P, V)
    out = llava.forward_sequence(embed(llava, prompt), prompt.layout)
    mine = llava.lm_head(out.hidden)
    assert mine.shape == ref.shape
    torch.testing.assert_close(mine, ref, atol=1e-4, rtol=0)


@torch.inference_mode()
def test_llava_kv_cache_generation_equals_hf_generate(pair, prompt):
    llava, _ = pair
    hf = LlavaForConditionalGeneration(llava.preset.llava_config("sdpa")).eval()
    hf.load_state_dict(llava.state_dict())
    cfg = GenerationConfig(
        max_new_tokens=16, min_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0
    )
    ref = hf.generate(input_ids=prompt.input_ids, pixel_values=prompt.pixel_values, generation_config=cfg)
    ref_ids = ref[0, prompt.input_ids.shape[1] :].tolist()
    mine = run_mode("kv-cache", llava, prompt, gen_len=16).generated_ids[0]
    assert mine == ref_ids
    assert len(set(mine)) > 1  # a constant sequence would prove little


@pytest.mark.parametrize("mode", ["prefill", "no-cache", "kv-cache"])
def test_dynamic_keep_all_equals_llava_exactly(pair, prompt, mode):
    llava, dyn = pair
    dense = run_mode(mode, llava, prompt, gen_len=10)
    kept = run_mode(mode, dyn, prompt, KEEP_ALL, gen_len=10)
    assert kept.generated_ids == dense.generated_ids
    for a, b in zip(dense.steps, kept.steps, strict=True):
        assert (a.layer_seq_lens, a.layer_cache_lens) == (b.layer_seq_lens, b.layer_cache_lens)
        assert (a.kv_bytes_prompt, a.kv_bytes_generated) == (b.kv_bytes_prompt, b.kv_bytes_generated)


@torch.inference_mode()
def test_dynamic_keep_all_prefill_logits_bitwise_equal(pair, prompt):
    llava, dyn = pair
    h = embed(llava, prompt)
    assert torch.equal(
        llava.forward_sequence(h, prompt.layout).hidden,
        dyn.forward_sequence(h, prompt.layout, KEEP_ALL).hidden,
    )


@torch.inference_mode()
def test_prefill_drop_equals_mask(pair, prompt):
    _, dyn = pair
    h = embed(dyn, prompt)
    out = dyn.forward_sequence(h, prompt.layout, BUDGET, cache=dyn.new_cache())
    P, s = prompt.layout.seq_len, dyn.sparse_layer
    # physically fewer tokens from the sparse layer on: 576 - 115 removed
    assert out.image_kept == 115
    assert out.layer_seq_lens == [P] * s + [P - (576 - 115)] * (len(dyn.layers) - s)
    kept = out.kept_index[0]
    keep_cols = torch.zeros(P, dtype=torch.bool)
    keep_cols[kept] = True
    assert int(keep_cols.sum()) == P - 461
    ref = masked_reference(dyn, h, keep_cols, s)
    torch.testing.assert_close(out.hidden[0], ref[0, kept], atol=1e-5, rtol=0)
    torch.testing.assert_close(dyn.lm_head(out.hidden[:, -1]), dyn.lm_head(ref[:, -1]), atol=1e-5, rtol=0)


def test_prefill_caches_are_shorter(pair, prompt):
    llava, dyn = pair
    dense, sparse = run_mode("prefill", llava, prompt), run_mode("prefill", dyn, prompt, BUDGET)
    P, s = prompt.layout.seq_len, dyn.sparse_layer
    assert dense.last.layer_cache_lens == [P] * len(llava.layers)
    assert sparse.last.layer_cache_lens == [P] * s + [P - 461] * (len(dyn.layers) - s)
    assert sparse.last.kv_bytes_prompt < dense.last.kv_bytes_prompt


def test_kv_cache_decode_equals_masked_reference(pair, prompt, monkeypatch):
    """Decode steps after a drop, with some generated tokens dropped from layers ≥ s, equal a dense
    recompute that masks exactly those tokens: absolute positions, a dropped token still sees
    itself, later tokens never see it."""
    _, dyn = pair
    recorded = []
    logits = dyn.logits
    monkeypatch.setattr(dyn, "logits", lambda h: recorded.append(logits(h)) or recorded[-1])
    gen_len = 9
    res = run_mode("kv-cache", dyn, prompt, DropConfig(0.2, 0.4, "budget"), gen_len=gen_len)
    monkeypatch.undo()
    P, s = prompt.layout.seq_len, dyn.sparse_layer
    with torch.inference_mode():
        h = embed(dyn, prompt)
        kept_prompt = dyn.forward_sequence(h, prompt.layout, BUDGET).kept_index[0]
        fed = torch.tensor(res.generated_ids[0][:-1])[None]
        full = torch.cat([h, dyn.embed_tokens(fed)], dim=1)
    cache_top = [st.layer_cache_lens[-1] for st in res.steps]
    gen_kept = [b > a for a, b in itertools.pairwise(cache_top)]
    assert 0 < sum(gen_kept) < len(gen_kept)  # some dropped, some kept
    keep_cols = torch.zeros(full.shape[1], dtype=torch.bool)
    keep_cols[kept_prompt] = True
    keep_cols[P:] = torch.tensor(gen_kept)
    with torch.inference_mode():
        ref = dyn.lm_head(masked_reference(dyn, full, keep_cols, s))[0]  # (P + gen_len - 1, V)
    for j, got in enumerate(recorded):
        torch.testing.assert_close(got[0], ref[P - 1 + j], atol=2e-5, rtol=0)
