"""The panels of each chart, built from records by the primitives of `plot_data` (series, labels,
bands, Δ% from `report.compare`): one function per chart, plain numbers out, no matplotlib."""

from __future__ import annotations

from collections.abc import Sequence

from dynbench.names import BASELINE, MODES
from dynbench.records import COMPARISON_KEY, SHOWN_KEY, key_of
from dynbench.report import compare as C
from dynbench.report.format import engineering_scale
from dynbench.report.plot_data import (
    MEM_SOURCES,
    UNITS,
    Labeller,
    Panel,
    Series,
    compared,
    context_note,
    cpu_text,
    delta_text,
    finish,
    from_zero,
    groups,
    keep_x,
    longest,
    of_mode,
    ok,
    one_context,
    pareto_front,
    prefix_summaries,
    scale,
    sortable,
    spread,
    step_curve,
)


def _line_panel(title: str, xlabel: str, series: list[Series], kind: str, name: str, sweep: bool = False,
                notes: Sequence[str] = ()) -> Panel | None:
    """A panel of series over tokens (per step) or generated lengths (`sweep`); bars when a sweep
    has one length; None when no series has a point."""
    series = [s for s in series if s.y]
    if not series:
        return None
    ylabel = scale(series, kind, name)
    xs = {x for s in series for x in s.x}
    if sweep and len(xs) == 1:
        return from_zero(finish(Panel("bars", title, f"generated length = {int(next(iter(xs)))} tokens", ylabel,
                                       series, list(notes))), 1.15)
    pos = [x for x in xs if x > 0]
    xlog = sweep and bool(pos) and max(pos) / min(pos) >= 100
    return from_zero(finish(Panel("lines", title, xlabel, ylabel, series, list(notes), xlog=xlog)))


def _length_series(rows: Sequence[dict], metric: str, samples: str | None = None) -> list[Series]:
    """Summary rows: metric vs generated length per series, band p10–p90 of `samples`."""
    label = Labeller(rows, axis=("gen_len",))
    out = []
    for _, group in groups([r for r in rows if r.get(metric) is not None and r.get("gen_len") is not None],
                           axis=("gen_len",)):
        group = sorted(group, key=lambda r: r["gen_len"])
        bands = [spread(r.get(samples)) if samples else None for r in group]
        out.append(Series(label(group[0]), group[0]["method"], [float(r["gen_len"]) for r in group],
                          [r[metric] for r in group], None if None in bands else bands))
    return out


def _step_series(steps: Sequence[dict], metric: str, cumulative: bool = False) -> list[Series]:
    label = Labeller(steps, axis=("gen_len",))
    out = []
    for row, runs in longest(steps):
        x, y, band = step_curve(runs, metric, cumulative)
        out.append(Series(label(row), row["method"], x, y, band))
    return out


PREFILL_METRICS = (  # (metric, unit kind, axis name, title, raw samples)
    ("tflops_paper", "tera", "FLOPs (paper convention, 2×MAC)", "compute, paper convention (image tokens)", None),
    ("tmacs", "tera", "MACs (fvcore)", "compute, measured by fvcore (whole forward)", None),
    ("ttft_ms", "ms", "TTFT, p10–p90", "time to first token", "ttft_ms_samples"),
)


def prefill_panels(summaries: Sequence[dict]) -> list[Panel]:
    """Prefill metrics vs the realized vision keep; llava as a reference line; Δ% vs llava at
    each point (from compare)."""
    rows = of_mode(summaries, "prefill")
    cmp, label = compared(rows), Labeller(rows, axis=("vision_keep",))
    panels = []
    for metric, kind, name, title, samples in PREFILL_METRICS:
        series = []
        for _, group in groups([r for r in rows if r.get(metric) is not None], axis=("vision_keep",)):
            group = sorted(group, key=keep_x)
            bands = [spread(r.get(samples)) for r in group] if samples else []
            s = Series(label(group[-1]), group[-1]["method"], [keep_x(r) for r in group], [r[metric] for r in group],
                       None if not bands or None in bands else bands,
                       texts=[delta_text(cmp.get(key_of(r, SHOWN_KEY)), metric) for r in group])
            if s.method == BASELINE:  # no keep ratio: a reference line at its last row
                s = Series(s.label, s.method, [], s.y[-1:], None if s.band is None else s.band[-1:], ref=True)
            series.append(s)
        if series:
            ylabel = scale(series, kind, name)
            panel = Panel("lines", title + (cpu_text(rows) if kind == "ms" else ""),
                          "vision keep (image tokens kept / image tokens)", ylabel, series, xlim=(0.0, 1.15))
            panels.append(from_zero(finish(panel), 1.15))
    return panels


