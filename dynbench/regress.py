"""Regression gate (`dynbench check`): compare a run with a stored baseline, point by point.

What it compares, per point (a point is `POINT_FIELDS`: DESIGN's comparison key plus method,
keep ratios, text policy and `reuse_vision`, since several methods and keeps share one key):

* **exact** metrics (`EXACT_METRICS`: per-layer lengths, realized token counts, KV bytes,
  parameter count, `tmacs` and the analytic FLOP columns) must equal the baseline within a
  relative tolerance of 1e-9; lists element by element. Any change fails and is named
  ("layer 2: 179 → 180"). The exact gate is meant for the `budget` text policy, whose counts
  cannot flip on near-ties of predictor scores. `tmacs` is *not comparable* when torch,
  transformers or fvcore versions differ (op decompositions shift fvcore's counts), or when
  `flops_source` differs; the other exact metrics are still compared.
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

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from rich.text import Text

from dynbench.errors import DynbenchError
from dynbench.measure.latency import MIN_CI_SAMPLES, ratio_of_medians_ci
from dynbench.report.tables import runs
from dynbench.results import _jsonable, iter_records, point_key, write_atomic

BASELINE_FORMAT = 1  # header field `dynbench_baseline`; bump when the file layout changes

COMPARISON_KEY = ("model", "mode", "batch", "prompt_len", "gen_len", "dtype", "device", "attn")
POINT_FIELDS = COMPARISON_KEY + ("method", "vision_keep", "text_keep", "text_policy", "reuse_vision", "fastv_k",
                                 "fastv_r", "kv_budget", "match_budget")  # fmt: skip
# Environment columns a row may carry (`measure.env.snapshot` names); kept in the baseline header.
ENV_FIELDS = (
    "gpu_name", "driver_version", "cuda_version", "torch_version", "transformers_version",
    "fvcore_version", "python_version", "platform", "cpu_model", "device", "device_type", "dtype",
    "attn",
)  # fmt: skip
VERSION_FIELDS = ("torch_version", "transformers_version", "fvcore_version")  # shift fvcore counts
LATENCY_ENV_FIELDS = ("gpu_name", "driver_version")
MEMORY_ENV_FIELDS = ("gpu_name", "driver_version", "cuda_version", "torch_version")

EXACT_METRICS = (
    "layer_seq_lens", "layer_cache_lens", "image_tokens_kept", "text_tokens_fed",
    "text_tokens_kept", "kv_bytes", "kv_bytes_prompt", "kv_bytes_generated", "params", "tmacs",
    "tflops_paper", "tmacs_fastv",
)  # fmt: skip
MEMORY_METRICS = ("peak_alloc_bytes", "peak_reserved_bytes")
LATENCY_METRIC = "latency_ms_samples"

PASS, REGRESSION, IMPROVEMENT = "pass", "regression", "improvement"
NOT_COMPARABLE, MISSING, INFO = "not comparable", "missing", "info"
VERDICTS = (REGRESSION, IMPROVEMENT, MISSING, NOT_COMPARABLE, INFO, PASS)  # display order
_STATUS_RANK = {"ok": 0, "oom": 1}  # anything else ("error: …") ranks 2


# ---------------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class Baseline:
    """A baseline file: its header (environment, provenance) and one summary row per point."""

    header: dict
    rows: tuple[dict, ...]
    path: str | None = None

    @property
    def environments(self) -> dict[str, dict]:
        return dict(self.header.get("environments") or {})

    def describe(self) -> str:
        """One line for the CLI: what was stored."""
        throttled = sum(bool(r.get("throttled")) for r in self.rows)
        models = ", ".join(self.header.get("models") or []) or "?"
        envs = ", ".join(self.environments) or "?"
        note = f"; {throttled} throttled (their latencies will not be compared)" if throttled else ""
        return f"{len(self.rows)} points of {models}, env {envs}{note}"


def _summary_rows(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, dict]:
    """Last summary row (step null) per point: a point run again is appended again."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        if row.get("step") is None:
            key = point_key(row, POINT_FIELDS)
            latest.pop(key, None)  # re-insert: order = order of the last run
            latest[key] = dict(row)
    return latest


