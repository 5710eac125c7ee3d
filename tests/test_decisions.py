"""Decision rules with the predictors' logits forced to known values, counts checked by hand."""

import pytest
import torch
from conftest import tiny_pair

from dynbench.errors import DynbenchError
from dynbench.inputs import synthetic_inputs
from dynbench.models.build import build_model, count_parameters
from dynbench.models.dynamic_llava import TextDecider, text_keep_index
from dynbench.models.llava import DropConfig
from dynbench.models.rules import keep_count
from dynbench.modes import plan_mode, run_mode

IMG, KEPT_IMG = 576, 115


def force_text_logits(monkeypatch, model, fn):
    """Make the output-text predictor return fn(n_tokens, call_number) -> (n, 2) logits."""
    calls = []

    def fake(x):
        calls.append(x.shape[1])
        return fn(x.shape[1], len(calls) - 1).to(x.dtype).expand(x.shape[0], -1, -1)

    monkeypatch.setattr(model.model.output_text_score_predictor, "forward", fake)
    return calls


def test_kv_cache_learned_rule_and_cache_lengths(pair, prompt, monkeypatch):
    _, dyn = pair
    # keep iff keep-logit > drop-logit; the tie (step 3) is a drop
    wanted = [True, False, False, True, True, False, True, False]
    table = [(1.0, 0.0), (-1.0, 2.0), (0.5, 0.5), (3.0, -3.0),
             (0.01, 0.0), (-0.2, -0.1), (2.0, 1.0), (0.0, 1.0)]
    force_text_logits(monkeypatch, dyn, lambda n, call: torch.tensor([table[call]]))
    res = run_mode("kv-cache", dyn, prompt, DropConfig(0.2, None, "learned"), gen_len=len(wanted) + 1)
    P, s, L = prompt.layout.seq_len, dyn.sparse_layer, len(dyn.layers)
    kept = 0
    for t, step in enumerate(res.steps[1:], start=1):
        kept += wanted[t - 1]
        assert step.layer_cache_lens == [P + t] * s + [P - (IMG - KEPT_IMG) + kept] * (L - s)
        assert (step.text_tokens_fed, step.text_tokens_kept) == (t, kept)
    per_token = 2 * dyn.preset.kv_heads * (dyn.preset.hidden // dyn.preset.heads) * 4
    last = res.last
    assert last.kv_bytes_generated == per_token * (s * len(wanted) + (L - s) * kept)


def test_kv_cache_positions_stay_absolute(pair, prompt, monkeypatch):
    """Layers from the sparse one on get the RoPE tables of the kept tokens' ORIGINAL positions
    (with gaps); decode tokens get their absolute index. Layers receive no position ids (RoPE
    arrives through `position_embeddings`), so the positions are read back from the tables."""
    _, dyn = pair
    seen = []  # (position_ids given to the layer, cos) at the input of layer s, per call
    layer = dyn.layers[dyn.sparse_layer]
    orig = layer.forward

    def spy(hidden, mask, pos, cache, position_embeddings):
        seen.append((pos, position_embeddings[0].clone()))
        return orig(hidden, mask, pos, cache, position_embeddings=position_embeddings)

    monkeypatch.setattr(layer, "forward", spy)
    run_mode("kv-cache", dyn, prompt, DropConfig(0.2, 0.25, "budget"), gen_len=6)
    P = prompt.layout.seq_len
    assert all(pos is None for pos, _ in seen)
    rotary = dyn.model.language_model.rotary_emb
    with torch.inference_mode():
        table, _ = rotary(torch.zeros(1, 1, dyn.preset.hidden), torch.arange(P + 6)[None])  # (1, n, d)

    def positions(cos):  # the row of the full table each RoPE row equals
        match = (cos[0][:, None, :] == table[0][None, :, :]).all(-1)  # (q, n)
        assert bool((match.sum(-1) == 1).all())
        return match.int().argmax(-1)

    prefill_pos = positions(seen[0][1])
    assert len(prefill_pos) == P - (IMG - KEPT_IMG) and prefill_pos[-1] == P - 1
    assert bool((prefill_pos.diff() > 0).all()) and bool((prefill_pos.diff() > 1).any())  # gaps
    assert [positions(cos).tolist() for _, cos in seen[1:]] == [[P + j - 1] for j in range(1, 6)]


def test_no_cache_learned_count_from_rule_members_by_keep_logit(pair, monkeypatch):
    _, dyn = pair
    # 5 candidates; keep > drop for 2 of them (idx 0, 3), but the 2 largest keep logits are idx 2, 4
    table = torch.tensor([[1.0, 0.0], [-5.0, 0.0], [4.0, 9.0], [0.5, 0.2], [3.0, 8.0]])
    idx = text_keep_index(table[None], "learned", None)
    assert idx.tolist() == [[2, 4]]
    # inside the model: at the last no-cache step (fed = 6 → 5 candidates + the newest)
    force_text_logits(monkeypatch, dyn, lambda n, call: table[:n])
    inputs = synthetic_inputs(dyn.preset, prompt_len=20, seed=5)
    P = inputs.layout.seq_len
    with torch.inference_mode():
        h = dyn.embed_prompt(inputs.input_ids, dyn.encode_image(inputs.pixel_values), inputs.layout)
        h = torch.cat([h, dyn.embed_tokens(torch.tensor([[5, 6, 7, 8, 9, 10]]))], dim=1)
        out = dyn.forward_sequence(h, inputs.layout, DropConfig(0.2, None, "learned"))
    text_idx = out.kept_index[0, -3:].tolist()
    assert text_idx == [P + 2, P + 4, P + 5]  # members by keep logit, newest always kept
    assert out.text_kept == 3
    assert out.layer_seq_lens[-1] == P - (IMG - KEPT_IMG) + 3


def test_no_cache_budget_counts(pair, prompt):
    _, dyn = pair
    res = run_mode("no-cache", dyn, prompt, DropConfig(0.2, 0.3, "budget"), gen_len=12)
    P, s = prompt.layout.seq_len, dyn.sparse_layer
    for i, step in enumerate(res.steps):  # i tokens fed; i - 1 candidates
        kept = (int(0.3 * (i - 1) + 1e-9) + 1) if i >= 1 else 0
        assert (step.text_tokens_fed, step.text_tokens_kept) == (i, kept)
        assert step.layer_seq_lens[:s] == [P + i] * s
        assert step.layer_seq_lens[s:] == [P - (IMG - KEPT_IMG) + kept] * (len(dyn.layers) - s)
    # hand values at the last step: 11 fed, floor(0.3 × 10) = 3 candidates + the newest
    assert res.last.text_tokens_kept == 4


def test_kv_cache_budget_exact_pattern():
    decider = TextDecider("budget", 0.3)
    got = [decider.decide(torch.zeros(1, 1, 2)) for _ in range(10)]
    # keep t iff kept_so_far < round_half_up(0.3 t): targets 0,1,1,1,2,2,2,2,3,3
    assert got == [False, True, False, False, True, False, False, False, True, False]
    half = TextDecider("budget", 0.5)
    assert [half.decide(torch.zeros(1, 1, 2)) for _ in range(6)] == [True, False, True, False, True, False]


def test_keep_count_floor():
    assert keep_count(0.2, 576) == 115
    assert keep_count(0.29, 100) == 29  # float 28.999… must not floor to 28
    assert keep_count(1.0, 576) == 576


@pytest.mark.slow
def test_sdpa_and_eager_agree_on_tokens_and_decisions(pair, prompt):
    _, dyn_sdpa = pair
    _, dyn_eager = tiny_pair("eager")
    drop = DropConfig(0.2, 0.5, "budget")
    for mode in ("prefill", "no-cache", "kv-cache"):
        a = run_mode(mode, dyn_sdpa, prompt, drop, gen_len=8)
        b = run_mode(mode, dyn_eager, prompt, drop, gen_len=8)
        assert a.generated_ids == b.generated_ids, mode
        for x, y in zip(a.steps, b.steps, strict=True):
            assert (x.layer_seq_lens, x.layer_cache_lens, x.text_tokens_kept) == (
                y.layer_seq_lens, y.layer_cache_lens, y.text_tokens_kept,
            )
    with torch.inference_mode():
        idx = []
        for m in (dyn_sdpa, dyn_eager):
            h = m.embed_prompt(prompt.input_ids, m.encode_image(prompt.pixel_values), prompt.layout)
            idx.append(m.forward_sequence(h, prompt.layout, drop).kept_index)
    assert torch.equal(idx[0], idx[1])  # the same image tokens are kept


def test_replicated_batch_matches_batch_one(pair, prompt):
    _, dyn = pair
    batched = synthetic_inputs(dyn.preset, prompt_len=48, batch=3, seed=3)
    drop = DropConfig(0.2, 0.5, "budget")
    one = run_mode("kv-cache", dyn, prompt, drop, gen_len=6)
    three = run_mode("kv-cache", dyn, batched, drop, gen_len=6)
    assert three.generated_ids == one.generated_ids * 3
    assert three.last.layer_cache_lens == one.last.layer_cache_lens
    assert three.last.kv_bytes_prompt == 3 * one.last.kv_bytes_prompt


def test_distinct_prompts_refused_with_learned_policy(pair):
    _, dyn = pair
    inputs = synthetic_inputs(dyn.preset, prompt_len=16, batch=2, seed=0)
    inputs.input_ids[1, -1] += 1  # second row differs
    with pytest.raises(DynbenchError, match="distinct prompts"):
        run_mode("kv-cache", dyn, inputs, DropConfig(0.2, None, "learned"), gen_len=3)
    # budget policy: per-row members, same counts — allowed
    res = run_mode("no-cache", dyn, inputs, DropConfig(0.2, 0.5, "budget"), gen_len=3)
    assert len(res.generated_ids) == 2


@pytest.mark.parametrize(
    "name, published",
    [("llava-1.5-7b", 7.06e9), ("llava-1.5-13b", 13.35e9)],
)
def test_big_presets_build_on_meta_with_published_sizes(name, published):
    for method in ("llava", "dynamic-llava"):
        model = build_model(name, method, device="meta", dtype=torch.float16)
        n = count_parameters(model)
        assert abs(n - published) / published < 0.01, (name, method, n)
        assert model.lm_head.weight.device.type == "meta"


@pytest.mark.parametrize("mode", ["prefill", "no-cache", "kv-cache"])
@pytest.mark.parametrize("vision_keep, text_keep", [(0.2, 0.5), (0.37, 0.3), (1.0, 1.0)])
def test_plan_equals_run(pair, prompt, mode, vision_keep, text_keep):
    """The counting rules alone (what --device meta reports) reproduce a real run exactly."""
    drop = DropConfig(vision_keep, text_keep, "budget")
    for net in pair:
        ran = run_mode(mode, net, prompt, drop, gen_len=7, reuse_vision=True)
        planned = plan_mode(net.preset, net.method, mode, prompt.layout.prompt_len, 7, drop, True)
        assert len(ran.steps) == len(planned.steps)
        for a, b in zip(ran.steps, planned.steps, strict=True):
            a.token_ids = b.token_ids = None
            assert a == b, (net.method, mode, a.step)
