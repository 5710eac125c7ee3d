"""Charts: the series builders (`report/plot_data.py`) give the records' own numbers, checked here
against values computed by hand from the synthetic records' token arithmetic; the charts
(`report/plots.py`) draw no empty panel, keep identical series visible, write every chart of a
full sweep and skip what the records lack. Synthetic records come from test_report.py."""

from __future__ import annotations

import statistics

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from test_report import ENV_B, IMG, KV_TOKEN_LAYER, LAYERS, SPARSE, summaries_of, sweep, synthetic_point, write

from dynbench.errors import DynbenchError
from dynbench.report import compare as C
from dynbench.report import plot_data as D
from dynbench.report import plot_panels as PP
from dynbench.report import plots as P
from dynbench.results import load_many

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HIDDEN = 128
approx = pytest.approx


def _flat(bands):
    """Bands [(lo, hi), …] as one list (pytest.approx compares flat sequences)."""
    return [v for b in bands for v in b]


def _paper(kept: int) -> float:
    """Paper FLOPs of the synthetic 4-layer model: 32·N·C² + 4·N²·C per layer, N = image tokens."""
    return sum(32 * n * HIDDEN**2 + 4 * n * n * HIDDEN for n in [IMG] * SPARSE + [kept] * (LAYERS - SPARSE))


def _baseline(method: str, mode: str, **kw) -> list[dict]:
    """h2o / streaming-llm / fastv rows: synthetic numbers, the method's own parameters."""
    rows = synthetic_point(method, mode, **kw)
    for r in rows:
        r.update(vision_keep=None, text_keep=None, text_policy=None, text_keep_imposed=False)
        r.update(kv_budget=0.2) if method in ("h2o", "streaming-llm") else r.update(fastv_k=2, fastv_r=0.5)
    return rows


def _df(tmp_path, rows):
    return load_many([write(tmp_path / "run", rows)])


def _drawn(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _has_data(ax) -> bool:
    return bool([ln for ln in ax.lines if len(ln.get_xdata())] or ax.patches or ax.collections)


def _check_files(paths, names):
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "svg"))
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 5000, p
        assert data.startswith(PNG_MAGIC) if p.suffix == ".png" else b"<svg" in data[:2000]


# ---------------------------------------------------------------------------------------------
# series builders: the records' numbers


def test_series_labels_are_one_name_per_variant():
    assert D.series_label({"method": "llava"}) == "llava"
    dyn = {"method": "dynamic-llava", "vision_keep": 0.2, "text_keep": 0.5}
    assert D.series_label(dyn) == "dynamic-llava v0.2 t0.5"
    assert D.series_label({"method": "dynamic-llava", "vision_keep": 0.2, "text_keep": 0.5},
                          axis=("vision_keep",)) == "dynamic-llava t0.5"
    assert D.series_label({"method": "dynamic-llava", "vision_keep": 0.2, "text_policy": "learned"}) == (
        "dynamic-llava v0.2 t learned")
    assert D.series_label({"method": "fastv", "fastv_k": 2, "fastv_r": 0.5}) == "fastv K2 R0.5"
    assert D.series_label({"method": "fastv", "fastv_k": 3, "fastv_r": 0.828125, "vision_keep": 0.2,
                           "match_budget": "flops"}) == "fastv K3 R0.828 =flops"
    assert D.series_label({"method": "h2o", "kv_budget": 0.2, "prompt_len": 64}, context=("prompt_len",)) == (
        "h2o KV 0.2 P=64")
    assert D.series_label({"method": "random", "vision_keep": 0.2, "env_id": ENV_B}, context=("env_id",),
                          envs={ENV_B: "B"}) == "random v0.2 env B"


def test_prefill_series_hold_the_records_and_compare_deltas():
    rows = summaries_of(sweep(modes=("prefill",), keeps=(0.2, 0.5, 1.0)))
    paper, macs, ttft = PP.prefill_panels(rows)
    assert paper.ylabel == "GFLOPs (paper convention, 2×MAC)"  # 1.9e-3 T on the tiny model: G
    llava, dyn = paper.series
    assert llava.ref and llava.label == "llava" and llava.y == approx([_paper(IMG) / 1e9])
    kept = [int(IMG * k + 1e-9) for k in (0.2, 0.5, 1.0)]  # 115, 288, 576
    assert dyn.label == "dynamic-llava" and dyn.x == approx([k / IMG for k in kept])
    assert dyn.y == approx([_paper(k) / 1e9 for k in kept])
    assert dyn.texts == [f"{(_paper(k) - _paper(IMG)) / _paper(IMG) * 100:+.1f}%" for k in kept]
    # fvcore MACs: 2.5e-5 T per token of each layer's input (the synthetic model's rule)
    assert macs.ylabel == "GMACs (fvcore)"
    work = [2 * (64 + IMG) + 2 * (64 + k) for k in kept]
    assert macs.series[1].y == approx([w * 2.5e-5 * 1e3 for w in work])
    assert ttft.ylabel.endswith("(ms)") and ttft.series[0].y == approx([0.5 + 4 * (64 + IMG) * 1e-3])


