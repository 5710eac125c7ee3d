"""Roofline bounds (measure/roofline.py) against hand arithmetic, the columns they add to records,
the CLI flags, the report cells and the chart's series builder."""

import json
import math
import statistics
from types import SimpleNamespace

import pytest

from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.measure import roofline as R
from dynbench.measure.gpus import GPUS, get_gpu
from dynbench.measure.point import PointMeasurement
from dynbench.models.build import DTYPES, build_model
from dynbench.modes import plan_mode
from dynbench.records import BY_NAME, validate
from dynbench.report import compare as C
from dynbench.report import tables as T
from dynbench.report.roofline_chart import chart_roofline, roofline_series
from dynbench.rows import ModelFacts, point_rows
from dynbench.spec import RunSpec

H100 = get_gpu("h100-sxm")


# ---- pure arithmetic ---------------------------------------------------------------------------
PARTS = R.ModuleBytes(vision=1000, layers=(100, 100, 100), final_norm=3, lm_head=50, embed_row=8, embed_table=800,
                      vision_predictor=20, text_predictor=5)


def _step(shapes, seq=None, cache=None, vision=False, image=0, text=0):
    return SimpleNamespace(layer_shapes=shapes, layer_seq_lens=seq, layer_cache_lens=cache, vision_ran=vision,
                           image_scored=image, text_scored=text)


def test_prefill_bytes_by_hand():
    # 4 text + 10 image tokens into layer 0; 3 image tokens dropped from layer 1 on; all cached
    step = _step([(14, 14), (11, 11), (11, 11)], seq=[14, 11, 11], cache=[14, 11, 11], vision=True, image=10)
    b = R.step_bytes(step, PARTS, image_tokens=10, kv_entry=16, batch=2)
    assert b.weights == 1000 + 300 + 3 + 50 + 20  # vision, layers, norm, head, image predictor; no text predictor
    assert b.embed == 4 * 8 * 2  # only the text rows are gathered, per batch row
    assert b.kv_read == 0  # nothing was cached before
    assert b.kv_written == (14 + 11 + 11) * 16 * 2
    assert b.total == b.weights + b.embed + b.kv_written and b.kv == b.kv_written


def test_image_only_prompt_embeds_no_row():
    # prompt_len 0: the 10 image tokens come from the projector, no text row is gathered
    step = _step([(10, 10)] * 3, seq=[10] * 3, cache=[10] * 3, vision=True, image=10)
    assert R.step_bytes(step, PARTS, image_tokens=10, kv_entry=16, batch=1).embed == 0


def test_the_bound_of_a_step_by_hand():
    roof = R.Roof("h100-sxm", 989.4, 3350.0, projected=True)
    # 2 × 0.5 TMACs = 1e12 FLOP → 1.0107 ms compute; 1e9 B → 0.2985 ms memory
    got = R.step_columns(roof, 0.5, R.StepBytes(weights=10**9, embed=0, kv_read=0, kv_written=0))
    assert got["step_roofline_ms"] == pytest.approx(1e12 / 989.4e12 * 1e3) and got["roofline_bound"] == "compute"
    assert R.step_columns(roof, None, R.StepBytes(1, 0, 0, 0))["step_roofline_ms"] is None  # no FLOPs counted
    tie = roof.bound(989.4e12, 3350e9)  # exactly 1 ms either way: the compute roof is named
    assert tie == (pytest.approx(1000.0), "compute")
    # a kv-cache run: TTFT = the prefill step, TPOT = the median of the decode steps only
    phases = ["prefill", "decode", "decode", "decode"]
    cols = R.summary_columns(phases, roof, [10.0, 1.0, 3.0, 2.0], [R.StepBytes(1, 0, 0, 0)] * 4)
    assert (cols["ttft_roofline_ms"], cols["tpot_roofline_ms"], cols["total_roofline_ms"]) == (10.0, 2.0, 16.0)
    pre = R.summary_columns(["prefill"], roof, [4.0], [R.StepBytes(1, 0, 0, 0)])
    assert pre["ttft_roofline_ms"] == 4.0 and pre["tpot_roofline_ms"] is None


