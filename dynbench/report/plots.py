"""Paper-style charts from result records (matplotlib, no pyplot state: each chart is a `Figure`).

`plot_all(df, out_dir)` writes every chart whose data is present as PNG and SVG, one set per
(model, device, dtype) in the records, and says why it skipped the others. A chart is one
function in `CHARTS` (name → function(summaries, steps) → Figure, or `Skip`): it takes its
panels from `report.plot_data` (pure, tested numerically), lays out only those that hold data
and draws them; a new chart is a new builder there and a function here.

Conventions: one colour per method everywhere (`COLORS`); variants of a method differ by marker
and line style, and a series identical to another is drawn dashed with hollow markers and named
in its panel's title; one label per series in every chart (`plot_data.series_label`); units on
every axis, chosen from the data; figure titles name model, device and dtype and say when
timings are CPU timings or counts come from the meta device. Nothing is smoothed or fitted.
"""

from __future__ import annotations

import io
import logging
import math
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dynbench.errors import DynbenchError
from dynbench.records import key_of
from dynbench.report import compare as C
from dynbench.report import plot_data as D
from dynbench.report import plot_panels as PP
from dynbench.report.plot_data import COLORS, Panel, Series, Skip, color  # noqa: F401 — chart API
from dynbench.report.roofline_chart import chart_roofline
from dynbench.safe_io import write_together

log = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
FORMATS = ("png", "svg")
# no creation date in the files: the same records give byte-identical charts (diffable in git)
METADATA = {"png": {}, "svg": {"Date": None}}
RC = {"svg.hashsalt": "dynbench", "svg.fonttype": "none"}  # stable SVG ids; text stays text
GROUP = ("model", "device", "dtype")  # one chart set per group: titles name these
TITLE_CHARS = 50  # a panel title wraps at about the width of its axes (10 pt text, 5 in panel)
PANEL_W, PANEL_H = 5.0, 3.5  # inches


def style(s: Series) -> dict[str, Any]:
    """Colour by method; marker by method and variant, so methods that coincide stay apart; line
    style by variant; a copy of another series dashed with hollow markers."""
    out = {"color": color(s.method), "marker": MARKERS[(C.method_rank(s.method)[0] + s.variant) % len(MARKERS)],
           "linestyle": LINESTYLES[s.variant % len(LINESTYLES)]}
    if s.same_as is not None:
        out.update(linestyle="--", markerfacecolor="none", markeredgewidth=1.4)
    return out


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.fill(line, width, break_on_hyphens=False) for line in text.split("\n"))


def _title(ax: Axes, panel: Panel) -> None:
    ax.set_title(_wrap("\n".join([panel.title, *panel.notes]), TITLE_CHARS), fontsize=10)


def _figure(title: str, rows: list[dict], latency: bool = True, memory: bool = True, note: str = "") -> Figure:
    """A figure titled with model, device, dtype and `title`, and the notes every panel shares."""
    first = rows[0] if rows else {}
    notes = D.figure_notes(rows, latency, memory) + ([note] if note else [])
    fig = Figure(layout="constrained")
    head = f"{first.get('model')} · {first.get('device')} · {first.get('dtype')} — {title}"
    fig.suptitle("\n".join([head, *(["; ".join(notes)] if notes else [])]), fontsize=11)
    return fig


def _grid(fig: Figure | SubFigure, n: int, cols: int | None = None, **kw: Any) -> list[Axes]:
    cols = cols or min(n, 3)
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False, **kw).ravel().tolist()
    for ax in axes[n:]:
        ax.remove()  # a grid cell without a panel: nothing is drawn there
    return axes[:n]


def _size(fig: Figure, cols: int, rows: float) -> None:
    width = max(PANEL_W * cols, 7.5)  # one panel: room for the figure title and the legend
    suptitle = _wrap(fig.get_suptitle(), int(width * 11))
    fig.suptitle(suptitle, fontsize=11)
    fig.set_size_inches(width, PANEL_H * rows + 0.5 + 0.2 * suptitle.count("\n"))


def _legend(fig: Figure, panels: Sequence[Panel]) -> None:
    """One legend for the figure: a label names the same series in every panel, drawn in its own
    style (a panel's copy of another series is told apart by its title's note)."""
    handles: dict[str, Any] = {}
    for panel in panels:
        for s in panel.series:
            if s.label in handles:
                continue
            st = style(replace(s, same_as=None))
            if panel.kind == "bars":
                handles[s.label] = Patch(color=st["color"])
            else:
                handles[s.label] = Line2D([], [], color=st["color"], marker=None if s.ref else st["marker"],
                                          linestyle="none" if panel.kind == "points" else st["linestyle"])
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4),
                   fontsize=9, frameon=False)


