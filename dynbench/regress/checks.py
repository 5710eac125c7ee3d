"""The gate's checks: one small object per metric rule, each `evaluate(current, baseline)`.

Rules (the package docstring spells them out): exact metrics within a relative tolerance of
1e-9, latency by the ratio of medians with a bootstrap CI and a tolerance, allocator peaks within
a memory tolerance, quality (PPL, METEOR) within a quality tolerance, status ok → oom →
error. Outcomes are data (`Outcome`); `report/check.py` renders them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dynbench.names import STATUS_OK, STATUS_OOM
from dynbench.records import LATENCY_ENV, MEMORY_ENV, VERSIONED, env_fields
from dynbench.report.format import run_length
from dynbench.stats import MIN_CI_SAMPLES, ratio_of_medians_ci

VERSION_FIELDS = env_fields(VERSIONED)  # shift fvcore counts
LATENCY_ENV_FIELDS = env_fields(LATENCY_ENV)
MEMORY_ENV_FIELDS = env_fields(MEMORY_ENV)

EXACT_METRICS = (
    "layer_seq_lens", "layer_cache_lens", "image_tokens_kept", "text_tokens_fed",
    "text_tokens_kept", "kv_bytes", "kv_bytes_prompt", "kv_bytes_generated", "params", "tmacs",
    "tflops_paper", "tmacs_fastv",
)
# kernel-launching ops per step (measure/launches.py): exact on any device, and torch / transformers
# releases change the op decompositions, so not comparable across them
LAUNCH_METRICS = ("ops_per_step", "ops_total")
MEMORY_METRICS = ("peak_alloc_bytes", "peak_reserved_bytes")
# generation ability (dynbench/quality.py): metric → higher is better
QUALITY_METRICS = {"ppl": False, "ppl_pooled": False, "meteor": True}
LATENCY_METRIC = "latency_ms_samples"

PASS, REGRESSION, IMPROVEMENT = "pass", "regression", "improvement"
NOT_COMPARABLE, MISSING, INFO = "not comparable", "missing", "info"
VERDICTS = (REGRESSION, IMPROVEMENT, MISSING, NOT_COMPARABLE, INFO, PASS)  # display order
STATUS_RANK = {STATUS_OK: 0, STATUS_OOM: 1}  # anything else ("error: …") ranks 2


@dataclass(frozen=True)
class Outcome:
    """What one check says about one point. `baseline`/`current` are the compared values
    (medians for latency); `ratio` = current / baseline where it means something."""

    verdict: str
    baseline: Any = None
    current: Any = None
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    note: str = ""


def env_diff(current: Mapping, baseline: Mapping, fields: Sequence[str]) -> list[tuple[str, Any, Any]]:
    """(field, baseline, current) for each of `fields` that differs; [] when comparable.

    Equal env ids mean equal comparability fields (the id hashes them all). With different ids,
    known fields are compared; if none of those differ but some are unknown, the difference
    could hide there, so the env ids are returned as the difference.
    """
    if current.get("env_id") == baseline.get("env_id"):
        return []
    known = [f for f in fields if f in current and f in baseline]
    diff = [(f, baseline[f], current[f]) for f in known if baseline[f] != current[f]]
    if diff or len(known) == len(fields):
        return diff
    return [("env_id", baseline.get("env_id"), current.get("env_id"))]


def describe_diff(diff: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{name} {b} → {c}" for name, b, c in diff)


class Check:
    """One metric's rule (pytest-benchmark style). Subclasses implement `evaluate`."""

    metric: str
    kind: str  # "exact" | "statistical" | "tolerance" | "status"

    def evaluate(self, current: Mapping[str, Any], baseline: Mapping[str, Any]) -> Outcome | None:
        """The outcome for one point (rows with their environment); None = not measured."""
        raise NotImplementedError

    def fails(self, current: Mapping[str, Any], baseline: Mapping[str, Any]) -> str | None:
        """A message when `current` regresses against `baseline`, else None."""
        out = self.evaluate(current, baseline)
        if out is None or out.verdict != REGRESSION:
            return None
        return f"{self.metric}: {out.note}"


def _missing(baseline: Any, current: Any) -> Outcome | None:
    if baseline is None and current is None:
        return None
    if current is None:
        return Outcome(MISSING, baseline, None, note="not measured in this run")
    return Outcome(MISSING, None, current, note="not in the baseline")


def _close(a: Any, b: Any, rel_tol: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int | float) \
            or not isinstance(b, int | float):
        return a == b
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0)