def test_float32_bounds_use_tf32_only_when_on():
    assert R.Roof.of(H100, "float32", tf32=True, projected=True).tflops == H100.tflops_tf32
    assert R.Roof.of(H100, "float32", tf32=False, projected=True).tflops == H100.tflops_fp32_nontensor


def test_kv_entry_is_k_and_v():
    assert R.kv_entry_bytes(kv_heads=8, head_dim=128, element_bytes=2) == 2 * 8 * 128 * 2


def test_decode_bytes_by_hand():
    # before: caches of 14, 11, 11; the token is stored in layer 0 only (dropped from the sparse layer on)
    step = _step([(1, 15), (1, 12), (1, 12)], cache=[15, 11, 11], text=1)
    one, eight = (R.step_bytes(step, PARTS, 10, 16, batch) for batch in (1, 8))
    assert one.weights == 300 + 3 + 50 + 5  # no vision tower, no image predictor
    assert one.embed == 8 and one.kv_read == 36 * 16 and one.kv_written == 16
    # batch scales embedding rows and KV, never weights
    assert eight.weights == one.weights
    assert (eight.embed, eight.kv_read, eight.kv_written) == (8 * one.embed, 8 * one.kv_read, 8 * one.kv_written)


def test_no_cache_step_embeds_prompt_text_and_fed_tokens():
    step = _step([(17, 17)] * 3, seq=[17] * 3, vision=False, image=10, text=2)  # --reuse-vision: no tower
    b = R.step_bytes(step, PARTS, 10, 16, 1)
    assert b.weights == 300 + 3 + 50 + 20 + 5
    assert b.embed == 7 * 8 and b.kv == 0


def test_step_must_match_the_model():
    with pytest.raises(ValueError, match="2 decoder layers"):
        R.step_bytes(_step([(1, 1)] * 2), PARTS, 10, 16, 1)


def test_bound_and_peaks():
    roof = R.Roof.of(H100, "float16", tf32=False, projected=True)
    assert (roof.tflops, roof.gbps) == (989.4, 3350.0)
    assert roof.ridge == pytest.approx(989.4e12 / 3350e9)
    assert roof.bound(989.4e12, 1e9) == (pytest.approx(1000.0), "compute")
    assert roof.bound(1.0, 3.35e12) == (pytest.approx(1000.0), "memory")
    # float32: PyTorch's default runs matmuls on the CUDA cores; TF32 only when allowed
    assert R.peak_for(H100, "float32") == 66.9
    assert R.peak_for(H100, "float32", tf32=True) == 494.7
    assert R.peak_for(H100, "bfloat16") == 989.4


def test_summary_and_ratio_columns():
    roof = R.Roof("h100-sxm", 989.4, 3350.0, projected=False)
    nb = [R.StepBytes(10, 0, 0, 5)] * 4
    cols = R.summary_columns(["prefill", "decode", "decode", "decode"], roof, [8.0, 4.0, 5.0, 3.0], nb)
    assert cols["ttft_roofline_ms"] == 8.0 and cols["tpot_roofline_ms"] == 4.0 and cols["total_roofline_ms"] == 20
    assert cols["step_roofline_ms_median"] is None and cols["roofline_bytes"] == 60 and cols["roofline_kv_bytes"] == 20
    nc = R.summary_columns(["forward"] * 3, roof, [1.0, 2.0, 4.0], nb[:3])
    assert nc["step_roofline_ms_median"] == 2.0 and nc["ttft_roofline_ms"] is None and nc["tpot_roofline_ms"] is None
    ratios = R.ratio_columns({**cols, "ttft_ms": 12.0, "tpot_ms_median": 6.0, "total_ms": None})
    assert ratios == {"ttft_roofline_ratio": 1.5, "tpot_roofline_ratio": 1.5, "total_roofline_ratio": None}