def test_ttft_band_is_p10_p90_of_the_samples():
    rows = summaries_of(sweep(modes=("prefill",), keeps=(0.2,)))
    samples = [10.0, 20.0, 30.0, 40.0, 50.0]
    for r in rows:
        r["ttft_ms_samples"] = samples
    ttft = PP.prefill_panels(rows)[2]
    q = statistics.quantiles(samples, n=10, method="inclusive")  # numpy's linear rule: 14, 46
    assert _flat(ttft.series[0].band) == approx([q[0], q[8]]) and _flat(ttft.series[1].band) == approx([q[0], q[8]])


def test_step_series_take_the_median_over_runs_from_token_one():
    """Three runs of one point, step times ×1, ×2, ×3: the median is run 2, the band p10–p90
    over runs (1.2×, 2.8×); cumulative time is the median of each run's running sum."""
    one = synthetic_point("llava", "no-cache", gen_len=4)
    runs = []
    for rep, f in enumerate((1.0, 2.0, 3.0)):
        runs += [{**r, "repeat": rep, "step_ms": r["step_ms"] * f} for r in one if r["step"] is not None]
    base = [r["step_ms"] for r in one if r["step"] is not None]
    compute, step, total = PP.no_cache_panels(summaries_of(one), runs)
    s = step.series[0]
    assert s.x == [1.0, 2.0, 3.0, 4.0] and step.ylabel == "step latency, median over runs (ms)"
    assert s.y == approx([2 * b for b in base]) and _flat(s.band) == approx(_flat((1.2 * b, 2.8 * b) for b in base))
    sums = [sum(base[: i + 1]) for i in range(4)]
    assert total.series[0].y == approx([2 * v for v in sums])
    # counts agree across runs: no band; cumulative MACs of the (i+1)-th forward over P + i tokens
    c = compute.series[0]
    assert c.band is None and c.x[0] == 1.0
    assert c.y == approx([sum(4 * (64 + IMG + j) for j in range(i + 1)) * 2.5e-5 * 1e3 for i in range(4)])


def test_kv_series_start_at_token_one_and_savings_come_from_compare():
    rows = synthetic_point("llava", "kv-cache", gen_len=8) + synthetic_point("dynamic-llava", "kv-cache", gen_len=8)
    steps = [r for r in rows if r["step"] is not None]
    gen, total, *_ = PP.kv_cache_panels(summaries_of(rows), steps)
    assert gen.ylabel == "KV cache, generated tokens (KiB)" and total.ylabel == "KV cache, total (MiB)"
    llava_kv = [r["kv_bytes_generated"] for r in steps if r["method"] == "llava"]
    assert gen.series[0].x == [float(i) for i in range(1, 9)]  # token 1: the prefill's token
    assert gen.series[0].y == approx([b / 1024 for b in llava_kv])
    # generated KV after token t: t − 1 tokens fed, in every layer for llava
    assert llava_kv == [SPARSE * t * KV_TOKEN_LAYER + (LAYERS - SPARSE) * t * KV_TOKEN_LAYER for t in range(8)]
    panels = PP.savings_panels(steps)
    tot = panels[0]
    dyn_tot = [r["kv_bytes"] for r in steps if r["method"] == "dynamic-llava"]
    llava_tot = [r["kv_bytes"] for r in steps if r["method"] == "llava"]
    ref, saving = tot.series
    assert ref.ref and ref.y == [0.0]
    assert saving.x == [float(i) for i in range(1, 9)]
    assert saving.y == approx([(b - a) / b * 100 for a, b in zip(dyn_tot, llava_tot, strict=True)])
    lo, hi = tot.ylim  # fits the data (about 38 % here) and includes 0, never a fixed 0–100
    assert lo < 0 < max(saving.y) < hi < 50
    assert {p.series[-1].x[0] for p in panels} == {1.0}  # every panel from the same token


