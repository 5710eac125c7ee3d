"""Baselines (random, FastV, H2O, StreamingLLM) against hand counts and independent references:
HF's own eager attention weights (FastV's choice, H2O's heavy hitters), dense forwards that mask
what a method drops or evicts, and the paper-convention FLOP formula (budget matching)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_model import embed, masked_reference
from transformers import LlavaForConditionalGeneration

from dynbench import names
from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.models import baselines as B
from dynbench.models import rules as R
from dynbench.models.build import build_model
from dynbench.models.llava import DropConfig
from dynbench.models.presets import get_preset
from dynbench.modes import plan_mode, run_mode
from dynbench.results import load
from dynbench.spec import RunSpec, load_suite, point, points_from

IMG = 576
PER_TOKEN = 2 * 4 * 32 * 4  # tiny: K and V × 4 kv heads × head dim 32 × float32, per layer


@pytest.fixture(scope="module")
def nets(pair):
    """Every baseline sharing the weights of the session's `llava`."""
    llava, _ = pair
    out = {"llava": llava}
    for method in B.BASELINES:
        net = build_model("tiny", method, seed=5)
        net.load_state_dict(llava.state_dict())  # same parameter names: strict
        out[method] = net
    return out


def _hf_eager(llava):
    hf = LlavaForConditionalGeneration(llava.preset.llava_config("eager")).eval()
    hf.load_state_dict(llava.state_dict())
    return hf


@pytest.fixture(scope="module")
def hf_attentions(pair, prompt):
    """HF's eager attention weights of the dense prompt, every layer: (H, P, P) each."""
    with torch.inference_mode():
        out = _hf_eager(pair[0])(input_ids=prompt.input_ids, pixel_values=prompt.pixel_values, output_attentions=True)
    return [a[0].float() for a in out.attentions]


def masked_forward(model, hidden, allowed):
    """Dense forward over every token at absolute positions; layer i lets query q see key k iff
    allowed[i][h, q, k] (h broadcast when 1). Written without the code's layer loop or caches."""
    lm = model.model.language_model
    n = hidden.shape[1]
    pos = torch.arange(n)[None]
    cos_sin = lm.rotary_emb(hidden, pos)
    for layer, ok in zip(lm.layers, allowed, strict=True):
        mask = torch.zeros(ok.shape).masked_fill(~ok, torch.finfo(torch.float32).min)[None]
        hidden = layer(hidden, mask, pos, None, position_embeddings=cos_sin)
    return lm.norm(hidden)


def record_logits(monkeypatch, net):
    seen = []
    logits = net.logits
    monkeypatch.setattr(net, "logits", lambda h: seen.append(logits(h)) or seen[-1])
    return seen


# ---- hand counts ------------------------------------------------------------------------------
def test_random_drops_the_dynamic_llava_count_at_its_layer(nets, prompt):
    P = prompt.layout.seq_len
    res = run_mode("kv-cache", nets["random"], prompt, DropConfig(vision_keep=0.2, seed=7), gen_len=4)
    assert res.steps[0].layer_seq_lens == [P, P, P - (IMG - 115), P - (IMG - 115)]
    assert res.steps[0].layer_image_tokens == [IMG, IMG, 115, 115]
    assert res.last.layer_cache_lens == [P + 3] * 2 + [P - 461 + 3] * 2  # decode steps are dense
    assert res.last.kv_bytes_generated == 4 * 3 * PER_TOKEN and res.last.text_tokens_kept == 3
    with torch.inference_mode():
        h = embed(nets["random"], prompt)
        a, b = prompt.layout.image_start, prompt.layout.image_end
        run = lambda seed: nets["random"].forward_sequence(h, prompt.layout, DropConfig(0.2, seed=seed))  # noqa: E731
        kept = [run(seed).kept_index[0, a : a + 115] - a for seed in (7, 8)]
    hand = torch.randperm(IMG, generator=torch.Generator().manual_seed(7))[:115].sort().values
    assert torch.equal(kept[0], hand) and not torch.equal(kept[0], kept[1])  # seeded, uniform draw
    assert int(kept[0][-1]) < b - a


