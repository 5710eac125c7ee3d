"""Tables of a comparison (`report.compare`): one per mode, and the summary `dynbench run` prints.

Cells are strings built from raw SI numbers by `report.format` (units are added only here);
`TableData` is the one rendered-to-strings form, turned into rich tables or Markdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dynbench.errors import DynbenchError
from dynbench.measure.host import dominates as host_bound_dominates
from dynbench.names import BASELINE, MODES
from dynbench.records import key_of
from dynbench.report.compare import (
    DELTA_METRICS,
    IMPOSED,
    LATENCY_SAMPLES,
    compare,
    env_labels,
    records,
)
from dynbench.report.format import (
    DASH,
    fmt_bytes,
    fmt_ms,
    fmt_pct,
    fmt_score,
    fmt_t,
    md_table,
    method_of,
    options_label,
    params_label,
    run_length,
)

NOISE = "~"  # a latency Δ% that cannot be told from noise
ENV_MISMATCH = "†"  # a Δ% against a llava row from another environment


def _with_delta(text: str, row: Mapping[str, Any], metric: str) -> str:
    """'2.49 T (-75.3%)'; baseline rows show the value alone; a missing value stays '—'.
    Latency: '(-5.0% [-8.1, -2.0])' with the bootstrap CI, or '(~+1.2%)' when that CI includes
    0 % or there are too few samples for one."""
    if row.get("is_baseline") or text == DASH:
        return text
    mark = ENV_MISMATCH if row.get("env_mismatch") else ""
    pct = fmt_pct(row.get(f"{metric}_delta_pct"))
    if metric in LATENCY_SAMPLES and row.get(f"{metric}_delta_pct") is not None:
        if row.get(f"{metric}_delta_noise") is not False:
            return f"{text} ({NOISE}{pct}{mark})"
        lo, hi = row[f"{metric}_delta_ci_low"], row[f"{metric}_delta_ci_high"]
        return f"{text} ({pct} [{_ci_end(lo)},{_ci_end(hi)}]{mark})"
    return f"{text} ({pct}{mark})"


def _ci_end(pct: float) -> str:
    """A CI bound in %, short: whole percents from 10 % on, one decimal below ('-81', '-4.0')."""
    return f"{pct:+.0f}" if abs(pct) >= 10 else f"{pct:+.1f}"


def keeps_label(row: Mapping[str, Any]) -> str:
    """Requested keep ratios: 'vision/text', text 'learned' or 'imposed'; the baselines' own
    parameters: fastv 'K2 R0.5' (matched: 'K3 R0.828 =flops@0.2'), h2o / streaming-llm 'KV 0.2'."""
    if row.get("method") == BASELINE:
        return DASH
    if row.get("method_options"):  # a plug-in method's own options
        return options_label(row["method_options"])
    label = params_label(row)
    if label is not None:
        return label + (f" ={row['match_budget']}@{row.get('vision_keep'):g}" if row.get("match_budget") else "")
    method = method_of(row)
    if method is not None and not method.text_policy and row.get("vision_keep") is not None:  # random
        return f"{row['vision_keep']:g}" + (f" ={row['match_budget']}" if row.get("match_budget") else "")
    v = DASH if row.get("vision_keep") is None else f"{row['vision_keep']:g}"
    if row.get("text_policy") == "learned":
        t = "learned"
    elif row.get("text_keep") is None:
        t = DASH
    else:
        t = f"{row['text_keep']:g}"
    return f"{v}/{t}"


def _counted(row: Mapping[str, Any], kept: str, total: str | None, ratio: str) -> str:
    """'4/7 (0.57)' — kept / of how many (`total`; None: the count alone) and the realized ratio."""
    k, n, r = row.get(kept), row.get(total) if total else None, row.get(ratio)
    if k is None and r is None:
        return DASH
    head = f"{k}/{n}" if k is not None and n is not None else str(k) if k is not None else ""
    tail = f"{r:.2f}" if r is not None else ""
    return f"{head} ({tail})" if head and tail else head or tail


def _latency(row: Mapping[str, Any], name: str) -> str:
    """median with p90: '12.1 / 13.4 ms (-5.0%)' (Δ% of the median)."""
    med, p90 = fmt_ms(row.get(f"{name}_median")), fmt_ms(row.get(f"{name}_p90"))
    if med == DASH:
        return DASH
    if p90 == DASH:
        text = med
    elif med.split(" ")[1] == p90.split(" ")[1]:  # same unit: say it once
        text = f"{med.split(' ')[0]} / {p90}"
    else:
        text = f"{med} / {p90}"
    return _with_delta(text, row, f"{name}_median")


def _roofline(row: Mapping[str, Any], name: str, ratio: str | None = None) -> str:
    """A roofline bound: '4.05 ms proj. (-1.8%)' projected (nothing measured on that GPU), or
    '4.05 ms ×1.31 (-1.8%)' beside a CUDA measurement (×: measured / bound)."""
    text = fmt_ms(row.get(name))
    if text == DASH:
        return DASH
    if row.get("roofline_projected"):
        text += " proj."
    elif ratio is not None and row.get(ratio) is not None:
        text += f" ×{row[ratio]:.2f}" + (HOST_BOUND if ratio != "ttft_roofline_ratio" and host_bound_dominates(row)
                                         else "")
    return _with_delta(text, row, name)


# a decode latency measured mostly on host-bound steps (measure/host.py): it times Python launching
# ops, not the kernels, and a roofline ratio from it says nothing about the GPU
HOST_BOUND = " host-bound"


def _host_labelled(metric: str) -> Any:
    """A decode latency cell, labelled where most of the point's headline steps were host-bound."""
    return lambda r: _with_delta(fmt_ms(r.get(metric)) + (HOST_BOUND if host_bound_dominates(r) else ""), r,
                                 metric)