def _environments(rows: Iterable[Mapping[str, Any]],
                  extra: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict]:
    """env_id → environment fields: from `extra` (a snapshot per env id), then row columns."""
    envs: dict[str, dict] = {}
    for row in rows:
        env_id = row.get("env_id")
        env = envs.setdefault(env_id, {"env_id": env_id})
        if extra and env_id in extra:
            env.update({k: v for k, v in extra[env_id].items() if k in ENV_FIELDS})
        env.update({k: row[k] for k in ENV_FIELDS if k in row and k not in env})
    return {str(k): v for k, v in envs.items()}


def env_snapshots(results_path: str | os.PathLike) -> dict[str, dict]:
    """env_id → snapshot from the `env/<env_id>.json` files a run writes beside its records."""
    folder = Path(results_path)
    folder = folder if folder.is_dir() else folder.parent
    snaps = {}
    for file in sorted((folder / "env").glob("*.json")):
        try:
            snap = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged snapshot only loses detail: rows carry the key fields
        if isinstance(snap, dict):
            snaps[str(snap.get("env_id") or file.stem)] = snap
    return snaps


def write_baseline(results_path: str | os.PathLike, out_path: str | os.PathLike, *,
                   environments: Mapping[str, Mapping[str, Any]] | None = None) -> Baseline:
    """Store the summary rows of a results folder as a baseline (JSON Lines, written atomically).

    Line 1 is the header: format version, creation time, source, git SHAs, model presets, point
    fields and `environments` (env_id → GPU, driver, CUDA, torch / transformers / fvcore versions,
    dtype, device, attn — from `environments`, else the run's `env/*.json` snapshots, then the
    row columns). Then one summary row per point (the last one, if a point was run again), raw
    latency samples included.
    Raises DynbenchError when there is no finished point or a point ended in an error.
    """
    rows = list(_summary_rows(iter_records(results_path)).values())
    if not rows:
        raise DynbenchError(f"{results_path} holds no finished point (no summary row): "
                            "run `dynbench run --out DIR` to completion first")
    failed = [r for r in rows if str(r.get("status", "ok")) not in _STATUS_RANK]
    if failed:
        raise DynbenchError(
            f"{len(failed)} point(s) in {results_path} ended in an error (first: "
            f"{_label(_point(failed[0]))}: {failed[0].get('status')}); fix them and run again "
            "(`dynbench run --resume`) before taking a baseline")
    header = {
        "dynbench_baseline": BASELINE_FORMAT,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(results_path),
        "git_sha": sorted({r["git_sha"] for r in rows if r.get("git_sha")}),
        "models": sorted({str(r.get("model")) for r in rows}),
        "point_fields": list(POINT_FIELDS),
        "points": len(rows),
        "environments": _environments(rows, environments if environments is not None
                                      else env_snapshots(results_path)),
    }
    lines = [json.dumps(_jsonable(header), allow_nan=False)]
    lines += [json.dumps(_jsonable(r), allow_nan=False) for r in rows]
    write_atomic(out_path, "\n".join(lines) + "\n")
    return Baseline(header=header, rows=tuple(rows), path=str(out_path))


def read_baseline(path: str | os.PathLike) -> Baseline:
    """Read a file written by `write_baseline`; DynbenchError if it is not one."""
    if not Path(path).is_file():
        raise DynbenchError(f"no baseline at {path}: write one with "
                            "`dynbench baseline RESULTS --out results/baselines/NAME.jsonl`")
    records = iter(iter_records(path, strict=True))
    header = next(records, None)
    if header is None or "dynbench_baseline" not in header:
        raise DynbenchError(f"{path} is not a dynbench baseline (no header line): write one with "
                            "`dynbench baseline RESULTS --out FILE`")
    if header["dynbench_baseline"] != BASELINE_FORMAT:
        raise DynbenchError(f"{path} has baseline format {header['dynbench_baseline']}, this "
                            f"dynbench reads format {BASELINE_FORMAT}: refresh the baseline")
    rows = tuple(records)
    if not rows:
        raise DynbenchError(f"{path} holds no points: refresh it with `dynbench baseline`")
    return Baseline(header=header, rows=rows, path=str(path))


# ------------------------------------------------------------------------------------ checks


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


def _env_diff(current: Mapping, baseline: Mapping, fields: Sequence[str]) -> list[tuple[str, Any, Any]]:
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