def no_cache_panels(summaries: Sequence[dict], steps: Sequence[dict]) -> list[Panel]:
    """Cumulative MACs, per-step latency and total time vs tokens generated (per step; from
    summary rows vs generated length when there are no step rows)."""
    rows, srows = of_mode(summaries, "no-cache"), of_mode(steps, "no-cache")
    cpu = cpu_text(rows + srows)
    if srows:
        x = "tokens generated"
        made = [
            _line_panel("cumulative compute", x, _step_series(srows, "tmacs", True), "tera",
                        "MACs (fvcore), cumulative"),
            _line_panel("per-step latency" + cpu, x, _step_series(srows, "step_ms"), "ms",
                        "step latency, median over runs"),
            _line_panel("total time" + cpu, x, _step_series(srows, "step_ms", True), "ms", "cumulative time"),
        ]
    else:
        x = "generated length (tokens)"
        made = [
            _line_panel("total compute", x, _length_series(rows, "tmacs"), "tera", "MACs (fvcore), all steps", True),
            _line_panel("per-step latency" + cpu, x, _length_series(rows, "step_ms_median", "latency_ms_samples"), "ms",
                        "step latency, median (p10–p90)", True),
            _line_panel("total time" + cpu, x, _length_series(rows, "total_ms", "total_ms_samples"), "ms",
                        "total time (p10–p90 over runs)", True),
        ]
    return [p for p in made if p is not None]


def kv_cache_panels(summaries: Sequence[dict], steps: Sequence[dict]) -> list[Panel]:
    """KV bytes (generated, total) per step, peak memory and TPOT (p10–p90) vs generated length."""
    rows, srows = of_mode(summaries, "kv-cache"), of_mode(steps, "kv-cache")
    if srows:
        gen, tot = _step_series(srows, "kv_bytes_generated"), _step_series(srows, "kv_bytes")
    else:
        gen, tot = _length_series(rows, "kv_bytes_generated"), _length_series(rows, "kv_bytes")
    x = "tokens generated" if srows else "generated length (tokens)"
    source = ", ".join(sorted({MEM_SOURCES.get(r["mem_source"], r["mem_source"]) for r in rows if r.get("mem_source")}))
    made = [
        _line_panel("KV cache of generated tokens", x, gen, "bytes", "KV cache, generated tokens", not srows),
        _line_panel("KV cache, prompt + generated", x, tot, "bytes", "KV cache, total", not srows),
        _line_panel(f"peak memory ({source})" if source else "peak memory", "generated length (tokens)",
                    _length_series(rows, "peak_mem_bytes"), "bytes", "peak memory", True),
        _line_panel("time per output token" + cpu_text(rows), "generated length (tokens)",
                    _length_series(rows, "tpot_ms_median", "latency_ms_samples"), "ms", "TPOT median, p10–p90", True),
    ]
    return [p for p in made if p is not None]


LAYER_PANELS = (  # (mode, list column, title, y label)
    ("prefill", "layer_seq_lens", "prefill: layer input length", "tokens into the layer"),
    ("no-cache", "layer_seq_lens", "no cache, last step: layer input length", "tokens into the layer"),
    ("kv-cache", "layer_cache_lens", "KV cache after the last step", "cached tokens per layer"),
)


