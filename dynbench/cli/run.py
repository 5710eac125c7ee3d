"""`dynbench run`: measure every point of a sweep."""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import (
    CLUSTER,
    MEASURE,
    OUTPUT,
    JsonOpt,
    default,
    err_console,
    flag,
    opt,
    out_console,
    point_options,
)  # fmt: skip
from dynbench.errors import DynbenchError
from dynbench.names import is_error
from dynbench.results import RECORDS_FILE, iter_records, writable_dir
from dynbench.spec import MAX_POINTS

EXAMPLES = """[bold]Examples[/]

  dynbench run --mode kv-cache                                   [dim]# tiny preset, CPU, both methods[/]
  dynbench run --suite suites/smoke.yaml --out results/smoke     [dim]# every mode; resumable with --resume[/]
  dynbench run --device meta --model llava-1.5-7b --mode prefill --prompt-len 40   [dim]# 7B counts, no GPU[/]
  dynbench run --method llava,dynamic-llava,fastv,h2o --mode kv-cache --gen-len 128 --device cuda --dtype bfloat16
  dynbench run --device meta --model llava-1.5-7b --mode kv-cache --dtype float16 --gpu h100-sxm  [dim]# roofline[/]
  dynbench run --suite suites/paper.yaml --shard 2/4 --out results/paper/shards/2 --resume   [dim]# one shard[/]
  dynbench run --suite suites/paper.yaml --executor slurm --jobs 8 --slurm-partition gpu --out results/paper
"""


def out_dir_for(out: str | None, resume: bool) -> Path | None:
    """The results folder: created and probed for writing; an existing one needs --resume."""
    if out is None:
        if resume:
            raise DynbenchError("--resume needs --out DIR (the results folder to resume)")
        return None
    path = Path(out)
    if path.suffix == ".jsonl":  # --out results/x/records.jsonl names the file itself
        path = path.parent
    path = writable_dir(path)
    check_fresh(path, out, resume)
    return path


def check_fresh(path: Path | None, out: str | None, resume: bool) -> None:
    """An existing results file needs --resume; a folder where it should be is refused."""
    if path is None:
        return
    records = path / RECORDS_FILE
    if records.is_dir():
        raise DynbenchError(f"--out {out}: {records} is a folder, not a file; move it away or choose another folder")
    if records.exists() and not resume:
        raise DynbenchError(f"--out {out} already holds {RECORDS_FILE}; add --resume to continue it or choose "
                            "another folder")


def writer_lock(out_dir: Path | None):
    """The results folder's writer lock (`folder_lock`) for the run's lifetime; none without --out.
    A shard job waits longer: a job of a killed parent may still be stopping."""
    import contextlib

    from dynbench.folder_lock import PARENT_LOCK_ENV, folder_lock

    if out_dir is None:
        return contextlib.nullcontext()
    return folder_lock(out_dir, wait_s=10.0 if os.environ.get(PARENT_LOCK_ENV) else 1.0)


def check_attn(attn: str) -> None:
    if attn == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise DynbenchError("--attn flash_attention_2 needs the flash-attn package; use sdpa or eager")


def build_points(point: dict, source, suite: str | None) -> list:
    """The sweep's points from the flags or a suite file; warnings printed once each."""
    from dynbench.spec import load_suite, points_from

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if suite is not None:
            given = [k for k, v in point.items() if v is not None]
            if given:
                flags = ", ".join("--" + k.replace("_", "-") for k in given)
                raise DynbenchError(f"--suite sets the points; move {flags} into the suite file")
            source.checkpoint_info()
            points = load_suite(suite, source.labels)
        else:
            points = points_from(source.defaults_for(point), source=source.labels)
    for message in dict.fromkeys(str(w.message) for w in caught):
        err_console().print(f"[yellow]Warning:[/] {message}", highlight=False)
    for attn in {p.attn for p in points}:
        check_attn(attn)
    source.check_datasets(points)  # a bad dataset record stops the run before anything is measured
    return points


MAX_POINT_SECONDS = 15 * 60  # one point estimated beyond this needs --yes