def _describe_diff(diff: list[tuple[str, Any, Any]]) -> str:
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
            return f"{len(base)} → {len(cur)} entries ({runs(base)} → {runs(cur)})"
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
        diff = _env_diff(current, baseline, self.version_fields) if self.version_fields else []
        src = self.source_field
        if src and current.get(src) is not None and baseline.get(src) is not None \
                and current.get(src) != baseline.get(src):
            diff.append((src, baseline.get(src), current.get(src)))
        ratio = c / b if isinstance(b, int | float) and isinstance(c, int | float) and b else None
        if diff:
            return Outcome(NOT_COMPARABLE, b, c, ratio,
                           note=f"{_describe_diff(diff)}: op decompositions and counts may shift")
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
        diff = _env_diff(current, baseline, LATENCY_ENV_FIELDS)
        if current.get("timer") != baseline.get("timer"):
            diff.append(("timer", baseline.get("timer"), current.get("timer")))
        if diff:
            reasons.append(_describe_diff(diff))
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
        diff = _env_diff(current, baseline, MEMORY_ENV_FIELDS)
        if diff:
            return Outcome(NOT_COMPARABLE, b, c, ratio, note=_describe_diff(diff))
        if ratio > 1.0 + self.rel_tol:
            return Outcome(REGRESSION, b, c, ratio, note=f"{c - b:+,} bytes (tolerance {self.rel_tol:.0%})")
        if ratio < 1.0 - self.rel_tol:
            return Outcome(IMPROVEMENT, b, c, ratio, note=f"{c - b:+,} bytes (tolerance {self.rel_tol:.0%})")
        return Outcome(PASS, b, c, ratio)


@dataclass(frozen=True)
class StatusCheck(Check):
    """ok → oom → error is a regression; None while both sides are ok."""

    metric: str = "status"
    kind: str = "status"

    def evaluate(self, current, baseline):
        b, c = str(baseline.get("status", "ok")), str(current.get("status", "ok"))
        if b == c == "ok":
            return None
        rb, rc = _STATUS_RANK.get(b, 2), _STATUS_RANK.get(c, 2)
        verdict = REGRESSION if rc > rb else IMPROVEMENT if rc < rb else INFO
        return Outcome(verdict, b, c, note="metrics not compared")


def default_checks(*, latency_tol: float = 0.05, mem_tol: float = 0.01,
                   gate_cpu_latency: bool = False, seed: int = 0) -> tuple[Check, ...]:
    """The checks `dynbench check` runs, in report order (status first)."""
    exact = tuple(
        ExactCheck(m, version_fields=VERSION_FIELDS, source_field="flops_source") if m == "tmacs"
        else ExactCheck(m) for m in EXACT_METRICS
    )  # fmt: skip
    return (StatusCheck(), *exact, *(PeakMemoryCheck(m, rel_tol=mem_tol) for m in MEMORY_METRICS),
            LatencyCheck(tol=latency_tol, gate_cpu=gate_cpu_latency, seed=seed))


# ------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: a point, a metric, the values compared and the verdict."""

    point: dict
    metric: str
    kind: str
    verdict: str
    baseline: Any = None
    current: Any = None
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    note: str = ""

    @property
    def missing_from_run(self) -> bool:
        """In the baseline, not in the run: a point that did not run or a metric not measured."""
        return self.verdict == MISSING and (self.kind == "point" and self.baseline is not None
                                            or self.kind != "point" and self.current is None)

    def as_dict(self) -> dict:
        return {**self.point, "metric": self.metric, "kind": self.kind, "verdict": self.verdict,
                "baseline": self.baseline, "current": self.current, "ratio": self.ratio,
                "ci_low": self.ci[0] if self.ci else None,
                "ci_high": self.ci[1] if self.ci else None, "note": self.note}


_STYLE = {REGRESSION: "bold red", IMPROVEMENT: "bold green", MISSING: "yellow",
          NOT_COMPARABLE: "magenta", INFO: "cyan", PASS: "green"}
_MD_MARK = {REGRESSION: "❌", IMPROVEMENT: "🟢", MISSING: "⚠️", NOT_COMPARABLE: "➖", INFO: "ℹ️",
            PASS: "✅"}
