"""The gate as data: `check(current_rows, baseline)` → a `CheckReport` of one result per point and
metric, with the exit code it implies. Rendering is `report/check.py`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dynbench.errors import DynbenchError
from dynbench.records import COMPARISON_KEY, POINT_KEY, latest_summaries
from dynbench.regress.baseline import ENV_FIELDS, Baseline, read_baseline
from dynbench.regress.checks import (
    IMPROVEMENT,
    MISSING,
    PASS,
    REGRESSION,
    VERDICTS,
    Check,
    Outcome,
    default_checks,
)
from dynbench.results import env_snapshots, iter_records, jsonable


@dataclass(frozen=True, kw_only=True)
class CheckResult(Outcome):
    """One line of the report: a check's outcome (verdict, values compared) at a point, for a metric."""

    point: dict
    metric: str
    kind: str

    @property
    def missing_from_run(self) -> bool:
        """In the baseline, not in the run: a point that did not run or a metric not measured."""
        return self.verdict == MISSING and (self.kind == "point" and self.baseline is not None
                                            or self.kind != "point" and self.current is None)

    def as_dict(self) -> dict:
        """Plain JSON (the CLI prints one per line with `--json`)."""
        return jsonable({**self.point, "metric": self.metric, "kind": self.kind, "verdict": self.verdict,
                         "baseline": self.baseline, "current": self.current, "ratio": self.ratio,
                         "ci_low": self.ci[0] if self.ci else None, "ci_high": self.ci[1] if self.ci else None,
                         "note": self.note})


@dataclass(frozen=True)
class CheckReport:
    """All results of one check, and the exit code they imply."""

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
                  or (self.fail_on_improvement and self.improvements))
        return 1 if failed else 0


def _point(row: Mapping[str, Any]) -> dict:
    return {f: row.get(f) for f in POINT_KEY}


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
          quality_tol: float = 1e-6, fail_on_improvement: bool = False, seed: int = 0, allow_missing: bool = False,
          current_environments: Mapping[str, Mapping[str, Any]] | None = None,
          checks: Sequence[Check] | None = None) -> CheckReport:
    """Compare the summary rows of a run with a baseline, point by point (module docstring).

    `current_rows`: records (dicts or a DataFrame; step rows are ignored, the last summary row of
    a point wins). Raises DynbenchError for bad tolerances, a baseline of another model preset,
    or one that shares no comparable point.
    """
    _check_tolerances(latency_tol=latency_tol, mem_tol=mem_tol, quality_tol=quality_tol)
    name = Path(baseline.path).name if baseline.path else "baseline"
    envs = {**baseline.environments, **{str(k): dict(v) for k, v in (current_environments or {}).items()}}
    cur = {k: _with_env(r, envs) for k, r in latest_summaries(_rows(current_rows)).items()}
    base = {k: _with_env(r, baseline.environments) for k, r in latest_summaries(baseline.rows).items()}
    _check_comparable(cur, base, name)
    checks = tuple(checks) if checks is not None else default_checks(
        latency_tol=latency_tol, mem_tol=mem_tol, gate_cpu_latency=gate_cpu_latency, seed=seed,
        quality_tol=quality_tol)
    results = _compare_points(cur, base, checks)
    if not any(r.verdict in (PASS, REGRESSION, IMPROVEMENT) for r in results):
        raise DynbenchError(
            f"nothing could be compared with {name} (every shared point is not comparable or "
            "not measured: another environment?): refresh it with `dynbench baseline`")
    settings = {"latency_tol": latency_tol, "mem_tol": mem_tol, "quality_tol": quality_tol,
                "gate_cpu_latency": gate_cpu_latency,
                "seed": seed, "allow_missing": allow_missing}
    return CheckReport(tuple(results), fail_on_improvement, name, settings, allow_missing)


def _check_tolerances(*, latency_tol: float, mem_tol: float, quality_tol: float) -> None:
    if not 0 <= latency_tol < 1:
        raise DynbenchError(f"--latency-tol {latency_tol}: use a fraction in [0, 1), e.g. 0.05")
    if not 0 <= mem_tol < 1:
        raise DynbenchError(f"memory tolerance {mem_tol}: use a fraction in [0, 1), e.g. 0.01")
    if not 0 <= quality_tol < 1:
        raise DynbenchError(f"--quality-tol {quality_tol}: use a fraction in [0, 1), e.g. 0.01 for GPU runs")


def _check_comparable(cur: Mapping[tuple, dict], base: Mapping[tuple, dict], name: str) -> None:
    """A run and a baseline of the same preset that share at least one point, or one line saying why not."""
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


def _compare_points(cur: Mapping[tuple, dict], base: Mapping[tuple, dict], checks: Sequence[Check]) -> list:
    """Every check on every shared point (a failed point: its status only); missing points reported."""
    results: list[CheckResult] = []
    for key in [*base, *(k for k in cur if k not in base)]:
        b, c = base.get(key), cur.get(key)
        if b is None or c is None:
            row = b if b is not None else c
            note = "in the baseline, not in this run" if c is None else "new point, not in the baseline"
            results.append(CheckResult(point=_point(row), metric="point", kind="point", verdict=MISSING,
                                       baseline=None if b is None else "point",
                                       current=None if c is None else "point", note=note))
            continue
        both_ok = str(b.get("status", "ok")) == "ok" and str(c.get("status", "ok")) == "ok"
        for chk in checks:
            if not both_ok and chk.kind != "status":
                continue
            out = chk.evaluate(c, b)
            if out is not None:
                results.append(CheckResult(point=_point(c), metric=chk.metric, kind=chk.kind,
                                           **{f.name: getattr(out, f.name) for f in fields(out)}))
    return results


def check_results(results_path: str | os.PathLike | Sequence[str | os.PathLike], baseline_path: str | os.PathLike,
                  **options: Any) -> CheckReport:
    """`dynbench check RESULTS... --baseline FILE`: read both, then `check(**options)`. Several
    results folders are merged in memory first, as `dynbench merge` would (`merge.merge_folders`)."""
    baseline = read_baseline(baseline_path)
    if isinstance(results_path, str | os.PathLike):
        options.setdefault("current_environments", env_snapshots(results_path))
        return check(list(iter_records(results_path, strict=True)), baseline, **options)
    from dynbench.merge import merge_folders  # merge uses the gate's exact checks: imported late

    merged = merge_folders(results_path, strict=True)
    options.setdefault("current_environments", merged.environments)
    return check(merged.rows, baseline, **options)