def _share(value: float | None) -> str:
    return DASH if value is None or value != value else f"{value:.0%}"


def _samples(row: Mapping[str, Any]) -> str:
    """A dataset point's samples aggregated, and the records skipped as bad ('3 (+1 skipped)')."""
    n, skipped = row.get("samples"), row.get("samples_skipped")
    if n is None:
        return DASH
    return f"{n} (+{skipped} skipped)" if skipped else str(n)


def _spread(row: Mapping[str, Any], metric: str, fmt=None) -> str:
    """p10 / p50 / p90 over a dataset point's samples: '0.18 / 0.33 / 0.67'."""
    values = [row.get(f"{metric}_{q}") for q in ("p10", "p50", "p90")]
    if any(v is None for v in values):
        return DASH
    if fmt is None:
        return " / ".join(f"{v:.2f}" for v in values)
    texts = [fmt(v) for v in values]
    unit = texts[0].split(" ")[-1]
    if all(t.split(" ")[-1] == unit for t in texts):  # same unit: say it once
        return " / ".join(t.split(" ")[0] for t in texts) + f" {unit}"
    return " / ".join(texts)


def _status(row: Mapping[str, Any]) -> str:
    s = row.get("status") or DASH
    return s if len(s) <= 40 else s[:39] + "…"


# one column of a mode table: its key (for --columns), header, cell formatter, and the metrics
# that must be present somewhere in the table to show it
@dataclass(frozen=True)
class Column:
    key: str
    header: str
    cell: Any  # Callable[[Mapping], str]
    needs: tuple[str, ...] = ()
    numeric: bool = True


def _delta_cell(metric: str, fmt) -> Any:
    return lambda r: _with_delta(fmt(r.get(metric)), r, metric)


def _fmt_joules(j: float | None) -> str:
    return DASH if j is None else f"{j:.3g} J"


def _layers(r: Mapping[str, Any]) -> str:
    lens = r.get("layer_cache_lens") if r.get("mode") == "kv-cache" else r.get("layer_seq_lens")
    return run_length(lens)


