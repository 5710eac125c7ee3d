"""The only comparison: every method next to the `llava` row at the same point, with Δ%.

What a comparison holds comes straight from summary records (the last one of a point wins); Δ% =
(value − llava) / llava × 100 against the `llava` row with the same comparison key
(`records.COMPARISON_KEY`: model, mode, batch, prompt_len, gen_len, dtype, device, attn). Nothing
is averaged across points, interpolated or re-measured. Tables, the paper view and the charts
all take their Δ% from `compare`.

Honesty rules, as implemented:
- a missing baseline (no `llava` row at that key, or one without the value) gives Δ = None,
  shown as "—", never 0;
- rows measured in different environments (`env_id`) are flagged: each environment gets a
  letter (A, B, …), and a Δ% taken against a `llava` row from another environment is marked;
- latency Δ% carry the 95 % bootstrap CI of the ratio of medians (the gate's rule) and a noise
  flag when it includes 0 % or a side has too few samples;
- budget-policy rows (`text_keep_imposed`) say "text keep imposed": they measure the cost of a
  given keep ratio, not the ratio the method would choose.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from dynbench.names import BASELINE, METHOD_ORDER, MODES
from dynbench.records import (
    COMPARISON_KEY,
    POINT_KEY,
    QUANTILES,
    SHOWN_KEY,
    SPREAD_METRICS,
    STEP_ROW,
    hashable,
    is_point_summary,
    key_of,
    row_kind,
)
from dynbench.report.format import delta_pct

VARIANT = ("vision_keep", "text_keep", "text_policy", "fastv_k", "fastv_r", "kv_budget", "match_budget",
           "method_options")
SPEC = tuple(f for f in POINT_KEY if f not in COMPARISON_KEY)  # method, VARIANT, reuse_vision, seed, weights, inputs, …
# metrics compared with the baseline (value and `<name>_delta_pct`)
DELTA_METRICS = (
    "tmacs", "tflops_paper", "equivalent_tokens", "peak_mem_bytes", "kv_bytes", "kv_bytes_prompt", "kv_bytes_generated",
    "ttft_ms", "tpot_ms_median", "tpot_ms_p90", "step_ms_median", "step_ms_p90", "total_ms",
    "energy_j", "energy_j_per_token",
    "ops_per_step",  # kernel launches per step (measure/launches.py)
    "ppl", "ppl_pooled", "meteor",  # quality (dynbench/quality.py)
)
# roofline bounds (measure/roofline.py), compared with llava's on the same roofline_gpu only
ROOFLINE_METRICS = ("ttft_roofline_ms", "tpot_roofline_ms", "step_roofline_ms_median", "total_roofline_ms")
ROOFLINE_CARRIED = ("roofline_gpu", "roofline_tflops", "roofline_gbps", "roofline_projected", "ttft_roofline_ratio",
                    "tpot_roofline_ratio", "total_roofline_ratio")
# latency metrics and the raw samples behind each: their Δ% carries the bootstrap CI of the
# ratio of medians (the gate's rule) or is marked as noise
LATENCY_SAMPLES = {"ttft_ms": "ttft_ms_samples", "tpot_ms_median": "latency_ms_samples",
                   "step_ms_median": "latency_ms_samples", "total_ms": "total_ms_samples"}
CARRIED = (
    "status", "image_tokens", "image_tokens_kept", "vision_keep_realized", "text_tokens_fed",
    "text_tokens_kept", "text_keep_realized", "timer", "mem_source", "throttled", "env_id",
    "matched_ratio", "scoring_ms", "layer_seq_lens", "layer_cache_lens", *ROOFLINE_CARRIED,
    "host_bound_frac", "host_ms_median",  # measure/host.py: the report labels host-bound TPOTs
)
# a dataset point's aggregate: how many samples, and the spread over them (samples.py)
DATASET_CARRIED = ("samples", "samples_skipped", "text_keep_pooled",
                   *(f"{m}_{q}" for m in SPREAD_METRICS for q in QUANTILES))
QUALITY_CARRIED = ("answer_tokens", "output_tokens")
INT_FIELDS = {
    "batch", "prompt_len", "gen_len", "seed", "step", "repeat", "warmup", "repeats", "image_tokens",
    "seq_len", "image_tokens_kept", "text_tokens_fed", "text_tokens_kept", "params", "sample", "round", "rounds",
    "samples", "samples_skipped", "round_prompt_tokens", "limit", "sample_seed",
}
HEADLINE = {"prefill": "ttft_ms", "no-cache": "step_ms_median", "kv-cache": "tpot_ms_median"}
IMPOSED = "text keep imposed"


def clean(value: Any, name: str = "") -> Any:
    """One record value as plain Python: NaN/NA → None, numpy scalars → Python, integral ints."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if (name in INT_FIELDS or name.endswith("_bytes")) and value.is_integer():
            return int(value)
    return value