def _exact_change(base: Any, cur: Any, rel_tol: float, item: str) -> str | None:
    """None when equal; otherwise what changed, naming positions in lists."""
    if isinstance(base, list) and isinstance(cur, list):
        if len(base) != len(cur):
            return f"{len(base)} → {len(cur)} entries ({run_length(base)} → {run_length(cur)})"
        diffs = [(i, b, c) for i, (b, c) in enumerate(zip(base, cur, strict=True))
                 if not _close(c, b, rel_tol)]
        if not diffs:
            return None
        text = "; ".join(f"{item} {i}: {b} → {c}" for i, b, c in diffs[:3])
        return text + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
    if _close(cur, base, rel_tol):
        return None
    if isinstance(base, int | float) and isinstance(cur, int | float) and base:
        return f"{base} → {cur} ({(cur - base) / base:+.3%})"
    return f"{base!r} → {cur!r}"


@dataclass(frozen=True)
class ExactCheck(Check):
    """Must equal the baseline (relative tolerance); `version_fields` make it not comparable
    across those versions, `source_field` across different counting methods."""

    metric: str
    rel_tol: float = 1e-9
    version_fields: tuple[str, ...] = ()
    source_field: str | None = None
    kind: str = "exact"

    def evaluate(self, current, baseline):
        b, c = baseline.get(self.metric), current.get(self.metric)
        if b is None or c is None:
            return _missing(b, c)
        diff = env_diff(current, baseline, self.version_fields) if self.version_fields else []
        src = self.source_field
        if src and current.get(src) is not None and baseline.get(src) is not None \
                and current.get(src) != baseline.get(src):
            diff.append((src, baseline.get(src), current.get(src)))
        ratio = c / b if isinstance(b, int | float) and isinstance(c, int | float) and b else None
        if diff:
            return Outcome(NOT_COMPARABLE, b, c, ratio,
                           note=f"{describe_diff(diff)}: op decompositions and counts may shift")
        item = "layer" if self.metric.startswith("layer_") else "entry"
        change = _exact_change(b, c, self.rel_tol, item)
        if change is None:
            return Outcome(PASS, b, c, ratio)
        return Outcome(REGRESSION, b, c, ratio, note=f"changed: {change}")


def _samples(value: Any) -> np.ndarray | None:
    if not value:
        return None
    arr = np.asarray([v for v in value if v is not None], dtype=float)
    return arr[np.isfinite(arr)] if arr.size else None


def classify_ratio(ratio: float, ci: tuple[float, float], tol: float) -> str:
    """The gate's rule: beyond the tolerance *and* a confidence interval that excludes 1."""
    if ratio > 1.0 + tol and ci[0] > 1.0:
        return REGRESSION
    if ratio < 1.0 - tol and ci[1] < 1.0:
        return IMPROVEMENT
    return PASS


@dataclass(frozen=True)
class LatencyCheck(Check):
    """Ratio of medians of raw samples, gated by tolerance and bootstrap CI (module docstring)."""

    tol: float = 0.05
    gate_cpu: bool = False
    seed: int = 0
    resamples: int = 2000
    confidence: float = 0.95
    min_samples: int = MIN_CI_SAMPLES
    metric: str = LATENCY_METRIC
    kind: str = "statistical"

    def evaluate(self, current, baseline):
        y, x = _samples(current.get(self.metric)), _samples(baseline.get(self.metric))
        if x is None or y is None or not x.size or not y.size:
            return _missing(None if x is None or not x.size else float(np.median(x)),
                            None if y is None or not y.size else float(np.median(y)))
        mb, mc = float(np.median(x)), float(np.median(y))
        ratio = mc / mb if mb > 0 else None
        reasons = [f"{side} throttled" for side, row in (("baseline", baseline), ("run", current))
                   if row.get("throttled")]
        diff = env_diff(current, baseline, LATENCY_ENV_FIELDS)
        if current.get("timer") != baseline.get("timer"):
            diff.append(("timer", baseline.get("timer"), current.get("timer")))
        if diff:
            reasons.append(describe_diff(diff))
        if reasons:
            return Outcome(NOT_COMPARABLE, mb, mc, ratio, note="; ".join(reasons))
        if min(x.size, y.size) < self.min_samples:
            return Outcome(INFO, mb, mc, ratio, note=f"n={x.size}/{y.size}: too few samples for "
                           f"a CI (need {self.min_samples}), not gated")
        if (x <= 0).any() or (y <= 0).any():
            return Outcome(NOT_COMPARABLE, mb, mc, ratio, note="samples ≤ 0 ms: broken timer?")
        ratio, lo, hi = ratio_of_medians_ci(y, x, seed=self.seed, resamples=self.resamples,
                                            confidence=self.confidence)
        verdict = classify_ratio(ratio, (lo, hi), self.tol)
        note = f"{_latency_name(current)}, n={x.size}/{y.size}"
        if current.get("timer") == "cpu" and not self.gate_cpu:
            note += ", CPU timer: not gated" + ("" if verdict == PASS else f" (would be {verdict})")
            verdict = INFO
        return Outcome(verdict, mb, mc, ratio, (lo, hi), note)