def refuse_expensive(points: list) -> None:
    """A point whose estimated matmul time on this machine is far beyond a benchmark's (a typo'd
    --prompt-len, a 7B on a CPU) is refused with the estimate; `--yes` runs it anyway."""
    from dynbench.estimate import estimated_seconds, machine_tmacs_per_s, point_tmacs

    worst, seconds = None, 0.0
    for p in points:
        s = estimated_seconds(p)
        if s is not None and s > seconds:
            worst, seconds = p, s
    if worst is not None and seconds > MAX_POINT_SECONDS:
        rate = machine_tmacs_per_s(worst.device) * 1e3
        raise DynbenchError(
            f"{worst.method} {worst.mode} P={worst.prompt_len} on {worst.model} needs about "
            f"{point_tmacs(worst):.3g} TMACs: ~{seconds / 60:.0f} min on this {worst.device} (matmuls measured at "
            f"{rate:.0f} GMAC/s); add --yes to run it, or --device meta for the counts alone")


@app.command(epilog=EXAMPLES)
@point_options
def run(
    ctx: typer.Context,
    point: dict,
    source: dict,
    warmup: Annotated[int | None, opt("warm-up runs \\[default: prefill 3, decode 1]", MEASURE)] = None,
    repeats: Annotated[int | None, opt("measured runs \\[default: prefill 10 on GPU, 5 on CPU; decode 1]",
                                       MEASURE)] = None,
    regions: Annotated[bool, flag("--regions", help="also time predictors, token drop and scoring inside every "
                                  "step (adds events to timed steps; recorded)", panel=MEASURE)] = False,
    flops: Annotated[bool, typer.Option("--flops/--no-flops", help="count FLOPs with fvcore",
                                        rich_help_panel=MEASURE)] = True,
    debug_decode_delay_ms: Annotated[float | None, opt("debugging: sleep this long inside every decode step "
                                                       "(recorded; proves `check` catches a slowdown)",
                                                       MEASURE, "MS")] = None,
    gpu: Annotated[str | None, opt("roofline bounds on this GPU (dynbench gpus): a projection on cpu / meta; "
                                   "on cuda the card NVML names is the default", MEASURE, "NAME")] = None,
    gpu_spec: Annotated[str | None, opt("roofline bounds on a GPU not in the table: peak TFLOP/s and memory "
                                        "GB/s", MEASURE, "TFLOPS,GBPS")] = None,
    suite: Annotated[str | None, opt("a suite YAML file instead of the point flags", OUTPUT, "FILE")] = None,
    out: Annotated[str | None, opt("results folder (records.jsonl is appended there)", OUTPUT, "DIR")] = None,
    resume: Annotated[bool, flag("--resume", help="skip points already recorded in --out", panel=OUTPUT)] = False,
    yes: Annotated[bool, flag("--yes", help=f"allow more than {MAX_POINTS:,} points", panel=OUTPUT)] = False,
    json_out: JsonOpt = False,
    shard: Annotated[str | None, opt("measure only shard K of N of the sweep (deterministic, balanced by estimated "
                                     "cost, a model's points together)", CLUSTER, "K/N")] = None,
    executor: Annotated[str | None, opt("local | slurm: run the sweep as --jobs shard jobs (submitit) into "
                                        "--out DIR/shards/K, then merge them into --out DIR", CLUSTER)] = None,
    jobs: Annotated[int | None, opt("number of shard jobs (--executor)", CLUSTER, "N")] = None,
    parallel: Annotated[int | None, opt("jobs at once \\[default: slurm all; local one per GPU, or per CPU core]",
                                        CLUSTER, "N")] = None,
    slurm_partition: Annotated[str | None, opt("Slurm partition (--executor slurm)", CLUSTER, "NAME")] = None,
    gpus_per_job: Annotated[int, opt("GPUs per job", CLUSTER)] = 1,
    timeout_min: Annotated[int | None, opt(default("wall-clock limit of each job, minutes", "720"), CLUSTER,
                                           "M")] = None,
) -> None:
    """Measure every point of the sweep: FLOPs, memory, latency and the tokens each method keeps."""
    from dynbench.cluster import check_options
    from dynbench.folder_lock import watch_parent
    from dynbench.measure.roofline import resolve_gpu
    from dynbench.shards import manifest, parse_shard, shard_points, write_manifest
    from dynbench.sources import Source
    from dynbench.sweep import Sweep

    check_options(executor, jobs, shard, parallel, slurm_partition, gpus_per_job, timeout_min)
    this_shard = parse_shard(shard) if shard is not None else None
    point.update(warmup=warmup, repeats=repeats, regions=regions or None, debug_decode_delay_ms=debug_decode_delay_ms)
    roof_gpu = resolve_gpu(gpu, gpu_spec)
    if roof_gpu is not None and not flops:
        raise DynbenchError("--gpu / --gpu-spec bound each step by its FLOPs; drop --no-flops")
    src = Source(**source)
    points = expand_points(point, src, suite, executor=executor, yes=yes)
    if executor is not None:  # the jobs get --yes: checked here, or bounded by --timeout-min
        from dynbench.cli.cluster import run_on_executor

        return run_on_executor(ctx, points, executor=executor, jobs=jobs, parallel=parallel,
                               partition=slurm_partition, gpus_per_job=gpus_per_job, timeout_min=timeout_min,
                               out=out, resume=resume, json_out=json_out)
    sweep_points = points
    if this_shard is not None:
        points = shard_points(points, this_shard)
    warn = lambda message: err_console().print(f"[yellow]Warning:[/] {message}", highlight=False)  # noqa: E731
    out_dir = out_dir_for(out, resume)
    watch_parent()  # a shard job of `run --executor` ends when its parent is gone
    with writer_lock(out_dir):
        check_fresh(out_dir, out, resume)  # again under the lock: another run may just have written it
        sweep = Sweep(out_dir, flops=flops, source=src, warn=warn, gpu=roof_gpu)
        if this_shard is not None:
            if sweep.out_dir is not None:
                write_manifest(sweep.out_dir, manifest(sweep_points, this_shard, points), resume)
            err_console().print(f"shard {this_shard}: {len(points)} of the sweep's {len(sweep_points)} point(s)",
                                highlight=False, markup=False)
            if not points:
                return
        todo, skipped = sweep.pending(points, resume)
        rows = measure_points(sweep, points, todo, skipped)
    say_results(rows, sweep, json_out=json_out, skipped=skipped, total=len(points))


