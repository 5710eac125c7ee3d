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
from dynbench.names import BASELINE, MODES
from dynbench.records import key_of
from dynbench.report.compare import (
    DELTA_METRICS,
    HEADLINE,
    IMPOSED,
    LATENCY_SAMPLES,
    SHOWN_POINT,
    compare,
    env_labels,
    records,
    summary_rows,
)  # fmt: skip
from dynbench.report.format import DASH, fmt_bytes, fmt_ms, fmt_pct, fmt_t, md_table, run_length

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
        return f"{text} ({pct} [{lo:+.1f}, {hi:+.1f}]{mark})"
    return f"{text} ({pct}{mark})"


def keeps_label(row: Mapping[str, Any]) -> str:
    """Requested keep ratios: 'vision/text', text 'learned' or 'imposed'; the baselines' own
    parameters: fastv 'K2 R0.5' (matched: 'K3 R0.828 =flops@0.2'), h2o / streaming-llm 'KV 0.2'."""
    if row.get("method") == BASELINE:
        return DASH
    if row.get("method") == "fastv" and row.get("fastv_k") is not None:
        label = f"K{int(row['fastv_k'])} R{row.get('fastv_r'):.3g}"
        if row.get("match_budget"):
            label += f" ={row['match_budget']}@{row.get('vision_keep'):g}"
        return label
    if row.get("kv_budget") is not None:
        return f"KV {row['kv_budget']:g}"
    if row.get("method") == "random" and row.get("vision_keep") is not None:
        return f"{row['vision_keep']:g}" + (f" ={row['match_budget']}" if row.get("match_budget") else "")
    v = DASH if row.get("vision_keep") is None else f"{row['vision_keep']:g}"
    if row.get("text_policy") == "learned":
        t = "learned"
    elif row.get("text_keep") is None:
        t = DASH
    else:
        t = f"{row['text_keep']:g}"
    return f"{v}/{t}"


def _counted(row: Mapping[str, Any], kept: str, total: str, ratio: str) -> str:
    k, n, r = row.get(kept), row.get(total), row.get(ratio)
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
        text += f" ×{row[ratio]:.2f}"
    return _with_delta(text, row, name)


def _status(row: Mapping[str, Any]) -> str:
    s = row.get("status") or DASH
    return s if len(s) <= 40 else s[:39] + "…"


# one column of a mode table: header, cell formatter, which metrics must be present to show it
@dataclass(frozen=True)
class Column:
    header: str
    cell: Any  # Callable[[Mapping], str]
    needs: tuple[str, ...] = ()
    numeric: bool = True


METRIC_COLUMNS = (
    Column("MACs (fvcore)", lambda r: _with_delta(fmt_t(r.get("tmacs")), r, "tmacs"), ("tmacs",)),
    Column("FLOPs (paper)", lambda r: _with_delta(fmt_t(r.get("tflops_paper")), r, "tflops_paper"),
           ("tflops_paper",)),
    Column("equiv. tokens", lambda r: _with_delta(DASH if r.get("equivalent_tokens") is None
                                                  else f"{r['equivalent_tokens']:.1f}", r, "equivalent_tokens"),
           ("equivalent_tokens",)),
    Column("peak mem", lambda r: _with_delta(fmt_bytes(r.get("peak_mem_bytes")), r, "peak_mem_bytes"),
           ("peak_mem_bytes",)),
    Column("KV prompt", lambda r: _with_delta(fmt_bytes(r.get("kv_bytes_prompt")), r, "kv_bytes_prompt"),
           ("kv_bytes_prompt",)),
    Column("KV generated", lambda r: _with_delta(fmt_bytes(r.get("kv_bytes_generated")), r,
                                                 "kv_bytes_generated"), ("kv_bytes_generated",)),
    Column("TTFT", lambda r: _with_delta(fmt_ms(r.get("ttft_ms")), r, "ttft_ms"), ("ttft_ms",)),
    Column("TTFT roofline", lambda r: _roofline(r, "ttft_roofline_ms", "ttft_roofline_ratio"),
           ("ttft_roofline_ms",)),
    Column("TPOT med / p90", lambda r: _latency(r, "tpot_ms"), ("tpot_ms_median",)),
    Column("TPOT roofline", lambda r: _roofline(r, "tpot_roofline_ms", "tpot_roofline_ratio"),
           ("tpot_roofline_ms",)),
    Column("step med / p90", lambda r: _latency(r, "step_ms"), ("step_ms_median",)),
    Column("step roofline", lambda r: _roofline(r, "step_roofline_ms_median"), ("step_roofline_ms_median",)),
    Column("total", lambda r: _with_delta(fmt_ms(r.get("total_ms")), r, "total_ms"), ("total_ms",)),
    Column("total roofline", lambda r: _roofline(r, "total_roofline_ms", "total_roofline_ratio"),
           ("total_roofline_ms",)),
    Column("scoring", lambda r: fmt_ms(r.get("scoring_ms")), ("scoring_ms",)),
)  # fmt: skip
# columns shown only when the value varies inside one mode table (otherwise in the title)
CONTEXT = (("model", "model"), ("device", "device"), ("dtype", "dtype"), ("attn", "attn"),
           ("batch", "batch"))  # fmt: skip