COLUMNS = (
    Column("method", "method", lambda r: r.get("method") or DASH, (), False),
    Column("prompt", "prompt", lambda r: DASH if r.get("prompt_len") is None else str(r["prompt_len"])),
    Column("gen", "gen", lambda r: DASH if r.get("gen_len") is None else str(r["gen_len"]), ("gen_len",)),
    Column("keep", "keep v/t", lambda r: keeps_label(r) + ("*" if r.get("note") == IMPOSED else ""), (), False),
    Column("image", "image kept", lambda r: _counted(r, "image_tokens_kept", None, "vision_keep_realized"),
           ("image_tokens_kept",)),  # of 576 (the title's preset): the count and the ratio
    Column("text", "text kept", lambda r: _counted(r, "text_tokens_kept", "text_tokens_fed",
                                                       "text_keep_realized"), ("text_tokens_fed",)),
    Column("layers", "layer lens", _layers, ("layer_seq_lens",), False),
    Column("cache", "KV lens", _layers, ("layer_cache_lens",), False),
    Column("macs", "MACs (fvcore)", _delta_cell("tmacs", fmt_t), ("tmacs",)),
    Column("flops", "FLOPs (paper)", _delta_cell("tflops_paper", fmt_t), ("tflops_paper",)),
    Column("equiv", "equiv. tokens", lambda r: _with_delta(DASH if r.get("equivalent_tokens") is None
                                                           else f"{r['equivalent_tokens']:.1f}", r,
                                                           "equivalent_tokens"), ("equivalent_tokens",)),
    Column("peak", "peak mem", _delta_cell("peak_mem_bytes", fmt_bytes), ("peak_mem_bytes",)),
    Column("kv_prompt", "KV prompt", _delta_cell("kv_bytes_prompt", fmt_bytes), ("kv_bytes_prompt",)),
    Column("kv_gen", "KV generated", _delta_cell("kv_bytes_generated", fmt_bytes), ("kv_bytes_generated",)),
    Column("kv", "KV total", _delta_cell("kv_bytes", fmt_bytes), ("kv_bytes",)),
    Column("ttft", "TTFT", _delta_cell("ttft_ms", fmt_ms), ("ttft_ms",)),
    Column("tpot", "TPOT", _host_labelled("tpot_ms_median"), ("tpot_ms_median",)),
    Column("tpot_p90", "TPOT med / p90", lambda r: _latency(r, "tpot_ms"), ("tpot_ms_median",)),
    Column("step", "step", _host_labelled("step_ms_median"), ("step_ms_median",)),
    Column("step_p90", "step med / p90", lambda r: _latency(r, "step_ms"), ("step_ms_median",)),
    Column("total", "total", _delta_cell("total_ms", fmt_ms), ("total_ms",)),
    Column("ttft_roof", "TTFT roofline", lambda r: _roofline(r, "ttft_roofline_ms", "ttft_roofline_ratio"),
           ("ttft_roofline_ms",)),
    Column("tpot_roof", "TPOT roofline", lambda r: _roofline(r, "tpot_roofline_ms", "tpot_roofline_ratio"),
           ("tpot_roofline_ms",)),
    Column("step_roof", "step roofline", lambda r: _roofline(r, "step_roofline_ms_median"),
           ("step_roofline_ms_median",)),
    Column("total_roof", "total roofline", lambda r: _roofline(r, "total_roofline_ms", "total_roofline_ratio"),
           ("total_roofline_ms",)),
    Column("scoring", "scoring", lambda r: fmt_ms(r.get("scoring_ms")), ("scoring_ms",)),
    Column("host", "host-bound steps", lambda r: _share(r.get("host_bound_frac")), ("host_bound_frac",)),
    Column("ops", "ops / step", _delta_cell("ops_per_step", lambda v: DASH if v is None or v != v else f"{int(v):,}"),
           ("ops_per_step",)),
    Column("energy", "energy / run", _delta_cell("energy_j", _fmt_joules), ("energy_j",)),
    Column("energy_tok", "energy / token", _delta_cell("energy_j_per_token", _fmt_joules), ("energy_j_per_token",)),
    Column("samples", "samples", lambda r: _samples(r), ("samples",)),
    Column("text_spread", "text keep p10/p50/p90", lambda r: _spread(r, "text_keep_realized"),
           ("text_keep_realized_p50",)),
    Column("tpot_spread", "TPOT p10/p50/p90", lambda r: _spread(r, "tpot_ms_median", fmt_ms),
           ("tpot_ms_median_p50",)),
    Column("tokens", "tokens = llava", lambda r: DASH if r.get("token_agreement") is None
           else f"{r['token_agreement'] * 100:.1f}%", ("token_agreement",)),
    # quality (dynbench/quality.py)
    Column("ppl", "PPL", _delta_cell("ppl", fmt_score), ("ppl",)),
    Column("meteor", "METEOR", _delta_cell("meteor", fmt_score), ("meteor",)),
    Column("top1", "top-1 = llava", lambda r: DASH if r.get("top1_agree") is None
           else f"{r['top1_agree'] * 100:.1f}%", ("top1_agree",)),
    Column("status", "status", lambda r: _status(r), (), False),
)
BY_KEY = {c.key: c for c in COLUMNS}
# the compact default: what matters per mode, fits 120 columns (`--wide`: every column with data)
COMPACT = {  # the roofline bound only where `--gpu` gave one (a column without data is left out)
    "prefill": ("method", "keep", "samples", "image", "layers", "macs", "flops", "peak", "ttft", "ttft_roof"),
    "no-cache": ("method", "gen", "keep", "samples", "text", "text_spread", "layers", "macs", "flops", "step", "total",
                 "step_roof", "ppl", "meteor", "top1"),
    "kv-cache": ("method", "gen", "keep", "samples", "text", "text_spread", "macs", "kv_gen", "peak", "tpot",
                 "tpot_roof", "ppl", "meteor", "top1"),
}  # a dataset point's columns (samples, spread) only where its aggregate rows give them
WIDE_EXCLUDED = {"tpot", "step"}  # --wide shows the median / p90 versions instead
# shown in the title when constant inside one mode table, as a column when they vary
CONTEXT = (("model", "model"), ("device", "device"), ("dtype", "dtype"), ("attn", "attn"),
           ("batch", "batch"), ("prompt_len", "prompt"), ("gen_len", "gen"), ("dataset", "dataset"))


