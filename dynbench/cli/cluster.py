"""`dynbench merge`, and `dynbench run --executor`: a sweep's shards as jobs, merged back."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import err_console, out_console
from dynbench.errors import DynbenchError

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


def prepare_out(out: str | None, resume: bool) -> Path:
    from dynbench.merge import MERGED_FILE
    from dynbench.results import RECORDS_FILE, writable_dir

    if out is None:
        raise DynbenchError("--executor needs --out DIR: shard K writes DIR/shards/K, and they are merged into DIR")
    path = writable_dir(Path(out))
    if (path / RECORDS_FILE).exists() and not (path / MERGED_FILE).exists():
        raise DynbenchError(f"--out {out} holds {RECORDS_FILE} of a run without --executor; choose another folder")
    if not resume and ((path / "shards").exists() or (path / RECORDS_FILE).exists()):
        raise DynbenchError(f"--out {out} already holds shards of a sweep; add --resume to continue them or choose "
                            "another folder")
    return path.resolve()


def run_on_executor(ctx, points: list | None, *, executor: str, jobs: int, parallel: int | None,
                    partition: str | None, gpus_per_job: int, timeout_min: int | None, out: str | None,
                    resume: bool, json_out: bool) -> None:
    """Shard the sweep into `jobs` jobs, run them (`cluster`), merge them into --out, print the tables.
    --out's writer lock is held throughout; the local jobs end with this process (`folder_lock`)."""
    from dynbench import cluster
    from dynbench.folder_lock import folder_lock, wait_free

    target = prepare_out(out, resume)
    try:
        with folder_lock(target) as token, cluster.sigterm_as_interrupt():  # local jobs watch this lock
            _run_jobs(ctx, points, target, token, executor=executor, jobs=jobs, parallel=parallel,
                      partition=partition, gpus_per_job=gpus_per_job, timeout_min=timeout_min, json_out=json_out)
    except BaseException:
        if executor == "local":  # our lock is released: the jobs stop; return only once none writes
            wait_free([target / "shards" / str(k) for k in range(1, jobs + 1)], timeout_s=15.0)
        raise


def _run_jobs(ctx, points, target: Path, token: str, *, executor: str, jobs: int, parallel, partition,
              gpus_per_job: int, timeout_min, json_out: bool) -> None:
    import os

    from dynbench import cluster
    from dynbench.estimate import point_tmacs
    from dynbench.folder_lock import parent_env
    from dynbench.merge import write_merged
    from dynbench.shards import partition as split

    shard_dirs = [target / "shards" / str(k) for k in range(1, jobs + 1)]
    base = ["run", *child_argv(ctx)]
    watch = tuple(parent_env(target, token).items()) if executor == "local" else ()  # Slurm: scancel
    tasks = [cluster.Task(k, jobs, (*base, "--shard", f"{k}/{jobs}", "--out", str(d), "--resume", "--yes"),
                          os.getcwd(), watch) for k, d in enumerate(shard_dirs, start=1)]
    opts = cluster.Options(executor, jobs, target / "jobs", parallel, partition, gpus_per_job,
                           timeout_min or cluster.DEFAULT_TIMEOUT_MIN)
    console = err_console()
    say = lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    merge_cmd = shlex.join(["dynbench", "merge", *map(str, shard_dirs), "--out", str(target)])
    if points is not None:
        shards = split(points, jobs)
        say(f"{len(points)} point(s) in {jobs} shard(s): " + ", ".join(
            f"{k}: {len(s)} (~{sum(map(point_tmacs, s)):.3g} TMACs)" for k, s in enumerate(shards, start=1)))
    else:
        say("this machine lacks the sweep's device: the points are expanded on the compute nodes")
    try:
        if executor == "local":
            slots = cluster.local_slots({p.device for p in points or ()}, jobs, parallel, gpus_per_job)
            say(f"local jobs: {len(slots)} at a time{cluster.slot_note(slots[0])}; logs in {opts.folder}")
            outcomes = cluster.run_local(tasks, opts, slots, say)
        else:
            submitted = cluster.submit_slurm(tasks, opts)
            say(f"submitted Slurm job array {submitted[0].job_id.split('_')[0]} ({jobs} task(s), logs in "
                f"{opts.folder}); Ctrl-C cancels it; if this process is killed otherwise, the jobs go on: merge "
                f"them later with\n  {merge_cmd}")
            outcomes = cluster.wait(tasks, submitted, say)
    except KeyboardInterrupt:
        say(f"Interrupted: every finished row is kept in {target / 'shards'}; continue with the same command and "
            f"--resume, or merge what finished with\n  {merge_cmd}")
        raise
    merged = write_merged([d for d in shard_dirs if d.exists()], target)
    say_merged(merged, target)
    _print_rows(merged, json_out)
    failed = [o for o in outcomes if not o.ok]
    if failed or merged.notes:
        say(f"{len(failed)} of {jobs} shard job(s) did not finish cleanly; fix, then run again with --resume "
            f"(or `{merge_cmd}` after resuming a shard by hand)")
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