@dataclass
class TableData:
    """A rendered-to-strings table: the one source for rich, Markdown and the run summary."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    notes: list[str] = field(default_factory=list)


def _varying(rows: list[dict], key: str) -> bool:
    return len({str(r.get(key)) for r in rows}) > 1


def _context_title(rows: list[dict], lead: str) -> tuple[str, list[tuple[str, str]]]:
    """Title naming what is constant; the varying context fields become columns."""
    fixed, varying = [], []
    for key, header in CONTEXT:
        if _varying(rows, key):
            varying.append((key, header))
        elif rows and rows[0].get(key) is not None:
            fixed.append(f"batch {rows[0][key]}" if key == "batch" else str(rows[0][key]))
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
        notes.append(f"{IMPOSED}: budget policy, the keep ratio was imposed (cost of that ratio, "
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
             if r.get("roofline_gpu") is not None}  # fmt: skip
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


def _field(name: str):
    return lambda r: DASH if r.get(name) is None else str(r[name])


def mode_tables(cmp: pd.DataFrame) -> list[TableData]:
    """One table per mode present in a `compare` result (strings, no markup)."""
    all_rows = records(cmp)
    tables = []
    for mode in [*MODES, *sorted({str(r["mode"]) for r in all_rows} - set(MODES))]:
        rows = [r for r in all_rows if r.get("mode") == mode]
        if not rows:
            continue
        title, varying = _context_title(rows, mode)
        cols = [Column(h, _field(k), (), False) for k, h in varying]
        cols += [
            Column("method", lambda r: r.get("method") or DASH, (), False),
            Column("prompt", lambda r: DASH if r.get("prompt_len") is None else str(r["prompt_len"])),
        ]
        if mode != "prefill":
            cols.append(Column("gen", lambda r: DASH if r.get("gen_len") is None else str(r["gen_len"])))
        cols.append(Column("keep v/t", keeps_label, (), False))
        cols.append(Column("image kept", lambda r: _counted(
            r, "image_tokens_kept", "image_tokens", "vision_keep_realized")))
        if mode != "prefill":
            cols.append(Column("text kept/fed", lambda r: _counted(
                r, "text_tokens_kept", "text_tokens_fed", "text_keep_realized")))
        cols += [c for c in METRIC_COLUMNS if any(r.get(n) is not None for r in rows for n in c.needs)]
        if any(r.get("token_agreement") is not None for r in rows):
            cols.append(Column("tokens = llava", lambda r: DASH if r.get("token_agreement") is None
                               else f"{r['token_agreement'] * 100:.1f}%"))  # fmt: skip
        cols.append(Column("status", _status, (), False))
        if any(r.get("env_mixed") for r in rows):
            cols.append(Column("env", lambda r: r.get("env", "?") + (ENV_MISMATCH if r.get("env_mismatch")
                                                                     else ""), (), False))  # fmt: skip
        if any(r.get("note") for r in rows):
            cols.append(Column("note", lambda r: r.get("note") or "", (), False))
        tables.append(TableData(
            title=title, headers=[c.header for c in cols],
            rows=[[c.cell(r) for c in cols] for r in rows],
            numeric=[c.numeric for c in cols], notes=table_notes(rows),
        ))  # fmt: skip
    return tables


def rich_table(t: TableData):
    from rich.table import Table

    table = Table(title=t.title, caption="\n".join(t.notes) or None, caption_justify="left")
    for header, numeric in zip(t.headers, t.numeric, strict=True):
        table.add_column(header, justify="right" if numeric else "left")
    for row in t.rows:
        table.add_row(*row)
    return table


def markdown_table(t: TableData, level: str = "###") -> str:
    text = f"{level} {t.title}\n\n" + md_table(t.headers, t.rows, t.numeric)
    if t.notes:
        text += "\n" + "".join(f"- {n}\n" for n in t.notes)
    return text


def render_table(cmp: pd.DataFrame) -> list:
    """rich Tables, one per mode, from a `compare` result."""
    return [rich_table(t) for t in mode_tables(cmp)]


def to_markdown(cmp: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown: a heading and a table per mode, notes as a list under it."""
    return "\n".join(markdown_table(t) for t in mode_tables(cmp))


