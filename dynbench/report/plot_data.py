"""Pure series builders for the charts: record dicts in, plain numbers out (no matplotlib here).

Each chart in `report/plots.py` draws the `Panel`s one function here returns; a panel holds
`Series` of (x, y, band) with a label and a style key (method, variant). Every Δ% and saving
comes from `report.compare` (the only comparison), every unit from `report.format`, so a chart
and a table cannot disagree. A panel without data is not returned: charts re-lay out around the
panels they get, and a chart that gets none is skipped with a reason.

Conventions:
* the x of a per-step series is the number of tokens generated so far, step + 1, in every mode
  (kv-cache step 0 is the prefill, which produces token 1, step i ≥ 1 the i-th decode step;
  no-cache step i is the (i + 1)-th forward), so every panel starts at token 1;
* a series over steps is the longest generation of its method variant (shorter ones are its
  prefixes); step rows hold every measured run: the value per step is the median over runs
  (counts are equal across runs) and the band p10–p90 over runs;
* the band of a summary latency (TTFT, TPOT, step time) is p10–p90 of its raw samples;
* a per-step saving vs llava is `compare` applied to each step as the summary of the generation
  cut there (`prefix_summaries`): the KV bytes of that step, the MACs summed up to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dynbench.names import BASELINE
from dynbench.records import SHOWN_KEY as SHOWN
from dynbench.records import hashable, key_of
from dynbench.report import compare as C
from dynbench.report.format import engineering_scale, fmt_pct, options_label, params_label
from dynbench.stats import percentile

# fields that tell points of one method variant apart; shown in a label only where they vary
CONTEXT = ("prompt_len", "gen_len", "batch", "attn", "reuse_vision", "seed", "checkpoint", "inputs",
           "teacher_force", "regions", "env_id")
MEM_SOURCES = {"torch_allocator": "torch allocator peak", "cpu_tensors": "CPU tensors",
               "rss_sampled_approx": "process RSS, approx."}
NOISE = "~"  # a latency Δ% within noise (as in the tables)


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


class Skip(Exception):
    """A chart's data is absent; the message says what is missing."""


def color(method: str | None) -> str:
    if method in COLORS:
        return COLORS[method]
    return EXTRA_COLORS[sum(map(ord, method or "")) % len(EXTRA_COLORS)]


@dataclass
class Series:
    """One line, bar or point set. `band`: (low, high) per point in y units (p10–p90), or None;
    `xband` the same along x (summary: the Δ% CI). `ref`: no x, drawn as a horizontal line at
    y[0] (llava against a keep ratio). `same_as`: the label of an earlier series of the panel
    with the very same points (drawn in a distinct style and named in the panel's notes)."""

    label: str
    method: str
    x: list[float]
    y: list[float]
    band: list[tuple[float, float]] | None = None
    xband: list[tuple[float, float]] | None = None
    texts: list[str] | None = None  # one per point (Δ% vs llava)
    ref: bool = False
    variant: int = 0  # style key, with `method`: marker and line style
    same_as: str | None = None


@dataclass
class Panel:
    """What one axes shows. kind: lines | bars | points | dots | layers."""

    kind: str
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    notes: list[str] = field(default_factory=list)
    xlog: bool = False
    xlim: tuple[float, float] | None = None
    ylim: tuple[float, float] | None = None
    ticks: list[str] = field(default_factory=list)  # dots: one row label per y position
    marks: list[float] = field(default_factory=list)  # layers: x of the drops
    front: list[tuple[float, float]] = field(default_factory=list)  # points: Pareto front


# ---------------------------------------------------------------------------------------------
# rows, labels and groups