def test_summary_deltas_are_compares_at_the_largest_point():
    rows = sweep(gen_lens=(8, 16), keeps=(0.2,))
    grid = PP.summary_panels(summaries_of(rows))
    assert [where.split(" (")[0] for where, _ in grid] == ["prefill", "no-cache", "kv-cache"]
    where, kv = grid[2]
    assert where == "kv-cache (prompt 64, gen 16, batch 1)"
    panel = next(p for p in kv if p.title == "KV of generated tokens")
    (s,) = panel.series
    dyn = next(r for r in summaries_of(rows) if r["method"] == "dynamic-llava" and r["mode"] == "kv-cache"
               and r["gen_len"] == 16)
    base = next(r for r in summaries_of(rows) if r["method"] == "llava" and r["mode"] == "kv-cache"
                and r["gen_len"] == 16)
    want = (dyn["kv_bytes_generated"] - base["kv_bytes_generated"]) / base["kv_bytes_generated"] * 100
    assert s.x == approx([want]) and s.texts == [f"{want:+.1f}%"] and panel.ticks == ["dynamic-llava v0.2 t0.5"]


def test_units_fit_tiny_values():
    s = D.Series("x", "llava", [1.0], [2.5e-4])
    assert D.scale([s], "tera", "MACs (fvcore)") == "MMACs (fvcore)" and s.y == approx([250.0])
    s = D.Series("x", "llava", [1.0], [3 * 2**20], band=[(2**20, 4 * 2**20)])
    assert D.scale([s], "bytes", "KV cache") == "KV cache (MiB)" and s.y == [3.0] and s.band == [(1.0, 4.0)]
    s = D.Series("x", "llava", [1.0], [0.5])
    assert D.scale([s], "ms", "TPOT") == "TPOT (µs)" and s.y == approx([500.0])


def test_pareto_front():
    assert D.pareto_front([(3, 1), (1, 3), (2, 2), (2, 4), (4, 0.5)]) == [(1, 3), (2, 2), (3, 1), (4, 0.5)]


# ---------------------------------------------------------------------------------------------
# charts


def test_every_chart_from_a_full_sweep(tmp_path):
    df = _df(tmp_path, sweep(gen_lens=(8, 32), keeps=(0.2, 0.5)))
    skipped: list[str] = []
    paths = P.plot_all(df, tmp_path / "figs", skipped=skipped)
    # no --gpu: no roofline bounds; no --dataset: no samples, no answers (quality)
    assert [s for s in skipped if not s.startswith(("roofline", "text_keep_samples", "quality"))] == []
    _check_files(paths, [c for c in P.CHARTS if c not in ("roofline", "text_keep_samples", "quality")])
    svg = (tmp_path / "figs" / "prefill.svg").read_text()
    assert "tiny · cpu · float32" in svg and "CPU timings" in svg and "not measured" not in svg
    kv = (tmp_path / "figs" / "kv_cache.svg").read_text()
    assert "MiB" in kv and "TPOT" in kv and "tokens generated" in kv
    for name in [c for c in P.CHARTS if c not in ("roofline", "text_keep_samples", "quality")]:  # one colour per method
        text = (tmp_path / "figs" / f"{name}.svg").read_text().lower()
        assert P.COLORS["dynamic-llava"].lower() in text and P.COLORS["llava"].lower() in text, name
    again = P.plot_all(df, tmp_path / "again", charts=("layer_tokens",))  # stable SVG: diffable in git
    assert again[1].read_bytes() == (tmp_path / "figs" / "layer_tokens.svg").read_bytes()


def test_kv_cache_only_run_draws_no_empty_panel(tmp_path):
    rows = synthetic_point("llava", "kv-cache", gen_len=8) + synthetic_point("dynamic-llava", "kv-cache", gen_len=8)
    df = _df(tmp_path, rows)
    summaries, steps = C.summary_rows(df), C.step_rows(df)
    for chart, panels in ((P.chart_kv_cache, 4), (P.chart_summary, 3), (P.chart_pareto, 2), (P.chart_savings, 2)):
        fig = chart(summaries, steps)
        axes = [ax for ax in fig.get_axes() if ax.get_visible()]
        assert len(axes) == panels, chart.__name__
        assert all(_has_data(ax) for ax in axes), chart.__name__
    skipped: list[str] = []
    P.plot_all(df, tmp_path / "figs", skipped=skipped, charts=("prefill", "no_cache"))
    assert sorted(skipped) == ["no_cache: no no-cache rows", "prefill: no prefill rows"]


def test_a_run_without_llava_skips_the_comparisons(tmp_path):
    rows = synthetic_point("dynamic-llava", "kv-cache", gen_len=8)
    rows += synthetic_point("dynamic-llava", "kv-cache", gen_len=16, vision_keep=0.5)
    skipped: list[str] = []
    charts = ("kv_cache", "summary", "savings")
    paths = P.plot_all(_df(tmp_path, rows), tmp_path / "figs", skipped=skipped, charts=charts)
    _check_files(paths, ("kv_cache",))
    assert sorted(skipped) == ["savings: no step rows with a llava reference in the same context",
                               "summary: no point has both llava and another method"]