@pytest.mark.parametrize("k, r, kept", [(2, 0.5, 288), (3, 0.75, 144), (1, 0.8, 115)])
def test_fastv_counts(nets, prompt, k, r, kept):
    P, L = prompt.layout.seq_len, 4
    drop = DropConfig(fastv_k=k, fastv_r=r)
    pre = run_mode("kv-cache", nets["fastv"], prompt, drop, gen_len=3)
    assert pre.steps[0].layer_seq_lens == [P] * k + [P - (IMG - kept)] * (L - k)
    assert pre.steps[0].image_tokens_kept == kept
    assert pre.steps[0].layer_attn == ["eager" if i == k - 1 else "sdpa" for i in range(L)]
    assert pre.last.layer_cache_lens == [P + 2] * k + [P - (IMG - kept) + 2] * (L - k)
    assert all(s.layer_attn == ["sdpa"] * L for s in pre.steps[1:])  # decode: nothing scored
    nc = run_mode("no-cache", nets["fastv"], prompt, drop, gen_len=3)
    for i, step in enumerate(nc.steps):  # every forward prunes the image; text is never dropped
        assert step.layer_seq_lens == [P + i] * k + [P - (IMG - kept) + i] * (L - k)
        assert (step.text_tokens_fed, step.text_tokens_kept) == (i, i)


def test_kv_methods_stay_at_their_budget(nets, prompt):
    P, L, gen = prompt.layout.seq_len, 4, 16
    heavy = math.floor(0.01 * P)  # kv_budget 0.02 → 1 % heavy + 1 % recent
    budget = 2 * heavy
    assert R.kv_budget_tokens(0.02, P) == budget and budget < P
    for method in ("h2o", "streaming-llm"):
        res = run_mode("kv-cache", nets[method], prompt, DropConfig(kv_budget=0.02), gen_len=gen)
        assert res.steps[0].layer_seq_lens == [P] * L  # the prefill runs in full
        for step in res.steps:
            assert step.layer_cache_lens == [budget] * L, (method, step.step)
            assert step.kv_bytes_prompt + step.kv_bytes_generated == L * budget * PER_TOKEN
        assert [s.layer_shapes for s in res.steps[1:]] == [[(1, budget + 1)] * L] * (gen - 1)
        assert res.last.text_tokens_kept is None  # per layer (and head): see the KV bytes
    window = budget - R.SINK_TOKENS
    res = run_mode("kv-cache", nets["streaming-llm"], prompt, DropConfig(kv_budget=0.02), gen_len=gen)
    for j, step in enumerate(res.steps):  # the window holds the newest min(j, window) generated tokens
        assert step.kv_bytes_generated == L * min(j, window) * PER_TOKEN
    h2o = run_mode("kv-cache", nets["h2o"], prompt, DropConfig(kv_budget=0.02), gen_len=gen)
    assert all(s.layer_attn == ["eager"] * L for s in h2o.steps)
    # the `recent` newest entries are always kept: every generated token of the last `heavy` steps
    assert h2o.last.kv_bytes_generated >= L * heavy * PER_TOKEN


def test_kv_methods_have_no_no_cache_mode(nets, prompt):
    for method in names.KV_METHODS:
        with pytest.raises(DynbenchError, match="no-cache"):
            run_mode("no-cache", nets[method], prompt, gen_len=2)
        with pytest.raises(DynbenchError, match="no-cache mode has no cache"):
            RunSpec(method=method, mode="no-cache")
    with pytest.warns(UserWarning, match="no-cache points are skipped"):
        points = points_from({"method": ["llava", "h2o"], "mode": ["no-cache", "kv-cache"], "device": "cpu"})
    assert {(p.method, p.mode) for p in points} == {("llava", "no-cache"), ("llava", "kv-cache"), ("h2o", "kv-cache")}
    with pytest.raises(DynbenchError, match="no point is left"):
        points_from({"method": ["streaming-llm"], "mode": ["no-cache"], "device": "cpu"})


