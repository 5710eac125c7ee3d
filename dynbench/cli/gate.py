"""`dynbench baseline` and `dynbench check`: the regression gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import err_console, flag

ResultsArg = Annotated[Path, typer.Argument(help="results folder or its records.jsonl", metavar="RESULTS")]
ManyResultsArg = Annotated[list[Path], typer.Argument(help="results folders or records.jsonl files (several: "
                                                      "merged as `dynbench merge` would)", metavar="RESULTS...")]

BASELINE_EXAMPLES = """[bold]Examples[/]

  dynbench baseline results/ci-gpu --out results/baselines/ci-gpu.jsonl
"""
CHECK_EXAMPLES = """[bold]Examples[/]

  dynbench check results/smoke --baseline results/baselines/smoke-cpu.jsonl
  dynbench check results/ci-gpu --baseline results/baselines/ci-gpu.jsonl --summary-md "$GITHUB_STEP_SUMMARY"
  dynbench check results/partial --baseline results/baselines/ci-gpu.jsonl --allow-missing --json
  dynbench check results/ci-gpu/shards/* --baseline results/baselines/ci-gpu.jsonl   [dim]# shards, merged[/]
"""


@app.command(epilog=BASELINE_EXAMPLES)
def baseline(
    results: ResultsArg,
    out: Annotated[Path, typer.Option(help="baseline file, e.g. results/baselines/NAME.jsonl", metavar="FILE")],
) -> None:
    """Store a run's summary rows and environment as a baseline for `dynbench check`."""
    from dynbench.regress import write_baseline

    written = write_baseline(results, out)
    err_console().print(f"wrote {out}: {written.describe()}", highlight=False, markup=False)


@app.command(epilog=CHECK_EXAMPLES)
def check(
    results: ManyResultsArg,
    baseline: Annotated[Path, typer.Option(help="file written by `dynbench baseline`", metavar="FILE")],
    latency_tol: Annotated[float, typer.Option(help="latency tolerance on the ratio of medians")] = 0.05,
    quality_tol: Annotated[float, typer.Option(help="relative tolerance on ppl, ppl_pooled and meteor (default: "
                                               "exact up to rounding, for CPU runs in one environment)")] = 1e-6,
    summary_md: Annotated[str | None, typer.Option(help="append a Markdown summary to FILE", metavar="FILE")] = None,
    json_out: Annotated[bool, flag("--json", help="JSON Lines on stdout, one per check")] = False,
    fail_on_improvement: Annotated[bool, flag("--fail-on-improvement", help="exit 1 on improvements "
                                              "(a stale baseline)")] = False,
    gate_cpu_latency: Annotated[bool, flag("--gate-cpu-latency", help="gate CPU timings too (noisy)")] = False,
    allow_missing: Annotated[bool, flag("--allow-missing", help="pass although baseline points or metrics "
                                        "are missing from the run (a partial run)")] = False,
) -> None:
    """Compare a run with a baseline: exit 0 no regression, 1 regression or missing points, 2 bad input."""
    from dynbench.regress import check_results
    from dynbench.report.check import append_markdown, missing_line, render

    report = check_results(results[0] if len(results) == 1 else results, baseline, latency_tol=latency_tol,
                           fail_on_improvement=fail_on_improvement, gate_cpu_latency=gate_cpu_latency,
                           allow_missing=allow_missing, quality_tol=quality_tol)
    console = err_console()
    console.print(render(report))
    missing = missing_line(report)
    if missing:
        console.print(missing, style="yellow" if allow_missing else "bold red", markup=False, highlight=False)
    if summary_md:  # "$GITHUB_STEP_SUMMARY" is empty outside Actions
        append_markdown(report, summary_md)
    if json_out:
        for result in report.results:
            print(json.dumps(result.as_dict(), allow_nan=False))
    raise typer.Exit(report.exit_code)