def test_identical_series_stay_visible_and_are_named(tmp_path):
    """h2o and streaming-llm with the very same numbers: distinct markers, the copy dashed and
    hollow, and the panel's title says 'h2o KV 0.2 = streaming-llm KV 0.2'."""
    rows = synthetic_point("llava", "kv-cache", gen_len=8)
    for m in ("h2o", "streaming-llm", "fastv"):
        rows += _baseline(m, "kv-cache", gen_len=8, vision_keep=0.5 if m == "fastv" else None)
    df = _df(tmp_path, rows)
    summaries, steps = C.summary_rows(df), C.step_rows(df)
    for panel in PP.pareto_panels(summaries) + PP.kv_cache_panels(summaries, steps)[1:2]:  # total KV
        h2o, stream = (next(s for s in panel.series if s.method == m) for m in ("h2o", "streaming-llm"))
        assert stream.same_as == h2o.label == "h2o KV 0.2"
        a, b = P.style(h2o), P.style(stream)
        assert a["marker"] != b["marker"] and b["linestyle"] == "--" and b["markerfacecolor"] == "none"
    fig = P.chart_pareto(summaries, steps)
    _drawn(fig)
    assert all("h2o KV 0.2 = streaming-llm KV 0.2" in ax.get_title() for ax in fig.axes)
    # the same names in every chart's legend
    legends = {t.get_text() for f in (fig, P.chart_kv_cache(summaries, steps)) for lg in f.legends for t in lg.texts}
    assert legends == {"llava", "h2o KV 0.2", "streaming-llm KV 0.2", "fastv K2 R0.5"}


def test_meta_records_skip_latency_panels(tmp_path):
    rows = sweep(gen_lens=(8,), keeps=(0.2,), device="meta", model="llava-1.5-7b", dtype="float16")
    df = _df(tmp_path, rows)
    summaries, steps = C.summary_rows(df), C.step_rows(df)
    assert [p.title for p in PP.prefill_panels(summaries)] == [
        "compute, paper convention (image tokens)", "compute, measured by fvcore (whole forward)"]
    assert [p.title for p in PP.no_cache_panels(summaries, steps)] == ["cumulative compute"]
    assert [p.title for p in PP.kv_cache_panels(summaries, steps)] == [
        "KV cache of generated tokens", "KV cache, prompt + generated"]
    assert [p.title.split("\n")[0] for p in PP.pareto_panels(summaries)] == ["decoding: KV cache vs compute"]
    grid = PP.summary_panels(summaries)
    assert [p.title for _, row in grid for p in row] == [
        "FLOPs (paper, 2×MAC)", "MACs (fvcore)", "FLOPs (paper, 2×MAC)", "MACs (fvcore)", "KV of generated tokens"]
    paths = P.plot_all(df, tmp_path / "figs", charts=("prefill", "kv_cache"))
    _check_files(paths, ("prefill", "kv_cache"))
    svg = (tmp_path / "figs" / "prefill.svg").read_text()
    assert "llava-1.5-7b · meta · float16" in svg and "meta device" in svg
    assert "CPU timings" not in svg and "not measured" not in svg and "TTFT" not in svg


def test_zero_change_label_clears_the_llava_line(tmp_path):
    """dynamic-llava at vision keep 1 computes what llava does: its '+0.0%' sits above llava's
    reference line, not on it."""
    rows = synthetic_point("llava", "prefill") + synthetic_point("dynamic-llava", "prefill", vision_keep=1.0)
    rows += synthetic_point("dynamic-llava", "prefill", vision_keep=0.2)
    df = _df(tmp_path, rows)
    fig = P.chart_prefill(C.summary_rows(df), [])
    renderer = _drawn(fig)
    ax = fig.axes[0]
    line_y = ax.transData.transform((0, PP.prefill_panels(C.summary_rows(df))[0].series[0].y[0]))[1]
    zero = [t for t in ax.texts if t.get_text() == "+0.0%"]
    assert len(zero) == 1
    box = Text.get_window_extent(zero[0], renderer)
    assert box.y0 > line_y  # entirely above the line
    labels = [Text.get_window_extent(t, renderer) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[:i])


