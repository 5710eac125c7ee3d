"""Regression gate (`dynbench check`): compare a run with a stored baseline, point by point.

Modules: `checks` (one object per metric rule), `baseline` (the baseline file), `gate` (`check`,
the report as data). `report/check.py` renders a report; nothing here prints.

What it compares, per point (a point is `records.POINT_KEY`: DESIGN's comparison key plus the
method and everything that changes what it computes — keeps, policies, baseline parameters,
seed, weights and inputs; several methods and keeps share one comparison key):

* **exact** metrics (`EXACT_METRICS`: per-layer lengths, realized token counts, KV bytes,
  parameter count, `tmacs` and the analytic FLOP columns) must equal the baseline within a
  relative tolerance of 1e-9; lists element by element. Any change fails and is named
  ("layer 2: 179 → 180"). The exact gate is meant for the `budget` text policy, whose counts
  cannot flip on near-ties of predictor scores. `tmacs` is *not comparable* when torch,
  transformers or fvcore versions differ (op decompositions shift fvcore's counts), or when
  `flops_source` differs; the other exact metrics are still compared.
* **kernel launches** (`LAUNCH_METRICS`: `ops_per_step`, `ops_total`, `measure/launches.py`) must
  equal the baseline exactly, on any device (CPU CI included): a change that adds per-layer
  Python or tensor bookkeeping adds ops, which is latency on a host-bound GPU. Not comparable
  across torch, transformers or fvcore versions (op decompositions change).
* **latency**, on the raw samples of the summary row (`latency_ms_samples`: one TTFT per repeat
  in prefill, every decode step in the decode modes). The statistical rule, exactly:

      x = baseline samples (n_b), y = current samples (n_c), both > 0, n_b, n_c ≥ 5
      r  = median(y) / median(x)                   (numpy median: mean of the two middle values)
      rng = numpy.random.default_rng(seed)          (seed = 0 by default, fresh for every point)
      for b in 1…B (B = 2000):  X_b = x[rng.integers(0, n_b, n_b)]   (rows drawn in one call:
                                Y_b = y[rng.integers(0, n_c, n_c)]    all X first, then all Y)
                                r_b = median(Y_b) / median(X_b)
      CI = [q_0.025, q_0.975] of {r_b}              (percentile bootstrap, numpy linear quantiles)
      regression   iff r > 1 + tol and CI_low  > 1
      improvement  iff r < 1 − tol and CI_high < 1
      pass         otherwise                        (tol = --latency-tol, default 0.05)

  Both conditions are needed: the tolerance alone false-alarms on noisy samples, the CI alone
  flags real but irrelevant 1 % changes. Single-valued timings (`total_ms`, the kv-cache
  `ttft_ms` with one repeat) have no CI and are not gated. A point is *not comparable* (reported,
  never pass or fail) when either side is `throttled`, or ran on another GPU or driver (dtype,
  device and attention backend are part of the point). CPU timings (`timer: cpu`) get the same
  statistics but verdict *info* unless `gate_cpu_latency`: shared CPUs are too noisy for 5 %.
* **allocator peaks** (`peak_alloc_bytes`, `peak_reserved_bytes`) are deterministic for a fixed
  configuration: regression when current / baseline > 1 + mem_tol (default 0.01), improvement
  below 1 − mem_tol. Null on both sides (CPU) = not measured, skipped. Not comparable across GPU,
  driver, CUDA or torch versions (workspaces and the caching allocator change).
* **quality** (`ppl`, `ppl_pooled`, `meteor`; `dynbench/quality.py`): deterministic on CPU in one
  environment, so equal within `quality_tol` (default 1e-6 relative; `--quality-tol` for GPU
  runs); a higher PPL or a lower METEOR beyond it is a regression, the reverse an improvement.
  A change that makes a method cheaper by dropping what it needs fails here.
* **status**: ok → oom → error is a regression, the reverse an improvement; the metrics of a
  point that is not `ok` on both sides are not compared.

A baseline point absent from the run, or a new point absent from the baseline, is reported as
*missing*; so is a metric measured on one side only. What the baseline holds and the run lacks
(a point, or a metric of a shared point) **fails** the check (exit 1, every such point named)
unless `allow_missing`: a gate that passes while most of its points did not run proves nothing.
New points and metrics only in the run are reported, never failing (a suite that grew), and
not-comparable results never change the exit code. A baseline sharing no model preset, or no
point at all, or where nothing at all can be compared, is an input error (`DynbenchError`,
exit 2); so is a results file or baseline that cannot be read whole (a truncated last line is
a run or a copy cut short).

Where the environment of a row is not in its columns (the runner may record only `env_id`),
it is taken from the baseline header (`environments[env_id]`) or `current_environments`. When
the fields a check needs are unknown and the env ids differ, the check is not comparable.

What it does not do: judge accuracy, compare step rows one by one (the summary row carries the
last step's lengths and the sums), or compare NVML / RSS figures (polled, approximate).
"""

from dynbench.regress.baseline import (
    BASELINE_FORMAT,
    ENV_FIELDS,
    Baseline,
    env_snapshots,
    read_baseline,
    write_baseline,
)
from dynbench.regress.checks import (
    EXACT_METRICS,
    IMPROVEMENT,
    INFO,
    LATENCY_METRIC,
    LAUNCH_METRICS,
    MEMORY_METRICS,
    MISSING,
    NOT_COMPARABLE,
    PASS,
    REGRESSION,
    VERDICTS,
    Check,
    ExactCheck,
    LatencyCheck,
    Outcome,
    PeakMemoryCheck,
    StatusCheck,
    classify_ratio,
    default_checks,
)
from dynbench.regress.gate import CheckReport, CheckResult, check, check_results

__all__ = [
    "BASELINE_FORMAT", "ENV_FIELDS", "EXACT_METRICS", "IMPROVEMENT", "INFO", "LATENCY_METRIC", "LAUNCH_METRICS",
    "MEMORY_METRICS",
    "MISSING", "NOT_COMPARABLE", "PASS", "REGRESSION", "VERDICTS", "Baseline", "Check", "CheckReport",
    "CheckResult", "ExactCheck", "LatencyCheck", "Outcome", "PeakMemoryCheck", "StatusCheck", "check",
    "check_results", "classify_ratio", "default_checks", "env_snapshots", "read_baseline", "write_baseline",
]