def records(df: pd.DataFrame) -> list[dict]:
    """Rows of a DataFrame as dicts of plain values (see `clean`)."""
    cols = list(df.columns)
    return [{c: clean(v, c) for c, v in zip(cols, row, strict=True)}
            for row in df.itertuples(index=False, name=None)]


def summary_rows(df: pd.DataFrame) -> list[dict]:
    """Summary rows (`step` null), one per point: the last one written wins. A dataset point's
    summary is its aggregate row; its sample and round rows are `sample_rows`'."""
    return summary_rows_of(records(df))


def step_rows(df: pd.DataFrame) -> list[dict]:
    """Step rows, one per (point, measured run, step): the last one written wins. Dataset points'
    step rows are left out: their samples differ in length, so no step-by-step curve stands for the
    point (`sample_rows` and the sample-distribution chart do)."""
    latest: dict[tuple, dict] = {}
    for row in records(df):
        if row_kind(row) != STEP_ROW or row.get("sample") is not None:
            continue
        key = key_of(row, SHOWN_KEY + ("repeat", "step"))
        latest.pop(key, None)
        latest[key] = row
    return list(latest.values())


def sample_rows(df: pd.DataFrame, kind: str = "sample") -> list[dict]:
    """The sample rows (`kind="round"`: the round rows) of each dataset point's latest aggregate,
    in sample (and round) order: the rows that share that aggregate's `point_id`, so a point run
    again (after an error, or after --resume cut it short) never mixes two runs' samples."""
    rows = records(df)
    latest = {r.get("point_id") for r in summary_rows_of(rows) if r.get("dataset") is not None}
    mine = [r for r in rows if row_kind(r) == kind and r.get("point_id") in latest]
    return sorted(mine, key=lambda r: (r.get("point_id"), r.get("sample"), r.get("round") or 0))


