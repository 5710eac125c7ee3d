"""Paper-style charts from result records (matplotlib, no pyplot state: each chart is a `Figure`).

`plot_all(df, out_dir)` writes every chart whose data is present as PNG and SVG, one set per
(model, device, dtype) in the records, and says why it skipped the others. Each chart is one
function in `CHARTS` (name → function(summaries, steps) → Figure, or `Skip`); a new chart is a
new function there.

Conventions: one colour per method everywhere (`COLORS`); variants of a method (keep ratios,
prompt lengths) differ by marker and line style; units on every axis; titles name model,
device and dtype and say when timings are CPU timings (`timer` == "cpu", perf_counter) or counts
come from the meta device (no latency or memory exists there). What is plotted is what the
records hold: nothing is smoothed, fitted or interpolated.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Annotation, Text
from matplotlib.textpath import TextToPath
from matplotlib.transforms import Bbox

from dynbench.errors import DynbenchError
from dynbench.names import BASELINE
from dynbench.records import COMPARISON_KEY, key_of
from dynbench.report import compare as C
from dynbench.report.tables import keeps_label

log = logging.getLogger(__name__)

# one colour per method in every chart (Okabe–Ito, colour-blind safe)
COLORS = {
    "llava": "#0072B2",  # blue
    "dynamic-llava": "#D55E00",  # vermillion
    "random": "#7F7F7F",  # grey
    "fastv": "#009E73",  # green
    "h2o": "#CC79A7",  # purple
    "streaming-llm": "#E69F00",  # orange
}
EXTRA_COLORS = ("#56B4E9", "#F0E442", "#000000")  # methods not listed above, by name
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
FORMATS = ("png", "svg")
# no creation date in the files: the same records give byte-identical charts (diffable in git)
METADATA = {"png": {}, "svg": {"Date": None}}
RC = {"svg.hashsalt": "dynbench", "svg.fonttype": "none"}  # stable SVG ids; text stays text
GROUP = ("model", "device", "dtype")  # one chart set per group: titles name these
# fields that tell two series of the same method apart (shown in the label when they vary)
VARIANT = ("vision_keep", "text_keep", "text_policy", "fastv_k", "fastv_r", "kv_budget", "match_budget")
BASELINE_PARAMS = ("fastv_k", "fastv_r", "kv_budget", "match_budget")  # not plotted on an axis
CONTEXT = ("prompt_len", "gen_len", "batch", "attn", "reuse_vision", "env_id")
CONTEXT_LABEL = {"prompt_len": "prompt", "gen_len": "gen", "batch": "batch", "attn": "",
                 "reuse_vision": "reuse vision", "env_id": "env"}  # fmt: skip


class Skip(Exception):
    """A chart's data is absent; the message says what is missing."""


def color(method: str | None) -> str:
    if method in COLORS:
        return COLORS[method]
    return EXTRA_COLORS[sum(map(ord, method or "")) % len(EXTRA_COLORS)]


# ---------------------------------------------------------------------------------------------
# series: rows of one method variant in one context, styled consistently inside a figure


def _label(key: dict, varying: Sequence[str], envs: dict) -> str:
    method = key.get("method") or "?"
    parts = [method]
    if method != BASELINE and any(key.get(f) is not None for f in VARIANT):
        parts[0] += " " + keeps_label(key) + (" imposed" if key.get("text_policy") == "budget"
                                           and key.get("text_keep") is not None else "")  # fmt: skip
    for f in varying:
        v = key.get(f)
        if v is None:
            continue
        if f == "env_id":
            parts.append(f"env {envs.get(v, v)}")
        elif f == "reuse_vision":
            parts.append("reuse vision" if v else "vision every step")
        else:
            parts.append(f"{CONTEXT_LABEL[f]} {v}".strip())
    return " · ".join(parts)


class Styles:
    """Marker / line style per series key; colour by method. Shared by the panels of a figure."""

    def __init__(self, rows: Iterable[dict], fields: Sequence[str]):
        rows = list(rows)
        self.fields = tuple(fields)
        self.varying = [f for f in CONTEXT if f in fields and len({str(r.get(f)) for r in rows}) > 1]
        self.envs = C.env_labels(r.get("env_id") for r in rows)
        keys = sorted({self.key(r) for r in rows}, key=lambda k: (
            C.method_rank(k[0]), tuple(C.none_last(v) if not isinstance(v, str) else (False, v)
                                       for v in k[1:])))  # fmt: skip
        self.order = keys
        per_method: dict[Any, int] = {}
        self.index = {}
        for k in keys:
            self.index[k] = per_method.get(k[0], 0)
            per_method[k[0]] = self.index[k] + 1

    def key(self, row: dict) -> tuple:
        return tuple(row.get(f) for f in ("method", *self.fields))

    def style(self, key: tuple) -> dict:
        """Colour by method; marker by method and variant (methods that coincide stay visible);
        line style by variant."""
        i = self.index.get(key, 0)
        m = C.method_rank(key[0])[0]
        return {"color": color(key[0]), "marker": MARKERS[(m + i) % len(MARKERS)],
                "linestyle": LINESTYLES[i % len(LINESTYLES)]}  # fmt: skip

    def label(self, key: tuple) -> str:
        return _label(dict(zip(("method", *self.fields), key, strict=True)), self.varying, self.envs)

    def groups(self, rows: Iterable[dict]) -> list[tuple[tuple, list[dict]]]:
        by: dict[tuple, list[dict]] = {}
        for r in rows:
            by.setdefault(self.key(r), []).append(r)
        return [(k, by[k]) for k in self.order if k in by]


# ---------------------------------------------------------------------------------------------
# axes helpers


def _span_log(ax: Axes, axis: str, values: Iterable[float | None]) -> None:
    """Log scale where positive values span two decades or more; linear y axes start at 0 (every
    quantity plotted is an absolute amount, so a cut axis would exaggerate differences)."""
    vals = [v for v in values if v is not None and v > 0]
    if vals and max(vals) / min(vals) >= 100:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    elif axis == "y":
        ax.set_ylim(bottom=0)


def _bytes_unit(values: Iterable[float | None]) -> tuple[float, str]:
    vals = [abs(v) for v in values if v is not None]
    if vals and max(vals) >= 2**30:
        return 2**30, "GiB"
    if vals and max(vals) < 2**20:
        return 2**10, "KiB"
    return 2**20, "MiB"