def test_gpu_resolution():
    assert R.resolve_gpu() is None
    assert R.resolve_gpu("l4") is GPUS["l4"]
    custom = R.resolve_gpu(gpu_spec="400,1500")
    assert (custom.name, custom.tflops_fp16, custom.tflops_fp32_nontensor) == ("custom", 400, 400)
    assert custom.mem_gbps == 1500
    with pytest.raises(DynbenchError, match="give one"):
        R.resolve_gpu("l4", "1,2")
    assert R.gpu_for_device(None, "cuda", "NVIDIA H100 80GB HBM3") is H100
    assert R.gpu_for_device(None, "cuda", "NVIDIA H100 NVL") is None  # not in the table: no guess
    assert R.gpu_for_device(None, "cpu", "NVIDIA H100 80GB HBM3") is None
    assert R.gpu_for_device(GPUS["l4"], "cuda", "NVIDIA H100 80GB HBM3") is GPUS["l4"]  # --gpu overrides NVML


# ---- the model's own parameters ----------------------------------------------------------------
@pytest.fixture(scope="module")
def parts_7b():
    net = build_model("llava-1.5-7b", "dynamic-llava", dtype=DTYPES["float16"], device="meta")
    return net, R.module_bytes(net)


def test_module_bytes_cover_the_model(parts_7b):
    net, parts = parts_7b
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    rotary = sum(b.numel() * b.element_size() for b in net.model.language_model.rotary_emb.buffers())
    assert parts.total + rotary == params + sum(b.numel() * b.element_size() for b in net.buffers())
    p = net.preset
    layer = 2 * (4 * p.hidden**2 + 3 * p.hidden * p.intermediate + 2 * p.hidden)  # fp16 projections, MLP, 2 norms
    assert parts.layers == (layer,) * 32 and parts.lm_head == 2 * p.hidden * p.vocab
    assert parts.embed_row == 2 * p.hidden and parts.embed_table == parts.lm_head
    # the 13.2 GB of LLM + LM-head weights a decode step reads
    assert (sum(parts.layers) + parts.final_norm + parts.lm_head) / 1e9 == pytest.approx(13.2, abs=0.05)
    assert 0 < parts.text_predictor < parts.vision_predictor < parts.vision / 30  # 8.6 M and 2.3 M params


def test_module_bytes_of_a_model_without_predictors():
    """LLaVA has no predictors: they weigh nothing, and the parts still add up to the model exactly."""
    net = build_model("tiny", "llava", device="meta")
    parts = R.module_bytes(net)
    assert (parts.vision_predictor, parts.text_predictor) == (0, 0)
    rotary = sum(b.numel() * b.element_size() for b in net.model.language_model.rotary_emb.buffers())
    everything = [*net.parameters(), *net.buffers()]
    assert parts.total + rotary == sum(t.numel() * t.element_size() for t in everything)


