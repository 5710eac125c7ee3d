"""Comparison tables: every method next to the `llava` baseline at the same point, with Δ%.

What a table shows comes straight from summary records (`step` null; the last one wins when a
point was run more than once); Δ% = (value − llava) / llava × 100 against the `llava` row with
the same comparison key (DESIGN: model, mode, batch, prompt_len, gen_len, dtype, device, attn).
Nothing is averaged across points, interpolated or re-measured.

Honesty rules, as implemented:
- a missing baseline (no `llava` row at that key, or one without the value) gives Δ = None,
  shown as "—", never 0;
- rows measured in different environments (`env_id`) are flagged: each environment gets a
  letter (A, B, …) listed under the table, and a Δ% taken against a `llava` row from another
  environment carries "†";
- budget-policy rows (`text_keep_imposed`) say "text keep imposed": they measure the cost of a
  given keep ratio, not the ratio the method would choose.

Data first: `compare` and `paper_table` return DataFrames of raw SI numbers (bytes, ms, T);
`render_*`, `to_markdown`, `to_csv` format them, and only they add units.
"""

from __future__ import annotations

import math
import os
import string
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from rich import box
from rich.table import Table

from dynbench import results
from dynbench.errors import DynbenchError

BASELINE = "llava"
MODES = ("prefill", "no-cache", "kv-cache")
# display order; methods not listed come after these, alphabetically
METHOD_ORDER = ("llava", "dynamic-llava", "random", "fastv", "h2o", "streaming-llm")
KEY = ("model", "mode", "batch", "prompt_len", "gen_len", "dtype", "device", "attn")
# what identifies one measured point (a rerun of it replaces the earlier summary row); env_id is
# part of it so that the same point measured on two machines is shown twice, never merged
POINT = KEY + ("method", "vision_keep", "text_keep", "text_policy", "fastv_k", "fastv_r", "kv_budget",
               "match_budget", "reuse_vision", "seed", "checkpoint", "env_id")  # fmt: skip
SPEC = ("method", "vision_keep", "text_keep", "text_policy", "fastv_k", "fastv_r", "kv_budget", "match_budget",
        "reuse_vision", "seed", "checkpoint")  # fmt: skip
# metrics compared with the baseline (value and `<name>_delta_pct`)
DELTA_METRICS = (
    "tmacs", "tflops_paper", "equivalent_tokens", "peak_mem_bytes", "kv_bytes", "kv_bytes_prompt", "kv_bytes_generated",
    "ttft_ms", "tpot_ms_median", "tpot_ms_p90", "step_ms_median", "step_ms_p90", "total_ms",
)  # fmt: skip
# latency metrics and the raw samples behind each: their Δ% carries the bootstrap CI of the
# ratio of medians (the gate's rule) or is marked as noise
LATENCY_SAMPLES = {"ttft_ms": "ttft_ms_samples", "tpot_ms_median": "latency_ms_samples",
                   "step_ms_median": "latency_ms_samples", "total_ms": "total_ms_samples"}  # fmt: skip
NOISE = "~"
CARRIED = (
    "status", "image_tokens", "image_tokens_kept", "vision_keep_realized", "text_tokens_fed",
    "text_tokens_kept", "text_keep_realized", "timer", "mem_source", "throttled", "env_id",
    "matched_ratio", "scoring_ms",
)  # fmt: skip
INT_FIELDS = {
    "batch", "prompt_len", "gen_len", "seed", "step", "warmup", "repeats", "image_tokens",
    "seq_len", "image_tokens_kept", "text_tokens_fed", "text_tokens_kept", "params",
}  # fmt: skip
HEADLINE = {"prefill": "ttft_ms", "no-cache": "step_ms_median", "kv-cache": "tpot_ms_median"}
IMPOSED = "text keep imposed"
DASH = "—"
ENV_MISMATCH = "†"


# ---------------------------------------------------------------------------------------------
# loading