# ---- independent references --------------------------------------------------------------------
@pytest.mark.parametrize("k, r", [(2, 0.5), (3, 0.75)])
def test_fastv_keeps_the_tokens_hf_eager_attention_ranks_highest(nets, prompt, hf_attentions, k, r):
    a, b = prompt.layout.image_start, prompt.layout.image_end
    kept = R.fastv_kept(r, IMG)
    # reference: HF eager weights of layer K - 1, last token's row, mean over heads, image columns
    score = hf_attentions[k - 1][:, -1, a:b].mean(0)
    ref = score.topk(kept).indices.sort().values
    with torch.inference_mode():
        h = embed(nets["fastv"], prompt)
        out = nets["fastv"].forward_sequence(h, prompt.layout, DropConfig(fastv_k=k, fastv_r=r))
    mine = out.kept_index[0, a : a + kept] - a
    assert torch.equal(mine, ref)
    margin = score[ref].min() - score[torch.ones(IMG, dtype=torch.bool).index_fill(0, ref, False)].max()
    assert margin > 0  # a strict ranking: no tie decided the comparison
    # drop ≡ mask: the pruned forward equals a dense one that hides the dropped tokens from layer K on
    keep_cols = torch.zeros(prompt.layout.seq_len, dtype=torch.bool)
    keep_cols[out.kept_index[0]] = True
    with torch.inference_mode():
        dense = masked_reference(nets["fastv"], h, keep_cols, k)
    torch.testing.assert_close(out.hidden[0], dense[0, out.kept_index[0]], atol=1e-5, rtol=0)


def test_fastv_reads_weights_only_at_layer_k_minus_1(nets, prompt, monkeypatch):
    captured = []
    real = B.AttentionScores.capture

    def spy(self, layer):
        captured.append(layer.self_attn.layer_idx)
        return real(self, layer)

    monkeypatch.setattr(B.AttentionScores, "capture", spy)
    res = run_mode("kv-cache", nets["fastv"], prompt, DropConfig(fastv_k=3), gen_len=4)
    assert captured == [2]  # prefill only, layer K - 1; decode steps read no weights
    assert res.steps[0].layer_attn == ["sdpa", "sdpa", "eager", "sdpa"]
    assert nets["fastv"].layers[2].self_attn.config._attn_implementation == "sdpa"  # switched back


def test_h2o_first_decode_step_equals_per_head_masked_reference(nets, prompt, hf_attentions, monkeypatch):
    """After the prefill each layer and head keeps its `recent` newest tokens and the `heavy` older
    ones that received the most attention (HF eager weights, summed over queries); the first decoded
    token sees exactly those (and itself)."""
    net, P = nets["h2o"], prompt.layout.seq_len
    heavy, recent = R.kv_budget_split(0.1, P)
    seen = record_logits(monkeypatch, net)
    res = run_mode("kv-cache", net, prompt, DropConfig(kv_budget=0.1), gen_len=2)
    monkeypatch.undo()
    n = P + 1
    allowed = []
    for w in hf_attentions:  # (H, P, P)
        received = w.sum(1)  # attention each key received, per head
        keep = torch.zeros(w.shape[0], n, dtype=torch.bool)
        keep.scatter_(1, received[:, : P - recent].topk(heavy, dim=-1).indices, True)
        keep[:, P - recent :] = True  # recent prompt tokens and the new token itself
        causal = torch.ones(n, n, dtype=torch.bool).tril().expand(w.shape[0], n, n).clone()
        causal[:, P] = keep
        allowed.append(causal)
    with torch.inference_mode():
        full = torch.cat([embed(net, prompt), net.embed_tokens(torch.tensor([res.generated_ids[0][:1]]))], dim=1)
        ref = net.lm_head(masked_forward(net, full, allowed))[0]
    torch.testing.assert_close(seen[0][0], ref[P - 1], atol=2e-5, rtol=0)  # prefill: dense
    torch.testing.assert_close(seen[1][0], ref[P], atol=2e-5, rtol=0)
    assert res.steps[1].layer_cache_lens == [heavy + recent] * 4