def summary_rows_of(rows: Iterable[dict]) -> list[dict]:
    """`summary_rows` of plain record dicts."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        if is_point_summary(row):
            key = key_of(row, SHOWN_KEY)
            latest.pop(key, None)  # re-insert so the order follows the last write
            latest[key] = row
    return list(latest.values())


def delta_ci(samples: Any, base_samples: Any) -> tuple[float, float] | None:
    """95 % bootstrap CI of Δ% = (ratio of medians − 1) × 100, the gate's rule; None with fewer
    than MIN_CI_SAMPLES samples on a side (then the Δ% cannot be told from noise)."""
    from dynbench.stats import MIN_CI_SAMPLES, ratio_of_medians_ci

    xs = [v for v in samples or () if v is not None]
    bs = [v for v in base_samples or () if v is not None]
    if min(len(xs), len(bs)) < MIN_CI_SAMPLES or min(xs + bs) <= 0:
        return None
    _, lo, hi = ratio_of_medians_ci(xs, bs)
    return (lo - 1.0) * 100.0, (hi - 1.0) * 100.0


def _ids(value: Any) -> list | None:
    """`generated_ids` of batch row 0 (records hold row 0; a (B, n) list is accepted too)."""
    if not isinstance(value, list) or not value:
        return None
    return value[0] if isinstance(value[0], list) else value


def token_agreement(ids: Any, base_ids: Any) -> float | None:
    """Share of identical ids, position by position, over the shorter list; None if either is missing."""
    a, b = _ids(ids), _ids(base_ids)
    if a is None or b is None:
        return None
    n = min(len(a), len(b))
    return sum(x == y for x, y in zip(a[:n], b[:n], strict=True)) / n if n else None


def imposed(row: Mapping[str, Any]) -> bool:
    """Budget-policy rows: the text keep ratio was imposed, not chosen by the predictor."""
    return row.get("method") != BASELINE and (
        row.get("text_keep_imposed") is True or row.get("text_policy") == "budget")


def method_rank(method: str | None) -> tuple[int, str]:
    m = method or ""
    return (METHOD_ORDER.index(m), "") if m in METHOD_ORDER else (len(METHOD_ORDER), m)


def none_last(value: Any) -> tuple:
    return (value is None, value if value is not None else 0)


def _sort_key(row: Mapping[str, Any]) -> tuple:
    mode = row.get("mode")
    return (
        MODES.index(mode) if mode in MODES else len(MODES), str(mode),
        *(none_last(row.get(k)) if k not in ("model", "dtype", "device", "attn")
          else (row.get(k) is None, str(row.get(k))) for k in COMPARISON_KEY if k != "mode"),
        method_rank(row.get("method")), none_last(row.get("vision_keep")),
        none_last(row.get("text_keep")), str(row.get("text_policy")), none_last(row.get("fastv_k")),
        none_last(row.get("fastv_r")), none_last(row.get("kv_budget")), str(row.get("match_budget")),
        str(hashable(row.get("method_options"))), str(row.get("env_id")),
    )


def _realized(row: Mapping[str, Any], ratio: str, kept: str, total: str) -> float | None:
    if row.get(ratio) is not None:
        return row[ratio]
    k, n = row.get(kept), row.get(total)
    return k / n if k is not None and n else None


def _pick_baseline(row: Mapping[str, Any], bases: list[dict]) -> dict | None:
    """The `llava` row to compare with: same environment first, then ok, same reuse/seed, latest."""
    if not bases:
        return None
    score = lambda i: (
        bases[i].get("env_id") == row.get("env_id"), bases[i].get("status") == "ok",
        bases[i].get("reuse_vision") == row.get("reuse_vision"), bases[i].get("seed") == row.get("seed"), i,
    )
    return bases[max(range(len(bases)), key=score)]


def env_labels(env_ids: Iterable[str | None]) -> dict[str | None, str]:
    """A short letter per environment id, in order of first appearance ('?' for a missing id)."""
    labels: dict[str | None, str] = {}
    letters = iter(string.ascii_uppercase)
    for e in env_ids:
        if e not in labels:
            labels[e] = "?" if e is None else next(letters, f"E{len(labels) + 1}")
    return labels


COMPARE_COLUMNS = (
    *COMPARISON_KEY, *SPEC, "is_baseline", "note", "env", "env_id", "baseline_env_id", "env_mismatch",
    "env_mixed", "status", "image_tokens", "image_tokens_kept", "vision_keep_realized",
    "text_tokens_fed", "text_tokens_kept", "text_keep_realized", "token_agreement", "top1_agree",
    "answer_tokens", "output_tokens", "timer",
    "mem_source", "throttled", "matched_ratio", "scoring_ms", "layer_seq_lens", "layer_cache_lens",
    *(c for m in DELTA_METRICS for c in (m, f"{m}_delta_pct")),
    *ROOFLINE_CARRIED, *(c for m in ROOFLINE_METRICS for c in (m, f"{m}_delta_pct")),
    *(c for m in LATENCY_SAMPLES for c in (f"{m}_delta_ci_low", f"{m}_delta_ci_high", f"{m}_delta_noise")),
    *DATASET_CARRIED, "host_bound_frac", "host_ms_median",
)
_NULLABLE_INT = [c for c in COMPARE_COLUMNS if c in INT_FIELDS or c.endswith("_bytes")
                 or c in ("kv_bytes_prompt", "kv_bytes_generated")]


def answer_argmax(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[Any, list]]:
    """point_id → {sample index: the argmax ids at its answer positions}: a dataset point's sample
    rows, or a plain point's summary row (sample None)."""
    out: dict[str, dict[Any, list]] = {}
    for r in rows:
        if r.get("answer_argmax") and row_kind(r) in ("sample", "point") and r.get("point_id") is not None:
            if row_kind(r) == "point" and r.get("dataset") is not None:
                continue  # an aggregate carries none; its samples do
            out.setdefault(r["point_id"], {})[r.get("sample")] = r["answer_argmax"]
    return out