def load_results(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """All records from result folders or `records.jsonl` files, in the order given.

    Raises DynbenchError (one line naming the file) for a missing, empty or corrupt file, or one
    that is not dynbench records. A truncated last line alone is skipped with a warning.
    """
    if not paths:
        raise DynbenchError("no results given: pass result folders or records.jsonl files")
    frames = [_load_one(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _load_one(path: str | os.PathLike) -> pd.DataFrame:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df = results.load(path)
        except DynbenchError as exc:
            skipped = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
            if skipped:  # the only line(s) could not be parsed: corrupt, not merely empty
                raise DynbenchError(
                    f"{skipped[0].replace('skipped a truncated last record', 'corrupt record')} and no "
                    "valid record before it: fix the file or run `dynbench run --out DIR` again"
                ) from exc
            raise
    for w in caught:  # pass on what the loader said (e.g. a skipped truncated last line)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    missing = [c for c in ("method", "mode") if c not in df.columns]
    if missing:
        raise DynbenchError(f"{path}: not dynbench records (no {', '.join(missing)} column); "
                            "pass a folder written by `dynbench run --out DIR`")
    if "step" not in df.columns:
        df["step"] = None
    return df


# ---------------------------------------------------------------------------------------------
# plain values


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
            for row in df.itertuples(index=False, name=None)]  # fmt: skip


def summary_rows(df: pd.DataFrame) -> list[dict]:
    """Summary rows (`step` null), one per point: the last one written wins."""
    latest: dict[tuple, dict] = {}
    for row in records(df):
        if row.get("step") is not None:
            continue
        key = results.point_key(row, POINT)
        latest.pop(key, None)  # re-insert so the order follows the last write
        latest[key] = row
    return list(latest.values())


def step_rows(df: pd.DataFrame) -> list[dict]:
    """Step rows, one per (point, step): the last one written wins."""
    latest: dict[tuple, dict] = {}
    for row in records(df):
        if row.get("step") is None:
            continue
        key = results.point_key(row, POINT + ("step",))
        latest.pop(key, None)
        latest[key] = row
    return list(latest.values())


def delta_pct(value: float | None, base: float | None) -> float | None:
    """(value − base) / base × 100; None when either is missing, or the base alone is 0."""
    if value is None or base is None:
        return None
    if base == 0:
        return 0.0 if value == 0 else None  # e.g. generated KV bytes of prefill: nothing vs nothing

    return (value - base) / base * 100.0


def delta_ci(samples: Any, base_samples: Any) -> tuple[float, float] | None:
    """95 % bootstrap CI of Δ% = (ratio of medians − 1) × 100, the gate's rule; None with fewer
    than MIN_CI_SAMPLES samples on a side (then the Δ% cannot be told from noise)."""
    from dynbench.measure.latency import MIN_CI_SAMPLES, ratio_of_medians_ci

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
          else (row.get(k) is None, str(row.get(k))) for k in KEY if k != "mode"),
        method_rank(row.get("method")), none_last(row.get("vision_keep")),
        none_last(row.get("text_keep")), str(row.get("text_policy")), none_last(row.get("fastv_k")),
        none_last(row.get("fastv_r")), none_last(row.get("kv_budget")), str(row.get("match_budget")),
        str(row.get("env_id")),
    )  # fmt: skip


def _realized(row: Mapping[str, Any], ratio: str, kept: str, total: str) -> float | None:
    if row.get(ratio) is not None:
        return row[ratio]
    k, n = row.get(kept), row.get(total)
    return k / n if k is not None and n else None


# ---------------------------------------------------------------------------------------------
# the comparison (data)