def layer_panels(summaries: Sequence[dict]) -> list[Panel]:
    """Tokens per decoder layer of each method (one context per mode): the drop at the sparse layer."""
    panels = []
    for mode, col, title, ylabel in LAYER_PANELS:
        rows = [r for r in of_mode(summaries, mode) if isinstance(r.get(col), list) and r[col]]
        if not rows:
            continue
        rows = one_context(rows)
        label = Labeller(rows)
        series = [Series(label(g[-1]), g[-1]["method"], [float(i) for i in range(len(g[-1][col]))],
                         [float(v) for v in g[-1][col]]) for _, g in groups(rows)]
        drops = sorted({i for s in series for i in range(1, len(s.y)) if s.y[i] < s.y[i - 1]})
        panel = Panel("layers", f"{title}\n({context_note(rows[0])})", "decoder layer index", ylabel, series,
                      marks=[i - 0.5 for i in drops])
        panels.append(from_zero(finish(panel)))
    return panels


RELATIVE = (  # headline metrics of the summary: (mode, metric, name)
    ("prefill", "tflops_paper", "FLOPs (paper, 2×MAC)"),
    ("prefill", "tmacs", "MACs (fvcore)"),
    ("prefill", "ttft_ms", "TTFT"),
    ("no-cache", "tflops_paper", "FLOPs (paper, 2×MAC)"),
    ("no-cache", "tmacs", "MACs (fvcore)"),
    ("no-cache", "step_ms_median", "step time"),
    ("kv-cache", "kv_bytes_generated", "KV of generated tokens"),
    ("kv-cache", "peak_mem_bytes", "peak memory"),
    ("kv-cache", "tpot_ms_median", "TPOT"),
)


def summary_panels(summaries: Sequence[dict]) -> list[tuple[str, list[Panel]]]:
    """Δ% vs llava (from compare) of each headline metric, one row of panels per mode, at its
    largest point: one dot per method variant (a row each, shared by the mode's panels), the
    latency CI as a bar, '~' where within noise."""
    cmp = list(compared(ok(summaries)).values())
    out = []
    for mode in MODES:
        metrics = [(m, n) for md, m, n in RELATIVE if md == mode]
        rows = [r for r in cmp if r.get("mode") == mode
                and any(r.get(f"{m}_delta_pct") is not None for m, _ in metrics)]
        if not rows:
            continue
        top = max(rows, key=lambda r: tuple(sortable(r.get(f))[1] for f in ("prompt_len", "gen_len", "batch")))
        at = [r for r in rows if key_of(r, COMPARISON_KEY) == key_of(top, COMPARISON_KEY)]
        label = Labeller(at)
        ordered = [g[-1] for _, g in groups(at)]
        ticks = [label(r) for r in ordered]
        where = f"{mode} ({context_note(top)})"
        panels = []
        for metric, name in metrics:
            series = []
            for i, r in enumerate(ordered):
                d = r.get(f"{metric}_delta_pct")
                if d is None:
                    continue
                lo, hi = r.get(f"{metric}_delta_ci_low"), r.get(f"{metric}_delta_ci_high")
                series.append(Series(ticks[i], r["method"], [d], [float(i)],
                                     xband=None if lo is None or hi is None else [(lo, hi)],
                                     texts=[delta_text(r, metric)]))
            if series:
                ends = [v for s in series for v in (s.x[0], *(s.xband[0] if s.xband else ()))] + [0.0]
                span = (max(ends) - min(ends)) or 10.0  # room for the values written past the dots
                panels.append(finish(Panel("dots", name, "Δ% vs llava (< 0: saves)", "", series, ticks=ticks,
                                           xlim=(min(ends) - 0.3 * span, max(ends) + 0.3 * span),
                                           ylim=(len(ordered) - 0.5, -0.5))))
        if panels:
            out.append((where, panels))
    return out


PARETO = (  # (mode, x metrics by preference, x kind, x name, y metric, y kind, y name, raw samples, title)
    ("prefill", ("tflops_paper", "tmacs"), "tera", None, "ttft_ms", "ms", "TTFT, p10–p90", "ttft_ms_samples",
     "prefill: compute vs latency"),
    ("kv-cache", ("kv_bytes",), "bytes", "KV cache after the last step", "tpot_ms_median", "ms", "TPOT median, p10–p90",
     "latency_ms_samples", "decoding: KV cache vs time per token"),
    ("kv-cache", ("kv_bytes",), "bytes", "KV cache after the last step", "tmacs", "tera",
     "MACs (fvcore), whole generation", None, "decoding: KV cache vs compute"),
)
COMPUTE_NAMES = {"tflops_paper": "FLOPs (paper convention, 2×MAC)", "tmacs": "MACs (fvcore)"}