def to_csv(cmp: pd.DataFrame) -> str:
    """The comparison as CSV, raw SI numbers (bytes, ms, T), Δ% as numbers, empty = null."""
    return cmp.to_csv(index=False, lineterminator="\n")


FORMATS = ("table", "md", "csv")


def build_report(df: pd.DataFrame, fmt: str = "table", paper: bool = False) -> list | str:
    """`dynbench report`: rich Tables for `table`, a string for `md` / `csv`."""
    if fmt not in FORMATS:
        raise DynbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not summary_rows(df):
        raise DynbenchError("the results hold no summary rows (step null): the run was interrupted "
                            "before any point finished; run it again with --resume")
    from dynbench.report.paper import paper_table, paper_to_markdown, render_paper_table

    data = paper_table(df) if paper else compare(df)
    if fmt == "csv":
        return to_csv(data)
    if fmt == "md":
        return paper_to_markdown(data) if paper else to_markdown(data)
    return render_paper_table(data) if paper else render_table(data)


ROOFLINE_HEADLINE = {"prefill": "ttft_roofline_ms", "no-cache": "step_roofline_ms_median",
                     "kv-cache": "tpot_roofline_ms"}  # the run table's latency cell when nothing was timed
RUN_COLUMNS = ("method", "mode", "prompt", "gen", "keep v/t", "img kept", "text kept",
               "layer lens", "MACs", "peak mem", "KV prompt/gen", "latency", "status")  # fmt: skip
_RUN_LEFT = {"method", "mode", "keep v/t", "layer lens", "latency", "status"}
_RUN_WRAP = {"img kept", "text kept", "KV prompt/gen", "status"}  # the rest never wraps