def _ms_unit(values: Iterable[float | None]) -> tuple[float, str]:
    vals = [abs(v) for v in values if v is not None]
    return (1000.0, "s") if vals and max(vals) >= 10_000 else (1.0, "ms")


def _empty(ax: Axes, title: str, why: str) -> None:
    _title(ax, title)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9,
            color="#555555", wrap=True)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _why_missing(rows: list[dict], metric: str) -> str:
    if rows and all(r.get("device") == "meta" for r in rows):
        return "not measured:\nmeta device (counts only)"
    if rows and all(r.get("status") not in (None, "ok") for r in rows):
        return "no ok rows (" + ", ".join(sorted({str(r.get("status"))[:20] for r in rows})) + ")"
    return f"no {metric} in the records"


def _markevery(n: int) -> int | float:
    """Every point up to 24; beyond, markers evenly spaced along the drawn line (log axes too)."""
    return 1 if n <= 24 else 0.08


def _cpu_note(rows: Iterable[dict]) -> str:
    return " (CPU timer)" if any(r.get("timer") == "cpu" for r in rows) else ""



# ---------------------------------------------------------------------------------------------
# text that fits: titles wrapped to their panel, point labels that never overlap

TITLE_SIZE = 10  # panel titles (points)
SUPTITLE_SIZE = 11
# share of a panel's column that its axes get (tick labels and the y label take the rest): a
# panel title wider than its axes is not made room for by the layout, so it is wrapped to this
PANEL_SHARE = 0.78
_TEXT_PATH = TextToPath()


def _text_width(text: str, size: float) -> float:
    """Width in points of one line of `text` in the default font."""
    return _TEXT_PATH.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0]


def _fill(pieces: list[str], width: float, size: float) -> list[str]:
    """Pieces joined by spaces into lines no wider than `width` points, greedily."""
    lines, cur = [], ""
    for piece in pieces:
        trial = f"{cur} {piece}" if cur else piece
        if cur and _text_width(trial, size) > width:
            lines.append(cur)
            cur = piece
        else:
            cur = trial
    return [*lines, cur]


def _wrap(text: str, width: float, size: float) -> str:
    """`text` with each line broken so that no line is wider than `width` points: after "; "
    where it can, else at spaces (a single word wider than that stays whole)."""
    out = []
    for line in text.split("\n"):
        clauses = line.split("; ")
        clauses = [c + ";" for c in clauses[:-1]] + clauses[-1:]
        for clause in _fill(clauses, width, size):  # whole clauses on a line where they fit
            out += _fill(clause.split(" "), width, size) if _text_width(clause, size) > width else [clause]
    return "\n".join(out).replace(" \n", "\n")


def _panel_width(ax: Axes) -> float:
    """Width in points that the axes of a panel get, about (the layout is solved at draw time)."""
    spec = ax.get_subplotspec()
    cols = spec.get_gridspec().ncols if spec is not None else 1
    return ax.get_figure().get_figwidth() * 72 / cols * PANEL_SHARE


def _title(ax: Axes, text: str) -> None:
    """Panel title wrapped to the panel's width: a long one would run past the figure edge."""
    ax.set_title(_wrap(text, _panel_width(ax), TITLE_SIZE), fontsize=TITLE_SIZE)


class _Labels(Artist):
    """Labels of the points of one panel, placed when the figure is drawn: the layout has then
    fixed the axes, so sizes and distances are exact in display coordinates.

    Points whose markers overlap (closer than half a marker) get one label: their texts, each
    once, joined by `sep` ("h2o KV 0.2 = streaming-llm KV 0.2"; one text a line when that would
    be wide). Each label then takes the first spot, in a fixed order, that overlaps no label or
    leader line placed before it, no marker, and stays inside the axes: beside the point (right,
    then left; above, then below, or below first), then stacked further up or down with a thin
    leader line to its point. No spot free: the one with the least overlap. Deterministic: the
    same points give the same placement.

    `pitch` (bar values, data units along y): labels at the end of horizontal bars `pitch` apart,
    moved right along their row; their font shrinks to the bar pitch, and no values are written
    when the bars are too thin for a readable font.
    """

    MIN_SIZE = 5.0  # points: smaller bar values are not written at all

    def __init__(self, ax: Axes, *, marker: float = 0.0, sep: str = " = ", below: bool = False,
                 pitch: float | None = None, **text_kw: Any):  # fmt: skip
        super().__init__()
        self.ax, self.marker, self.sep, self.below, self.pitch = ax, marker, sep, below, pitch
        self.text_kw = {"fontsize": 7, **text_kw}
        self.items: list[tuple[tuple[float, float], str, Annotation]] = []
        self.set_zorder(-1e6)  # the axes draw their children by zorder: this one before the labels
        self.set_in_layout(False)
        ax.add_artist(self)

    def add(self, xy: tuple[float, float], text: str) -> None:
        ann = self.ax.annotate(text, xy, xytext=(0, 0), textcoords="offset points",
                               arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.6,
                                           "shrinkA": 1, "shrinkB": self.marker / 2 + 1},
                               **self.text_kw)  # fmt: skip
        ann.set_in_layout(False)  # placed at draw time: never moves the layout
        ann.arrow_patch.set_visible(False)
        self.items.append((xy, text, ann))

    def _spots(self, height: float, width: float):
        """(dx, dy in points, ha, va, leader line) in order of preference."""
        if self.pitch is not None:
            for k in range(8):
                yield 3 + k * (width + 4), 0.0, "left", "center", False
            return
        gap_x, gap_y = self.marker / 2 + 2, 2.0
        for k in range(8):
            for sx in (1, -1):
                for sy in (-1, 1) if self.below else (1, -1):
                    yield (sx * gap_x, sy * (gap_y + k * (height + 1)), "left" if sx > 0 else "right",
                           "bottom" if sy > 0 else "top", k > 0)  # fmt: skip

    @staticmethod
    def _overlap(a: Bbox, b: Bbox) -> float:
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        return w * h if w > 0 and h > 0 else 0.0

    @staticmethod
    def _crossings(p: tuple[float, float], box: Bbox, boxes: list[Bbox]) -> int:
        """Samples of the leader line from point `p` to the centre of `box` inside `boxes`."""
        q = box.x0 + box.width / 2, box.y0 + box.height / 2
        samples = [(p[0] + (q[0] - p[0]) * t / 16, p[1] + (q[1] - p[1]) * t / 16) for t in range(2, 15)]
        return sum(b.contains(x, y) for x, y in samples for b in boxes if not box.contains(x, y))

    def _fit_font(self, px: float) -> bool:
        """Bar values: the font that fits the bar pitch; False when too small to be read."""
        if self.pitch is None:
            return True
        y0 = self.ax.transData.transform((0, 0))[1]
        pitch = abs(self.ax.transData.transform((0, self.pitch))[1] - y0) / px
        size = min(self.text_kw["fontsize"], pitch / 1.25)  # a line of text is about 1.2 font sizes tall
        for _, _, ann in self.items:
            ann.set_fontsize(size)
            ann.set_visible(size >= self.MIN_SIZE)
        return size >= self.MIN_SIZE

    def draw(self, renderer) -> None:
        if not self.items:
            return
        px = renderer.points_to_pixels(1.0)
        if not self._fit_font(px):
            return
        frame = self.ax.bbox
        at = [tuple(self.ax.transData.transform(xy)) for xy, _, _ in self.items]
        groups: list[list[int]] = []
        for i, p in enumerate(at):
            near = next((g for g in groups if self.marker and math.dist(at[g[0]], p) < self.marker * px / 2), None)
            if near is None:
                groups.append([i])
            else:
                near.append(i)
        r = self.marker * px / 2
        taken = [Bbox.from_extents(x - r, y - r, x + r, y + r) for x, y in at] if r else []
        leaders: list[tuple[tuple[float, float], Bbox]] = []
        for g in groups:
            texts = list(dict.fromkeys(self.items[g_i][1] for g_i in g))
            label = self.sep.join(texts)
            size = self.items[g[0]][2].get_fontsize()
            if len(texts) > 1 and ("\n" in label or _text_width(label, size) * px > frame.width / 2):
                label = ("\n" + self.sep.lstrip()).join(texts)  # one text a line
            ann = self.items[g[0]][2]
            ann.set_text(label)
            ann.set_visible(True)
            for i in g[1:]:
                self.items[i][2].set_visible(False)
            ann.xyann = (0, 0)
            ann.update_positions(renderer)
            extent = Text.get_window_extent(ann, renderer)
            best = None
            for dx, dy, ha, va, lead in self._spots(extent.height / px, extent.width / px):
                ann.xyann = (dx, dy)
                ann.set_horizontalalignment(ha)
                ann.set_verticalalignment(va)
                ann.update_positions(renderer)
                box = Text.get_window_extent(ann, renderer).padded(px / 2)  # a point of air around it
                cost = sum(self._overlap(box, t) for t in taken)
                cost += box.width * box.height - self._overlap(box, frame)  # outside the axes
                cost += sum(self._crossings(p, b, [box]) for p, b in leaders) * 20 * px * px
                if lead:
                    cost += self._crossings(at[g[0]], box, taken) * 20 * px * px
                if best is None or cost < best[0]:
                    best = (cost, dx, dy, ha, va, lead, box)
                if cost == 0:
                    break
            _, dx, dy, ha, va, lead, box = best
            ann.xyann = (dx, dy)
            ann.set_horizontalalignment(ha)
            ann.set_verticalalignment(va)
            ann.arrow_patch.set_visible(lead)
            taken.append(box)
            if lead:
                leaders.append((at[g[0]], box))


