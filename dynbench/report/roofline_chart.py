"""The roofline chart: where each mode's steps sit against a GPU's roofs, and the projected
TTFT / TPOT / total time vs generated length, for every method in one (model, device, dtype).

`roofline_series(summaries, steps)` is the pure part (numbers only, tested numerically);
`chart_roofline(summaries, steps)` draws it (matplotlib imported inside). What is drawn is what the
records hold (`measure/roofline.py` made the bounds): nothing is fitted or smoothed.

* Roofline panel (log-log): x = arithmetic intensity of a step, FLOPs / bytes (FLOPs = 2 × fvcore
  MACs; bytes = `roofline_bytes`: weights that ran, embedding rows, KV read and written), y =
  TFLOP/s. The roof is min(peak, intensity × bandwidth); every step's bound sits on it (filled
  markers: prefill, no-cache forwards, kv-cache decode steps); on a GPU the measured rate FLOPs /
  `step_ms` is drawn below it (hollow markers), so the gap is how far the run is from the bound.
* Per-token panel: each kv-cache decode step's bound vs tokens generated (TPOT; its median is
  the `tpot_roofline_ms` column); measured step times beside it on a GPU.
* Time-to-n-tokens panel: the bound of producing n tokens — TTFT (the prefill step, x = 1) plus
  every decode step up to n (kv-cache), or Σ forwards (no-cache); at the longest n it is
  `total_roofline_ms`. Without step rows, the summary rows give one point per generated length.

One GPU per chart: when the records hold bounds on several (`roofline_gpu`), the one with the
most rows is drawn and the title names the others.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dynbench.names import DECODE_PHASE, FORWARD_PHASE, PHASES, PREFILL_PHASE
from dynbench.records import STEP_ROW, is_point_summary, row_kind, step_phase
from dynbench.report.format import engineering_scale, fmt_ms
from dynbench.report.plot_data import Skip, color, series_label

PHASE_MARKERS = {PREFILL_PHASE: "s", FORWARD_PHASE: "^", DECODE_PHASE: "o"}
MODE_LINES = {"kv-cache": "-", "no-cache": "--"}


@dataclass
class RooflineSeries:
    """Everything the chart draws, as numbers. Keys are `(method, variant)`, variant a short
    label of what else tells two points of a method apart (keep ratios, prompt, batch)."""

    gpu: str
    tflops: float  # peak used
    gbps: float
    projected: bool  # no latency measured on that GPU
    other_gpus: list[str] = field(default_factory=list)
    # (key, phase) → [(FLOP/byte, bound TFLOP/s, measured TFLOP/s or None)], one per step
    points: dict[tuple, list[tuple[float, float, float | None]]] = field(default_factory=dict)
    # (key, "kv-cache") → (tokens generated, bound ms, measured ms or None) per decode step
    per_token: dict[tuple, tuple[list[int], list[float], list[float | None]]] = field(default_factory=dict)
    # (key, mode) → (tokens generated, cumulative bound ms, cumulative measured ms or None)
    cumulative: dict[tuple, tuple[list[int], list[float], list[float | None]]] = field(default_factory=dict)
    ttft: dict[tuple, float] = field(default_factory=dict)  # key → TTFT bound (ms)

    @property
    def ridge(self) -> float:
        """FLOP/byte where the compute roof meets the memory roof."""
        return self.tflops * 1e12 / (self.gbps * 1e9)

    def roof(self, intensity: float) -> float:
        """Attainable TFLOP/s at an arithmetic intensity (FLOP/byte)."""
        return min(self.tflops, intensity * self.gbps * 1e9 / 1e12)


_VARIANT_FIELDS = ("prompt_len", "batch")


def _key(row: dict, varying: set[str]) -> tuple:
    """(method, the series' one name — `plot_data.series_label`, as in every chart)."""
    return row.get("method"), series_label(row, context=[f for f in _VARIANT_FIELDS if f in varying])


def label(key: tuple) -> str:
    return key[1]


def _tflops(flops: float, ms: float | None) -> float | None:
    return None if not ms else flops / (ms / 1e3) / 1e12


def _cumsum(values: list[float | None]) -> list[float | None]:
    out: list[float | None] = []
    total: float | None = 0.0
    for v in values:
        total = None if total is None or v is None else total + v
        out.append(total)
    return out


def roofline_series(summaries: list[dict], steps: list[dict]) -> RooflineSeries | None:
    """The chart's numbers from the summary and step rows of one (model, device, dtype); None
    when no row carries a roofline bound."""
    ok = [r for r in summaries if is_point_summary(r) and r.get("status") in (None, "ok") and r.get("roofline_gpu")]
    if not ok:
        return None
    counts = Counter(r["roofline_gpu"] for r in ok)
    gpu = sorted(counts, key=lambda g: (-counts[g], g))[0]
    ok = [r for r in ok if r["roofline_gpu"] == gpu]
    first = ok[0]
    out = RooflineSeries(gpu, first["roofline_tflops"], first["roofline_gbps"],
                         all(r.get("roofline_projected") for r in ok), sorted(set(counts) - {gpu}))
    varying = {f for f in _VARIANT_FIELDS if len({r.get(f) for r in ok}) > 1}
    by_point = {r.get("point_id"): r for r in ok}
    runs: dict[tuple, list[dict]] = {}  # (key, mode, point) → its first measured run's steps
    for s in steps:
        summary = by_point.get(s.get("point_id"))
        if summary is None or row_kind(s) != STEP_ROW or s.get("repeat") not in (None, 0):
            continue
        runs.setdefault((_key(summary, varying), summary["mode"], s["point_id"]), []).append(s)
    longest: dict[tuple, list[dict]] = {}  # (key, mode) → the steps of its longest generation
    for (key, mode, _), rows in runs.items():
        rows = sorted(rows, key=lambda r: r["step"])
        if len(rows) > len(longest.get((key, mode), ())):
            longest[(key, mode)] = rows
        for r in rows:
            if r.get("step_roofline_ms") is None or r.get("tmacs") is None or not r.get("roofline_bytes"):
                continue
            flops = 2 * r["tmacs"] * 1e12
            out.points.setdefault((key, step_phase(r)), []).append(
                (flops / r["roofline_bytes"], _tflops(flops, r["step_roofline_ms"]), _tflops(flops, r.get("step_ms"))))
    for (key, mode), rows in longest.items():
        if mode == "prefill" or any(r.get("step_roofline_ms") is None for r in rows):
            continue
        x = [r["step"] + 1 for r in rows]  # tokens generated once the step is done
        bound = [r["step_roofline_ms"] for r in rows]
        measured = [r.get("step_ms") for r in rows]
        out.cumulative[(key, mode)] = (x, _cumsum(bound), _cumsum(measured))
        if step_phase(rows[0]) == PREFILL_PHASE:
            out.ttft[key] = bound[0]
        decode = [i for i, r in enumerate(rows) if step_phase(r) == DECODE_PHASE]  # TPOT: the decode steps
        if decode:
            out.per_token[(key, mode)] = tuple([seq[i] for i in decode] for seq in (x, bound, measured))
    _add_summary_lines(out, ok, varying, longest)
    return out


def _add_summary_lines(out: RooflineSeries, ok: list[dict], varying: set[str], longest: dict) -> None:
    """Points without step rows: one point per generated length, from their summary rows."""
    summary_lines: dict[str, dict[tuple, list[tuple]]] = {"per_token": {}, "cumulative": {}}
    for r in ok:
        key, mode = _key(r, varying), r["mode"]
        if r.get("ttft_roofline_ms") is not None:
            out.ttft.setdefault(key, r["ttft_roofline_ms"])
        if mode == "prefill" or (key, mode) in longest or r.get("gen_len") is None:
            continue
        if r.get("tpot_roofline_ms") is not None:  # decode steps ran (kv-cache)
            summary_lines["per_token"].setdefault((key, mode), []).append(
                (r["gen_len"], r["tpot_roofline_ms"], r.get("tpot_ms_median")))
        if r.get("total_roofline_ms") is not None:
            summary_lines["cumulative"].setdefault((key, mode), []).append(
                (r["gen_len"], r["total_roofline_ms"], r.get("total_ms")))
    for name, lines in summary_lines.items():
        for line_key, pts in lines.items():
            pts.sort(key=lambda p: p[0])
            getattr(out, name)[line_key] = tuple(list(col) for col in zip(*pts, strict=True))


# ---- drawing ------------------------------------------------------------------------------------
def _style(key: tuple, index: dict[tuple, int]) -> dict:
    linestyles = ("-", ":", "-.", (0, (5, 1)))
    return {"color": color(key[0]), "linestyle": linestyles[index.get(key, 0) % len(linestyles)]}


def _variant_index(keys) -> dict[tuple, int]:
    seen: dict[Any, int] = {}
    index = {}
    for key in sorted(set(keys), key=lambda k: (k[0] != "llava", str(k))):
        index[key] = seen.get(key[0], 0)
        seen[key[0]] = index[key] + 1
    return index


def chart_roofline(summaries: list[dict], steps: list[dict]):
    """Roofline (intensity of every step vs the GPU's roofs), TPOT bound per decode step, and the
    bound on the time to n tokens, per method. Raises `plot_data.Skip` when no row has a bound."""
    from matplotlib.figure import Figure

    series = roofline_series(summaries, steps)
    if series is None:
        raise Skip("no roofline columns (run with --gpu NAME on cpu / meta, or on a GPU in `dynbench gpus`)")
    keys = [k for k, _ in series.points] + [k for k, _ in series.cumulative]
    index = _variant_index(keys)
    fig = Figure(figsize=(15.6, 4.9), layout="constrained")
    ax_roof, ax_tpot, ax_total = fig.subplots(1, 3)
    first = next((r for r in summaries if r.get("roofline_gpu") == series.gpu), summaries[0])
    what = "projected (nothing measured on that GPU)" if series.projected else "bounds beside the measurement"
    title = (f"{first.get('model')} · {first.get('device')} · {first.get('dtype')} — roofline on {series.gpu} "
             f"({series.tflops:g} TFLOP/s, {series.gbps:g} GB/s), {what}; lower bounds, activations ignored")
    if series.other_gpus:
        title += f"; also in the records: {', '.join(series.other_gpus)}"
    fig.suptitle(title, fontsize=10)
    _draw_roof(ax_roof, series, index)
    _draw_lines(ax_tpot, series.per_token, index, "time per output token (ms)", "TPOT bound per decode step",
                "no kv-cache decode steps with a bound")
    _draw_lines(ax_total, series.cumulative, index, "time to n tokens", "TTFT + decode (kv-cache) / Σ forwards "
                "(no-cache)", "no decode rows with a bound", ttft=series.ttft)
    handles = {}
    for ax in (ax_roof, ax_tpot, ax_total):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 4),
                   fontsize=8, frameon=False)
    return fig