def expand_points(point: dict, source, suite: str | None, *, executor: str | None, yes: bool) -> list | None:
    """The sweep's points, ordered so each model is built once, refused when too many or too
    expensive (without --yes); None when a Slurm login node cannot expand a GPU sweep (the jobs will)."""
    from dynbench.spec import NoDevice
    from dynbench.sweep import order_points

    try:
        points = order_points(build_points(point, source, suite))
    except NoDevice:
        if executor != "slurm":  # a login node submitting GPU jobs cannot expand them: the shards will
            raise
        return None
    if len(points) > MAX_POINTS and not yes:
        raise DynbenchError(f"the sweep has {len(points):,} points (over {MAX_POINTS:,}); add --yes to run it")
    if not yes and executor != "slurm":  # Slurm: the nodes' speed is not this machine's
        refuse_expensive(points)
    return points


def measure_points(sweep, points: list, todo: list, skipped: int) -> list[dict]:
    """Run `todo` with a progress bar weighed by estimated cost; Ctrl-C prints how to resume."""
    from dynbench.cli.progress import SweepProgress
    from dynbench.estimate import point_tmacs
    from dynbench.records import RESUME_KEY, key_of

    weight = {key_of(p, RESUME_KEY): point_tmacs(p) for p in points}  # estimated from the counting rules
    rows: list[dict] = []
    with SweepProgress([weight[key_of(p, RESUME_KEY)] for p in todo], skipped, len(points), err_console()) as progress:
        try:
            for row in sweep.run(todo):
                rows.append(row)
                progress.point_done(row)
        except KeyboardInterrupt:
            progress.stop()
            hint = ""
            if sweep.out_dir is not None:
                argv = [a for a in sys.argv[1:] if a != "--resume"]
                hint = f"; resume with: dynbench {shlex.join(argv)} --resume"
            err_console().print(f"Interrupted after {len(rows)} point(s); every finished row is kept{hint}",
                                highlight=False, markup=False)
            raise
    return rows


def say_results(rows: list[dict], sweep, *, json_out: bool, skipped: int, total: int) -> None:
    """The summary rows (--json), the tables, what --resume skipped; exit 1 when a point failed."""
    from dynbench.report.tables import run_tables

    if json_out:
        for row in rows:
            print(json.dumps(row, default=str), flush=True)
    console = err_console() if json_out else out_console()
    if rows:
        folder = list(iter_records(sweep.out_dir / RECORDS_FILE)) if sweep.out_dir is not None else None
        for table in run_tables(rows, folder):
            console.print(table)
    if skipped:
        left = "nothing was left to run" if not rows else f"{skipped} point(s) already recorded were skipped"
        err_console().print(f"--resume: {left} in {sweep.out_dir}; `dynbench report {sweep.out_dir}` shows "
                            f"all {total} point(s)", highlight=False, markup=False)
    errors = sum(is_error(r.get("status")) for r in rows)
    if errors:
        err_console().print(f"[red]{errors} point(s) failed[/]; their rows have status 'error: …'")
        raise typer.Exit(1)