def _figure(panels: int, title: str, rows: list[dict], cols: int | None = None,
            shows: tuple[str, ...] = ("latency", "memory"), note: str = "") -> tuple[Figure, list[Axes]]:
    """A titled figure of `panels` axes; the subtitle flags CPU timings, meta counts, mixed envs
    and holds `note`, what every panel would otherwise repeat in its own title."""
    cols = cols or min(panels, 3)
    nrows = math.ceil(panels / cols)
    fig = Figure(figsize=(5.2 * cols, 3.9 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    first = rows[0] if rows else {}
    head = f"{first.get('model')} · {first.get('device')} · {first.get('dtype')} — {title}"
    notes = []
    if "latency" in shows and any(r.get("timer") == "cpu" for r in rows):
        notes.append("CPU timings (perf_counter, not GPU latency)")
    if any(r.get("device") == "meta" for r in rows):
        notes.append("meta device: shape-only counts, no latency or memory measured")
    if "memory" in shows and any(r.get("mem_source") == "rss_sampled_approx" for r in rows):
        notes.append("memory = sampled process RSS (approx.)")
    if len({r.get("env_id") for r in rows}) > 1:
        notes.append(f"rows from {len({r.get('env_id') for r in rows})} environments")
    if any(C.imposed(r) for r in rows):
        notes.append("text keep imposed (budget policy)")
    if note:
        notes.append(note)
    text = head + ("\n" + "; ".join(notes) if notes else "")
    fig.suptitle(_wrap(text, fig.get_figwidth() * 72 * 0.95, SUPTITLE_SIZE), fontsize=SUPTITLE_SIZE)
    return fig, axes[:panels]


def _legend(fig: Figure, axes: Sequence[Axes]) -> None:
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if not lab.startswith("_"):
                seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center",
                   ncols=min(len(seen), 3), fontsize=9, frameon=False)  # fmt: skip


def _axes_legend(ax: Axes) -> None:
    """A legend inside one panel, where its entries differ from the other panels'."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)


def _ok(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if r.get("status") in (None, "ok")]


# ---------------------------------------------------------------------------------------------
# panels


def _panel_vs_keep(ax: Axes, rows: list[dict], metric: str, ylabel: str, title: str, styles: Styles,
                   scale: float = 1.0) -> bool:
    """metric vs vision keep ratio; methods without a keep ratio (llava) as horizontal lines."""
    have = [r for r in _ok(rows) if r.get(metric) is not None]
    if not have:
        _empty(ax, title, _why_missing(rows, metric))
        return False
    refs, lines = [], []
    for key, group in styles.groups(have):
        st = styles.style(key)
        pts = sorted((r["vision_keep"], r[metric] / scale) for r in group if r.get("vision_keep") is not None)
        flat = [r[metric] / scale for r in group if r.get("vision_keep") is None]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=styles.label(key), **st)
        for y in flat[-1:]:  # a reference line: the row has no keep ratio
            ax.axhline(y, color=st["color"], linestyle=st["linestyle"], linewidth=1.4,
                       label=styles.label(key) + (" (no drop)" if key[0] == BASELINE else ""))  # fmt: skip
            refs.append(y)
        lines.extend(pts)
    if len(refs) == 1 and refs[0]:  # one baseline: label each point with its change
        labels = _Labels(ax, marker=matplotlib.rcParams["lines.markersize"], sep=" / ", below=True, fontsize=8)
        for x, y in lines:
            labels.add((x, y), f"{(y - refs[0]) / refs[0] * 100:+.0f}%")
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("vision keep ratio")
    ax.set_ylabel(ylabel)
    _title(ax, title)
    _span_log(ax, "y", [r[metric] for r in have])
    if ax.get_yscale() == "linear":  # headroom above the reference line
        ax.set_ylim(0, max(r[metric] / scale for r in have) * 1.1)
    ax.grid(alpha=0.3)
    return True


def _panel_series(ax: Axes, series: list[tuple[tuple, list[float], list[float]]], styles: Styles,
                  xlabel: str, ylabel: str, title: str, why: str, errors: dict | None = None,
                  sweep: bool = False) -> bool:
    """Lines y(x), one per series; empty panel with the reason when there is nothing.

    `sweep`: x are the generated lengths of separate points (log x when they span decades);
    otherwise x are the steps of one generation, drawn on a linear axis as the paper does.
    """
    series = [(k, x, y) for k, x, y in series if x]
    if not series:
        _empty(ax, title, why)
        return False
    tops = [v for _, _, y in series for v in y]
    if sweep and len({v for _, x, _ in series for v in x}) == 1:  # one length: bars, not dots
        _bars(ax, series, styles, errors)
        ax.set_xlabel(f"{xlabel.split(' (')[0]} = {series[0][1][0]}")
    else:
        for key, x, y in series:
            st = styles.style(key)
            ax.plot(x, y, label=styles.label(key), markevery=_markevery(len(x)), markersize=5, **st)
            if errors and key in errors:  # p90 above the median
                lo, hi = errors[key]
                ax.errorbar(x, y, yerr=[lo, hi], fmt="none", ecolor=st["color"], alpha=0.5, capsize=2)
        ax.set_xlabel(xlabel)
        if sweep:
            _span_log(ax, "x", [v for _, x, _ in series for v in x])
    if errors:
        tops += [y + hi for k, _, ys in series if k in errors for y, hi in zip(ys, errors[k][1], strict=True)]
    # linear from 0 (cumulative and per-step amounts: differences stay honest), with headroom
    ax.set_ylim(0, max(tops) * 1.1 if tops and max(tops) > 0 else 1)
    ax.set_ylabel(ylabel)
    _title(ax, title)
    ax.grid(alpha=0.3)
    return True


HATCHES = ("", "//", "..", "xx", "\\\\", "++")


def _bars(ax: Axes, series: list[tuple[tuple, list[float], list[float]]], styles: Styles,
          errors: dict | None) -> None:
    """One bar per series (a single generated length), value printed on top."""
    top = max(y[0] for _, _, y in series)
    bar = 0.7 * _panel_width(ax) / (len(series) + 0.2)  # points, about
    for i, (key, _, y) in enumerate(series):
        st = styles.style(key)
        yerr = [[0.0], [errors[key][1][0]]] if errors and key in errors else None
        ax.bar(i, y[0], width=0.7, color=st["color"], hatch=HATCHES[styles.index.get(key, 0) % len(HATCHES)],
               edgecolor="white", label=styles.label(key), yerr=yerr, ecolor="#333333", capsize=3)
        inside = y[0] > 0.2 * top  # the value inside a tall bar, clear of its p90 whisker
        text = f"{y[0]:.3g}"
        sideways = _text_width(text, 8) > 0.9 * bar  # wider than its bar: it would run into the next one
        whisker = yerr[1][0] if yerr else 0.0  # a short bar's value goes above its p90 whisker
        ax.annotate(text, (i - 0.3, y[0] * 0.97) if inside else (i, y[0] + whisker), xytext=(0, 0 if inside else 2),
                    textcoords="offset points", ha="left" if inside else "center", va="top" if inside else "bottom",
                    fontsize=8, color="white" if inside else "#333333", rotation=90 if sideways else 0)  # fmt: skip
    ax.set_xticks([])
    ax.set_xlim(-0.6, len(series) - 0.4)


def _longest(rows: list[dict], styles: Styles) -> dict[tuple, list[dict]]:
    """Per series, the step rows of its longest generation (shorter ones are prefixes of it)."""
    out = {}
    for key, group in styles.groups(rows):
        points: dict[tuple, list[dict]] = {}
        for r in group:
            points.setdefault(key_of(r, C.SHOWN_POINT), []).append(r)
        best = max(points.values(), key=lambda rs: (rs[0].get("gen_len") or 0, len(rs)))
        out[key] = sorted(best, key=lambda r: r["step"])
    return out


def _step_series(steps: dict[tuple, list[dict]], metric: str, cumulative: bool, scale: float = 1.0):
    series = []
    for key, rows in steps.items():
        pts = [(r["step"] + 1, r[metric]) for r in rows if r.get(metric) is not None]
        if len(pts) != len(rows):  # a gap would make a cumulative sum lie
            pts = pts if not cumulative else []
        x = [p[0] for p in pts]
        y, total = [], 0.0
        for _, v in pts:
            total = total + v if cumulative else v
            y.append(total / scale)
        series.append((key, x, y))
    return series


def _summary_series(rows: list[dict], styles: Styles, metric: str, scale: float = 1.0):
    series = []
    for key, group in styles.groups(_ok(rows)):
        pts = sorted((r["gen_len"], r[metric] / scale) for r in group
                     if r.get(metric) is not None and r.get("gen_len") is not None)  # fmt: skip
        series.append((key, [p[0] for p in pts], [p[1] for p in pts]))
    return series


# ---------------------------------------------------------------------------------------------
# charts: (summary rows, step rows) of one (model, device, dtype) → Figure


def chart_prefill(summaries: list[dict], steps: list[dict]) -> Figure:
    """Prefill: paper TFLOPs, fvcore TMACs and TTFT vs vision keep ratio (llava: a reference line)."""
    rows = [r for r in summaries if r.get("mode") == "prefill"]
    if not rows:
        raise Skip("no prefill rows")
    styles = Styles(rows, ("text_keep", "text_policy", *BASELINE_PARAMS, "prompt_len", "batch", "attn", "env_id"))
    fig, axes = _figure(3, "prefill", rows, shows=("latency",))
    drawn = [
        _panel_vs_keep(axes[0], rows, "tflops_paper", "TFLOPs (paper convention, 2×MAC)",
                       "compute, paper convention (image tokens)", styles),
        _panel_vs_keep(axes[1], rows, "tmacs", "T multiply-adds (fvcore)",
                       "compute, measured (whole forward)", styles),
        _panel_vs_keep(axes[2], rows, "ttft_ms", "time to first token (ms)",
                       "TTFT" + _cpu_note(rows), styles),
    ]  # fmt: skip
    if not any(drawn):
        raise Skip("prefill rows hold no FLOPs or TTFT")
    _legend(fig, axes)
    return fig


def _decode_styles(rows: list[dict]) -> Styles:
    """Series of decode charts: method variant × context, all generated lengths in one series."""
    return Styles(rows, (*VARIANT, "prompt_len", "batch", "attn", "reuse_vision", "env_id"))


def chart_no_cache(summaries: list[dict], steps: list[dict]) -> Figure:
    """No cache (paper Figure 1 / Table 4): cumulative compute, per-step and total time vs tokens."""
    rows = [r for r in summaries if r.get("mode") == "no-cache"]
    srows = [r for r in steps if r.get("mode") == "no-cache"]
    if not rows and not srows:
        raise Skip("no no-cache rows")
    styles = _decode_styles(rows + srows)
    fig, axes = _figure(3, "decoding without KV cache", rows + srows, shows=("latency",))
    x_label = "tokens generated"
    if srows:
        longest = _longest(srows, styles)
        ms = [r.get("step_ms") for rs in longest.values() for r in rs]
        scale, unit = _ms_unit([sum(v for v in ms if v is not None)])
        drawn = [
            _panel_series(axes[0], _step_series(longest, "tmacs", True), styles, x_label,
                          "cumulative T multiply-adds (fvcore)", "cumulative compute",
                          _why_missing(srows, "step tmacs")),
            _panel_series(axes[1], _step_series(longest, "step_ms", False), styles, x_label,
                          "step latency (ms)", "per-step latency" + _cpu_note(rows + srows),
                          _why_missing(srows, "step_ms")),
            _panel_series(axes[2], _step_series(longest, "step_ms", True, scale), styles, x_label,
                          f"cumulative time ({unit})", "total time" + _cpu_note(rows + srows),
                          _why_missing(srows, "step_ms")),
        ]  # fmt: skip
    else:  # summaries only: one point per generated length
        scale, unit = _ms_unit([r.get("total_ms") for r in rows])
        drawn = [
            _panel_series(axes[0], _summary_series(rows, styles, "tmacs"), styles, "generated length (tokens)",
                          "T multiply-adds (fvcore, all steps)", "total compute", _why_missing(rows, "tmacs"),
                          sweep=True),
            _panel_series(axes[1], _summary_series(rows, styles, "step_ms_median"), styles,
                          "generated length (tokens)", "median step latency (ms)",
                          "per-step latency" + _cpu_note(rows), _why_missing(rows, "step_ms_median"), sweep=True),
            _panel_series(axes[2], _summary_series(rows, styles, "total_ms", scale), styles,
                          "generated length (tokens)", f"total time ({unit})", "total time" + _cpu_note(rows),
                          _why_missing(rows, "total_ms"), sweep=True),
        ]  # fmt: skip
    if not any(drawn):
        raise Skip("no-cache rows hold no FLOPs or latency")
    _legend(fig, axes)
    return fig


def _kv_total(rows: list[dict]) -> list[dict]:
    """Rows with `kv_total` = prompt + generated KV bytes (`kv_bytes` where recorded)."""
    out = []
    for r in rows:
        p, g = r.get("kv_bytes_prompt"), r.get("kv_bytes_generated")
        total = r.get("kv_bytes") if r.get("kv_bytes") is not None else (
            p + g if p is not None and g is not None else None)
        out.append({**r, "kv_total": total})
    return out


def chart_kv_cache(summaries: list[dict], steps: list[dict]) -> Figure:
    """KV cache: generated and total KV bytes (per step), peak memory and TPOT vs generated length."""
    rows = [r for r in summaries if r.get("mode") == "kv-cache"]
    srows = [r for r in steps if r.get("mode") == "kv-cache"]
    if not rows and not srows:
        raise Skip("no kv-cache rows")
    styles = _decode_styles(rows + srows)
    fig, axes = _figure(4, "decoding with KV cache", rows + srows, cols=2)
    x_label = "tokens generated" if srows else "generated length (tokens)"
    longest = {k: _kv_total(rs) for k, rs in _longest(srows, styles).items()} if srows else {}
    summary_kv = _kv_total(rows)

    def kv(metric: str):
        """Per step of the longest generation; from summary rows per generated length if no steps."""
        if srows:
            scale, unit = _bytes_unit([r.get(metric) for rs in longest.values() for r in rs])
            return _step_series(longest, metric, False, scale), unit
        scale, unit = _bytes_unit([r.get(metric) for r in summary_kv])
        return _summary_series(summary_kv, styles, metric, scale), unit

    gen, gen_unit = kv("kv_bytes_generated")
    tot, tot_unit = kv("kv_total")
    mscale, munit = _bytes_unit([r.get("peak_mem_bytes") for r in rows])
    tpot = _summary_series(rows, styles, "tpot_ms_median")
    p90 = {}
    for key, group in styles.groups(_ok(rows)):
        pts = sorted((r["gen_len"], r["tpot_ms_median"], r.get("tpot_ms_p90")) for r in group
                     if r.get("tpot_ms_median") is not None and r.get("gen_len") is not None)  # fmt: skip
        if pts and all(p[2] is not None for p in pts):
            p90[key] = ([0.0] * len(pts), [p[2] - p[1] for p in pts])
    drawn = [
        _panel_series(axes[0], gen, styles, x_label, f"KV cache, generated tokens ({gen_unit})",
                      "KV bytes of generated tokens", _why_missing(rows + srows, "kv_bytes_generated"),
                      sweep=not srows),
        _panel_series(axes[1], tot, styles, x_label, f"KV cache, prompt + generated ({tot_unit})",
                      "total KV bytes", _why_missing(rows + srows, "kv_bytes"), sweep=not srows),
        _panel_series(axes[2], _summary_series(rows, styles, "peak_mem_bytes", mscale), styles,
                      "generated length (tokens)", f"peak memory ({munit})",
                      f"peak memory ({_mem_source(rows)})".replace(" ()", ""),
                      _why_missing(rows, "peak_mem_bytes"), sweep=True),
        _panel_series(axes[3], tpot, styles, "generated length (tokens)", "TPOT median, bar to p90 (ms)",
                      "time per output token" + _cpu_note(rows), _why_missing(rows, "tpot_ms_median"),
                      errors=p90, sweep=True),
    ]  # fmt: skip
    if not any(drawn):
        raise Skip("kv-cache rows hold no KV bytes, memory or latency")
    _legend(fig, axes)
    return fig


MEM_SOURCES = {"torch_allocator": "torch allocator peak", "rss_sampled_approx": "process RSS, approx."}


def _mem_source(rows: list[dict]) -> str:
    sources = sorted({MEM_SOURCES.get(r["mem_source"], r["mem_source"]) for r in rows if r.get("mem_source")})
    return ", ".join(sources)


LAYER_PANELS = (  # (mode, list column, title, y label)
    ("prefill", "layer_seq_lens", "prefill: layer input length", "tokens into the layer"),
    ("no-cache", "layer_seq_lens", "no cache, last step: layer input length", "tokens into the layer"),
    ("kv-cache", "layer_cache_lens", "KV cache after the last step", "cached tokens per layer"),
)


def _layer_context(rows: list[dict]) -> list[dict]:
    """Rows of one context (prompt, gen, batch, attn, env): the one with most methods, then largest."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault(key_of(r, ("prompt_len", "gen_len", "batch", "attn", "env_id")), []).append(r)
    best = max(by, key=lambda k: (len({r.get("method") for r in by[k]}),
                                  tuple(v if isinstance(v, (int, float)) else 0 for v in k[:3])))  # fmt: skip
    return by[best]


def chart_layers(summaries: list[dict], steps: list[dict]) -> Figure:
    """Tokens per decoder layer for each method: the drop at the sparse layer."""
    panels = []
    for mode, col, title, ylabel in LAYER_PANELS:
        rows = [r for r in _ok(summaries) if r.get("mode") == mode and isinstance(r.get(col), list) and r[col]]
        if rows:
            panels.append((mode, col, title, ylabel, _layer_context(rows)))
    if not panels:
        raise Skip("no summary row holds layer_seq_lens / layer_cache_lens")
    every = [r for *_, rows in panels for r in rows]
    fig, axes = _figure(len(panels), "tokens per decoder layer", every, shows=())
    for ax, (_mode, col, title, ylabel, rows) in zip(axes, panels, strict=True):
        styles = Styles(rows, (*VARIANT, "reuse_vision"))
        sparse = set()
        for key, group in styles.groups(rows):
            lens = group[-1][col]
            ax.plot(range(len(lens)), lens, drawstyle="steps-mid", label=styles.label(key),
                    markersize=5, markevery=_markevery(len(lens)), **styles.style(key))  # fmt: skip
            sparse |= {i for i in range(1, len(lens)) if lens[i] < lens[i - 1]}
        for i in sorted(sparse):
            ax.axvline(i - 0.5, color="#555555", linestyle=":", linewidth=1)
        if sparse:  # one label for all drops: labels of neighbouring layers would overlap
            first = min(sparse)
            ax.annotate(f"drop at the input\nof layer{'s' if len(sparse) > 1 else ''} "
                        + ", ".join(map(str, sorted(sparse))), (first - 0.5, 0.03),
                        xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points", fontsize=8,
                        color="#555555")  # fmt: skip
        r0 = rows[0]
        ctx = f"prompt {r0.get('prompt_len')}" + (f", gen {r0['gen_len']}" if r0.get("gen_len") else "")
        _title(ax, f"{title}\n({ctx}, batch {r0.get('batch')})")
        ax.set_xlabel("decoder layer index")
        ax.set_ylabel(ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        _axes_legend(ax)
    return fig


# headline metrics of the summary figure: (mode, metric, short label)
RELATIVE = (
    ("prefill", "tflops_paper", "prefill TFLOPs (paper)"),
    ("prefill", "tmacs", "prefill TMACs (fvcore)"),
    ("prefill", "ttft_ms", "prefill TTFT"),
    ("no-cache", "tmacs", "no-cache TMACs"),
    ("no-cache", "step_ms_median", "no-cache step time"),
    ("kv-cache", "kv_bytes_generated", "kv-cache KV (generated)"),
    ("kv-cache", "peak_mem_bytes", "kv-cache peak memory"),
    ("kv-cache", "tpot_ms_median", "kv-cache TPOT"),
)


def _short(r: dict, text_varies: bool) -> str:
    """Bar label that joins a method's prefill and decode rows: method and vision keep."""
    if r.get("vision_keep") is None:
        return r.get("method") or "?"
    name = f"{r.get('method')}, vision keep {r['vision_keep']:g}"
    return name + (f", text keep {r['text_keep']:g}" if text_varies and r.get("text_keep") is not None else "")


def _panel_relative(ax: Axes, summaries: list[dict]) -> bool:
    """Each headline metric of each method as % of llava at the same point (the largest point)."""
    title = "relative to llava at the same point (llava = 100%)"
    cmp = C.records(C.compare(pd.DataFrame.from_records(summaries))) if summaries else []
    bars: dict[str, dict[str, float]] = {}  # series label → metric label → %
    keys: dict[str, dict] = {}
    where: dict[str, str] = {}  # mode → the point shown
    for mode, metric, label in RELATIVE:
        rows = [r for r in cmp if r.get("mode") == mode and r.get(f"{metric}_delta_pct") is not None]
        if not rows:
            continue
        top = max(rows, key=lambda r: (r.get("prompt_len") or 0, r.get("gen_len") or 0))
        at = [r for r in rows if key_of(r, COMPARISON_KEY) == key_of(top, COMPARISON_KEY)]
        where[mode] = f"{mode} prompt {top.get('prompt_len')}" + (
            f" gen {top['gen_len']}" if top.get("gen_len") is not None else "")
        for r in at:
            name = _short(r, len({x.get("text_keep") for x in cmp if x.get("text_keep") is not None}) > 1)
            keys.setdefault(name, r)
            bars.setdefault(name, {})[label] = 100.0 + r[f"{metric}_delta_pct"]
    if not bars:
        _empty(ax, title, "no point has both llava and another method")
        return False
    labels = [lab for _, _, lab in RELATIVE if any(lab in b for b in bars.values())]
    names = sorted(bars, key=lambda n: (C.method_rank(keys[n].get("method")), n))
    height = 0.8 / len(names)
    values = _Labels(ax, pitch=height)
    for j, name in enumerate(names):
        ys = [i + (j - (len(names) - 1) / 2) * height for i in range(len(labels))]
        vals = [bars[name].get(lab) for lab in labels]
        hatch = HATCHES[j % len(HATCHES)]
        ax.barh([y for y, v in zip(ys, vals, strict=True) if v is not None],
                [v for v in vals if v is not None], height=height * 0.95, color=color(keys[name].get("method")),
                hatch=hatch, edgecolor="white", label=name)  # fmt: skip
        for y, v in zip(ys, vals, strict=True):
            if v is not None:
                values.add((v, y), f"{v:.0f}%")
    ax.axvline(100, color=COLORS["llava"], linewidth=1.5, label="llava (100%)")
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("% of llava")
    ax.set_xlim(0, max(110.0, max(v for b in bars.values() for v in b.values()) * 1.15))
    _title(ax, title + "\n" + "; ".join(where.values()))
    ax.grid(alpha=0.3, axis="x")
    return True


def chart_summary(summaries: list[dict], steps: list[dict]) -> Figure:
    """One page: savings relative to llava, plus the key curve of each mode."""
    if not summaries and not steps:
        raise Skip("no rows")
    every = summaries + steps
    fig, axes = _figure(4, "summary of the three modes", every, cols=2, shows=("latency", "memory"))
    pre = [r for r in summaries if r.get("mode") == "prefill"]
    pre_metric = "tflops_paper" if any(r.get("tflops_paper") is not None for r in pre) else "tmacs"
    drawn = [_panel_relative(axes[0], summaries)]
    if pre:
        styles = Styles(pre, ("text_keep", "text_policy", *BASELINE_PARAMS, "prompt_len", "batch", "attn", "env_id"))
        drawn.append(_panel_vs_keep(
            axes[1], pre, pre_metric,
            "TFLOPs (paper, 2×MAC)" if pre_metric == "tflops_paper" else "T multiply-adds (fvcore)",
            "prefill compute", styles))  # fmt: skip
    else:
        _empty(axes[1], "prefill compute", "no prefill rows")
        drawn.append(False)
    for ax, mode, metric, cumulative, ylabel, title in (
        (axes[2], "no-cache", "tmacs", True, "cumulative T multiply-adds (fvcore)",
         "no cache: cumulative compute"),
        (axes[3], "kv-cache", "kv_bytes_generated", False, "KV cache, generated tokens ({unit})",
         "KV cache: generated-token KV bytes"),
    ):  # fmt: skip
        srows = [r for r in steps if r.get("mode") == mode]
        if not srows:
            _empty(ax, title, f"no {mode} step rows")
            drawn.append(False)
            continue
        styles = _decode_styles(srows)
        longest = _longest(srows, styles)
        scale, unit = (_bytes_unit([r.get(metric) for rs in longest.values() for r in rs])
                       if "bytes" in metric else (1.0, ""))  # fmt: skip
        drawn.append(_panel_series(ax, _step_series(longest, metric, cumulative, scale), styles,
                                   "tokens generated", ylabel.format(unit=unit), title,
                                   _why_missing(srows, metric)))  # fmt: skip
    if not any(drawn):
        raise Skip("no data for any summary panel")
    for ax in axes[1:]:
        _axes_legend(ax)
    if axes[0].get_legend_handles_labels()[0]:  # under the bars: they fill the panel
        axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncols=2, fontsize=8, frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------
# several methods at once: trade-offs and how savings evolve while generating

def _context_note(rows: list[dict]) -> str:
    r = rows[0]
    return f"prompt {r.get('prompt_len')}" + (f", gen {r['gen_len']}" if r.get("gen_len") else "") + (
        f", batch {r.get('batch')}")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower is better on both), by increasing x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def _panel_pareto(ax: Axes, rows: list[dict], x: str, y: str, xlabel: str, ylabel: str, title: str,
                  styles: Styles, xscale: float = 1.0, yscale: float = 1.0) -> bool:
    """One marker per method variant at (x, y) in one context, and the Pareto front through them."""
    ok = _ok(rows)
    have = [r for r in ok if r.get(x) is not None and r.get(y) is not None]
    if not have:
        missing = y if any(r.get(x) is not None for r in ok) else x
        _empty(ax, title, _why_missing(rows, missing) if rows else "no rows of this mode")
        return False
    have = _layer_context(have)  # one context: points of different contexts never share a panel
    pts = []
    labels = _Labels(ax, marker=8, color="#333333")
    for key, group in styles.groups(have):
        r = group[-1]
        px, py = r[x] / xscale, r[y] / yscale
        st = styles.style(key)
        ax.plot([px], [py], linestyle="none", marker=st["marker"], color=st["color"], markersize=8,
                label=styles.label(key))  # fmt: skip
        labels.add((px, py), styles.label(key).replace(" · ", "\n"))
        pts.append((px, py))
    front = pareto_front(pts)
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), color="#555555", linestyle="--", linewidth=1, drawstyle="steps-post",
                label="_front", zorder=0)  # fmt: skip
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, f"{title}\n({_context_note(have)})")
    ax.set_xlim(left=0, right=max(p[0] for p in pts) * 1.25 or 1)
    ax.set_ylim(bottom=0, top=max(p[1] for p in pts) * 1.15 or 1)
    ax.grid(alpha=0.3)
    return True