def test_streaming_llm_decoding_equals_sink_and_window_mask(nets, prompt, monkeypatch):
    """Token t (t ≥ P) sees the 4 sinks, the `window` tokens before it and itself, over many steps."""
    net, P, gen = nets["streaming-llm"], prompt.layout.seq_len, 9
    window = R.kv_budget_tokens(0.02, P) - R.SINK_TOKENS
    seen = record_logits(monkeypatch, net)
    res = run_mode("kv-cache", net, prompt, DropConfig(kv_budget=0.02), gen_len=gen)
    monkeypatch.undo()
    n = P + gen - 1
    ok = torch.ones(n, n, dtype=torch.bool).tril()
    for t in range(P, n):
        ok[t, R.SINK_TOKENS : t - window] = False
    with torch.inference_mode():
        fed = torch.tensor([res.generated_ids[0][:-1]])
        full = torch.cat([embed(net, prompt), net.embed_tokens(fed)], dim=1)
        ref = net.lm_head(masked_forward(net, full, [ok[None]] * 4))[0]
    for j, got in enumerate(seen):
        torch.testing.assert_close(got[0], ref[P - 1 + j], atol=2e-5, rtol=0)


def test_h2o_accumulates_and_evicts_per_head_by_hand(nets):
    """Entries labelled by their position; attention weights given by hand."""
    cache = B.EvictingKVCache(1)
    labels = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 2, 6, 1)  # (B, H_kv, n, D): the position
    cache.update(labels, labels, 0)
    cache.budget = (2, 1)  # heavy, recent
    w = torch.zeros(1, 2, 6, 6)  # prefill: keys 1 and 4 (head 0), 0 and 2 (head 1) receive most
    w[0, 0, :, 1], w[0, 0, :, 4] = 0.5, 0.3
    w[0, 1, :, 0], w[0, 1, :, 2] = 0.6, 0.2
    cache.accumulate(0, w)
    assert cache.scores[0][0, 0].tolist() == pytest.approx([0, 3, 0, 0, 1.8, 0])
    nets["h2o"]._evict(cache)
    kept = lambda: cache.keys[0][0, :, :, 0].tolist()  # noqa: E731
    assert kept() == [[1, 4, 5], [0, 2, 5]]  # 2 heavy hitters + the newest, per head
    cache.mark_prompt()
    new = torch.full((1, 2, 1, 1), 6.0)  # decode: the new token at position 6
    cache.update(new, new, 0)
    row = torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 9.0]]).view(1, 2, 1, 4)
    cache.accumulate(0, row)  # head 0: position 5 now outweighs 4; head 1: the new token itself
    nets["h2o"]._evict(cache)
    assert kept() == [[1, 5, 6], [0, 2, 6]]
    prompt, generated = cache.kv_bytes()  # per head: 2 prompt entries + the generated one
    # the per-head split stays on the device until the run ends (no kernels inside a timed step)
    assert prompt.resolve() == 2 * 2 * 2 * 1 * 4 and generated.resolve() == 2 * 1 * 2 * 1 * 4


def test_random_keep_all_equals_llava_bitwise(nets, prompt):
    with torch.inference_mode():
        h = embed(nets["llava"], prompt)
        dense = nets["llava"].forward_sequence(h, prompt.layout).hidden
        kept = nets["random"].forward_sequence(h, prompt.layout, DropConfig(vision_keep=1.0)).hidden
    assert torch.equal(dense, kept)


# ---- plan == run, budget matching ----------------------------------------------------------------
CASES = [("random", m) for m in ("prefill", "no-cache", "kv-cache")] + [
    ("fastv", m) for m in ("prefill", "no-cache", "kv-cache")] + [
    (m, k) for m in names.KV_METHODS for k in ("prefill", "kv-cache")]


@pytest.mark.parametrize("method, mode", CASES)
def test_plan_equals_run(nets, prompt, method, mode):
    drop = DropConfig(vision_keep=0.3, fastv_k=3, fastv_r=0.6, kv_budget=0.02, seed=3)
    ran = run_mode(mode, nets[method], prompt, drop, gen_len=9)
    planned = plan_mode(nets[method].preset, method, mode, prompt.layout.prompt_len, 9, drop)
    assert len(ran.steps) == len(planned.steps)
    for a, b in zip(ran.steps, planned.steps, strict=True):
        a.token_ids = b.token_ids = None
        if b.kv_bytes_prompt is None and a.kv_bytes_prompt is not None:  # h2o: data-dependent split
            assert a.kv_bytes_prompt + a.kv_bytes_generated == sum(b.layer_cache_lens) * PER_TOKEN
            a.kv_bytes_prompt = a.kv_bytes_generated = None
        assert a == b, (method, mode, a.step)


