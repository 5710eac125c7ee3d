"""`dynbench run`: measure every point of a sweep."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated

import typer

from dynbench.cli import options as o
from dynbench.cli.app import app
from dynbench.cli.options import err_console, out_console, point_options
from dynbench.errors import DynbenchError
from dynbench.names import is_error
from dynbench.results import RECORDS_FILE, iter_records
from dynbench.spec import MAX_POINTS

YesOpt = Annotated[bool, o.flag("--yes", help=f"allow more than {MAX_POINTS:,} points", panel=o.OUTPUT)]

EXAMPLES = """[bold]Examples[/]

  dynbench run --mode kv-cache                                   [dim]# tiny preset, CPU, both methods[/]
  dynbench run --suite suites/smoke.yaml --out results/smoke     [dim]# every mode; resumable with --resume[/]
  dynbench run --device meta --model llava-1.5-7b --mode prefill --prompt-len 40   [dim]# 7B counts, no GPU[/]
  dynbench run --method llava,dynamic-llava,fastv,h2o --mode kv-cache --gen-len 128 --device cuda --dtype bfloat16
  dynbench run --device meta --model llava-1.5-7b --mode kv-cache --dtype float16 --gpu h100-sxm  [dim]# roofline[/]
  dynbench run --suite suites/paper.yaml --shard 2/4 --out results/paper/shards/2 --resume   [dim]# one shard[/]
  dynbench run --suite suites/paper.yaml --executor slurm --jobs 8 --slurm-partition gpu --out results/paper
"""


@app.command(epilog=EXAMPLES)
@point_options(command=o.RUN_ONLY)
def run(ctx: typer.Context, point: dict, source: dict, flops: o.FlopsOpt = True, gpu: o.GpuOpt = None,
        gpu_spec: o.GpuSpecOpt = None, suite: o.SuiteOpt = None, out: o.OutOpt = None, resume: o.ResumeOpt = False,
        yes: YesOpt = False, json_out: o.JsonOpt = False, shard: o.ShardOpt = None, executor: o.ExecutorOpt = None,
        jobs: o.JobsOpt = None, parallel: o.ParallelOpt = None, slurm_partition: o.PartitionOpt = None,
        gpus_per_job: o.GpusPerJobOpt = 1, timeout_min: o.TimeoutOpt = None) -> None:
    """Measure every point of the sweep: FLOPs, memory, latency and the tokens each method keeps."""
    from dynbench.cli.cluster import child_argv, say_jobs
    from dynbench.cluster import check_options
    from dynbench.measure.roofline import resolve_gpu
    from dynbench.run import Hooks, SweepInterrupted, run_sweep
    from dynbench.sources import Source
    from dynbench.sweep_jobs import JobPlan

    check_options(executor, jobs, shard, parallel, slurm_partition, gpus_per_job, timeout_min)
    roof_gpu = resolve_gpu(gpu, gpu_spec)
    if roof_gpu is not None and not flops:
        raise DynbenchError("--gpu / --gpu-spec bound each step by its FLOPs; drop --no-flops")
    src, hooks = Source(**source), Hooks(warn=warn, note=say, progress=progress)
    plan = None if executor is None else JobPlan(executor, jobs, tuple(child_argv(ctx)), parallel, slurm_partition,
                                                 gpus_per_job, timeout_min)
    try:
        result = run_sweep(point, src, suite=suite, out=out, resume=resume, yes=yes, shard=shard, flops=flops,
                           gpu=roof_gpu, hooks=hooks, jobs=plan)
    except SweepInterrupted as stop:
        argv = [a for a in sys.argv[1:] if a != "--resume"]
        hint = f"; resume with: dynbench {shlex.join(argv)} --resume" if stop.out_dir is not None else ""
        say(f"Interrupted after {stop.done} point(s); every finished row is kept{hint}")
        raise
    if plan is not None:
        say_jobs(result, json_out=json_out)
    else:
        say_results(result, json_out=json_out)


def warn(message: str) -> None:
    err_console().print(f"[yellow]Warning:[/] {message}", highlight=False)


def say(line: str) -> None:
    err_console().print(line, highlight=False, markup=False, soft_wrap=True)


def progress(costs: list[float], skipped: int, total: int):
    from dynbench.cli.progress import SweepProgress

    return SweepProgress(costs, skipped, total, err_console())


def say_results(result, *, json_out: bool) -> None:
    """The summary rows (--json), the tables, what --resume skipped; exit 1 when a point failed."""
    from dynbench.report.tables import run_tables

    rows, out_dir = result.rows, result.out_dir
    if json_out:
        for row in rows:
            print(json.dumps(row, default=str), flush=True)
    console = err_console() if json_out else out_console()
    if rows:
        for table in run_tables(rows, list(iter_records(out_dir / RECORDS_FILE)) if out_dir is not None else None):
            console.print(table)
    if result.skipped:
        left = "nothing was left to run" if not rows else f"{result.skipped} point(s) already recorded were skipped"
        say(f"--resume: {left} in {out_dir}; `dynbench report {out_dir}` shows all {result.total} point(s)")
    errors = sum(is_error(r.get("status")) for r in rows)
    if errors:
        err_console().print(f"[red]{errors} point(s) failed[/]; their rows have status 'error: …'")
        raise typer.Exit(1)