def chart_pareto(summaries: list[dict], steps: list[dict]) -> Figure:
    """Trade-offs of every method: prefill compute vs TTFT, KV bytes vs TPOT, KV bytes vs compute."""
    pre = [r for r in summaries if r.get("mode") == "prefill"]
    kv = [r for r in summaries if r.get("mode") == "kv-cache"]
    if not pre and not kv:
        raise Skip("no prefill or kv-cache rows")
    fields = (*VARIANT, "prompt_len", "gen_len", "batch", "attn", "env_id")
    every = pre + kv
    fig, axes = _figure(3, "Pareto: cost vs latency and memory", every,
                        note="dashed: Pareto front, lower-left is better")
    paper = any(r.get("tflops_paper") is not None for r in _ok(pre))
    kv_scale, kv_unit = _bytes_unit([r.get("kv_bytes") for r in kv])
    drawn = [
        _panel_pareto(axes[0], pre, "tflops_paper" if paper else "tmacs", "ttft_ms",
                      "prefill TFLOPs (paper, 2×MAC)" if paper else "prefill T multiply-adds (fvcore)",
                      "TTFT (ms)", "prefill: compute vs latency" + _cpu_note(pre), Styles(pre, fields)),
        _panel_pareto(axes[1], kv, "kv_bytes", "tpot_ms_median", f"KV cache after the last step ({kv_unit})",
                      "TPOT median (ms)", "decoding: KV cache vs time per token" + _cpu_note(kv), Styles(kv, fields),
                      xscale=kv_scale),
        _panel_pareto(axes[2], kv, "kv_bytes", "tmacs", f"KV cache after the last step ({kv_unit})",
                      "T multiply-adds, whole generation (fvcore)", "decoding: KV cache vs compute",
                      Styles(kv, fields), xscale=kv_scale),
    ]  # fmt: skip
    if not any(drawn):
        raise Skip("no row holds both axes of any Pareto panel")
    return fig


