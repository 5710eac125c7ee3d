"""Dataset points: the rows beyond one point's — per round of a conversation, per sample, and the
aggregate over samples. Pure functions of what was measured (the sweep writes them).

A dataset point is the same `RunSpec` run once per sample (`sweep.py`). Each sample gets the
point's usual rows (`rows.point_rows`: step rows and a summary row, which becomes the *sample
row*: `sample`, `sample_id`), plus, for a conversation of several rounds, one *round row* per
round (`round_rows`). The point's *aggregate row* (`aggregate`, `sample` null) is written last:
  * every measured column is the mean over the samples that ended ok (counts and bytes — integer
    columns — rounded to the nearest integer), except peaks (the max), the raw latency samples
    (concatenated, so the report's bootstrap CI still works), `throttled` (any) and the columns
    that only make sense per sample (`generated_ids`, per-layer lengths, `seq_len`: null);
  * a column that is not a number is kept when every sample agrees, else null;
  * `<m>_p10` / `_p50` / `_p90` over samples for each `records.SPREAD_METRICS` metric (linear
    interpolation between ranks, numpy's default);
  * `ppl` is the mean of per-sample PPL (the paper's), `ppl_pooled` = exp(Σ NLL / Σ answer tokens);
  * `text_keep_pooled` = Σ kept / Σ fed (token-weighted: the ratio of the official scripts' mean
    output cache length to mean output length), beside the mean of per-sample ratios;
  * `samples` (ok samples aggregated), `samples_skipped` (bad records skipped), and a status:
    ok when every sample is; else `oom` or `error: k of n samples failed: …`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dynbench.names import ERROR_PREFIX, STATUS_OK, STATUS_OOM
from dynbench.quality import pooled_ppl, step_answer_columns
from dynbench.records import BY_NAME, ENV, IDENT, QUANTILES, SPEC, SPREAD_METRICS
from dynbench.stats import mean_or_none, median_or_none, percentile

PEAKS = ("peak_alloc_bytes", "peak_reserved_bytes", "nvml_process_bytes", "peak_rss_bytes", "peak_tensor_bytes",
         "peak_mem_bytes")
CONCATENATED = ("latency_ms_samples", "ttft_ms_samples", "total_ms_samples")
PER_SAMPLE = ("generated_ids", "layer_seq_lens", "layer_cache_lens", "seq_len", "rounds", "round_prompt_tokens",
              "answer_argmax")
DATASET_COLUMNS = ("samples", "samples_skipped", "text_keep_pooled", "ppl_pooled",
                   *(f"{m}_{q}" for m in SPREAD_METRICS for q in QUANTILES))



def _measured(name: str) -> bool:
    """Columns a sample measured (not the spec, identity or environment the point shares)."""
    col = BY_NAME.get(name)
    if name == "load_avg_1m":  # the environment while each sample ran
        return True
    return col is not None and col.group not in (SPEC, IDENT, ENV) and name not in DATASET_COLUMNS


def aggregate(sample_rows: Sequence[Mapping[str, Any]], skipped: int = 0) -> dict:
    """The measured columns of a dataset point's aggregate row from its sample rows (module doc)."""
    ok = [r for r in sample_rows if r.get("status") == STATUS_OK]
    names = dict.fromkeys(n for r in sample_rows for n in r if _measured(n))
    out: dict[str, Any] = dict.fromkeys(names)
    for name in names:
        values = [r[name] for r in ok if r.get(name) is not None]
        if not values or name in PER_SAMPLE:
            continue
        col = BY_NAME[name]
        if name in PEAKS:
            out[name] = max(values)
        elif name in CONCATENATED:
            out[name] = [x for v in values for x in v]
        elif name == "throttled":
            out[name] = any(values)
        elif col.type in ("int", "float") and all(isinstance(v, (int, float)) for v in values):
            mean = mean_or_none(values)
            out[name] = math.floor(mean + 0.5) if col.type == "int" else mean
        elif all(v == values[0] for v in values):
            out[name] = values[0]
    for m in SPREAD_METRICS:
        values = [r[m] for r in ok if r.get(m) is not None]
        for q, pct in QUANTILES.items():
            out[f"{m}_{q}"] = percentile(values, pct) if values else None
    pairs = [(r["text_tokens_kept"], r["text_tokens_fed"]) for r in ok
             if r.get("text_tokens_kept") is not None and r.get("text_tokens_fed")]
    fed = sum(f for _, f in pairs)
    out["text_keep_pooled"] = sum(k for k, _ in pairs) / fed if fed else None
    out["ppl_pooled"] = pooled_ppl(ok)
    out.update(samples=len(ok), samples_skipped=skipped, status=_status(sample_rows, ok))
    return out