def _pick_baseline(row: Mapping[str, Any], bases: list[dict]) -> dict | None:
    """The `llava` row to compare with: same environment first, then ok, same reuse/seed, latest."""
    if not bases:
        return None
    score = lambda i: (
        bases[i].get("env_id") == row.get("env_id"), bases[i].get("status") == "ok",
        bases[i].get("reuse_vision") == row.get("reuse_vision"), bases[i].get("seed") == row.get("seed"), i,
    )  # fmt: skip
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
    *KEY, *SPEC, "is_baseline", "note", "env", "env_id", "baseline_env_id", "env_mismatch",
    "env_mixed", "status", "image_tokens", "image_tokens_kept", "vision_keep_realized",
    "text_tokens_fed", "text_tokens_kept", "text_keep_realized", "token_agreement", "timer",
    "mem_source", "throttled", "matched_ratio", "scoring_ms",
    *(c for m in DELTA_METRICS for c in (m, f"{m}_delta_pct")),
    *(c for m in LATENCY_SAMPLES for c in (f"{m}_delta_ci_low", f"{m}_delta_ci_high", f"{m}_delta_noise")),
)  # fmt: skip
_NULLABLE_INT = [c for c in COMPARE_COLUMNS if c in INT_FIELDS or c.endswith("_bytes")
                 or c in ("kv_bytes_prompt", "kv_bytes_generated")]  # fmt: skip


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """Summary rows side by side with the `llava` row at the same comparison key, with Δ%.

    One row per point, sorted by mode, key, method (llava first), keep ratios. For each metric
    in DELTA_METRICS: the value (raw SI) and `<metric>_delta_pct` vs llava (None for llava rows
    themselves and where no baseline value exists). `token_agreement`: share of identical
    generated ids with llava. `env`: a letter per environment; `env_mismatch`: the baseline
    comes from another environment; `env_mixed`: the row's mode table holds several.
    """
    rows = sorted(summary_rows(df), key=_sort_key)
    labels = env_labels(r.get("env_id") for r in rows)
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        by_key.setdefault(results.point_key(r, KEY), []).append(r)
    mode_envs: dict[Any, set] = {}
    for r in rows:
        mode_envs.setdefault(r.get("mode"), set()).add(r.get("env_id"))
    out = []
    for r in rows:
        is_base = r.get("method") == BASELINE
        bases = [b for b in by_key[results.point_key(r, KEY)] if b.get("method") == BASELINE]
        base = r if is_base else _pick_baseline(r, bases)
        item: dict[str, Any] = {k: r.get(k) for k in (*KEY, *SPEC, *CARRIED)}
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
        )  # fmt: skip
        item["env_mixed"] = item["env_mixed"] or item["env_mismatch"]
        for m in DELTA_METRICS:
            item[m] = r.get(m)
            item[f"{m}_delta_pct"] = None if is_base or base is None else delta_pct(r.get(m), base.get(m))
        for m, samples in LATENCY_SAMPLES.items():
            ci = None if is_base or base is None else delta_ci(r.get(samples), base.get(samples))
            item[f"{m}_delta_ci_low"], item[f"{m}_delta_ci_high"] = ci if ci is not None else (None, None)
            item[f"{m}_delta_noise"] = None if item[f"{m}_delta_pct"] is None else (ci is None or ci[0] <= 0 <= ci[1])
        out.append(item)
    cmp = pd.DataFrame.from_records(out, columns=list(COMPARE_COLUMNS))
    return _nullable_ints(cmp, _NULLABLE_INT)