_SHORT = {"prompt_len": "P", "gen_len": "g", "vision_keep": "v", "text_keep": "t", "batch": "b",
          "reuse_vision": "reuse_vision"}


def _point(row: Mapping[str, Any]) -> dict:
    return {f: row.get(f) for f in POINT_FIELDS}


def _label(point: Mapping[str, Any], shown: Iterable[str] = ()) -> str:
    """'dynamic-llava kv-cache P=64 g=32 v=0.2 t=0.5' (+ fields in `shown` that vary)."""
    parts = [str(point.get("method")), str(point.get("mode"))]
    for f in ("prompt_len", "gen_len", "vision_keep", "text_keep"):
        if point.get(f) is not None:
            parts.append(f"{_SHORT[f]}={point[f]:g}" if isinstance(point[f], float)
                         else f"{_SHORT[f]}={point[f]}")
    if point.get("text_policy") == "learned":
        parts.append("learned")
    if point.get("reuse_vision"):
        parts.append("reuse-vision")
    for f in shown:
        if f not in ("method", "mode", "prompt_len", "gen_len", "vision_keep", "text_keep"):
            parts.append(f"{_SHORT.get(f, f)}={point.get(f)}")
    return " ".join(parts)


def _metric_name(metric: str) -> str:
    return "latency" if metric == LATENCY_METRIC else metric


