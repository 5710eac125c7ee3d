"""Charts: each writes a non-empty PNG and SVG from synthetic records; absent data skips a chart
with a reason, never crashes. Synthetic records come from test_report.py (README schema)."""

from __future__ import annotations

import pytest
from test_report import ENV_B, sweep, synthetic_point, write

from dynbench.errors import DynbenchError
from dynbench.report import compare as C
from dynbench.report.plots import CHARTS, COLORS, chart_kv_cache, chart_pareto, chart_summary, color, plot_all
from dynbench.results import load_many

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_files(paths, names):
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "svg"))
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 5000, p
        if p.suffix == ".png":
            assert data.startswith(PNG_MAGIC)
        else:
            assert b"<svg" in data[:2000]


def test_every_chart_from_a_full_sweep(tmp_path):
    rows = sweep(gen_lens=(8, 32), keeps=(0.2, 0.5))
    df = load_many([write(tmp_path / "run", rows)])
    skipped: list[str] = []
    paths = plot_all(df, tmp_path / "figs", skipped=skipped)
    assert skipped == []
    _check_files(paths, CHARTS)
    svg = (tmp_path / "figs" / "prefill.svg").read_text()
    # title names model, device, dtype and says the timings are CPU timings
    assert "tiny · cpu · float32" in svg and "CPU timings" in svg
    kv = (tmp_path / "figs" / "kv_cache.svg").read_text()
    assert "MiB" in kv and "TPOT" in kv and "tokens generated" in kv
    # one colour per method, the same in every chart
    for name in CHARTS:
        text = (tmp_path / "figs" / f"{name}.svg").read_text().lower()
        assert COLORS["dynamic-llava"].lower() in text, name
        if name != "layer_tokens" or "llava" in text:
            assert COLORS["llava"].lower() in text, name


def test_only_some_modes_present_skips_with_reasons(tmp_path):
    rows = sweep(modes=("prefill",), keeps=(0.2,))
    df = load_many([write(tmp_path / "run", rows)])
    skipped: list[str] = []
    paths = plot_all(df, tmp_path / "figs", skipped=skipped, charts=("prefill", "no_cache", "kv_cache"))
    _check_files(paths, ("prefill",))
    assert sorted(skipped) == ["kv_cache: no kv-cache rows", "no_cache: no no-cache rows"]


def test_kv_cache_only_and_missing_baseline(tmp_path):
    rows = synthetic_point("dynamic-llava", "kv-cache", gen_len=8)  # no llava at all
    rows += synthetic_point("dynamic-llava", "kv-cache", gen_len=16, vision_keep=0.5)
    df = load_many([write(tmp_path / "run", rows)])
    skipped: list[str] = []
    paths = plot_all(df, tmp_path / "figs", skipped=skipped, charts=("prefill", "no_cache", "kv_cache", "summary"))
    _check_files(paths, ("kv_cache", "summary"))
    assert {s.split(":")[0] for s in skipped} == {"prefill", "no_cache"}
    assert "no point has both llava and another method" in (tmp_path / "figs" / "summary.svg").read_text()


def test_meta_device_counts_are_marked_and_latency_panels_explain(tmp_path):
    rows = sweep(gen_lens=(8,), keeps=(0.2,), device="meta", model="llava-1.5-7b", dtype="float16")
    df = load_many([write(tmp_path / "run", rows)])
    paths = plot_all(df, tmp_path / "figs", charts=("prefill", "kv_cache"))
    _check_files(paths, ("prefill", "kv_cache"))
    svg = (tmp_path / "figs" / "prefill.svg").read_text()
    assert "llava-1.5-7b · meta · float16" in svg and "meta device" in svg
    assert "CPU timings" not in svg and "not measured" in svg


def test_groups_and_environments(tmp_path):
    a = write(tmp_path / "a", sweep(modes=("prefill", "kv-cache"), gen_lens=(8,), keeps=(0.2,)))
    b = write(tmp_path / "b", sweep(modes=("prefill",), keeps=(0.2,), dtype="bfloat16", env_id=ENV_B))
    df = load_many([a, b])
    skipped: list[str] = []
    paths = plot_all(df, tmp_path / "figs", skipped=skipped, charts=("prefill", "kv_cache"))
    assert {p.name for p in paths} == {f"{c}_tiny_cpu_{d}.{e}" for c, d in (
        ("prefill", "float32"), ("prefill", "bfloat16"), ("kv_cache", "float32")) for e in ("png", "svg")}
    assert skipped == ["kv_cache_tiny_cpu_bfloat16: no kv-cache rows"]
    with pytest.raises(DynbenchError, match="unknown chart"):
        plot_all(df, tmp_path / "figs", charts=("pie",))