def _savings_series(rows: list[dict], styles: Styles, metric: str, cumulative: bool):
    """(key, tokens generated, % saved vs llava) per non-llava series: step rows of the longest
    generation against llava's steps in the same context (step by step)."""
    key = ("prompt_len", "batch", "attn", "env_id")
    longest = _longest(rows, styles)
    base = {key_of(rs[0], key): rs for k, rs in longest.items() if k[0] == BASELINE}
    series = []
    for k, rs in longest.items():
        ref = base.get(key_of(rs[0], key))
        if k[0] == BASELINE or ref is None:
            continue
        xs, ys, a, b = [], [], 0.0, 0.0
        for r, r0 in zip(rs, ref, strict=False):
            if r.get(metric) is None or r0.get(metric) is None:
                break
            a, b = (a + r[metric], b + r0[metric]) if cumulative else (r[metric], r0[metric])
            if b:
                xs.append(r["step"] + 1)
                ys.append((b - a) / b * 100)
        series.append((k, xs, ys))
    return series


def _panel_savings(ax: Axes, series, styles: Styles, ylabel: str, title: str, why: str) -> bool:
    series = [(k, x, y) for k, x, y in series if x]
    if not series:
        _empty(ax, title, why)
        return False
    for key, x, y in series:
        ax.plot(x, y, label=styles.label(key), markevery=_markevery(len(x)), markersize=5, **styles.style(key))
    ax.axhline(0, color=COLORS["llava"], linewidth=1.2, label="llava (0%)")
    lo = min(0.0, *(v for _, _, y in series for v in y))
    ax.set_ylim(lo * 1.1 - 2 if lo < 0 else 0, 105)
    ax.set_xlabel("tokens generated")
    ax.set_ylabel(ylabel)
    _title(ax, title)
    ax.grid(alpha=0.3)
    return True