def _fmt(metric: str, value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return runs(value)
    if metric == LATENCY_METRIC:
        return f"{value:.4g} ms"
    if metric in MEMORY_METRICS:
        return f"{value / 2**20:.2f} MiB"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _fmt_ratio(r: CheckResult) -> str:
    if r.ratio is None or not math.isfinite(r.ratio):
        return "—"
    text = f"{r.ratio:.3f}"
    return text + (f" [{r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci else "")


@dataclass(frozen=True)
class CheckReport:
    """All results of one check. Presentation: `render()` (rich), `to_markdown()`, `to_json()`."""

    results: tuple[CheckResult, ...]
    fail_on_improvement: bool = False
    baseline_name: str = "baseline"
    settings: dict = field(default_factory=dict)
    allow_missing: bool = False

    def counts(self) -> dict[str, int]:
        return {v: n for v in VERDICTS if (n := sum(r.verdict == v for r in self.results))}

    @property
    def regressions(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == REGRESSION]

    @property
    def improvements(self) -> list[CheckResult]:
        return [r for r in self.results if r.verdict == IMPROVEMENT]

    @property
    def missing_from_run(self) -> list[CheckResult]:
        return [r for r in self.results if r.missing_from_run]

    @property
    def exit_code(self) -> int:
        """0 no regression; 1 regression, baseline points or metrics missing from the run (unless
        `allow_missing`), or improvement with `fail_on_improvement`."""
        failed = (self.regressions or (not self.allow_missing and self.missing_from_run)
                  or (self.fail_on_improvement and self.improvements))  # fmt: skip
        return 1 if failed else 0

    def summary(self) -> str:
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items()) or "nothing compared"
        head = "FAIL" if self.exit_code else "OK"
        return f"{head}: {counts}"

    def missing_message(self) -> str | None:
        """One line naming what the baseline holds and the run lacks; None when nothing is."""
        gone = self.missing_from_run
        if not gone:
            return None
        points = [r for r in gone if r.kind == "point"]
        metrics = [r for r in gone if r.kind != "point"]
        parts = []
        if points:
            names = "; ".join(_label(r.point) for r in points[:8]) + (f"; +{len(points) - 8} more"
                                                                      if len(points) > 8 else "")
            parts.append(f"{len(points)} baseline point(s) missing from the run: {names}")
        if metrics:
            names = "; ".join(f"{_label(r.point)}: {r.metric}" for r in metrics[:5])
            parts.append(f"{len(metrics)} baseline metric(s) not measured in the run: {names}")
        verdict = "allowed (--allow-missing)" if self.allow_missing else "failing (--allow-missing to accept)"
        return f"{'. '.join(parts)} — {verdict}"

    def _shown(self, everything: bool) -> list[CheckResult]:
        # passes of exact / tolerance checks are many and say nothing; latency ratios always do
        return [r for r in self.results if everything or r.verdict != PASS or r.kind == "statistical"]

    def _varying(self) -> tuple[list[str], dict[str, Any]]:
        """Point fields that vary across results (go in labels) and the constant ones (title)."""
        fields = ("model", "device", "dtype", "attn", "batch")
        varying, constant = [], {}
        for f in fields:
            values = {json.dumps(r.point.get(f)) for r in self.results}
            if len(values) > 1:
                varying.append(f)
            elif self.results and self.results[0].point.get(f) is not None:
                constant[f] = self.results[0].point[f]
        return varying, constant

    def _title(self, constant: Mapping[str, Any]) -> str:
        where = " ".join(f"{v}" for f, v in constant.items()
                         if f in ("model", "device", "dtype", "attn"))
        tol = self.settings.get("latency_tol")
        tol_text = f", latency tol {tol:.0%}" if tol is not None else ""
        return f"dynbench check vs {self.baseline_name} ({where}{tol_text}) — {self.summary()}"

    def render(self, everything: bool = False) -> Table:
        """Rich table: every result that is not a pass, plus all latency results."""
        varying, constant = self._varying()
        table = Table(title=self._title(constant), title_justify="left")
        for col in ("verdict", "point", "metric", "baseline", "current", "ratio [95% CI]", "note"):
            table.add_column(col, overflow="fold",
                             justify="right" if col in ("baseline", "current") else "left")
        for r in self._shown(everything):
            table.add_row(Text(r.verdict, style=_STYLE[r.verdict]), _label(r.point, varying),
                          _metric_name(r.metric), _fmt(r.metric, r.baseline), _fmt(r.metric, r.current),
                          _fmt_ratio(r), r.note)
        return table

    def to_markdown(self, everything: bool = False) -> str:
        """GitHub-flavoured Markdown: a heading line and one table (for `$GITHUB_STEP_SUMMARY`)."""
        varying, constant = self._varying()
        mark = "❌" if self.exit_code else "✅"
        lines = [f"### {mark} {_md_cell(self._title(constant))}", "",
                 "| verdict | point | metric | baseline | current | ratio [95% CI] | note |",
                 "|---|---|---|---|---|---|---|"]
        shown = self._shown(everything)
        for r in shown:
            cells = (f"{_MD_MARK[r.verdict]} {r.verdict}", _label(r.point, varying), _metric_name(r.metric),
                     _fmt(r.metric, r.baseline), _fmt(r.metric, r.current), _fmt_ratio(r), r.note)
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        if not shown:
            lines.append(f"| {_MD_MARK[PASS]} pass | all {len(self.results)} checks | | | | | |")
        return "\n".join(lines) + "\n"

    def to_json(self) -> list[dict]:
        """One plain-JSON dict per result (the CLI prints one per line with `--json`)."""
        return [_jsonable(r.as_dict()) for r in self.results]

    def write_markdown(self, path: str | os.PathLike) -> None:
        """Append the Markdown summary (GitHub step summaries are appended to, not replaced)."""
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(self.to_markdown() + "\n")
        except OSError as exc:
            raise DynbenchError(f"--summary-md {path}: cannot write ({exc.strerror}); "
                                "pass a writable file") from None


def _md_cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------------- check


def _rows(obj: Any) -> list[dict]:
    """Records from a list of dicts or a DataFrame (NaN → None)."""
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):
        obj = obj.to_dict("records")
    rows = []
    for row in obj:
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                     for k, v in row.items()})
    return rows


def _with_env(row: dict, envs: Mapping[str, Mapping[str, Any]]) -> dict:
    """The row with its environment fields filled in from `envs[env_id]` (row columns win)."""
    env = envs.get(str(row.get("env_id"))) or {}
    return {**{k: v for k, v in env.items() if k in ENV_FIELDS}, **row}


def _no_overlap_message(cur: list[dict], base: list[dict], baseline_name: str) -> str:
    differs = []
    for f in COMPARISON_KEY:
        a = sorted({str(r.get(f)) for r in base})
        b = sorted({str(r.get(f)) for r in cur})
        if a != b:
            differs.append(f"{f} {'/'.join(a)} vs {'/'.join(b)}")
    what = "; ".join(differs) or "no point has the same method, keeps and lengths"
    return (f"the baseline {baseline_name} shares no point with these results ({what}): "
            "run the same suite, or refresh the baseline with "
            "`dynbench baseline RESULTS --out FILE`")