@pytest.mark.parametrize("by", names.MATCH_BUDGETS)
@pytest.mark.parametrize("model", ["llava-1.5-7b", "llava-1.5-13b"])
def test_budget_matching_within_one_token(model, by):
    p = get_preset(model)
    L, s, C = p.layers, p.sparse_layer, p.hidden
    for keep in (0.1, 0.2, 0.5):
        dyn = plan_mode(p, "dynamic-llava", "prefill", 40, drop=DropConfig(vision_keep=keep)).last.layer_image_tokens
        for k in (1, 2, 3, 4):
            n = R.match_fastv_keep(p, keep, k, by)
            r = R.fastv_ratio(n, IMG)
            fv = plan_mode(p, "fastv", "prefill", 40, drop=DropConfig(fastv_k=k, fastv_r=r)).last.layer_image_tokens
            assert fv == [IMG] * k + [n] * (L - k)
            if by == "flops":  # paper convention, by hand: 32·N·C² + 4·N²·C per layer
                f = lambda tokens: sum(32 * t * C**2 + 4 * t * t * C for t in tokens)  # noqa: E731
                one_token = (L - k) * (R.paper_layer_flops(n + 1, C) - R.paper_layer_flops(n, C))
                assert abs(f(fv) - f(dyn)) <= one_token / 2 + 1, (keep, k)
            else:
                assert abs(sum(fv) - sum(dyn)) / L <= (L - k) / L / 2, (keep, k)
    assert sum(dyn) == s * IMG + (L - s) * int(IMG * 0.5)  # the target itself, by hand
    with pytest.raises(DynbenchError, match="cannot match"):
        R.match_fastv_keep(p, 0.05, L - 1, by)  # 31 dense layers alone cost more


def test_match_budget_rows(capsys):
    argv = ["run", "--device", "meta", "--model", "llava-1.5-7b", "--mode", "prefill", "--prompt-len", "40",
            "--method", "dynamic-llava,random,fastv", "--match-budget", "flops", "--no-flops", "--json"]
    assert main(argv) == 0
    rows = {r["method"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    dyn, fastv, rnd = rows["dynamic-llava"], rows["fastv"], rows["random"]
    assert fastv["match_budget"] == "flops" and fastv["vision_keep"] == 0.2 and fastv["fastv_k"] == 2
    assert fastv["image_tokens_kept"] == 115 and fastv["matched_ratio"] == pytest.approx(1 - 115 / 576)
    assert fastv["tflops_paper"] == pytest.approx(dyn["tflops_paper"], rel=1e-12)  # K = 2: the same layer
    assert rnd["matched_ratio"] == 0.2 and rnd["tflops_paper"] == dyn["tflops_paper"]
    assert dyn["match_budget"] is None and dyn["matched_ratio"] is None
    assert dyn["equivalent_tokens"] == pytest.approx((2 * 576 + 30 * 115) / 32)  # 143.8
    with pytest.raises(DynbenchError, match="set by --match-budget"):
        point({"method": "fastv", "mode": "prefill", "fastv_r": 0.5, "match_budget": "flops"})


def test_paper_fastv_setting_on_meta():
    """FastV K=3 R=0.75 on 7B: 144 image tokens from layer 3 on, 3.2 T paper-convention (paper: 3.2)."""
    p = get_preset("llava-1.5-7b")
    planned = plan_mode(p, "fastv", "prefill", 40, drop=DropConfig(fastv_k=3, fastv_r=0.75))
    tokens = planned.last.layer_image_tokens
    assert tokens == [576] * 3 + [144] * 29
    assert round(sum(R.paper_layer_flops(n, p.hidden) for n in tokens) / 1e12, 1) == 3.2
    assert sum(tokens) / 32 == pytest.approx(184.5)


def test_suites_parse():
    points = load_suite("suites/baselines-paper.yaml")
    fastv = [p for p in points if p.method == "fastv"]
    assert {(p.model, p.fastv_k, p.fastv_r) for p in fastv if p.match_budget is None} == {
        ("llava-1.5-7b", 2, 0.5), ("llava-1.5-7b", 3, 0.75), ("llava-1.5-13b", 3, 0.75)}
    assert {R.fastv_kept(p.fastv_r, IMG) for p in fastv if p.match_budget == "flops"} == {115, 99}
    assert {p.method for p in points if p.mode == "kv-cache"} == {"llava", "dynamic-llava", *B.BASELINES}
    gpu = load_suite("suites/baselines-gpu.yaml")  # loads anywhere; runs only where its device is
    assert gpu and {p.device for p in gpu} == {"cuda"}


# ---- the CLI, end to end -------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_every_method_then_pareto_chart(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["run", "--model", "tiny", "--mode", "kv-cache", *[a for m in ["llava", "dynamic-llava", *B.BASELINES]
            for a in ("--method", m)], "--gen-len", "5", "--prompt-len", "8", "--warmup", "0", "--repeats", "1",
            "--regions", "--out", str(out)]  # --regions: scoring is timed inside the steps
    assert main(argv) == 0, capsys.readouterr().err
    df = load(out)
    s = df[df["step"].isna()].set_index("method")
    assert set(s.index) == {"llava", "dynamic-llava", *B.BASELINES} and (s["status"] == "ok").all()
    assert s.loc["fastv", "attn_ledger"] == {"prefill": {"0": "sdpa", "1": "eager", "2-3": "sdpa"},
                                             "decode": {"0-3": "sdpa"}}
    assert s.loc["h2o", "attn_ledger"] == {"prefill": {"0-3": "eager"}, "decode": {"0-3": "eager"}}
    assert s.loc["fastv", "scoring_ms"] > 0 and s.loc["h2o", "scoring_ms"] > 0
    assert s["scoring_ms"].drop(["fastv", "h2o"]).isna().all()
    assert s["regions"].all()  # recorded: these steps carried extra event pairs
    assert s.loc["fastv", "equivalent_tokens"] == (2 * 576 + 2 * 288) / 4
    assert s.loc["h2o", "equivalent_tokens"] == 576 and s.loc["h2o", "kv_budget_tokens"] == 2 * 58
    assert s.loc["streaming-llm", "layer_cache_lens"] == [116] * 4
    assert main(["plot", str(out), "--out", str(tmp_path / "figs")]) == 0
    for ext in ("png", "svg"):
        for chart in ("pareto", "savings"):
            assert (tmp_path / "figs" / f"{chart}.{ext}").stat().st_size > 5000
    assert "Pareto front" in (tmp_path / "figs" / "pareto.svg").read_text()


