"""Rendering a gate report (`regress.CheckReport`): a rich table, Markdown for CI step summaries,
and the one-line verdicts the CLI prints. Shown: every result that is not a pass, plus every
latency result (their ratios always say something)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from dynbench.errors import DynbenchError
from dynbench.regress import (
    IMPROVEMENT,
    INFO,
    LATENCY_METRIC,
    MEMORY_METRICS,
    MISSING,
    NOT_COMPARABLE,
    PASS,
    REGRESSION,
    CheckReport,
    CheckResult,
)
from dynbench.report.format import DASH, md_cell, md_table, point_label, run_length

STYLE = {REGRESSION: "bold red", IMPROVEMENT: "bold green", MISSING: "yellow",
         NOT_COMPARABLE: "magenta", INFO: "cyan", PASS: "green"}
MD_MARK = {REGRESSION: "❌", IMPROVEMENT: "🟢", MISSING: "⚠️", NOT_COMPARABLE: "➖", INFO: "ℹ️", PASS: "✅"}
HEADERS = ("verdict", "point", "metric", "baseline", "current", "ratio [95% CI]", "note")


def summary_line(report: CheckReport) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in report.counts().items()) or "nothing compared"
    return f"{'FAIL' if report.exit_code else 'OK'}: {counts}"


def missing_line(report: CheckReport) -> str | None:
    """One line naming what the baseline holds and the run lacks; None when nothing is."""
    gone = report.missing_from_run
    if not gone:
        return None
    points = [r for r in gone if r.kind == "point"]
    metrics = [r for r in gone if r.kind != "point"]
    parts = []
    if points:
        names = "; ".join(point_label(r.point) for r in points[:8])
        more = f"; +{len(points) - 8} more" if len(points) > 8 else ""
        parts.append(f"{len(points)} baseline point(s) missing from the run: {names}{more}")
    if metrics:
        names = "; ".join(f"{point_label(r.point)}: {r.metric}" for r in metrics[:5])
        parts.append(f"{len(metrics)} baseline metric(s) not measured in the run: {names}")
    verdict = "allowed (--allow-missing)" if report.allow_missing else "failing (--allow-missing to accept)"
    return f"{'. '.join(parts)} — {verdict}"


def _shown(report: CheckReport, everything: bool) -> list[CheckResult]:
    return [r for r in report.results if everything or r.verdict != PASS or r.kind == "statistical"]


def _varying(report: CheckReport) -> tuple[list[str], dict[str, Any]]:
    """Point fields that vary across results (go in labels) and the constant ones (title)."""
    varying, constant = [], {}
    for f in ("model", "device", "dtype", "attn", "batch"):
        values = {json.dumps(r.point.get(f)) for r in report.results}
        if len(values) > 1:
            varying.append(f)
        elif report.results and report.results[0].point.get(f) is not None:
            constant[f] = report.results[0].point[f]
    return varying, constant


def title(report: CheckReport) -> str:
    _, constant = _varying(report)
    where = " ".join(str(v) for f, v in constant.items() if f in ("model", "device", "dtype", "attn"))
    tol = report.settings.get("latency_tol")
    tol_text = f", latency tol {tol:.0%}" if tol is not None else ""
    return f"dynbench check vs {report.baseline_name} ({where}{tol_text}) — {summary_line(report)}"


def _value(metric: str, value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, list):
        return run_length(value)
    if metric == LATENCY_METRIC:
        return f"{value:.4g} ms"
    if metric in MEMORY_METRICS:
        return f"{value / 2**20:.2f} MiB"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _ratio(r: CheckResult) -> str:
    if r.ratio is None or not math.isfinite(r.ratio):
        return DASH
    return f"{r.ratio:.3f}" + (f" [{r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci else "")


def _cells(r: CheckResult, varying: list[str]) -> tuple[str, ...]:
    metric = "latency" if r.metric == LATENCY_METRIC else r.metric
    return (point_label(r.point, varying), metric, _value(r.metric, r.baseline), _value(r.metric, r.current),
            _ratio(r), r.note)


def render(report: CheckReport, everything: bool = False):
    """A rich Table of the results worth seeing."""
    from rich.table import Table
    from rich.text import Text

    varying, _ = _varying(report)
    table = Table(title=title(report), title_justify="left")
    for col in HEADERS:
        table.add_column(col, overflow="fold", justify="right" if col in ("baseline", "current") else "left")
    for r in _shown(report, everything):
        table.add_row(Text(r.verdict, style=STYLE[r.verdict]), *_cells(r, varying))
    return table


def to_markdown(report: CheckReport, everything: bool = False) -> str:
    """GitHub-flavoured Markdown: a heading line and one table (for `$GITHUB_STEP_SUMMARY`)."""
    varying, _ = _varying(report)
    shown = _shown(report, everything)
    rows = [(f"{MD_MARK[r.verdict]} {r.verdict}", *_cells(r, varying)) for r in shown]
    if not shown:
        rows = [(f"{MD_MARK[PASS]} pass", f"all {len(report.results)} checks", "", "", "", "", "")]
    mark = "❌" if report.exit_code else "✅"
    return f"### {mark} {md_cell(title(report))}\n\n" + md_table(HEADERS, rows)


def append_markdown(report: CheckReport, path: str | os.PathLike) -> None:
    """Append the Markdown summary (GitHub step summaries are appended to, not replaced)."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(to_markdown(report) + "\n")
    except OSError as exc:
        raise DynbenchError(f"--summary-md {path}: cannot write ({exc.strerror}); pass a writable file") from None