def summary_table(rows: list[dict]):
    """The table `dynbench run` prints after a sweep: one line per point, Δ% vs llava.

    Compact on purpose (it must fit a 160-column log): realized keeps as counts, per-layer
    lengths run-length encoded, one headline latency per mode (prefill TTFT, no-cache step
    median, kv-cache TPOT median); budget rows say "imposed" after their keep ratios.
    """
    from rich import box
    from rich.table import Table

    summaries = [r for r in rows if r.get("step") is None]
    # one space between columns; only short-content columns may wrap: it fits 160 columns
    table = Table(title="dynbench run", caption_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0),
                  show_edge=False)  # fmt: skip
    for h in RUN_COLUMNS:
        table.add_column(h, justify="left" if h in _RUN_LEFT else "right", no_wrap=h not in _RUN_WRAP)
    if not summaries:
        table.caption = "no point finished"
        return table
    df = pd.DataFrame.from_records(summaries)
    lists = {key_of(r, SHOWN_POINT): r for r in summary_rows(df)}
    cmp = records(compare(df))
    for r in cmp:
        mode, src = r.get("mode"), lists.get(key_of(r, SHOWN_POINT), {})
        lat = HEADLINE.get(mode)
        label = {"ttft_ms": "TTFT", "step_ms_median": "step", "tpot_ms_median": "TPOT"}.get(lat, "")
        latency = DASH if lat is None or r.get(lat) is None else (
            f"{label} {_with_delta(fmt_ms(r[lat]), r, lat)}")
        roof = ROOFLINE_HEADLINE.get(mode)
        if latency == DASH and roof is not None and r.get(roof) is not None:  # nothing measured: the projection
            latency = f"{label} ≥{_roofline(r, roof)}"
        keep = keeps_label(r) + (" imposed" if r.get("note") == IMPOSED else "")
        text = DASH if mode == "prefill" or r.get("text_tokens_fed") is None else (
            f"{DASH if r.get('text_tokens_kept') is None else r['text_tokens_kept']}/{r['text_tokens_fed']}")
        image = DASH if r.get("image_tokens_kept") is None else f"{r['image_tokens_kept']}"
        table.add_row(
            r.get("method") or DASH, mode or DASH,
            DASH if r.get("prompt_len") is None else str(r["prompt_len"]),
            DASH if r.get("gen_len") is None else str(r["gen_len"]), keep, image, text,
            run_length(src.get("layer_cache_lens") if mode == "kv-cache" else src.get("layer_seq_lens")),
            _with_delta(fmt_t(r.get("tmacs")), r, "tmacs"), fmt_bytes(r.get("peak_mem_bytes")),
            f"{fmt_bytes(r.get('kv_bytes_prompt'))}/{fmt_bytes(r.get('kv_bytes_generated'))}", latency,
            _status(r) + (f" (env {r['env']})" if r.get("env_mixed") else ""),
        )  # fmt: skip
    notes = [n.replace(f"{IMPOSED}:", f"imposed = {IMPOSED}:") for n in table_notes(cmp)]
    table.caption = "\n".join([
        "Δ% vs llava at the same point; MACs measured by fvcore (whole forward); layer lens = "
        "input length of each decoder layer (prefill, no-cache: last step) or its KV length after the "
        "last step (kv-cache), run-length encoded (e.g. 584×2 123×2: 584 tokens in layers 0–1, 123 in layers 2–3)",
        *notes])  # fmt: skip
    return table


def presets_table(presets: Mapping[str, Any], counts: Mapping[str, Sequence[int]]):
    """`dynbench models`: one row per preset; `counts[name]` = (llava, dynamic-llava) parameters."""
    from rich.table import Table

    table = Table(title="dynbench model presets")
    for col in ("preset", "params llava", "params dynamic-llava", "image tokens", "layers", "hidden",
                "sparse layer", "description"):  # fmt: skip
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
                  "byte where 16-bit compute meets memory bandwidth.", caption_justify="left")  # fmt: skip
    for col in ("name", "GPU", "bf16/fp16 TFLOP/s", "TF32", "FP32", "GB/s", "memory", "ridge FLOP/B", "source"):
        table.add_column(col, justify="left" if col in ("name", "GPU", "source") else "right",
                         overflow="fold", no_wrap=col in ("name", "GPU"))  # fmt: skip
    for name, g in gpus.items():
        table.add_row(name, g.label, f"{g.tflops_fp16:g}", f"{g.tflops_tf32:g}", f"{g.tflops_fp32_nontensor:g}",
                      f"{g.mem_gbps:g}", DASH if g.mem_gib is None else f"{g.mem_gib:g} GB",
                      f"{g.tflops_fp16 * 1e3 / g.mem_gbps:.0f}", g.source)  # fmt: skip
    return table