def ok(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    return [dict(r) for r in rows if r.get("status") in (None, "ok")]


def of_mode(rows: Iterable[Mapping[str, Any]], mode: str) -> list[dict]:
    return [r for r in ok(rows) if r.get("mode") == mode]


def varying(rows: Sequence[Mapping[str, Any]], fields: Iterable[str] = CONTEXT) -> list[str]:
    return [f for f in fields if len({hashable(r.get(f)) for r in rows}) > 1]


def _g(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def series_label(row: Mapping[str, Any], axis: Iterable[str] = (), context: Iterable[str] = (),
                 envs: Mapping[Any, str] | None = None) -> str:
    """The one name of a series, in every chart: 'llava', 'dynamic-llava v0.2 t0.5', 'random v0.2',
    'fastv K2 R0.5' (matched: 'fastv K3 R0.828 =flops'), 'h2o KV 0.2'; fields on the chart's
    axis are left out, `context` fields (those that vary in the chart) appended ('P=64')."""
    axis = set(axis)
    m = row.get("method") or "?"
    parts = [m]
    if row.get("method_options"):  # a plug-in method's own options
        parts.append(options_label(row["method_options"]))
    elif (params := params_label(row)) is not None:  # fastv 'K2 R0.5', h2o 'KV 0.2' (`Method.label_fields`)
        parts.append(params)
    elif m != BASELINE:
        if row.get("vision_keep") is not None and "vision_keep" not in axis:
            parts.append(f"v{_g(row['vision_keep'])}")
        if row.get("text_policy") == "learned":
            parts.append("t learned")
        elif row.get("text_keep") is not None and "text_keep" not in axis:
            parts.append(f"t{_g(row['text_keep'])}")
    if row.get("match_budget"):
        parts.append(f"={row['match_budget']}")
    for f in context:
        v = row.get(f)
        if f in axis or v is None:
            continue
        if f == "env_id":
            parts.append(f"env {(envs or {}).get(v, v)}")
        elif f == "reuse_vision":
            parts.append("reuse-vision" if v else "vision every step")
        elif f in ("regions", "teacher_force"):
            parts.append(f.replace("_", "-") if v else f"no {f.replace('_', '-')}")
        else:
            parts.append({"prompt_len": "P=", "gen_len": "g=", "batch": "b=", "seed": "seed="}.get(f, "") + _g(v))
    return " ".join(parts)


def sortable(v: Any) -> tuple:
    return (v is None, v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0, str(v))


def groups(rows: Sequence[dict], axis: Sequence[str] = ()) -> list[tuple[tuple, list[dict]]]:
    """Rows by series (the shown point without the `axis` fields), llava first, then by method."""
    fields = tuple(f for f in SHOWN if f not in axis)
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault(key_of(r, fields), []).append(r)
    order = sorted(by, key=lambda k: (C.method_rank(k[fields.index("method")]), tuple(map(sortable, k))))
    return [(k, by[k]) for k in order]


class Labeller:
    """series_label with the context fields that vary across `rows` and their env letters."""

    def __init__(self, rows: Sequence[dict], axis: Sequence[str] = ()):
        self.axis = tuple(axis)
        self.context = varying(rows)
        self.envs = C.env_labels(r.get("env_id") for r in rows)

    def __call__(self, row: Mapping[str, Any]) -> str:
        return series_label(row, self.axis, self.context, self.envs)


def context_note(row: Mapping[str, Any]) -> str:
    """'prompt 64, gen 32, batch 1' — the context a one-context panel shows."""
    parts = [f"prompt {row.get('prompt_len')}"]
    if row.get("gen_len") is not None:
        parts.append(f"gen {row['gen_len']}")
    return ", ".join([*parts, f"batch {row.get('batch')}"])


def one_context(rows: Sequence[dict]) -> list[dict]:
    """Rows of one context (prompt, gen, batch, attn, env): the one with most methods, then largest."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault(key_of(r, ("prompt_len", "gen_len", "batch", "attn", "env_id")), []).append(r)
    best = max(by, key=lambda k: (len({r.get("method") for r in by[k]}), tuple(sortable(v)[1] for v in k[:3])))
    return by[best]


# ---------------------------------------------------------------------------------------------
# numbers


def spread(values: Sequence[float] | None) -> tuple[float, float] | None:
    """(p10, p90) of raw samples; None without samples."""
    vals = [v for v in values or () if v is not None]
    return (percentile(vals, 10), percentile(vals, 90)) if vals else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower is better on both), by increasing x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points):
        if not front or y < front[-1][1]:
            front.append((x, y))
    return front


def compared(rows: Sequence[Mapping[str, Any]]) -> dict[tuple, dict]:
    """`report.compare` of summary rows, by shown point."""
    if not rows:
        return {}
    return {key_of(r, SHOWN): r for r in C.records(C.compare(pd.DataFrame.from_records(list(rows))))}


def delta_text(cmp: Mapping[str, Any] | None, metric: str) -> str:
    """Δ% vs llava of one compared row, '~' appended when a latency Δ% is within noise."""
    if cmp is None or cmp.get(f"{metric}_delta_pct") is None:
        return ""
    return fmt_pct(cmp[f"{metric}_delta_pct"]) + (f" {NOISE}" if cmp.get(f"{metric}_delta_noise") else "")


UNITS = {"tera": "{u}{name}", "ms": "{name} ({u})", "bytes": "{name} ({u})"}


def scale(series: list[Series], kind: str, name: str) -> str:
    """Divide y (and bands) by the engineering unit their values need; return the axis label,
    e.g. 'GMACs (fvcore)' for tiny-preset counts, 'KV cache (MiB)', 'TTFT (ms)'."""
    values = [v for s in series for v in s.y] + [v for s in series for b in s.band or () for v in b]
    size, unit = engineering_scale(values, kind)
    for s in series:
        s.y = [v / size for v in s.y]
        s.band = None if s.band is None else [(lo / size, hi / size) for lo, hi in s.band]
    return UNITS[kind].format(u=unit, name=name)


def _same(a: Series, b: Series) -> bool:
    if a.ref != b.ref or len(a.x) != len(b.x) or len(a.y) != len(b.y) or not a.y:
        return False
    return all(math.isclose(p, q, rel_tol=1e-9, abs_tol=1e-12) for p, q in zip(a.x + a.y, b.x + b.y, strict=True))


def finish(panel: Panel) -> Panel:
    """Style keys (variant index within each method, in series order) and identical series:
    the later one gets `same_as`, the panel a note 'h2o KV 0.2 = streaming-llm KV 0.2'."""
    share_styles([panel])
    chains: dict[str, list[str]] = {}
    for j, s in enumerate(panel.series if panel.kind in ("lines", "points", "layers") else ()):  # where they'd hide
        first = next((t for t in panel.series[:j] if t.same_as is None and _same(t, s)), None)
        if first is not None:
            s.same_as = first.label
            chains.setdefault(first.label, [first.label]).append(s.label)
    panel.notes += [" = ".join(c) for c in chains.values()]
    return panel


def share_styles(panels: Sequence[Panel]) -> None:
    """One style per label across the panels of a chart: the variant index of a label is its
    rank among its method's labels, in order of first appearance."""
    index: dict[str, int] = {}
    count: dict[str, int] = {}
    for s in (s for p in panels for s in p.series):
        if s.label not in index:
            index[s.label] = count.get(s.method, 0)
            count[s.method] = index[s.label] + 1
        s.variant = index[s.label]


def _upper(series: list[Series]) -> float:
    tops = [v for s in series for v in s.y] + [hi for s in series for _, hi in s.band or ()]
    return max([t for t in tops if t is not None] + [0.0])


def from_zero(panel: Panel, headroom: float = 1.1) -> Panel:
    """Absolute amounts start at 0 (a cut axis exaggerates differences), with headroom."""
    top = _upper(panel.series)
    panel.ylim = (0.0, top * headroom if top > 0 else 1.0)
    return panel


def keep_x(r: Mapping[str, Any]) -> float:
    """The realized share of image tokens kept (fastv: from its layer K on; h2o: all)."""
    for v in (r.get("vision_keep_realized"), r.get("vision_keep")):
        if v is not None:
            return v
    kept, n = r.get("image_tokens_kept"), r.get("image_tokens")
    return kept / n if kept is not None and n else 1.0


def cpu_text(rows: Iterable[Mapping[str, Any]]) -> str:
    return " (CPU timer)" if any(r.get("timer") == "cpu" for r in rows) else ""


def figure_notes(rows: Sequence[Mapping[str, Any]], latency: bool = True, memory: bool = True) -> list[str]:
    """What a whole figure must say: CPU timings, meta counts, mixed environments, imposed keeps."""
    notes = []
    if latency and any(r.get("timer") == "cpu" for r in rows):
        notes.append("CPU timings (perf_counter, not GPU latency)")
    if any(r.get("device") == "meta" for r in rows):
        notes.append("meta device: shape-only counts, no latency or memory measured")
    loads = [r["load_avg_1m"] for r in rows if r.get("timer") == "cpu" and r.get("load_avg_1m") is not None]
    threads = max([r["cpu_threads"] for r in rows if r.get("cpu_threads")] or [0])
    if latency and loads and threads and max(loads) > threads:  # timings shared the cores with other work
        notes.append(f"machine loaded: 1-min load average up to {max(loads):.1f} on {threads} threads")
    if memory and any(r.get("mem_source") == "rss_sampled_approx" for r in rows):
        notes.append("memory = sampled process RSS (approx.)")
    if len({r.get("env_id") for r in rows}) > 1:
        notes.append(f"rows from {len({r.get('env_id') for r in rows})} environments")
    if any(C.imposed(r) for r in rows):
        notes.append("text keep imposed (budget policy)")
    return notes


# ---------------------------------------------------------------------------------------------
# steps: runs of a point, median over runs per step


def longest(steps: Sequence[dict]) -> list[tuple[dict, dict[Any, list[dict]]]]:
    """Per series (method variant in one context), its longest generation: (a row of it, step
    rows by measured run, each sorted by step)."""
    out = []
    for _, group in groups(steps, axis=("gen_len",)):
        points: dict[tuple, list[dict]] = {}
        for r in group:
            points.setdefault(key_of(r, SHOWN), []).append(r)
        best = max(points.values(), key=lambda rs: (rs[0].get("gen_len") or 0, len(rs)))
        runs: dict[Any, list[dict]] = {}
        for r in best:
            runs.setdefault(r.get("repeat"), []).append(r)
        ordered = sorted(runs, key=sortable)
        out.append((best[0], {k: sorted(runs[k], key=lambda r: r["step"]) for k in ordered}))
    return out


def step_curve(runs: Mapping[Any, list[dict]], metric: str, cumulative: bool = False):
    """(tokens generated, median over runs, (p10, p90) over runs or None when every run agrees).
    A cumulative curve needs every step of a run (a gap would make the sum lie)."""
    per_run: list[dict[int, float]] = []
    for rows in runs.values():
        vals = [(r["step"], r.get(metric)) for r in rows]
        if cumulative:
            if any(v is None for _, v in vals):
                continue
            total, acc = 0.0, {}
            for s, v in vals:
                total += v
                acc[s] = total
            per_run.append(acc)
        else:
            per_run.append({s: v for s, v in vals if v is not None})
    common = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    x, y, band = [], [], []
    for s in common:
        vals = [d[s] for d in per_run]
        x.append(s + 1.0)
        y.append(percentile(vals, 50))
        band.append((percentile(vals, 10), percentile(vals, 90)))
    return x, y, band if any(lo != hi for lo, hi in band) else None


PREFIX_LAST = ("kv_bytes", "kv_bytes_generated", "kv_bytes_prompt")  # a summary holds the last step's


def prefix_summaries(steps: Sequence[dict], cumulative: Sequence[str] = ("tmacs",),
                     last: Sequence[str] = PREFIX_LAST) -> list[dict]:
    """Each step of each series' longest generation as the summary row of the generation cut
    there: gen_len = tokens generated so far, `cumulative` metrics summed up to the step (median
    over runs), `last` metrics the step's own. `compare` of these rows gives Δ% per step."""
    out = []
    for row, runs in longest(steps):
        curves = {m: step_curve(runs, m, m in cumulative) for m in (*cumulative, *last)}
        base = {k: row.get(k) for k in (*SHOWN, "status", "timer", "text_keep_imposed", "image_tokens")}
        tokens = sorted({x for c in curves.values() for x in c[0]})
        for t in tokens:
            item = {**base, "step": None, "gen_len": int(t)}
            for m, (xs, ys, _) in curves.items():
                item[m] = dict(zip(xs, ys, strict=True)).get(t)
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# panels of each chart