def _nullable_ints(df: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Keep ints ints next to nulls (CSV: 64, not 64.0); a column holding fractions stays float."""
    for c in columns:
        try:
            df[c] = df[c].astype("Int64")
        except (TypeError, ValueError):
            pass
    return df


# ---------------------------------------------------------------------------------------------
# formatting (units live here only)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return DASH
    if abs(n) >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if abs(n) >= 2**20:
        return f"{n / 2**20:.2f} MiB"
    return f"{n / 2**10:.1f} KiB" if n else "0 B"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return DASH
    if abs(ms) >= 10_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms:.3g} ms" if abs(ms) < 100 else f"{ms:.0f} ms"


def fmt_t(t: float | None) -> str:
    """Tera-quantities (TMACs, TFLOPs), three significant digits; under 0.1 T in G (giga), so
    tiny-preset counts stay readable."""
    if t is None:
        return DASH
    return f"{t:.3g} T" if abs(t) >= 0.1 or t == 0 else f"{t * 1000:.3g} G"


def fmt_pct(p: float | None) -> str:
    return DASH if p is None else f"{p:+.1f}%"


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
    Column("TPOT med / p90", lambda r: _latency(r, "tpot_ms"), ("tpot_ms_median",)),
    Column("step med / p90", lambda r: _latency(r, "step_ms"), ("step_ms_median",)),
    Column("total", lambda r: _with_delta(fmt_ms(r.get("total_ms")), r, "total_ms"), ("total_ms",)),
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


def _notes(rows: list[dict], deltas: Sequence[str] = tuple(f"{m}_delta_pct" for m in DELTA_METRICS)
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
            numeric=[c.numeric for c in cols], notes=_notes(rows),
        ))  # fmt: skip
    return tables


def _rich(t: TableData) -> Table:
    table = Table(title=t.title, caption="\n".join(t.notes) or None, caption_justify="left")
    for header, numeric in zip(t.headers, t.numeric, strict=True):
        table.add_column(header, justify="right" if numeric else "left")
    for row in t.rows:
        table.add_row(*row)
    return table


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown(t: TableData, level: str = "###") -> str:
    lines = [f"{level} {t.title}", ""]
    lines.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in t.numeric) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    if t.notes:
        lines.append("")
        lines += [f"- {_md_cell(n)}" for n in t.notes]
    return "\n".join(lines) + "\n"


def render_table(cmp: pd.DataFrame) -> list[Table]:
    """rich Tables, one per mode, from a `compare` result."""
    return [_rich(t) for t in mode_tables(cmp)]


def to_markdown(cmp: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown: a heading and a table per mode, notes as a list under it."""
    return "\n".join(_markdown(t) for t in mode_tables(cmp))


def to_csv(cmp: pd.DataFrame) -> str:
    """The comparison as CSV, raw SI numbers (bytes, ms, T), Δ% as numbers, empty = null."""
    return cmp.to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------------------------------------
# the paper's Table 4 view

PAPER_MEASURES = (  # (measure, mode it comes from, column of that mode's summary row)
    ("prefill_ms", "prefill", "ttft_ms"),
    ("no_cache_total_ms", "no-cache", "total_ms"),
    ("kv_cache_peak_mem_bytes", "kv-cache", "peak_mem_bytes"),
)
SETTING = ("model", "batch", "prompt_len", "dtype", "device", "attn")
VARIANT = ("method", "vision_keep", "text_keep", "text_policy", "fastv_k", "fastv_r", "kv_budget", "match_budget")
PAPER_COLUMNS = (*SETTING, *VARIANT, "note", "measure", "gen_len", "value", "delta_pct", "status", "env",
                 "env_mismatch")  # fmt: skip


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
            })  # fmt: skip
    ptab = pd.DataFrame.from_records(out, columns=list(PAPER_COLUMNS))
    return _nullable_ints(ptab, ("batch", "prompt_len", "gen_len"))


def _variant(r: Mapping[str, Any]) -> tuple:
    return tuple(r.get(k) for k in VARIANT)


def _prefill_variant(v: tuple) -> tuple:
    """What a prefill row shares with the decode rows of its variant: all but the text keep."""
    return v[:2] + v[4:]


def paper_tables(ptab: pd.DataFrame) -> list[TableData]:
    """Wide view per setting: a row per method variant; prefill, then w/o cache total time and
    w/ cache peak memory per generated length (cells: value and Δ% vs llava; OOM as such)."""
    rows = records(ptab)
    settings = sorted({results.point_key(r, SETTING) for r in rows},
                      key=lambda k: tuple((v is None, str(v)) for v in k))  # fmt: skip
    tables = []
    for setting in settings:
        group = [r for r in rows if results.point_key(r, SETTING) == setting]
        decode = [r for r in group if r["measure"] != "prefill_ms"]
        variants = sorted({_variant(r) for r in decode}
                          | {_variant(r) for r in group if r["measure"] == "prefill_ms"
                             and not any(_prefill_variant(v) == _prefill_variant(_variant(r))
                                         for v in map(_variant, decode))},
                          key=lambda v: (method_rank(v[0]), none_last(v[1]), none_last(v[2]), str(v[3]), str(v[4:])))
        gens = {m: sorted({r["gen_len"] for r in group if r["measure"] == m and r["gen_len"] is not None})
                for m, _, _ in PAPER_MEASURES}  # fmt: skip
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
        notes += _notes([{**r, "is_baseline": r.get("method") == BASELINE} for r in group],
                        deltas=("delta_pct",))
        tables.append(TableData(title, headers, body, [False, False] + [True] * (len(headers) - 2), notes))
    return tables


def render_paper_table(ptab: pd.DataFrame) -> list[Table]:
    return [_rich(t) for t in paper_tables(ptab)]


def paper_to_markdown(ptab: pd.DataFrame) -> str:
    return "\n".join(_markdown(t) for t in paper_tables(ptab))