# ---- 7B on H100 through the CLI (meta device): the hand figures --------------------------
@pytest.fixture(scope="module")
def run_7b(tmp_path_factory):
    out = tmp_path_factory.mktemp("r7b") / "res"
    argv = ["run", "--device", "meta", "--model", "llava-1.5-7b", "--mode", "prefill,kv-cache", "--prompt-len", "40",
            "--gen-len", "4", "--dtype", "float16", "--gpu", "h100-sxm", "--out", str(out)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    summaries = {(r["method"], r["mode"]): r for r in rows if r["step"] is None}
    steps = [r for r in rows if r["step"] is not None]
    return rows, summaries, steps


def test_7b_rows_follow_the_schema(run_7b):
    rows, summaries, _ = run_7b
    for row in rows:
        assert validate(row) == [], row.get("step")
    for s in summaries.values():
        assert (s["roofline_gpu"], s["roofline_tflops"], s["roofline_gbps"]) == ("h100-sxm", 989.4, 3350.0)
        assert s["roofline_projected"] is True
        assert all(s[n] is None for n in ("ttft_roofline_ratio", "tpot_roofline_ratio", "total_roofline_ratio"))
    assert {"step_roofline_ms", "roofline_bound"} <= set(BY_NAME)


def test_7b_prefill_compute_bound(run_7b):
    _, s, steps = run_7b
    llava, dyn = s[("llava", "prefill")], s[("dynamic-llava", "prefill")]
    # ≈ 2 × 4.29 TMACs / 989.4 TFLOP/s
    assert llava["ttft_roofline_ms"] == pytest.approx(2 * llava["tmacs"] * 1e12 / 989.4e12 * 1e3)
    assert llava["ttft_roofline_ms"] == pytest.approx(8.7, abs=0.05)
    step0 = [r for r in steps if r["point_id"] == llava["point_id"]]
    assert [r["roofline_bound"] for r in step0] == ["compute"]
    # dynamic-llava: a third of the MACs, but the 14 GB of weights now bound it
    assert dyn["ttft_roofline_ms"] < 0.5 * llava["ttft_roofline_ms"]
    assert dyn["ttft_roofline_ms"] == pytest.approx(dyn["roofline_bytes"] / 3350e9 * 1e3)
    assert s[("llava", "kv-cache")]["ttft_roofline_ms"] == llava["ttft_roofline_ms"]


def test_7b_decode_memory_bound(run_7b, parts_7b):
    _, s, steps = run_7b
    _, parts = parts_7b
    llava, dyn = s[("llava", "kv-cache")], s[("dynamic-llava", "kv-cache")]
    decode = sorted((r for r in steps if r["point_id"] == llava["point_id"] and r["step"] >= 1),
                    key=lambda r: r["step"])
    assert {r["roofline_bound"] for r in decode} == {"memory"}
    entry = 2 * 32 * 128 * 2  # K and V × kv heads × head dim × fp16
    weights = sum(parts.layers) + parts.final_norm + parts.lm_head
    for r in decode:  # step j: 616 + j − 1 entries cached in each of 32 layers, one written in each
        cached = 40 + 576 + r["step"] - 1
        hand = weights + parts.embed_row + 32 * cached * entry + 32 * entry
        assert r["roofline_bytes"] == hand
        assert r["step_roofline_ms"] == pytest.approx(hand / 3350e9 * 1e3)
    assert llava["tpot_roofline_ms"] == pytest.approx(statistics.median(r["step_roofline_ms"] for r in decode))
    assert llava["tpot_roofline_ms"] == pytest.approx(4.1, abs=0.06)
    assert dyn["tpot_roofline_ms"] < llava["tpot_roofline_ms"]
    for point in (llava, dyn):
        mine = [r for r in steps if r["point_id"] == point["point_id"]]
        assert point["total_roofline_ms"] == pytest.approx(sum(r["step_roofline_ms"] for r in mine))
        assert point["roofline_bytes"] == sum(r["roofline_bytes"] for r in mine)


def test_report_shows_projected_bounds(run_7b, tmp_path):
    rows, _, _ = run_7b
    import pandas as pd

    md = T.to_markdown(C.compare(pd.DataFrame.from_records(rows)))  # compact: the mode's headline bound
    assert "TTFT roofline" in md and "TPOT roofline" in md
    wide = T.to_markdown(C.compare(pd.DataFrame.from_records(rows)), wide=True)
    assert "total roofline" in wide
    assert "8.68 ms proj." in md and "roofline: the fastest h100-sxm (989.4 TFLOP/s, 3350 GB/s)" in md


# ---- records without a GPU, CPU projections, CUDA ratios ------------------------------------------
def _tiny_rows(mode, roof, step_ms=None, dtype="float32"):
    spec = RunSpec(model="tiny", method="dynamic-llava", mode=mode, gen_len=4 if mode != "prefill" else None,
                   prompt_len=8, device="meta", dtype=dtype, text_keep=0.5 if mode != "prefill" else None,
                   text_policy="budget" if mode != "prefill" else None)
    net = build_model("tiny", "dynamic-llava", device="meta", dtype=DTYPES[dtype])
    facts = ModelFacts(net.preset, 0, 0, R.module_bytes(net))
    planned = plan_mode(net.preset, spec.method, mode, 8, spec.gen_len or 1, spec.drop, element_bytes=4)
    from dynbench.measure.model_cost import ModelCost

    measured = PointMeasurement([planned], step_ms=step_ms, timer=None if step_ms is None else "cuda_event")
    return point_rows(spec, facts, measured, ModelCost(net), roof)


def test_without_a_gpu_the_columns_are_null():
    rows = _tiny_rows("kv-cache", None)
    assert all(rows.summary[name] is None for name in R.ROOF_SUMMARY)
    assert all(r["step_roofline_ms"] is None and r["roofline_bound"] is None for r in rows.steps)


def test_cuda_rows_carry_measured_over_bound():
    roof = R.Roof.of(H100, "float32", tf32=False, projected=False)
    rows = _tiny_rows("kv-cache", roof, step_ms=[[5.0, 1.0, 2.0, 3.0]])
    s = rows.summary
    assert s["roofline_tflops"] == 66.9 and s["roofline_projected"] is False
    assert s["ttft_roofline_ratio"] == pytest.approx(5.0 / s["ttft_roofline_ms"])
    assert s["tpot_roofline_ratio"] == pytest.approx(2.0 / s["tpot_roofline_ms"])
    assert s["total_roofline_ratio"] == pytest.approx(11.0 / s["total_roofline_ms"])
    assert all(validate(r) == [] for r in rows.steps)


def test_cpu_run_is_projected(tmp_path):
    out = tmp_path / "res"
    argv = ["run", "--mode", "prefill", "--method", "llava", "--prompt-len", "8", "--warmup", "0", "--repeats", "1",
            "--gpu-spec", "100,1000", "--out", str(out)]
    assert main(argv) == 0
    s = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()][-1]
    assert s["roofline_gpu"] == "custom" and s["roofline_projected"] is True and s["ttft_ms"] > 0
    assert s["ttft_roofline_ratio"] is None  # a CPU timing is not measured on that GPU