def variant_series(rows: Sequence[dict], xm: str, y: str, band_of) -> list[Series]:
    """One single-marker series per method variant: its last row at (`xm`, `y`), with `band_of(row)`
    as the marker's spread (None: no bar)."""
    label = Labeller(rows)
    return [Series(label(r), r["method"], [r[xm]], [r[y]], band_of(r)) for r in (g[-1] for _, g in groups(rows))]


def _samples_band(samples: str | None):
    """A marker's spread from its column of raw samples (`spread`); no column, no bar."""
    def band(row: dict) -> list | None:
        b = spread(row.get(samples)) if samples else None
        return None if b is None else [b]
    return band


def pareto_panels(summaries: Sequence[dict]) -> list[Panel]:
    """One marker per method variant at (cost, latency / compute) in one context, and the front."""
    panels = []
    for mode, xms, xkind, xname, y, ykind, yname, samples, title in PARETO:
        rows = of_mode(summaries, mode)
        xm = next((m for m in xms if any(r.get(m) is not None for r in rows)), xms[-1])
        have = [r for r in rows if r.get(xm) is not None and r.get(y) is not None]
        if not have:
            continue
        have = one_context(have)
        series = variant_series(have, xm, y, _samples_band(samples))
        ylabel = scale(series, ykind, yname)
        xsize, xunit = engineering_scale([s.x[0] for s in series], xkind)
        for s in series:
            s.x = [s.x[0] / xsize]
        name = xname or COMPUTE_NAMES[xm]
        xlabel = UNITS[xkind].format(u=xunit, name=name)
        if mode == "prefill":
            xlabel = "prefill " + xlabel
        title = f"{title}{cpu_text(have) if ykind == 'ms' else ''}\n({context_note(have[0])})"
        front = pareto_front([(s.x[0], s.y[0]) for s in series])
        panel = finish(Panel("points", title, xlabel, ylabel, series, front=front))
        panel.xlim = (0.0, max(s.x[0] for s in series) * 1.15 or 1.0)
        panels.append(from_zero(panel, 1.15))
    return panels


SAVINGS = (  # (mode, metric, title, y label)
    ("kv-cache", "kv_bytes", "KV cache, prompt + generated", "KV bytes saved vs llava (%)"),
    ("kv-cache", "kv_bytes_generated", "KV cache of generated tokens", "KV bytes saved vs llava (%)"),
    ("no-cache", "tmacs", "no cache: cumulative compute", "MACs (fvcore) saved vs llava (%)"),
)


def savings_panels(steps: Sequence[dict]) -> list[Panel]:
    """% saved vs llava (−Δ% from compare) at each token generated, per non-llava series."""
    cmp = {mode: list(compared(prefix_summaries(of_mode(steps, mode))).values()) for mode in ("kv-cache", "no-cache")}
    panels = []
    for mode, metric, title, ylabel in SAVINGS:
        rows = [r for r in cmp[mode] if r.get("method") != BASELINE and r.get(f"{metric}_delta_pct") is not None]
        if not rows:
            continue
        label = Labeller(rows, axis=("gen_len",))
        series = []
        for _, g in groups(rows, axis=("gen_len",)):
            g = sorted(g, key=lambda r: r["gen_len"])
            series.append(Series(label(g[0]), g[0]["method"], [float(r["gen_len"]) for r in g],
                                 [-r[f"{metric}_delta_pct"] for r in g]))
        values = [v for s in series for v in s.y] + [0.0]
        pad = 0.08 * ((max(values) - min(values)) or 10.0)
        series.insert(0, Series("llava (0 %)", BASELINE, [], [0.0], ref=True))
        panels.append(finish(Panel("lines", title, "tokens generated", ylabel, series,
                                   ylim=(min(values) - pad, max(values) + pad))))
    return panels