def _axes(ax: Axes, panel: Panel) -> None:
    _title(ax, panel)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.xlog:
        ax.set_xscale("log")
    if panel.xlim:
        ax.set_xlim(*panel.xlim)
    if panel.ylim:
        ax.set_ylim(*panel.ylim)
    ax.grid(alpha=0.3)


def _markevery(s: Series) -> Any:
    """Every point up to 24; beyond, about 12 markers evenly spaced in x (shifted for a copy)."""
    n = len(s.x)
    if n <= 24:
        return 1
    return (n // 24, n // 12) if s.same_as else n // 12


# ---------------------------------------------------------------------------------------------
# panel kinds


def _lines(ax: Axes, panel: Panel) -> None:
    """Lines y(x); a band as error bars (short series) or a shaded area; references as
    horizontal lines; Δ% beside each point, on the side away from the reference."""
    for s in panel.series:
        st = style(s)
        if s.ref:
            ax.axhline(s.y[0], color=st["color"], linestyle=st["linestyle"], linewidth=1.4, label=s.label)
            if s.band:
                ax.axhspan(*s.band[0], color=st["color"], alpha=0.12, linewidth=0)
            continue
        ax.plot(s.x, s.y, label=s.label, markevery=_markevery(s), markersize=6 if s.same_as else 5, **st)
        if s.band and len(s.x) <= 24:
            ax.errorbar(s.x, s.y, yerr=[[y - lo for y, (lo, _) in zip(s.y, s.band, strict=True)],
                                        [hi - y for y, (_, hi) in zip(s.y, s.band, strict=True)]],
                        fmt="none", ecolor=st["color"], alpha=0.6, capsize=2)
        elif s.band:
            ax.fill_between(s.x, *zip(*s.band, strict=True), color=st["color"], alpha=0.15, linewidth=0)
        for x, y, text in zip(s.x, s.y, () if s.same_as else s.texts or (), strict=False):
            if text:  # a Δ% ≥ 0 lies on or above llava's line: above the point, else below it
                up = not text.startswith("-")
                ax.annotate(text, (x, y), xytext=(4, 5 if up else -5), textcoords="offset points", ha="left",
                            va="bottom" if up else "top", fontsize=7.5, color="#333333")
    _axes(ax, panel)


def _bars(ax: Axes, panel: Panel) -> None:
    """One bar per series (a single generated length), p10–p90 as error bars, value on top."""
    for i, s in enumerate(panel.series):
        st = style(s)
        err = None if not s.band else [[s.y[0] - s.band[0][0]], [s.band[0][1] - s.y[0]]]
        ax.bar(i, s.y[0], width=0.7, color=st["color"], edgecolor="white", label=s.label, yerr=err,
               ecolor="#333333", capsize=3)
        top = s.band[0][1] if s.band else s.y[0]
        ax.annotate(f"{s.y[0]:.3g}", (i, top), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=8, color="#333333")
    ax.set_xticks([])
    ax.set_xlim(-0.6, len(panel.series) - 0.4)
    _axes(ax, panel)


def _points(ax: Axes, panel: Panel) -> None:
    """One marker per series and the Pareto front (lower-left is better)."""
    for s in panel.series:
        st = style(s)
        ax.plot(s.x, s.y, linestyle="none", marker=st["marker"], color=st["color"], markersize=13 if s.same_as else 8,
                markerfacecolor=st.get("markerfacecolor", st["color"]), markeredgewidth=1.6, label=s.label,
                zorder=2 if s.same_as else 3)
        if s.band:
            ax.errorbar(s.x, s.y, yerr=[[s.y[0] - s.band[0][0]], [s.band[0][1] - s.y[0]]], fmt="none",
                        ecolor=st["color"], alpha=0.6, capsize=3)
    if len(panel.front) > 1:
        ax.plot(*zip(*panel.front, strict=True), color="#555555", linestyle="--", linewidth=1,
                drawstyle="steps-post", label="_front", zorder=0)
    _axes(ax, panel)


def _dots(ax: Axes, panel: Panel, ticks: bool) -> None:
    """Δ% vs llava: a stem from llava's 0 to a dot per series, its value written past the dot."""
    ax.axvline(0, color=COLORS["llava"], linewidth=1.2, label="llava (0 %)")
    for s in panel.series:
        st = style(s)
        x, y = s.x[0], s.y[0]
        ax.hlines(y, 0, x, color=st["color"], linewidth=2.5, alpha=0.5)
        ax.plot([x], [y], linestyle="none", marker=st["marker"], color=st["color"], markersize=7,
                markerfacecolor=st.get("markerfacecolor", st["color"]))
        lo, hi = s.xband[0] if s.xband else (x, x)
        if s.xband:
            ax.errorbar([x], [y], xerr=[[x - lo], [hi - x]], fmt="none", ecolor="#333333", capsize=3, linewidth=1)
        right = x >= 0
        ax.annotate(s.texts[0], (hi if right else lo, y), xytext=(6 if right else -6, 0), textcoords="offset points",
                    ha="left" if right else "right", va="center", fontsize=8)
    ax.set_yticks(range(len(panel.ticks)), panel.ticks, fontsize=9)
    ax.tick_params(axis="y", labelleft=ticks)
    _axes(ax, panel)
    ax.grid(alpha=0.3, axis="x")
    ax.grid(False, axis="y")


def _layers(ax: Axes, panel: Panel) -> None:
    """Tokens per layer as steps, the drops marked once."""
    for s in panel.series:
        ax.plot(s.x, s.y, drawstyle="steps-mid", label=s.label, markersize=5, markevery=_markevery(s), **style(s))
    for x in panel.marks:
        ax.axvline(x, color="#555555", linestyle=":", linewidth=1)
    if panel.marks:
        layers = ", ".join(str(int(x + 0.5)) for x in panel.marks)
        ax.annotate(f"drop at the input\nof layer{'s' if len(panel.marks) > 1 else ''} {layers}",
                    (panel.marks[0], 0.03), xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", fontsize=8, color="#555555")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _axes(ax, panel)


def _strip(ax: Axes, panel: Panel) -> None:
    """One column per series: every value a dot (spread sideways by rank, no randomness), its
    p10–p90 as a bar and its median as a tick (samples of a dataset)."""
    for s in panel.series:
        st = style(s)
        x0, ys = s.x[0], list(s.y)  # in sample order
        n = len(ys)
        xs = [x0 + (0.28 * (k / (n - 1) - 0.5) if n > 1 else 0.0) for k in range(n)]
        ax.plot(xs, ys, linestyle="none", marker=st["marker"], color=st["color"], alpha=0.55, markersize=5,
                label=s.label)
        lo, mid, hi = (D.percentile(ys, q) for q in (10, 50, 90))
        ax.vlines(x0 + 0.22, lo, hi, color=st["color"], linewidth=3)
        ax.hlines(mid, x0 + 0.14, x0 + 0.30, color="#222222", linewidth=1.5)
    ax.set_xticks([s.x[0] for s in panel.series], [_wrap(s.label, 16) for s in panel.series], fontsize=8)
    ax.set_xlim(-0.6, len(panel.series) - 0.4)
    _axes(ax, panel)
    ax.grid(False, axis="x")


DRAW: dict[str, Callable[[Axes, Panel], None]] = {"lines": _lines, "bars": _bars, "points": _points,
                                                   "layers": _layers, "strip": _strip}


def _panels(fig: Figure, panels: list[Panel], cols: int | None = None, **kw: Any) -> list[Axes]:
    """Lay out exactly the panels given, draw each, one legend below."""
    D.share_styles(panels)
    axes = _grid(fig, len(panels), cols, **kw)
    for ax, panel in zip(axes, panels, strict=True):
        DRAW[panel.kind](ax, panel)
    cols = cols or min(len(panels), 3)
    _size(fig, cols, math.ceil(len(panels) / cols) + 0.25)
    _legend(fig, panels)
    return axes


# ---------------------------------------------------------------------------------------------
# charts: (summary rows, step rows) of one (model, device, dtype) → Figure


def _need(rows: list[dict], what: str) -> None:
    if not rows:
        raise Skip(f"no {what} rows")


def chart_prefill(summaries: list[dict], steps: list[dict]) -> Figure:
    """Prefill: paper-convention FLOPs, fvcore MACs and TTFT vs the vision keep (llava: a line)."""
    rows = [r for r in summaries if r.get("mode") == "prefill"]
    _need(rows, "prefill")
    panels = PP.prefill_panels(rows)
    if not panels:
        raise Skip("prefill rows hold no FLOPs or TTFT")
    noise = any(D.NOISE in t for p in panels for s in p.series for t in s.texts or ())
    fig = _figure("prefill", rows, memory=False,
                  note="Δ% vs llava beside each point" + (f" ({D.NOISE} = within noise)" if noise else ""))
    _panels(fig, panels)
    return fig


def chart_no_cache(summaries: list[dict], steps: list[dict]) -> Figure:
    """No cache (paper Figure 1 / Table 4): cumulative MACs, per-step and total time vs tokens."""
    rows = [r for r in summaries + steps if r.get("mode") == "no-cache"]
    _need(rows, "no-cache")
    panels = PP.no_cache_panels(summaries, steps)
    if not panels:
        raise Skip("no-cache rows hold no FLOPs or latency")
    fig = _figure("decoding without KV cache", rows, memory=False,
                  note="latency: median over runs, band p10–p90" if any(p.kind == "lines" and "ms" in p.ylabel
                                                                         for p in panels) else "")
    _panels(fig, panels)
    return fig


def chart_kv_cache(summaries: list[dict], steps: list[dict]) -> Figure:
    """KV cache: generated and total KV bytes per step, peak memory and TPOT vs generated length."""
    rows = [r for r in summaries + steps if r.get("mode") == "kv-cache"]
    _need(rows, "kv-cache")
    panels = PP.kv_cache_panels(summaries, steps)
    if not panels:
        raise Skip("kv-cache rows hold no KV bytes, memory or latency")
    fig = _figure("decoding with KV cache", rows)
    _panels(fig, panels, cols=2 if len(panels) == 4 else None)
    return fig


def chart_layers(summaries: list[dict], steps: list[dict]) -> Figure:
    """Tokens per decoder layer for each method: the drop at the sparse layer."""
    panels = PP.layer_panels(summaries)
    if not panels:
        raise Skip("no summary row holds layer_seq_lens / layer_cache_lens")
    fig = _figure("tokens per decoder layer", summaries, latency=False, memory=False)
    _panels(fig, panels)
    return fig


def chart_summary(summaries: list[dict], steps: list[dict]) -> Figure:
    """One page: each headline metric as Δ% vs llava at the largest point of each mode, one row
    of panels per mode, one dot per method variant with its value written beside it."""
    grid = PP.summary_panels(summaries)
    if not grid:
        raise Skip("no point has both llava and another method")
    latency = any(s.xband for _, row in grid for p in row for s in p.series)
    fig = _figure("change vs llava at the same point", summaries,
                  note="latency: bar = 95 % bootstrap CI, ~ = within noise" if latency else "")
    D.share_styles([p for _, row in grid for p in row])
    heights = [0.3 * len(row[0].ticks) + 1.3 for _, row in grid]
    cols = max(len(row) for _, row in grid)  # equal panel widths in every row
    subs = fig.subfigures(len(grid), 1, height_ratios=heights, squeeze=False).ravel()
    for sub, (where, row) in zip(subs, grid, strict=True):
        sub.suptitle(where, fontsize=10, fontweight="bold")
        for i, (ax, panel) in enumerate(zip(_grid(sub, len(row), cols, sharey=True), row, strict=True)):
            _dots(ax, panel, ticks=i == 0)
    fig.set_size_inches(cols * 4.2 + 2.4, sum(heights) + 0.9)
    fig.suptitle(_wrap(fig.get_suptitle(), int(fig.get_figwidth() * 11)), fontsize=11)
    return fig


def chart_pareto(summaries: list[dict], steps: list[dict]) -> Figure:
    """Trade-offs of every method: prefill compute vs TTFT, KV bytes vs TPOT, KV bytes vs MACs."""
    rows = [r for r in summaries if r.get("mode") in ("prefill", "kv-cache")]
    _need(rows, "prefill or kv-cache")
    panels = PP.pareto_panels(rows)
    if not panels:
        raise Skip("no row holds both axes of any Pareto panel")
    front = any(len(p.front) > 1 for p in panels)
    fig = _figure("Pareto: cost vs latency and memory", rows,
                  note="dashed: Pareto front, lower-left is better" if front
                  else "lower-left is better; Pareto front: one point beats every other")
    _panels(fig, panels)
    return fig


def chart_quality(summaries: list[dict], steps: list[dict]) -> Figure:
    """Cost–quality trade-off of dataset points: decoding FLOPs / generated KV vs PPL and METEOR,
    one marker per method × keep ratio, the Pareto front drawn."""
    rows = [r for r in summaries if r.get("ppl") is not None or r.get("meteor") is not None]
    _need(rows, "ppl or meteor")
    panels = PP.quality_pareto_panels(rows)
    if not panels:
        raise Skip("no dataset point holds both a cost and a quality figure")
    front = any(len(p.front) > 1 for p in panels)
    fig = _figure("Pareto: cost vs generation ability", rows, latency=False, memory=False,
                  note=("dashed: Pareto front; " if front else "")
                  + "PPL: lower-left is better, METEOR: upper-left; bars: p10–p90 over samples")
    _panels(fig, panels, cols=2)
    return fig


def chart_savings(summaries: list[dict], steps: list[dict]) -> Figure:
    """Savings vs llava while generating, per method: does prefill-only pruning (fastv, random)
    keep its saving once generated text fills the KV cache?"""
    rows = [r for r in steps if r.get("mode") in ("kv-cache", "no-cache")]
    _need(rows, "kv-cache or no-cache step")
    panels = PP.savings_panels(rows)
    if not panels:
        raise Skip("no step rows with a llava reference in the same context")
    fig = _figure("savings vs llava while generating", rows, latency=False, memory=False)
    for ax in _panels(fig, panels, sharex=True):
        ax.xaxis.set_tick_params(labelbottom=True)
    return fig


def chart_text_keep_samples(summaries: list[dict], samples: list[dict]) -> Figure:
    """Dataset points: the distribution over samples of the realized text keep, per method."""
    panels = PP.keep_distribution_panels(samples)
    if not panels:
        raise Skip("no dataset sample rows with a realized text keep (run --dataset in a decode mode)")
    fig = _figure("realized text keep over the samples of a dataset", samples, latency=False, memory=False)
    _panels(fig, panels)
    return fig


CHARTS: dict[str, Callable[[list[dict], list[dict]], Figure]] = {
    "prefill": chart_prefill,
    "no_cache": chart_no_cache,
    "kv_cache": chart_kv_cache,
    "layer_tokens": chart_layers,
    "summary": chart_summary,
    "pareto": chart_pareto,
    "quality": chart_quality,
    "savings": chart_savings,
    "roofline": chart_roofline,  # report/roofline_chart.py: bounds on a GPU spec (--gpu)
    "text_keep_samples": chart_text_keep_samples,
}
SAMPLE_CHARTS = {"text_keep_samples"}  # these get the sample rows (`compare.sample_rows`), not step rows


# ---------------------------------------------------------------------------------------------
# entry point


def _slug(*parts: Any) -> str:
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in str(p)) for p in parts)