@dataclass
class TableData:
    """A rendered-to-strings table: the one source for rich and Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    notes: list[str] = field(default_factory=list)


def _varying(rows: list[dict], key: str) -> bool:
    return len({str(r.get(key)) for r in rows}) > 1


def _context_title(rows: list[dict], lead: str) -> tuple[str, list[str]]:
    """Title naming what is constant; the varying context fields become columns."""
    fixed, varying = [], []
    for key, label in CONTEXT:
        if _varying(rows, key):
            varying.append(key)
        elif rows and rows[0].get(key) is not None:
            labelled = key in ("batch", "prompt_len", "gen_len", "dataset")
            fixed.append(f"{label} {rows[0][key]}" if labelled else str(rows[0][key]))
    return " · ".join([lead, *fixed]), varying


def table_notes(rows: list[dict], deltas: Sequence[str] = tuple(f"{m}_delta_pct" for m in DELTA_METRICS)
                ) -> list[str]:
    notes = []
    if any(r.get("env_mixed") for r in rows):
        envs = env_labels(r.get("env_id") for r in rows)
        named = {r.get("env_id"): r.get("env") for r in rows}
        listing = ", ".join(f"{named.get(e, lab)} = {e or 'unknown'}" for e, lab in envs.items())
        notes.append(f"rows from different environments (env ids: {listing}); "
                     f"{ENV_MISMATCH} = Δ% against a llava row from another environment")
    if any(r.get("note") == IMPOSED for r in rows):
        notes.append(f"* {IMPOSED}: budget policy, the keep ratio was imposed (the cost of that ratio, "
                     "not the method's own choice)")
    if any(not r.get("is_baseline") and r.get("method") != BASELINE
           and all(r.get(d) is None for d in deltas) for r in rows):
        notes.append(f"{DASH} in Δ%: no llava row at the same point to compare with")
    if any(r.get(f"{m}_delta_pct") is not None for r in rows for m in LATENCY_SAMPLES):
        notes.append(f"latency Δ%: [95% bootstrap CI of the ratio of medians]; {NOISE} = within noise "
                     f"(the CI includes 0%, or fewer than 5 samples a side)")
    if any(r.get("timer") == "cpu" for r in rows):
        notes.append("CPU timings (perf_counter): not comparable with GPU latency")
    if any(r.get("device") == "meta" for r in rows):
        notes.append("meta device: shape-only counts, no latency or memory")
    roofs = {(r["roofline_gpu"], r.get("roofline_tflops"), r.get("roofline_gbps")): None for r in rows
             if r.get("roofline_gpu") is not None}
    if roofs:
        named = ", ".join(f"{g} ({t:g} TFLOP/s, {b:g} GB/s)" for g, t, b in roofs)
        notes.append(f"roofline: the fastest {named} allows, max(2×MACs / peak, bytes / bandwidth), bytes = weights "
                     "of the modules that ran + KV read and written (activations ignored) — a lower bound; proj. = "
                     "projected (not measured on that GPU), ×r = measured / bound")
    if any(r.get("mem_source") == "cpu_tensors" for r in rows):
        notes.append("peak memory on CPU: weights and inputs + the peak of tensors allocated in one "
                     "run (torch.profiler memory events), per point")
    if any(r.get("mem_source") == "rss_sampled_approx" for r in rows):
        notes.append("peak memory on CPU is sampled process RSS (approximate; records of an older dynbench)")
    return notes


def column_keys(columns: str | Sequence[str] | None) -> list[str] | None:
    """`--columns macs,ttft` → keys, validated (one-line error listing the valid ones)."""
    if columns is None:
        return None
    keys = [c.strip() for c in (columns.split(",") if isinstance(columns, str) else columns) if c.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise DynbenchError(f"unknown column(s) {', '.join(unknown)}; choose from: {', '.join(BY_KEY)}")
    return keys


def mode_tables(cmp: pd.DataFrame, columns: Sequence[str] | None = None, wide: bool = False) -> list[TableData]:
    """One table per mode present in a `compare` result (strings, no markup). Columns: `columns`
    (keys of `COLUMNS`), else every column with data (`wide`), else the compact set of the mode;
    columns without any value in that table are left out, a `status` column appears when a
    point did not end ok."""
    all_rows = records(cmp)
    tables = []
    for mode in [*MODES, *sorted({str(r["mode"]) for r in all_rows} - set(MODES))]:
        rows = [r for r in all_rows if r.get("mode") == mode]
        if not rows:
            continue
        title, varying = _context_title(rows, mode)
        if columns is not None:
            keys = list(columns)
        elif wide:
            keys = [c.key for c in COLUMNS if c.key not in WIDE_EXCLUDED]
        else:
            keys = list(COMPACT.get(mode, COMPACT["prefill"]))
            if any(r.get("status") not in (None, "ok") for r in rows):
                keys.append("status")
        keys = [k for k in keys if k not in ("prompt", "gen") or ({"prompt": "prompt_len", "gen": "gen_len"}[k]
                                                                  in varying or columns is not None)]
        cols = [Column(k, dict(CONTEXT)[k], lambda r, k=k: DASH if r.get(k) is None else str(r[k]), (), False)
                for k in varying if k not in ("prompt_len", "gen_len")]
        if "prompt_len" in varying and "prompt" not in keys:
            keys.insert(1, "prompt")
        if "gen_len" in varying and "gen" not in keys:
            keys.insert(2, "gen")
        cols += [BY_KEY[k] for k in keys if not BY_KEY[k].needs
                 or any(r.get(n) is not None for r in rows for n in BY_KEY[k].needs)]
        if any(r.get("env_mixed") for r in rows):
            cols.append(Column("env", "env", lambda r: r.get("env", "?") + (ENV_MISMATCH if r.get("env_mismatch")
                                                                            else ""), (), False))
        tables.append(TableData(
            title=title, headers=[c.header for c in cols],
            rows=[[c.cell(r) for c in cols] for r in rows],
            numeric=[c.numeric for c in cols], notes=table_notes(rows),
        ))
    return tables


def rich_table(t: TableData):
    from rich import box
    from rich.table import Table

    # light rules, no outer edge: the compact tables fit 120 columns
    table = Table(title=t.title, caption="\n".join(t.notes) or None, caption_justify="left", title_justify="left",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for header, numeric in zip(t.headers, t.numeric, strict=True):
        table.add_column(header, justify="right" if numeric else "left", no_wrap=not numeric)
    for row in t.rows:
        table.add_row(*row)
    return table


def markdown_table(t: TableData, level: str = "###") -> str:
    text = f"{level} {t.title}\n\n" + md_table(t.headers, t.rows, t.numeric)
    if t.notes:
        text += "\n" + "".join(f"- {n}\n" for n in t.notes)
    return text


def render_table(cmp: pd.DataFrame, columns: Sequence[str] | None = None, wide: bool = False) -> list:
    """rich Tables, one per mode, from a `compare` result."""
    return [rich_table(t) for t in mode_tables(cmp, columns, wide)]


def to_markdown(cmp: pd.DataFrame, columns: Sequence[str] | None = None, wide: bool = False) -> str:
    """GitHub-flavoured Markdown: a heading and a table per mode, notes as a list under it."""
    return "\n".join(markdown_table(t) for t in mode_tables(cmp, columns, wide))


def to_csv(cmp: pd.DataFrame) -> str:
    """The comparison as CSV, raw SI numbers (bytes, ms, T), Δ% as numbers, empty = null."""
    return cmp.to_csv(index=False, lineterminator="\n")


def run_tables(rows: list[dict], folder_rows: Sequence[Mapping[str, Any]] | None = None) -> list:
    """What `dynbench run` prints: the compact mode tables of the points it ran. With the results
    folder's records (`folder_rows`), Δ% also finds a `llava` row recorded there earlier (a
    resumed sweep), its environment difference flagged as in `report`."""
    from dynbench.records import is_point_summary

    mine = {key_of(r) for r in rows if is_point_summary(r)}
    source = list(folder_rows) if folder_rows is not None else [r for r in rows if is_point_summary(r)]
    cmp = compare(pd.DataFrame.from_records(source))
    shown = cmp[[key_of(r) in mine for r in records(cmp)]]
    return render_table(shown)


def presets_table(presets: Mapping[str, Any], counts: Mapping[str, Sequence[int]]):
    """`dynbench models`: one row per preset; `counts[name]` = (llava, dynamic-llava) parameters."""
    from rich.table import Table

    table = Table(title="dynbench model presets")
    for col in ("preset", "params llava", "params dynamic-llava", "image tokens", "layers", "hidden",
                "sparse layer", "description"):
        table.add_column(col, overflow="fold")
    for name, p in presets.items():
        table.add_row(name, *(f"{n / 1e9:.3f} B" if n > 1e8 else f"{n / 1e6:.2f} M" for n in counts[name]),
                      str(p.image_tokens), str(p.layers), str(p.hidden), str(p.sparse_layer), p.description)
    return table


def env_table(snap: Mapping[str, Any]):
    """`dynbench env`: the snapshot as a two-column table."""
    from rich.table import Table

    table = Table(title="dynbench env", show_header=False)
    for key, value in snap.items():
        table.add_row(key, DASH if value is None else str(value))
    return table


def gpus_table(gpus: Mapping[str, Any]):
    """`dynbench gpus`: the spec table roofline bounds use (`measure.gpus.GPUS`)."""
    from rich.table import Table

    table = Table(title="dynbench GPU specs (dense peaks, boost clock)",
                  caption="--gpu NAME selects one; --gpu-spec TFLOPS,GBPS any other. float32 bounds use the FP32 "
                  "column (PyTorch's default: TF32 off for matmuls), TF32 only when allowed. ridge = FLOP per "
                  "byte where 16-bit compute meets memory bandwidth.", caption_justify="left")
    for col in ("name", "GPU", "bf16/fp16 TFLOP/s", "TF32", "FP32", "GB/s", "memory", "ridge FLOP/B", "source"):
        table.add_column(col, justify="left" if col in ("name", "GPU", "source") else "right",
                         overflow="fold", no_wrap=col in ("name", "GPU"))
    for name, g in gpus.items():
        table.add_row(name, g.label, f"{g.tflops_fp16:g}", f"{g.tflops_tf32:g}", f"{g.tflops_fp32_nontensor:g}",
                      f"{g.mem_gbps:g}", DASH if g.mem_gib is None else f"{g.mem_gib:g} GB",
                      f"{g.tflops_fp16 * 1e3 / g.mem_gbps:.0f}", g.source)
    return table


def methods_table(rows: Sequence[Mapping[str, Any]]):
    """`dynbench methods`: one row per method (`cli/methods.py` rows); a broken plug-in shows its error."""
    from rich.table import Table

    table = Table(title="dynbench methods", caption="a plug-in registers in the `dynbench.methods` entry-point "
                  "group (docs/methods.md); `--method package.module:Name` runs one from a local module",
                  caption_justify="left")
    for col in ("method", "options (flag = default)", "modes", "from", "what it does"):
        table.add_column(col, overflow="fold", no_wrap=col == "method")
    for r in rows:
        options = "\n".join(f"{o['flag']} = {_option_default(o['default'])}" for o in r["options"]) or DASH
        what = f"[red]broken: {r['error']}[/]" if r["error"] else r["summary"] or DASH
        table.add_row(r["name"], options, ", ".join(r["modes"] or ()) or DASH, r["origin"], what)
    return table


def _option_default(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
