"""`dynbench report` and `dynbench plot`: tables and charts from results folders."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import err_console, out_console

ResultsArg = Annotated[list[str], typer.Argument(help="result folders or records.jsonl files", metavar="RESULTS...")]

REPORT_EXAMPLES = """[bold]Examples[/]

  dynbench report results/smoke
  dynbench report results/smoke --wide                          [dim]# every column[/]
  dynbench report results/smoke --columns method,keep,macs,ttft,tpot
  dynbench report results/paper --paper --format md >> table4.md
  dynbench report results/a results/b --format csv > all.csv
"""
PLOT_EXAMPLES = """[bold]Examples[/]

  dynbench plot results/smoke --out results/smoke/figures
  dynbench plot results/figures-meta results/figures-cpu --out docs/figures
"""


@app.command(epilog=REPORT_EXAMPLES)
def report(
    results: ResultsArg,
    format: Annotated[str, typer.Option(help="table | md | csv")] = "table",
    paper: Annotated[bool, typer.Option("--paper", help="the paper's views: Table 3 (quality beside cost) for "
                                        "dataset points, Table 4 for the others", metavar=" ")] = False,
    wide: Annotated[bool, typer.Option("--wide", help="every column with data (default: the compact set "
                                       "that matters per mode)", metavar=" ")] = False,
    columns: Annotated[str | None, typer.Option(help="these columns, comma-separated: method, prompt, gen, keep, "
                                                "image, text, layers, cache, macs, flops, equiv, peak, kv_prompt, "
                                                "kv_gen, kv, ttft, tpot, tpot_p90, step, step_p90, total, "
                                                "ttft_roof, tpot_roof, step_roof, total_roof, scoring, host, ops, "
                                                "energy, energy_tok, samples, text_spread, tpot_spread, tokens, ppl, "
                                                "meteor, top1, status",
                                                metavar="KEY[,…]")] = None,
) -> None:
    """Tables of every method against llava at the same point, with Δ% (terminal, Markdown or CSV)."""
    from dynbench.report.build import build_report
    from dynbench.results import load_many

    rendered = build_report(load_many(results), format, paper, columns=columns, wide=wide)
    if isinstance(rendered, str):
        sys.stdout.write(rendered)
        return
    console = out_console()
    for table in rendered:
        console.print(table)


@app.command(epilog=PLOT_EXAMPLES)
def plot(
    results: ResultsArg,
    out: Annotated[Path, typer.Option(help="folder for the charts (PNG + SVG)", metavar="DIR")],
) -> None:
    """Paper-style charts of each mode (PNG and SVG)."""
    from dynbench.report.plots import plot_all  # matplotlib only when plotting
    from dynbench.results import load_many, writable_dir

    df = load_many(results)
    skipped: list[str] = []
    console = out_console()
    written = plot_all(df, writable_dir(out), skipped=skipped)
    for path in written:
        console.print(str(path), highlight=False)
    for reason in skipped:
        err_console().print(f"[yellow]skipped[/] {reason}", highlight=False)
    if not written:  # exit 0 with nothing on disk would read as success
        err_console().print(f"nothing to draw: no chart has data in {', '.join(map(str, results))}",
                            highlight=False, markup=False)
        raise typer.Exit(1)