def plot_all(df: pd.DataFrame, out_dir: str | os.PathLike, *, skipped: list[str] | None = None,
             charts: Sequence[str] | None = None) -> list[Path]:
    """Write every chart with data as PNG and SVG under `out_dir`; return the files written. They
    are rendered first and written together at the end (`safe_io.write_together`): a full disk
    leaves none of them rather than a chart set cut short.

    `charts`: names from CHARTS to draw (default: all).
    One chart set per (model, device, dtype): file names are `<chart>.png` when the records
    hold one such group, `<chart>_<model>_<device>_<dtype>.png` otherwise. A chart whose data
    is absent is skipped, never an error: the reason is logged and appended to `skipped`.
    """
    unknown = sorted(set(charts or ()) - set(CHARTS))
    if unknown:
        raise DynbenchError(f"unknown chart {', '.join(unknown)}; choose from {', '.join(CHARTS)}")
    selected = {name: CHARTS[name] for name in (charts or CHARTS)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries, steps, samples = C.summary_rows(df), C.step_rows(df), C.sample_rows(df)
    groups = sorted({key_of(r, GROUP) for r in summaries + steps}, key=lambda k: tuple(map(str, k)))
    written: dict[Path, bytes] = {}
    for group in groups:
        g_sum = [r for r in summaries if key_of(r, GROUP) == group]
        g_steps = [r for r in steps if key_of(r, GROUP) == group]
        g_samples = [r for r in samples if key_of(r, GROUP) == group]
        suffix = "" if len(groups) == 1 else "_" + _slug(*group)
        for name, chart in selected.items():
            try:
                fig = chart(g_sum, g_samples if name in SAMPLE_CHARTS else g_steps)
            except Skip as why:
                reason = f"{name}{suffix}: {why}"
                log.info("skipped chart %s", reason)
                if skipped is not None:
                    skipped.append(reason)
                continue
            with matplotlib.rc_context(RC):
                for ext in FORMATS:
                    buf = io.BytesIO()
                    fig.savefig(buf, format=ext, dpi=120 if ext == "png" else None, metadata=METADATA[ext])
                    written[out / f"{name}{suffix}.{ext}"] = buf.getvalue()
                    # the layout is in figure fractions, the same for every format: solve it once
                    # (constrained layout is most of the drawing time)
                    fig.set_layout_engine("none")
    if not groups and skipped is not None:
        skipped.append("all charts: the records hold no rows")
    write_together(written)
    return list(written)


__all__ = ["CHARTS", "COLORS", "Skip", "color", "plot_all", "style"]