def test_tpot_bars_carry_p10_p90_of_the_samples():
    rows = sweep(modes=("kv-cache",), gen_lens=(8,), keeps=(0.2,))
    tpot = PP.kv_cache_panels(summaries_of(rows), [])[-1]
    assert tpot.kind == "bars" and tpot.xlabel == "generated length = 8 tokens"
    for s, r in zip(tpot.series, summaries_of(rows), strict=True):
        q = statistics.quantiles(r["latency_ms_samples"], n=10, method="inclusive")
        assert s.y == approx([r["tpot_ms_median"]]) and _flat(s.band) == approx([q[0], q[8]])


def test_lengths_spanning_decades_use_log_axes():
    rows = []
    for g in (4, 64, 512):  # a sweep of generated lengths: log x; one generation's steps: linear
        rows += synthetic_point("llava", "kv-cache", gen_len=g, device="meta")
        rows += synthetic_point("dynamic-llava", "kv-cache", gen_len=g, device="meta")
    summaries, steps = summaries_of(rows), [r for r in rows if r["step"] is not None]
    assert [p.xlog for p in PP.kv_cache_panels(summaries, steps)] == [False, False]
    assert [p.xlog for p in PP.kv_cache_panels(summaries, [])] == [True, True]


def test_groups_and_environments(tmp_path):
    a = write(tmp_path / "a", sweep(modes=("prefill", "kv-cache"), gen_lens=(8,), keeps=(0.2,)))
    b = write(tmp_path / "b", sweep(modes=("prefill",), keeps=(0.2,), dtype="bfloat16", env_id=ENV_B))
    df = load_many([a, b])
    skipped: list[str] = []
    paths = P.plot_all(df, tmp_path / "figs", skipped=skipped, charts=("prefill", "kv_cache"))
    assert {p.name for p in paths} == {f"{c}_tiny_cpu_{d}.{e}" for c, d in (
        ("prefill", "float32"), ("prefill", "bfloat16"), ("kv_cache", "float32")) for e in ("png", "svg")}
    assert skipped == ["kv_cache_tiny_cpu_bfloat16: no kv-cache rows"]
    with pytest.raises(DynbenchError, match="unknown chart"):
        P.plot_all(df, tmp_path / "figs", charts=("pie",))


def test_nothing_to_plot_is_not_a_crash(tmp_path):
    df = _df(tmp_path, synthetic_point("llava", "prefill", status="oom"))
    skipped: list[str] = []
    assert P.plot_all(df, tmp_path / "figs", skipped=skipped) == [] and len(skipped) == len(P.CHARTS)


def test_colours_are_fixed_and_distinct():
    assert P.color("llava") == "#0072B2" and P.color("dynamic-llava") == "#D55E00"  # Okabe–Ito blue, vermillion
    assert set(P.COLORS) >= {"llava", "dynamic-llava", "random", "fastv", "h2o", "streaming-llm"}
    assert len(set(P.COLORS.values())) == len(P.COLORS) and P.color("some-new-method") not in P.COLORS.values()


@pytest.mark.slow
def test_every_chart_from_a_real_run(tmp_path):
    """Records written by the real runner (tiny preset on the meta device: exact counts and FLOPs
    in about a second, no latency or memory), so a schema drift in the runner shows up here."""
    from dynbench.spec import RunSpec
    from dynbench.sweep import Sweep

    runner = Sweep(tmp_path / "run")
    for mode, gen in (("prefill", None), ("no-cache", 3), ("kv-cache", 3)):
        runner.run_point(RunSpec(method="llava", mode=mode, prompt_len=8, gen_len=gen, vision_keep=None,
                                 text_keep=None, text_policy=None, device="meta"))
        runner.run_point(RunSpec(method="dynamic-llava", mode=mode, prompt_len=8, gen_len=gen, vision_keep=0.2,
                                 text_keep=0.5 if gen else None, text_policy="budget" if gen else None,
                                 device="meta"))
    df = load_many([str(tmp_path / "run")])
    cmp = C.compare(df)
    assert len(cmp) == 6 and (cmp["status"] == "ok").all()
    dyn = cmp[(cmp["method"] == "dynamic-llava") & (cmp["mode"] == "prefill")].iloc[0]
    assert dyn["image_tokens_kept"] == 115 and dyn["tmacs_delta_pct"] < 0
    skipped: list[str] = []
    paths = P.plot_all(df, tmp_path / "figs", skipped=skipped)
    # no --gpu: no roofline bounds; no --dataset: no samples, no answers (quality)
    assert [s for s in skipped if not s.startswith(("roofline", "text_keep_samples", "quality"))] == []
    _check_files(paths, [c for c in P.CHARTS if c not in ("roofline", "text_keep_samples", "quality")])
    assert "meta device" in (tmp_path / "figs" / "summary.svg").read_text()