BAD = [
    (["run", "--gpu", "h999"], "unknown GPU 'h999'; known GPUs: a100-40gb-sxm"),
    (["run", "--gpu", "l4", "--gpu-spec", "1,2"], "give one"),
    (["run", "--gpu-spec", "1,2,3"], "bad custom GPU spec"),
    (["run", "--gpu-spec", "fast,2"], "bad custom GPU spec"),
    (["run", "--gpu", "l4", "--no-flops"], "drop --no-flops"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[1:]) for a, _ in BAD])
def test_bad_gpu_flags_are_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], captured.err


def test_gpus_lists_the_table(capsys):
    assert main(["gpus"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in GPUS) and "989.4" in text
    assert main(["gpus", "--json"]) == 0
    assert [g["name"] for g in json.loads(capsys.readouterr().out)] == list(GPUS)


# ---- the chart's series, numerically --------------------------------------------------------------
def _synthetic(method, mode, point_id, steps, measured=None):
    """Step rows (tmacs, roofline_bytes, step_roofline_ms) and a summary row of one point."""
    base = {"model": "m", "device": "cuda", "dtype": "float16", "method": method, "mode": mode, "prompt_len": 8,
            "batch": 1, "vision_keep": None if method == "llava" else 0.2, "point_id": point_id, "status": "ok"}
    rows = []
    for i, (tmacs, nbytes, ms) in enumerate(steps):
        rows.append({**base, "step": i, "repeat": 0, "tmacs": tmacs, "roofline_bytes": nbytes,
                     "step_roofline_ms": ms, "step_ms": None if measured is None else measured[i]})
    summary = {**base, "step": None, "gen_len": len(steps) if mode != "prefill" else None, "roofline_gpu": "g",
               "roofline_tflops": 100.0, "roofline_gbps": 1000.0, "roofline_projected": measured is None,
               "ttft_roofline_ms": steps[0][2] if mode != "no-cache" else None}
    return rows, summary


def test_roofline_series_numbers():
    # roof: 100 TFLOP/s, 1000 GB/s → ridge 100 FLOP/B
    pre_steps, pre = _synthetic("llava", "prefill", "a", [(5.0, 1e10, 100.0)])  # 1e13 FLOP / 1e10 B = 1000 FLOP/B
    kv_steps, kv = _synthetic("llava", "kv-cache", "b", [(5.0, 1e10, 100.0), (0.001, 1e9, 1.0), (0.001, 1.2e9, 1.2)],
                              measured=[150.0, 2.0, 2.0])
    dyn_steps, dyn = _synthetic("dynamic-llava", "kv-cache", "c", [(2.0, 9e9, 40.0), (0.001, 1e9, 1.0)])
    s = roofline_series([pre, kv, dyn], pre_steps + kv_steps + dyn_steps)
    assert (s.gpu, s.tflops, s.gbps, s.ridge) == ("g", 100.0, 1000.0, 100.0)
    assert s.roof(10.0) == pytest.approx(10.0) and s.roof(1000.0) == 100.0
    llava, dl = ("llava", "llava"), ("dynamic-llava", "dynamic-llava v0.2")  # (method, plot_data.series_label)
    prefill = s.points[(llava, "prefill")]  # the prefill point and the kv-cache run's prefill step
    assert [p[0] for p in prefill] == [1000.0, 1000.0]
    assert prefill[0][1] == pytest.approx(1e13 / 0.1 / 1e12) and prefill[0][2] is None
    assert prefill[1][2] == pytest.approx(1e13 / 0.15 / 1e12)  # measured 150 ms
    decode = s.points[(llava, "decode")]
    assert decode[0][0] == pytest.approx(2e9 / 1e9) and decode[0][1] == pytest.approx(2e9 / 1e-3 / 1e12)
    assert s.per_token[(llava, "kv-cache")] == ([2, 3], [1.0, 1.2], [2.0, 2.0])
    x, bound, measured = s.cumulative[(llava, "kv-cache")]
    assert x == [1, 2, 3] and bound == pytest.approx([100.0, 101.0, 102.2]) and measured == [150.0, 152.0, 154.0]
    assert s.cumulative[(dl, "kv-cache")][1] == pytest.approx([40.0, 41.0])
    assert s.ttft == {llava: 100.0, dl: 40.0}
    assert not s.projected  # one of the rows was measured


def test_roofline_series_from_summaries_only():
    rows = []
    for n, (tpot, total) in {8: (1.0, 20.0), 4: (0.9, 10.0)}.items():
        _, summary = _synthetic("llava", "kv-cache", f"p{n}", [(1.0, 1e9, 5.0)] * n)
        rows.append({**summary, "tpot_roofline_ms": tpot, "total_roofline_ms": total})
    s = roofline_series(rows, [])
    assert s.per_token[(("llava", "llava"), "kv-cache")] == ([4, 8], [0.9, 1.0], [None, None])
    assert s.cumulative[(("llava", "llava"), "kv-cache")][1] == [10.0, 20.0]
    assert s.points == {}


def test_chart_draws_and_skips(run_7b):
    from dynbench.report.plots import Skip

    rows, _, _ = run_7b
    summaries, steps = [r for r in rows if r["step"] is None], [r for r in rows if r["step"] is not None]
    fig = chart_roofline(summaries, steps)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert any("h100-sxm" in t.get_text() for t in fig.texts) or "h100-sxm" in fig._suptitle.get_text()
    assert math.isclose(roofline_series(summaries, steps).ridge, 989.4e3 / 3350)
    with pytest.raises(Skip, match="no roofline columns"):
        chart_roofline([{**r, "roofline_gpu": None} for r in summaries], steps)


def test_plot_all_integration(run_7b, tmp_path, monkeypatch):
    """The line plot_all needs: `CHARTS["roofline"] = chart_roofline` (Skip is plots.Skip)."""
    import pandas as pd

    from dynbench.report import plots

    monkeypatch.setitem(plots.CHARTS, "roofline", chart_roofline)
    written = plots.plot_all(pd.DataFrame.from_records(run_7b[0]), tmp_path, charts=["roofline"])
    assert sorted(p.name for p in written) == ["roofline.png", "roofline.svg"]