def chart_savings(summaries: list[dict], steps: list[dict]) -> Figure:
    """Savings vs llava while generating, per method: does prefill-only pruning (fastv, random)
    keep its saving once generated text fills the KV cache? (step rows, same context as llava)"""
    kv = [r for r in _ok(steps) if r.get("mode") == "kv-cache"]
    nc = [r for r in _ok(steps) if r.get("mode") == "no-cache"]
    if not kv and not nc:
        raise Skip("no kv-cache or no-cache step rows")
    fig, axes = _figure(3, "savings vs llava while generating", kv + nc, shows=())
    kv_styles, nc_styles = _decode_styles(kv), _decode_styles(nc)
    no_ref = "no llava step rows in the same context"
    drawn = [
        _panel_savings(axes[0], _savings_series(_kv_total(kv), kv_styles, "kv_total", False), kv_styles,
                       "KV bytes saved vs llava (%)", "KV cache, prompt + generated",
                       no_ref if kv else "no kv-cache step rows"),
        _panel_savings(axes[1], _savings_series(kv, kv_styles, "kv_bytes_generated", False), kv_styles,
                       "KV bytes saved vs llava (%)", "KV cache of generated tokens",
                       no_ref if kv else "no kv-cache step rows"),
        _panel_savings(axes[2], _savings_series(nc, nc_styles, "tmacs", True), nc_styles,
                       "multiply-adds saved vs llava (%)", "no cache: cumulative compute (fvcore)",
                       no_ref if nc else "no no-cache step rows"),
    ]  # fmt: skip
    if not any(drawn):
        raise Skip("no step rows with a llava reference in the same context")
    _legend(fig, axes)
    return fig


