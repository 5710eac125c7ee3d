"""`dynbench merge`, and `dynbench run --executor`: a sweep's shards as jobs, merged back."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import err_console, out_console

MERGE_EXAMPLES = """[bold]Examples[/]

  dynbench merge results/paper/shards/* --out results/paper         [dim]# after run --shard K/N, or jobs[/]
  dynbench merge results/ci-a results/ci-b --out results/ci          [dim]# a CI matrix's artifacts[/]
"""
# run's options that configure the jobs, and those each job gets its own value of
EXECUTOR_PARAMS = ("executor", "jobs", "parallel", "slurm_partition", "gpus_per_job", "timeout_min")
PER_JOB_PARAMS = ("out", "resume", "shard", "yes", "json_out")


@app.command(epilog=MERGE_EXAMPLES)
def merge(
    results: Annotated[list[str], typer.Argument(help="result folders (shards, other runs), in order: a later "
                                                 "finished row of a point wins", metavar="DIR...")],
    out: Annotated[str, typer.Option(help="the merged folder (a folder merged before is refreshed)", metavar="DIR")],
) -> None:
    """One results folder from many: points de-duplicated, env snapshots copied; refused (exit 2) when two
    folders disagree on a point's exact metrics in the same environment."""
    from dynbench.merge import write_merged

    merged = write_merged(results, out)
    say_merged(merged, out)


def say_merged(merged, out) -> None:
    console = err_console()
    left = f"; {merged.dropped} superseded or unfinished row(s) left out" if merged.dropped else ""
    console.print(f"merged {len(merged.inputs)} folder(s) into {out}: {merged.points} point(s), "
                  f"{len(merged.rows)} row(s){left}", highlight=False, markup=False)
    for note in merged.notes:
        console.print(f"[yellow]Warning:[/] {note}", highlight=False)


def child_argv(ctx) -> list[str]:
    """The options the user gave `run` (not the executor's or the per-job ones), as argv."""
    argv: list[str] = []
    for param in ctx.command.params:
        name = param.name
        source = ctx.get_parameter_source(name)  # click's ParameterSource (typer vendors click: by name)
        if name in EXECUTOR_PARAMS + PER_JOB_PARAMS or getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[name]
        if getattr(param, "is_flag", False):
            flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
            argv += [flag] if flag else []
        elif getattr(param, "multiple", False):
            argv += [a for v in value for a in (param.opts[0], str(v))]
        elif value is not None:
            argv += [param.opts[0], str(value)]
    return argv


def say_jobs(result, *, json_out: bool) -> None:
    """The merged folder, its rows as plain `run` prints them; exit 1 when a job did not finish cleanly."""
    say_merged(result.merged, result.target)
    _print_rows(result.merged, json_out)
    if result.failed or result.merged.notes:
        err_console().print(f"{result.failed} of {result.jobs} shard job(s) did not finish cleanly; fix, then run "
                            f"again with --resume (or `{result.merge_cmd}` after resuming a shard by hand)",
                            highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)


def _print_rows(merged, json_out: bool) -> None:
    from dynbench.records import is_point_summary
    from dynbench.report.tables import run_tables

    summaries = [r for r in merged.rows if is_point_summary(r)]  # as plain `run` prints: one row per point
    if json_out:
        for row in summaries:
            print(json.dumps(row, default=str), flush=True)
    console = err_console() if json_out else out_console()
    if summaries:
        for table in run_tables(summaries, merged.rows):
            console.print(table)