def keep_distribution_panels(samples: Sequence[dict]) -> list[Panel]:
    """Realized text keep of every sample of each dataset point (decode modes), one panel per
    (dataset, mode), one series per point (method variant): y = each ok sample's
    `text_keep_realized`, in sample order."""
    rows = [r for r in ok(samples) if r.get("mode") in ("no-cache", "kv-cache") and r.get("text_keep_realized")
            is not None]
    panels = []
    for (dataset, mode), group in _by(rows, ("dataset", "mode")):
        points = _by(group, ("point_id",))
        heads = [dict(rs[0], prompt_len=None, sample=None) for _, rs in points]
        label = Labeller(heads)
        series = [Series(label(head), head.get("method"), [float(i)] * len(rs), [r["text_keep_realized"] for r in rs])
                  for i, (head, (_, rs)) in enumerate(zip(heads, points, strict=True))]
        order = sorted(range(len(series)), key=lambda i: C.method_rank(series[i].method))
        series = [replace_x(series[i], float(n)) for n, i in enumerate(order)]
        name = str(dataset).rsplit("/", 1)[-1]
        counts = sorted({len(s.y) for s in series})
        panels.append(finish(Panel("strip", f"{mode} · {name}", "", "realized text keep (kept / fed)", series,
                                   notes=[f"{'/'.join(map(str, counts))} samples; bar p10–p90, tick median"],
                                   ylim=(0.0, 1.05))))
    return panels


def replace_x(s: Series, x: float) -> Series:
    from dataclasses import replace

    return replace(s, x=[x] * len(s.y))


def _by(rows: Sequence[dict], fields: Sequence[str]) -> list[tuple[tuple, list[dict]]]:
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault(key_of(r, fields), []).append(r)
    return sorted(by.items(), key=lambda kv: tuple(map(sortable, kv[0])))



# ---- quality beside cost (dynbench/quality.py) -------------------------------------------------
QUALITY_PARETO = (  # (mode, x metric, x kind, x name, y metric, y label, higher is better, title)
    ("no-cache", "tflops_paper", "tera", "FLOPs (paper convention), decoding", "ppl", "PPL (mean per sample), p10–p90",
     False, "no-cache: decoding compute vs perplexity"),
    ("kv-cache", "kv_bytes_generated", "bytes", "KV cache of generated tokens", "ppl", "PPL (mean per sample), "
     "p10–p90", False, "kv-cache: generated KV vs perplexity"),
    ("no-cache", "tflops_paper", "tera", "FLOPs (paper convention), decoding", "meteor", "METEOR (mean), p10–p90",
     True, "no-cache: decoding compute vs METEOR"),
    ("kv-cache", "kv_bytes_generated", "bytes", "KV cache of generated tokens", "meteor", "METEOR (mean), p10–p90",
     True, "kv-cache: generated KV vs METEOR"),
)


def quality_pareto_panels(summaries: Sequence[dict]) -> list[Panel]:
    """One marker per method variant (keep ratios included) at (cost, PPL or METEOR) of dataset
    points, with the spread over samples and the Pareto front (PPL: lower is better; METEOR: higher)."""
    panels = []
    for mode, xm, xkind, xname, y, ylabel, higher, title in QUALITY_PARETO:
        have = [r for r in of_mode(summaries, mode) if r.get(xm) is not None and r.get(y) is not None]
        if not have:
            continue
        have = one_context(have)
        series = variant_series(have, xm, y,
                                lambda r, y=y: None if r.get(f"{y}_p10") is None else [(r[f"{y}_p10"], r[f"{y}_p90"])])
        xsize, xunit = engineering_scale([s.x[0] for s in series], xkind)
        for s in series:
            s.x = [s.x[0] / xsize]
        sign = -1.0 if higher else 1.0
        front = [(x, sign * v) for x, v in pareto_front([(s.x[0], sign * s.y[0]) for s in series])]
        panel = finish(Panel("points", f"{title}\n({have[0].get('dataset')})", UNITS[xkind].format(u=xunit, name=xname),
                             ylabel, series, front=front))
        panel.xlim = (0.0, max(s.x[0] for s in series) * 1.15 or 1.0)
        # METEOR lives in [0, 1]: from zero; PPL differences of a few % would vanish from zero
        panels.append(from_zero(panel, 1.15) if higher else panel)
    return panels