def test_checkpoint_serves_the_baselines(tmp_path, capsys):
    from test_checkpoints import save_hf

    hf = save_hf(build_model("tiny", "llava", seed=2), tmp_path / "hf")
    argv = ["run", "--checkpoint", str(hf), "--mode", "prefill", "--method", "llava,fastv,random", "--prompt-len",
            "8", "--warmup", "0", "--repeats", "1", "--no-flops", "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    rows = {r["method"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["fastv"]["image_tokens_kept"] == 288 and rows["random"]["image_tokens_kept"] == 115
    assert rows["fastv"]["checkpoint"] == str(hf)


BAD = [
    (["--match-budget", "bogus"], "unknown match-budget"),
    (["--method", "h2o", "--mode", "no-cache"], "no point is left"),
    (["--method", "fastv", "--vision-keep", "0.05", "--match-budget", "flops", "--suite", "X"], "--suite sets"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_baseline_input_exits_2(capsys, extra, message):
    assert main(["run", "--device", "meta", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err


def test_bad_baseline_suite_values(tmp_path):
    for text, message in (("method: fastv\nfastv_k: 4\n", "fastv_k must be in [1, 3]"),
                          ("method: fastv\nfastv_r: 1.5\n", "fastv_r must be in [0, 1]"),
                          ("method: h2o\nkv_budget: 0\n", "--kv-budget must be in (0, 1]"),
                          ("method: fastv\nfastv_k: 31\nmodel: llava-1.5-7b\nvision_keep: 0.05\n"
                           "match_budget: tokens\n", "cannot match")):
        (tmp_path / "s.yaml").write_text("mode: prefill\ndevice: meta\n" + text)
        with pytest.raises(DynbenchError, match=message.replace("[", r"\[").replace("(", r"\(")):
            load_suite(tmp_path / "s.yaml")
