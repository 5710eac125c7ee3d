"""The paper's Table 3 view: generation ability beside decoding cost, per dataset, mode and method
variant, each against `llava` (Δ% from `report.compare`).

Columns as the paper's: output tokens fed → kept in computing (mean per sample), decoding TFLOPs
(no-cache rows, the paper's convention), KV memory of generated tokens (kv-cache rows), PPL of
the dataset's answers (teacher-forced points), METEOR of free-run answers (`--free-run` points),
and top-1 agreement with llava's argmax on the teacher-forced answers. A teacher-forced point and
a free-run point of the same setting, mode and variant make one row (run both, report both
folders together).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from dynbench.names import BASELINE
from dynbench.records import key_of
from dynbench.report.compare import VARIANT as METHOD_PARAMS
from dynbench.report.compare import compare, method_rank, none_last, records
from dynbench.report.format import DASH, fmt_bytes, fmt_pct, fmt_score, fmt_t
from dynbench.report.tables import ENV_MISMATCH, TableData, keeps_label, markdown_table, rich_table

SETTING = ("model", "dataset", "limit", "sample_seed", "batch", "gen_len", "dtype", "device", "attn")
VARIANT = ("method", *METHOD_PARAMS)
FORCED = ("text_tokens_fed", "text_tokens_kept", "tflops_paper", "kv_bytes_generated", "ppl", "ppl_pooled",
          "top1_agree", "samples")
FREE = ("meteor", "output_tokens")
DELTAS = ("tflops_paper", "kv_bytes_generated", "ppl", "ppl_pooled", "meteor")
TABLE3_COLUMNS = (*SETTING, "mode", *VARIANT, "note", "text_tokens_fed", "text_tokens_kept", "samples",
                  *(c for m in DELTAS for c in (m, f"{m}_delta_pct")), "top1_agree", "output_tokens",
                  "env_mismatch")


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 3 as one row per (setting, mode, method variant) of the dataset points in `df`:
    costs and PPL from the teacher-forced point, METEOR from the free-run one (module doc)."""
    rows = [r for r in records(compare(df)) if r.get("dataset") is not None]
    merged: dict[tuple, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: bool(r.get("free_run"))):  # teacher-forced first: its costs win
        key = (key_of(r, SETTING), r.get("mode"), key_of(r, VARIANT))
        item = merged.setdefault(key, {**{k: r.get(k) for k in (*SETTING, "mode", *VARIANT, "note")},
                                       "env_mismatch": False})
        for name in FORCED + FREE:  # the free-run point fills what the teacher-forced one lacks
            if item.get(name) is None and r.get(name) is not None:
                item[name] = r[name]
                if name in DELTAS:
                    item[f"{name}_delta_pct"] = r.get(f"{name}_delta_pct")
        item["env_mismatch"] = item["env_mismatch"] or bool(r.get("env_mismatch"))
    return pd.DataFrame.from_records(list(merged.values()), columns=list(TABLE3_COLUMNS))


def _cell(r: Mapping[str, Any], name: str, fmt) -> str:
    text = fmt(r.get(name))
    if r.get("method") == BASELINE or text == DASH or r.get(f"{name}_delta_pct") is None:
        return text
    return f"{text} ({fmt_pct(r.get(f'{name}_delta_pct'))}{ENV_MISMATCH if r.get('env_mismatch') else ''})"


def _tokens(r: Mapping[str, Any]) -> str:
    fed, kept = r.get("text_tokens_fed"), r.get("text_tokens_kept")
    if fed is None:
        return DASH
    return f"{fed} → {DASH if kept is None else kept}"


def _percent(x: float | None) -> str:
    return DASH if x is None else f"{x * 100:.1f}%"


HEADERS = ("mode", "method", "keep v/t", "output tokens → computing", "decoding TFLOPs", "KV mem (generated)",
           "PPL", "PPL pooled", "METEOR", "top-1 = llava")


def quality_tables(qtab: pd.DataFrame) -> list[TableData]:
    """One wide table per setting (dataset, model, …): a row per mode and method variant."""
    rows = records(qtab)
    settings = sorted({key_of(r, SETTING) for r in rows}, key=lambda k: tuple((v is None, str(v)) for v in k))
    tables = []
    for setting in settings:
        group = sorted((r for r in rows if key_of(r, SETTING) == setting),
                       key=lambda r: (str(r.get("mode")), method_rank(r.get("method")), none_last(r.get("vision_keep")),
                                      none_last(r.get("text_keep")), str(r.get("text_policy"))))
        body = [[str(r.get("mode")), r.get("method") or DASH, keeps_label(r), _tokens(r),
                 _cell(r, "tflops_paper", fmt_t), _cell(r, "kv_bytes_generated", fmt_bytes),
                 _cell(r, "ppl", fmt_score), _cell(r, "ppl_pooled", fmt_score), _cell(r, "meteor", fmt_score),
                 _percent(r.get("top1_agree"))] for r in group]
        s = dict(zip(SETTING, setting, strict=True))
        title = (f"paper Table 3 view · {s['model']} · {s['device']} · {s['dtype']} · dataset {s['dataset']}"
                 + (f" (limit {s['limit']})" if s["limit"] is not None else "") + f" · gen ≤ {s['gen_len']}")
        notes = ["output tokens → computing: generated tokens fed → kept from the sparse layer on (mean per sample); "
                 "decoding TFLOPs: no-cache, paper convention; KV mem: generated tokens' KV (kv-cache)",
                 "PPL: teacher-forced dataset answers (mean of per-sample PPL; pooled = exp(Σ NLL / Σ tokens)); "
                 "METEOR: --free-run answers; top-1: argmax = llava's on the answer positions"]
        if any(r.get("env_mismatch") for r in group):
            notes.append(f"{ENV_MISMATCH} Δ% against a llava row from another environment")
        tables.append(TableData(title, list(HEADERS), body, [False, False, False] + [True] * 7, notes))
    return tables


def render_quality_table(qtab: pd.DataFrame) -> list:
    return [rich_table(t) for t in quality_tables(qtab)]


def quality_to_markdown(qtab: pd.DataFrame) -> str:
    return "\n".join(markdown_table(t) for t in quality_tables(qtab))