CHARTS: dict[str, Callable[[list[dict], list[dict]], Figure]] = {
    "prefill": chart_prefill,
    "no_cache": chart_no_cache,
    "kv_cache": chart_kv_cache,
    "layer_tokens": chart_layers,
    "summary": chart_summary,
    "pareto": chart_pareto,
    "savings": chart_savings,
}


# ---------------------------------------------------------------------------------------------
# entry point


def _slug(*parts: Any) -> str:
    return "_".join("".join(c if c.isalnum() or c in "-." else "-" for c in str(p)) for p in parts)


def plot_all(df: pd.DataFrame, out_dir: str | os.PathLike, *, skipped: list[str] | None = None,
             charts: Sequence[str] | None = None) -> list[Path]:
    """Write every chart with data as PNG and SVG under `out_dir`; return the files written.

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
    summaries, steps = C.summary_rows(df), C.step_rows(df)
    groups = sorted({key_of(r, GROUP) for r in summaries + steps}, key=lambda k: tuple(map(str, k)))
    written: list[Path] = []
    for group in groups:
        g_sum = [r for r in summaries if key_of(r, GROUP) == group]
        g_steps = [r for r in steps if key_of(r, GROUP) == group]
        suffix = "" if len(groups) == 1 else "_" + _slug(*group)
        for name, chart in selected.items():
            try:
                fig = chart(g_sum, g_steps)
            except Skip as why:
                reason = f"{name}{suffix}: {why}"
                log.info("skipped chart %s", reason)
                if skipped is not None:
                    skipped.append(reason)
                continue
            with matplotlib.rc_context(RC):
                for ext in FORMATS:
                    path = out / f"{name}{suffix}.{ext}"
                    fig.savefig(path, dpi=120 if ext == "png" else None, metadata=METADATA[ext])
                    written.append(path)
                    # the layout is in figure fractions, the same for every format: solve it once
                    # (constrained layout is most of the drawing time)
                    fig.set_layout_engine("none")
    if not groups and skipped is not None:
        skipped.append("all charts: the records hold no rows")
    return written


__all__ = ["CHARTS", "COLORS", "Skip", "color", "plot_all"]
