"""Statistics of raw samples — percentiles, summaries, the bootstrap CI — with no heavy import.

The one definition: latency columns, dataset spreads, the report's noise marks, chart bands and
the regression gate all use these, so the gate computes a median without loading torch. Samples
are kept raw in the records and statistics derived from them (pytest-benchmark style).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_CI_SAMPLES = 5  # per side: fewer give a bootstrap interval that means nothing


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of raw samples, in the samples' unit (ms throughout dynbench)."""

    n: int
    median: float
    p90: float
    p99: float
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single sample
    cv: float  # std / mean
    min: float
    max: float

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Record columns, e.g. `as_dict("tpot_ms")` -> {"tpot_ms_median": …, "tpot_ms_p90": …}."""
        return {f"{prefix}_{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0–100), linear between closest ranks (numpy's default `method="linear"`)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean_or_none(values: Sequence[float]) -> float | None:
    """The arithmetic mean (`math.fsum`: no rounding drift over many samples); None for no values."""
    return math.fsum(values) / len(values) if len(values) else None


def median_or_none(values: Sequence[float]) -> float | None:
    """The median (`percentile(values, 50)`); None for no values."""
    return percentile(values, 50) if len(values) else None


def summarize(values_ms: Sequence[float]) -> LatencyStats:
    """Statistics of raw samples; raises ValueError on an empty sequence."""
    values = sorted(float(v) for v in values_ms)
    n = len(values)
    if n == 0:
        raise ValueError("summarize() needs at least one sample")
    mean = mean_or_none(values)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    cv = std / mean if mean != 0 else (0.0 if std == 0 else math.nan)
    return LatencyStats(n=n, median=percentile(values, 50), p90=percentile(values, 90), p99=percentile(values, 99),
                        mean=mean, std=std, cv=cv, min=values[0], max=values[-1])


def ratio_of_medians_ci(current: Sequence[float], baseline: Sequence[float], *, seed: int = 0,
                        resamples: int = 2000, confidence: float = 0.95) -> tuple[float, float, float]:
    """(median(current) / median(baseline), CI low, CI high): percentile bootstrap, resampling
    both sides independently with `numpy.random.default_rng(seed)` (all baseline resamples drawn
    first, then all current ones). The regression gate's rule and the report's noise marks."""
    import numpy as np

    y = np.asarray(current, dtype=float)
    x = np.asarray(baseline, dtype=float)
    rng = np.random.default_rng(seed)
    xb = np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)
    yb = np.median(y[rng.integers(0, y.size, (resamples, y.size))], axis=1)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(yb / xb, [alpha, 1.0 - alpha])
    return float(np.median(y) / np.median(x)), float(lo), float(hi)