def _top1(row: Mapping[str, Any], base: Mapping[str, Any] | None, argmax: Mapping[str, dict]) -> float | None:
    """`quality.top1_agree` of a point's answer argmax ids with llava's, sample by sample."""
    from dynbench.quality import top1_agree

    if base is None or row is base:
        return None
    mine, dense = argmax.get(row.get("point_id"), {}), argmax.get(base.get("point_id"), {})
    return top1_agree([(ids, dense[s]) for s, ids in mine.items() if s in dense])


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """Summary rows side by side with the `llava` row at the same comparison key, with Δ%.

    One row per point, sorted by mode, key, method (llava first), keep ratios. For each metric
    in DELTA_METRICS: the value (raw SI) and `<metric>_delta_pct` vs llava (None for llava rows
    themselves and where no baseline value exists). `token_agreement`: share of identical
    generated ids with llava; `top1_agree`: share of teacher-forced answer positions where the
    argmax equals llava's on the same sample (`quality.top1_agree`). `env`: a letter per
    environment; `env_mismatch`: the baseline comes from another environment; `env_mixed`: the
    row's mode table holds several.
    """
    rows = sorted(summary_rows(df), key=_sort_key)
    argmax = answer_argmax(records(df[df["answer_argmax"].notna()])) if "answer_argmax" in df.columns else {}
    labels = env_labels(r.get("env_id") for r in rows)
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        by_key.setdefault(key_of(r, COMPARISON_KEY), []).append(r)
    mode_envs: dict[Any, set] = {}
    for r in rows:
        mode_envs.setdefault(r.get("mode"), set()).add(r.get("env_id"))
    out = []
    for r in rows:
        is_base = r.get("method") == BASELINE
        bases = [b for b in by_key[key_of(r, COMPARISON_KEY)] if b.get("method") == BASELINE]
        base = r if is_base else _pick_baseline(r, bases)
        carried = (*COMPARISON_KEY, *SPEC, *CARRIED, *DATASET_CARRIED, *QUALITY_CARRIED)
        item: dict[str, Any] = {k: r.get(k) for k in carried}
        item.update(
            is_baseline=is_base,
            note=IMPOSED if imposed(r) else "",
            env=labels[r.get("env_id")],
            baseline_env_id=None if base is None else base.get("env_id"),
            env_mismatch=base is not None and base.get("env_id") != r.get("env_id"),
            env_mixed=len(mode_envs[r.get("mode")]) > 1,
            vision_keep_realized=_realized(r, "vision_keep_realized", "image_tokens_kept", "image_tokens"),
            text_keep_realized=_realized(r, "text_keep_realized", "text_tokens_kept", "text_tokens_fed"),
            token_agreement=None if is_base or base is None
            else token_agreement(r.get("generated_ids"), base.get("generated_ids")),
            top1_agree=_top1(r, base, argmax),
        )
        item["env_mixed"] = item["env_mixed"] or item["env_mismatch"]
        for m in DELTA_METRICS:
            item[m] = r.get(m)
            item[f"{m}_delta_pct"] = None if is_base or base is None else delta_pct(r.get(m), base.get(m))
        same_roof = base is not None and base.get("roofline_gpu") == r.get("roofline_gpu")
        for m in ROOFLINE_METRICS:
            item[m] = r.get(m)
            item[f"{m}_delta_pct"] = None if is_base or not same_roof else delta_pct(r.get(m), base.get(m))
        for m, samples in LATENCY_SAMPLES.items():
            ci = None if is_base or base is None else delta_ci(r.get(samples), base.get(samples))
            item[f"{m}_delta_ci_low"], item[f"{m}_delta_ci_high"] = ci if ci is not None else (None, None)
            item[f"{m}_delta_noise"] = None if item[f"{m}_delta_pct"] is None else (ci is None or ci[0] <= 0 <= ci[1])
        out.append(item)
    cmp = pd.DataFrame.from_records(out, columns=list(COMPARE_COLUMNS))
    return nullable_ints(cmp, _NULLABLE_INT)


def nullable_ints(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Keep ints ints next to nulls (CSV: 64, not 64.0); a column holding fractions stays float."""
    for c in columns:
        try:
            df[c] = df[c].astype("Int64")
        except (TypeError, ValueError):
            pass
    return df