def test_nothing_to_plot_is_not_a_crash(tmp_path):
    rows = synthetic_point("llava", "prefill", status="oom")
    df = load_many([write(tmp_path / "run", rows)])
    skipped: list[str] = []
    paths = plot_all(df, tmp_path / "figs", skipped=skipped)
    assert paths == [] and len(skipped) == len(CHARTS)


def test_colour_map_is_fixed():
    assert color("llava") == COLORS["llava"] and color("dynamic-llava") == COLORS["dynamic-llava"]
    assert set(COLORS) >= {"llava", "dynamic-llava", "random", "fastv", "h2o", "streaming-llm"}
    assert color("some-new-method") == color("some-new-method")
    assert len(set(COLORS.values())) == len(COLORS)


def test_lengths_spanning_decades_use_log_axes(tmp_path):
    rows = []
    for g in (4, 64, 512):  # a sweep of generated lengths: log x; one generation's steps: linear
        rows += synthetic_point("llava", "kv-cache", gen_len=g, device="meta")
        rows += synthetic_point("dynamic-llava", "kv-cache", gen_len=g, device="meta")
    df = load_many([write(tmp_path / "run", rows)])
    summaries = C.summary_rows(df)
    fig = chart_kv_cache(summaries, C.step_rows(df))
    assert fig.axes[0].get_xscale() == "linear"
    fig = chart_kv_cache(summaries, [])  # no step rows: KV bytes per generated length, log x
    assert [ax.get_xscale() for ax in fig.axes[:2]] == ["log", "log"]


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_labels_of_coincident_points_merge_and_no_text_overlaps(tmp_path):
    """h2o and streaming-llm at the same point: one label naming both; no two texts of a panel
    overlap; panel titles and the figure title stay inside the figure."""
    from matplotlib.text import Text

    rows = synthetic_point("llava", "kv-cache", gen_len=8)
    for m in ("h2o", "streaming-llm", "random", "fastv"):  # same numbers: the same point
        rows += synthetic_point(m, "kv-cache", gen_len=8)
    df = load_many([write(tmp_path / "run", rows)])
    summaries, steps = C.summary_rows(df), C.step_rows(df)
    for fig in (chart_pareto(summaries, steps), chart_summary(summaries, steps)):
        renderer = _drawn(fig)
        edge = fig.bbox
        for ax in fig.axes:
            texts = [t for t in ax.texts if t.get_visible() and t.get_text()]
            boxes = [Text.get_window_extent(t, renderer) for t in texts]
            for i, a in enumerate(boxes):
                for j in range(i):
                    assert not a.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
            title = ax.title.get_window_extent(renderer)
            assert edge.x0 <= title.x0 and title.x1 <= edge.x1, ax.title.get_text()
        sup = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
        assert edge.x0 <= sup.x0 and sup.x1 <= edge.x1
    pareto = chart_pareto(summaries, steps)
    _drawn(pareto)
    labels = [t.get_text() for t in pareto.axes[1].texts if t.get_visible()]
    merged = [t for t in labels if "h2o" in t]
    assert len(merged) == 1 and "streaming-llm" in merged[0] and "=" in merged[0], labels
    assert "llava" in labels
    # the note every Pareto panel shares is in the figure title, not in each panel's
    assert "Pareto front" in pareto.get_suptitle()
    assert not any("Pareto front" in ax.get_title() for ax in pareto.axes)


@pytest.mark.slow
def test_every_chart_from_a_real_run(tmp_path):
    """Records written by the real runner (tiny preset on the meta device: exact counts and FLOPs
    in about a second, no latency or memory), so a schema drift in the runner shows up here."""
    from dynbench.spec import RunSpec
    from dynbench.sweep import Sweep

    runner = Sweep(tmp_path / "run")
    for mode, gen in (("prefill", None), ("no-cache", 3), ("kv-cache", 3)):
        runner.run_point(RunSpec(method="llava", mode=mode, prompt_len=8, gen_len=gen, vision_keep=None,
                                 text_keep=None, text_policy=None, device="meta"))  # fmt: skip
        runner.run_point(RunSpec(method="dynamic-llava", mode=mode, prompt_len=8, gen_len=gen, vision_keep=0.2,
                                 text_keep=0.5 if gen else None, text_policy="budget" if gen else None,
                                 device="meta"))  # fmt: skip
    df = load_many([str(tmp_path / "run")])
    cmp = C.compare(df)
    assert len(cmp) == 6 and (cmp["status"] == "ok").all()
    dyn = cmp[(cmp["method"] == "dynamic-llava") & (cmp["mode"] == "prefill")].iloc[0]
    assert dyn["image_tokens_kept"] == 115 and dyn["tmacs_delta_pct"] < 0
    skipped: list[str] = []
    paths = plot_all(df, tmp_path / "figs", skipped=skipped)
    assert skipped == []
    _check_files(paths, CHARTS)
    assert "meta device" in (tmp_path / "figs" / "summary.svg").read_text()