def _draw_roof(ax, s: RooflineSeries, index: dict[tuple, int]) -> None:
    xs = [p[0] for pts in s.points.values() for p in pts]
    lo = min([*xs, s.ridge]) / 4
    hi = max([*xs, s.ridge]) * 4
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(grid, [s.roof(x) for x in grid], color="#333333", linewidth=1.5, label="_roof")
    ax.axvline(s.ridge, color="#999999", linewidth=0.8, linestyle=":")
    ax.annotate(f"ridge {s.ridge:.0f} FLOP/B", (s.ridge, s.tflops), xytext=(4, -12), textcoords="offset points",
                fontsize=8, color="#555555")
    for (key, phase), pts in sorted(s.points.items(), key=lambda kv: (str(kv[0][0]), PHASES.index(kv[0][1]))):
        st = _style(key, index)
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14 if phase == DECODE_PHASE else 36,
                   marker=PHASE_MARKERS[phase], color=st["color"], alpha=0.8, label=f"{label(key)} · {phase}")
        measured = [(p[0], p[2]) for p in pts if p[2] is not None]
        if measured:
            ax.scatter(*zip(*measured, strict=True), s=14 if phase == DECODE_PHASE else 36, marker=PHASE_MARKERS[phase],
                       facecolors="none", edgecolors=st["color"], label=f"{label(key)} · {phase}, measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title("roofline: every step's bound on the roof", fontsize=10)
    ax.grid(alpha=0.3, which="both")


def _draw_lines(ax, lines: dict, index: dict[tuple, int], ylabel: str, title: str, why: str,
                ttft: dict | None = None) -> None:
    if not lines:
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555555")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    index = _variant_index(k for k, _ in lines)  # line styles tell this panel's variants apart
    values = [v for _, ys, ms in lines.values() for v in (*ys, *ms) if v is not None]
    scale, unit = engineering_scale(values, "ms") if ttft is not None else (1.0, "ms")
    for n, ((key, mode), (x, bound, measured)) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        st = _style(key, index)
        ls = MODE_LINES.get(mode, "-") if ttft is not None else st["linestyle"]
        suffix = f" · {mode}" if ttft is not None else ""
        ax.plot(x, [b / scale for b in bound], color=st["color"], linestyle=ls, linewidth=1.6,
                marker="o" if len(x) <= 24 else None, markersize=4, label=f"{label(key)}{suffix} bound")
        if any(m is not None for m in measured):
            pts = [(xi, m / scale) for xi, m in zip(x, measured, strict=True) if m is not None]
            ax.plot(*zip(*pts, strict=True), color=st["color"], linestyle=ls, linewidth=0.8, alpha=0.5,
                    label=f"{label(key)}{suffix} measured")
        if ttft is not None and mode == "kv-cache" and key in ttft:
            ax.annotate(f"TTFT {fmt_ms(ttft[key])}", (x[0], bound[0] / scale), xytext=(6, 4 + 10 * n),
                        textcoords="offset points", fontsize=7, color=st["color"])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("tokens generated")
    ax.set_ylabel(ylabel if ttft is None else f"{ylabel} ({unit})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)


__all__ = ["RooflineSeries", "chart_roofline", "roofline_series"]