def _latency_name(row: Mapping) -> str:
    return {"prefill": "median TTFT", "kv-cache": "median TPOT",
            "no-cache": "median step"}.get(str(row.get("mode")), "median")


@dataclass(frozen=True)
class PeakMemoryCheck(Check):
    """Allocator peak within a relative tolerance; not comparable across GPU/driver/CUDA/torch."""

    metric: str
    rel_tol: float = 0.01
    kind: str = "tolerance"

    def evaluate(self, current, baseline):
        b, c = baseline.get(self.metric), current.get(self.metric)
        if b is None or c is None:
            return _missing(b, c)
        ratio = c / b if b else (1.0 if c == 0 else math.inf)
        diff = env_diff(current, baseline, MEMORY_ENV_FIELDS)
        if diff:
            return Outcome(NOT_COMPARABLE, b, c, ratio, note=describe_diff(diff))
        if ratio > 1.0 + self.rel_tol:
            return Outcome(REGRESSION, b, c, ratio, note=f"{c - b:+,} bytes (tolerance {self.rel_tol:.0%})")
        if ratio < 1.0 - self.rel_tol:
            return Outcome(IMPROVEMENT, b, c, ratio, note=f"{c - b:+,} bytes (tolerance {self.rel_tol:.0%})")
        return Outcome(PASS, b, c, ratio)


@dataclass(frozen=True)
class QualityCheck(Check):
    """Generation ability (PPL: lower is better; METEOR: higher) within a relative tolerance:
    deterministic in one environment on CPU, so the default is tight; `--quality-tol` for GPU
    runs. A change that makes a method cheaper by dropping what it needs fails here."""

    metric: str
    rel_tol: float = 1e-6
    higher_is_better: bool = False
    kind: str = "tolerance"

    def evaluate(self, current, baseline):
        b, c = baseline.get(self.metric), current.get(self.metric)
        if b is None or c is None:
            return _missing(b, c)
        ratio = c / b if b else None
        if math.isclose(c, b, rel_tol=self.rel_tol, abs_tol=1e-12):
            return Outcome(PASS, b, c, ratio)
        worse = c < b if self.higher_is_better else c > b
        change = f" ({(c - b) / b:+.3%})" if b else ""
        note = f"{'worse' if worse else 'better'}: {b:.6g} → {c:.6g}{change}, tolerance {self.rel_tol:g}"
        return Outcome(REGRESSION if worse else IMPROVEMENT, b, c, ratio, note=note)


@dataclass(frozen=True)
class StatusCheck(Check):
    """ok → oom → error is a regression; None while both sides are ok."""

    metric: str = "status"
    kind: str = "status"

    def evaluate(self, current, baseline):
        b, c = str(baseline.get("status", "ok")), str(current.get("status", "ok"))
        if b == c == "ok":
            return None
        rb, rc = STATUS_RANK.get(b, 2), STATUS_RANK.get(c, 2)
        verdict = REGRESSION if rc > rb else IMPROVEMENT if rc < rb else INFO
        return Outcome(verdict, b, c, note="metrics not compared")


def default_checks(*, latency_tol: float = 0.05, mem_tol: float = 0.01, gate_cpu_latency: bool = False,
                   seed: int = 0, quality_tol: float = 1e-6) -> tuple[Check, ...]:
    """The checks `dynbench check` runs, in report order (status first)."""
    exact = tuple(
        ExactCheck(m, version_fields=VERSION_FIELDS, source_field="flops_source") if m == "tmacs"
        else ExactCheck(m) for m in EXACT_METRICS
    )
    quality = (QualityCheck(m, rel_tol=quality_tol, higher_is_better=up) for m, up in QUALITY_METRICS.items())
    launches = tuple(ExactCheck(m, rel_tol=0.0, version_fields=VERSION_FIELDS) for m in LAUNCH_METRICS)
    return (StatusCheck(), *exact, *launches, *quality, *(PeakMemoryCheck(m, rel_tol=mem_tol) for m in MEMORY_METRICS),
            LatencyCheck(tol=latency_tol, gate_cpu=gate_cpu_latency, seed=seed))
