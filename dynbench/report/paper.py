"""The paper's Table 4 view: prefill time, total time without cache and peak memory with cache
per generated length, every method variant against `llava` (from `report.compare`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from dynbench.names import BASELINE
from dynbench.records import hashable, key_of
from dynbench.report.compare import VARIANT as METHOD_PARAMS
from dynbench.report.compare import compare, method_rank, none_last, nullable_ints, records
from dynbench.report.format import DASH, fmt_bytes, fmt_ms, fmt_pct
from dynbench.report.tables import ENV_MISMATCH, TableData, keeps_label, markdown_table, rich_table, table_notes

PAPER_MEASURES = (  # (measure, mode it comes from, column of that mode's summary row)
    ("prefill_ms", "prefill", "ttft_ms"),
    ("no_cache_total_ms", "no-cache", "total_ms"),
    ("kv_cache_peak_mem_bytes", "kv-cache", "peak_mem_bytes"),
)
SETTING = ("model", "batch", "prompt_len", "dtype", "device", "attn")
VARIANT = ("method", *METHOD_PARAMS)
PAPER_COLUMNS = (*SETTING, *VARIANT, "note", "measure", "gen_len", "value", "delta_pct", "status", "env",
                 "env_mismatch")


def paper_table(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 4 as long data: one row per (setting, method variant, measure, gen_len).

    measures: `prefill_ms` (ttft_ms of prefill rows), `no_cache_total_ms` (total_ms of no-cache
    rows), `kv_cache_peak_mem_bytes` (peak_mem_bytes of kv-cache rows); `delta_pct` vs llava at
    the same point. `status` keeps "oom" so the view can say OOM like the paper.
    """
    cmp = records(compare(df))
    out = []
    for measure, mode, col in PAPER_MEASURES:
        for r in cmp:
            if r.get("mode") != mode:
                continue
            out.append({
                **{k: r.get(k) for k in (*SETTING, *VARIANT, "note", "gen_len", "status", "env", "env_mismatch")},
                "measure": measure, "value": r.get(col), "delta_pct": r.get(f"{col}_delta_pct"),
            })
    ptab = pd.DataFrame.from_records(out, columns=list(PAPER_COLUMNS))
    return nullable_ints(ptab, ("batch", "prompt_len", "gen_len"))


def _variant(r: Mapping[str, Any]) -> tuple:
    return tuple(hashable(r.get(k)) for k in VARIANT)


def _prefill_variant(v: tuple) -> tuple:
    """What a prefill row shares with the decode rows of its variant: all but the text keep."""
    return v[:2] + v[4:]


def paper_tables(ptab: pd.DataFrame) -> list[TableData]:
    """Wide view per setting: a row per method variant; prefill, then w/o cache total time and
    w/ cache peak memory per generated length (cells: value and Δ% vs llava; OOM as such)."""
    rows = records(ptab)
    settings = sorted({key_of(r, SETTING) for r in rows},
                      key=lambda k: tuple((v is None, str(v)) for v in k))
    tables = []
    for setting in settings:
        group = [r for r in rows if key_of(r, SETTING) == setting]
        decode = [r for r in group if r["measure"] != "prefill_ms"]
        variants = sorted({_variant(r) for r in decode}
                          | {_variant(r) for r in group if r["measure"] == "prefill_ms"
                             and not any(_prefill_variant(v) == _prefill_variant(_variant(r))
                                         for v in map(_variant, decode))},
                          key=lambda v: (method_rank(v[0]), none_last(v[1]), none_last(v[2]), str(v[3]), str(v[4:])))
        gens = {m: sorted({r["gen_len"] for r in group if r["measure"] == m and r["gen_len"] is not None})
                for m, _, _ in PAPER_MEASURES}
        headers = ["method", "keep v/t", "prefill time"]
        headers += [f"w/o cache total, gen {g}" for g in gens["no_cache_total_ms"]]
        headers += [f"w/ cache peak mem, gen {g}" for g in gens["kv_cache_peak_mem_bytes"]]
        body = []
        for v in variants:
            def cell(measure: str, gen: int | None, v=v, group=group) -> str:
                match = [r for r in group if r["measure"] == measure and r["gen_len"] == gen
                         and (_variant(r) == v if measure != "prefill_ms"
                              else _prefill_variant(_variant(r)) == _prefill_variant(v))]
                if not match:
                    return DASH
                r = match[-1]
                if r.get("status") == "oom":
                    return "OOM"
                if r.get("status") not in (None, "ok"):
                    return "error"
                text = (fmt_bytes if measure.endswith("_bytes") else fmt_ms)(r.get("value"))
                if r.get("method") == BASELINE or text == DASH:
                    return text
                mark = ENV_MISMATCH if r.get("env_mismatch") else ""
                return f"{text} ({fmt_pct(r.get('delta_pct'))}{mark})"

            row_like = dict(zip(VARIANT, v, strict=True))
            body.append([v[0] or DASH, keeps_label(row_like), cell("prefill_ms", None),
                         *(cell("no_cache_total_ms", g) for g in gens["no_cache_total_ms"]),
                         *(cell("kv_cache_peak_mem_bytes", g) for g in gens["kv_cache_peak_mem_bytes"])])
        model, batch, prompt_len, dtype, device, attn = setting
        title = (f"paper Table 4 view · {model} · {device} · {dtype} · {attn} · batch {batch} · "
                 f"prompt {prompt_len}")
        notes = ["prefill time = TTFT of prefill rows; w/o cache = total time of no-cache rows; "
                 "w/ cache = peak memory of kv-cache rows (paper: A100-80G, batch 8, 13B)"]
        notes += table_notes([{**r, "is_baseline": r.get("method") == BASELINE} for r in group],
                        deltas=("delta_pct",))
        tables.append(TableData(title, headers, body, [False, False] + [True] * (len(headers) - 2), notes))
    return tables


def render_paper_table(ptab: pd.DataFrame) -> list:
    return [rich_table(t) for t in paper_tables(ptab)]


def paper_to_markdown(ptab: pd.DataFrame) -> str:
    return "\n".join(markdown_table(t) for t in paper_tables(ptab))