# ---------------------------------------------------------------------------------------------
# what `dynbench report` and `dynbench run` print

FORMATS = ("table", "md", "csv")


def build_report(df: pd.DataFrame, fmt: str = "table", paper: bool = False) -> list[Table] | str:
    """`dynbench report`: rich Tables for `table`, a string for `md` / `csv`."""
    if fmt not in FORMATS:
        raise DynbenchError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not summary_rows(df):
        raise DynbenchError("the results hold no summary rows (step null): the run was interrupted "
                            "before any point finished; run it again with --resume")
    data = paper_table(df) if paper else compare(df)
    if fmt == "csv":
        return to_csv(data)
    if fmt == "md":
        return paper_to_markdown(data) if paper else to_markdown(data)
    return render_paper_table(data) if paper else render_table(data)


def runs(values: Sequence[int] | None) -> str:
    """Per-layer lengths, run-length encoded: [640, 640, 179, 179] → '640×2 179×2'."""
    if not values:
        return DASH
    parts, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        parts.append(f"{values[i]}×{j - i}" if j - i > 1 else str(values[i]))
        i = j
    return " ".join(parts)


RUN_COLUMNS = ("method", "mode", "prompt", "gen", "keep v/t", "img kept", "text kept",
               "layer lens", "MACs", "peak mem", "KV prompt/gen", "latency", "status")  # fmt: skip
_RUN_LEFT = {"method", "mode", "keep v/t", "layer lens", "latency", "status"}
_RUN_WRAP = {"img kept", "text kept", "KV prompt/gen", "status"}  # the rest never wraps


def summary_table(rows: list[dict]) -> Table:
    """The table `dynbench run` prints after a sweep: one line per point, Δ% vs llava.

    Compact on purpose (it must fit a 160-column log): realized keeps as counts, per-layer
    lengths run-length encoded, one headline latency per mode (prefill TTFT, no-cache step
    median, kv-cache TPOT median); budget rows say "imposed" after their keep ratios.
    """
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
    lists = {results.point_key(r, POINT): r for r in summary_rows(df)}
    cmp = records(compare(df))
    for r in cmp:
        mode, src = r.get("mode"), lists.get(results.point_key(r, POINT), {})
        lat = HEADLINE.get(mode)
        label = {"ttft_ms": "TTFT", "step_ms_median": "step", "tpot_ms_median": "TPOT"}.get(lat, "")
        latency = DASH if lat is None or r.get(lat) is None else (
            f"{label} {_with_delta(fmt_ms(r[lat]), r, lat)}")
        keep = keeps_label(r) + (" imposed" if r.get("note") == IMPOSED else "")
        text = DASH if mode == "prefill" or r.get("text_tokens_fed") is None else (
            f"{DASH if r.get('text_tokens_kept') is None else r['text_tokens_kept']}/{r['text_tokens_fed']}")
        image = DASH if r.get("image_tokens_kept") is None else f"{r['image_tokens_kept']}"
        table.add_row(
            r.get("method") or DASH, mode or DASH,
            DASH if r.get("prompt_len") is None else str(r["prompt_len"]),
            DASH if r.get("gen_len") is None else str(r["gen_len"]), keep, image, text,
            runs(src.get("layer_cache_lens") if mode == "kv-cache" else src.get("layer_seq_lens")),
            _with_delta(fmt_t(r.get("tmacs")), r, "tmacs"), fmt_bytes(r.get("peak_mem_bytes")),
            f"{fmt_bytes(r.get('kv_bytes_prompt'))}/{fmt_bytes(r.get('kv_bytes_generated'))}", latency,
            _status(r) + (f" (env {r['env']})" if r.get("env_mixed") else ""),
        )  # fmt: skip
    notes = [n.replace(f"{IMPOSED}:", f"imposed = {IMPOSED}:") for n in _notes(cmp)]
    table.caption = "\n".join([
        "Δ% vs llava at the same point; MACs measured by fvcore (whole forward); layer lens = "
        "input length of each decoder layer (prefill, no-cache: last step) or its KV length after the "
        "last step (kv-cache), run-length encoded (e.g. 584×2 123×2: 584 tokens in layers 0–1, 123 in layers 2–3)",
        *notes])  # fmt: skip
    return table