def check(current_rows: Iterable[Mapping[str, Any]] | Any, baseline: Baseline, *,
          latency_tol: float = 0.05, mem_tol: float = 0.01, gate_cpu_latency: bool = False,
          fail_on_improvement: bool = False, seed: int = 0, allow_missing: bool = False,
          current_environments: Mapping[str, Mapping[str, Any]] | None = None,
          checks: Sequence[Check] | None = None) -> CheckReport:
    """Compare the summary rows of a run with a baseline, point by point (module docstring).

    `current_rows`: records (dicts or a DataFrame; step rows are ignored, the last summary row of
    a point wins). Raises DynbenchError for bad tolerances, a baseline of another model preset,
    or one that shares no comparable point.
    """
    if not 0 <= latency_tol < 1:
        raise DynbenchError(f"--latency-tol {latency_tol}: use a fraction in [0, 1), e.g. 0.05")
    if not 0 <= mem_tol < 1:
        raise DynbenchError(f"memory tolerance {mem_tol}: use a fraction in [0, 1), e.g. 0.01")
    name = Path(baseline.path).name if baseline.path else "baseline"
    envs = {**baseline.environments, **{str(k): dict(v) for k, v in (current_environments or {}).items()}}
    cur = {k: _with_env(r, envs) for k, r in _summary_rows(_rows(current_rows)).items()}
    base = {k: _with_env(r, baseline.environments) for k, r in _summary_rows(baseline.rows).items()}
    if not cur:
        raise DynbenchError("the results hold no finished point (no summary row): "
                            "run `dynbench run --out DIR` to completion first")
    cur_models = {r.get("model") for r in cur.values()}
    base_models = {r.get("model") for r in base.values()}
    if not cur_models & base_models:
        raise DynbenchError(
            f"the baseline {name} is for model preset {', '.join(map(str, sorted(base_models, key=str)))}"
            f", the results for {', '.join(map(str, sorted(cur_models, key=str)))}: check against a "
            "baseline of the same preset, or write one with `dynbench baseline RESULTS --out FILE`")
    if not cur.keys() & base.keys():
        raise DynbenchError(_no_overlap_message(list(cur.values()), list(base.values()), name))

    checks = tuple(checks) if checks is not None else default_checks(
        latency_tol=latency_tol, mem_tol=mem_tol, gate_cpu_latency=gate_cpu_latency, seed=seed)
    results: list[CheckResult] = []
    for key in [*base, *(k for k in cur if k not in base)]:
        b, c = base.get(key), cur.get(key)
        if b is None or c is None:
            row = b if b is not None else c
            note = "in the baseline, not in this run" if c is None else "new point, not in the baseline"
            results.append(CheckResult(_point(row), "point", "point", MISSING, baseline=None if b is None else "point",
                                       current=None if c is None else "point", note=note))
            continue
        both_ok = str(b.get("status", "ok")) == "ok" and str(c.get("status", "ok")) == "ok"
        for chk in checks:
            if not both_ok and chk.kind != "status":
                continue
            out = chk.evaluate(c, b)
            if out is not None:
                results.append(CheckResult(_point(c), chk.metric, chk.kind, out.verdict, out.baseline,
                                           out.current, out.ratio, out.ci, out.note))
    if not any(r.verdict in (PASS, REGRESSION, IMPROVEMENT) for r in results):
        raise DynbenchError(
            f"nothing could be compared with {name} (every shared point is not comparable or "
            "not measured: another environment?): refresh it with `dynbench baseline`")
    settings = {"latency_tol": latency_tol, "mem_tol": mem_tol, "gate_cpu_latency": gate_cpu_latency,
                "seed": seed, "allow_missing": allow_missing}
    return CheckReport(tuple(results), fail_on_improvement, name, settings, allow_missing)


def check_results(results_path: str | os.PathLike, baseline_path: str | os.PathLike,
                  **options: Any) -> CheckReport:
    """`dynbench check RESULTS --baseline FILE`: read both, then `check(**options)`."""
    baseline = read_baseline(baseline_path)
    options.setdefault("current_environments", env_snapshots(results_path))
    return check(list(iter_records(results_path, strict=True)), baseline, **options)