def _status(rows: Sequence[Mapping[str, Any]], ok: list) -> str:
    failed = [r for r in rows if r.get("status") != STATUS_OK]
    if not failed:
        return STATUS_OK
    if all(r.get("status") == STATUS_OOM for r in failed):
        return STATUS_OOM
    first = next(r["status"] for r in failed if r.get("status") != STATUS_OOM)
    return f"{ERROR_PREFIX}{len(failed)} of {len(rows)} samples failed: {first}"


# ---- conversations ---------------------------------------------------------------------------
def round_starts(rounds: Sequence[int]) -> list[int]:
    """Indices of the steps that open a round (the prefill, then each turn's multi-token forward)."""
    return [i for i, r in enumerate(rounds) if i == 0 or r != rounds[i - 1]]


def round_rows(steps: Sequence[Any], step_ms: Sequence[Sequence[float]] | None,
               step_tmacs: Sequence[float | None], image_tokens: int, prompt_tokens: Sequence[int]) -> list[dict]:
    """One row per round of a conversation (kv-cache), from the first measured run's `modes.Step`s
    (`round`, cumulative counts and the cache after each step), every run's step times and the
    run's per-step MACs (None: FLOPs not counted). `prompt_tokens[r]`: tokens round r's prompt added.

    A round's counts are its own (fed / kept in that round); its KV bytes and cache lengths are
    the cache's at its end (the growth across rounds); `ttft_ms` = its opening forward, `total_ms`
    = Σ of its steps (medians over runs); `tmacs` Σ of its steps.
    """
    out, fed0, kept0 = [], 0, 0
    starts = round_starts([s.round for s in steps]) + [len(steps)]
    for r, (lo, hi) in enumerate(zip(starts, starts[1:], strict=False)):
        end = steps[hi - 1]
        fed = end.text_tokens_fed - fed0
        kept = None if end.text_tokens_kept is None else end.text_tokens_kept - kept0
        macs = step_tmacs[lo:hi]
        row = {
            "round": r, "round_prompt_tokens": prompt_tokens[r],
            "image_tokens_kept": end.image_tokens_kept, "vision_keep_realized": end.image_tokens_kept / image_tokens,
            "text_tokens_fed": fed, "text_tokens_kept": kept,
            "text_keep_realized": kept / fed if fed and kept is not None else None,
            "layer_cache_lens": end.layer_cache_lens, "kv_bytes_prompt": end.kv_bytes_prompt,
            "kv_bytes_generated": end.kv_bytes_generated,
            "kv_bytes": None if end.kv_bytes_prompt is None else end.kv_bytes_prompt + end.kv_bytes_generated,
            "generated_ids": [s.token_ids[0] for s in steps[lo:hi]] if all(s.token_ids for s in steps[lo:hi])
            else None,
            "tmacs": math.fsum(macs) if macs and all(m is not None for m in macs) else None,
            **step_answer_columns(steps[lo:hi]),
            "ttft_ms": median_or_none([run[lo] for run in step_ms]),
            "total_ms": median_or_none([math.fsum(run[lo:hi]) for run in step_ms]),
        }
        out.append(row)
        fed0, kept0 = end.text_tokens_fed, end.text_tokens_kept or 0
    return out
