"""`run_sweep`: the one library entry that runs a sweep — expansion, sharding, the results folder's
writer lock, resume and measuring. `dynbench run`, its shard jobs (`run --executor`) and `doctor`
call it; the caller only parses and renders (progress, tables, JSON, exit code)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dynbench.errors import DynbenchError
from dynbench.results import RECORDS_FILE, writable_dir
from dynbench.spec import MAX_POINTS

MAX_POINT_SECONDS = 15 * 60  # one point estimated beyond this needs --yes


@dataclass
class SweepResult:
    """What a sweep did: the summary rows it measured, in order; how many --resume skipped."""

    rows: list[dict] = field(default_factory=list)
    out_dir: Path | None = None
    skipped: int = 0
    total: int = 0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during measuring: every finished row is kept; `done` points were measured."""

    def __init__(self, done: int, out_dir: Path | None):
        super().__init__()
        self.done, self.out_dir = done, out_dir


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
    from dynbench.folder_lock import PARENT_LOCK_ENV, folder_lock

    if out_dir is None:
        return contextlib.nullcontext()
    return folder_lock(out_dir, wait_s=10.0 if os.environ.get(PARENT_LOCK_ENV) else 1.0)


def check_attn(attn: str) -> None:
    if attn == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise DynbenchError("--attn flash_attention_2 needs the flash-attn package; use sdpa or eager")


def build_points(point: dict, source, suite: str | None, warn: Callable[[str], None]) -> list:
    """The sweep's points from the flags or a suite file; warnings passed to `warn` once each."""
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
        warn(message)
    for attn in {p.attn for p in points}:
        check_attn(attn)
    source.check_datasets(points)  # a bad dataset record stops the run before anything is measured
    return points


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


def expand_points(point: dict, source, suite: str | None, *, executor: str | None, yes: bool,
                  warn: Callable[[str], None]) -> list:
    """The sweep's points, ordered so each model is built once, on this machine's device (`auto`
    resolved; a Slurm login node keeps it: the jobs resolve it on their nodes), refused when too
    many or too expensive (without --yes)."""
    from dynbench.spec import resolved
    from dynbench.sweep import order_points

    points = order_points(build_points(point, source, suite, warn))
    if executor != "slurm":
        points = resolved(points)
    if len(points) > MAX_POINTS and not yes:
        raise DynbenchError(f"the sweep has {len(points):,} points (over {MAX_POINTS:,}); add --yes to run it")
    if not yes and executor != "slurm":  # Slurm: the nodes' speed is not this machine's
        refuse_expensive(points)
    return points


@dataclass
class Hooks:
    """How a sweep talks to its caller: `warn` one line; `note` a plain line (the shard's share);
    `progress(costs, skipped, total)` a context manager with `point_done(row)` and `stop()`."""

    warn: Callable[[str], None] = lambda message: None
    note: Callable[[str], None] = lambda line: None
    progress: Callable | None = None


def run_sweep(point: dict, source, *, suite: str | None = None, out: str | None = None, resume: bool = False,
              yes: bool = False, shard: str | None = None, flops: bool = True, gpu=None,
              hooks: Hooks | None = None, jobs=None):
    """Expand the points (`point`: flag values, or `suite`), keep shard K/N of them, and measure
    those not yet in `out` (`resume`) under the folder's writer lock; a shard writes its manifest.
    With `jobs` (`sweep_jobs.JobPlan`) the sweep runs as shard jobs merged into `out` instead
    (a `sweep_jobs.JobsResult`)."""
    from dynbench.folder_lock import watch_parent
    from dynbench.shards import manifest, parse_shard, shard_points, write_manifest
    from dynbench.sweep import Sweep

    hooks = hooks or Hooks()
    if jobs is not None:  # the jobs get --yes: checked here, or bounded by --timeout-min
        from dynbench.sweep_jobs import run_jobs

        points = expand_points(point, source, suite, executor=jobs.executor, yes=yes, warn=hooks.warn)
        return run_jobs(points, jobs, out=out, resume=resume, say=hooks.note)
    this_shard = parse_shard(shard) if shard is not None else None
    points = sweep_points = expand_points(point, source, suite, executor=None, yes=yes, warn=hooks.warn)
    if this_shard is not None:
        points = shard_points(points, this_shard)
    out_dir = out_dir_for(out, resume)
    watch_parent()  # a shard job of `run --executor` ends when its parent is gone
    with writer_lock(out_dir):
        check_fresh(out_dir, out, resume)  # again under the lock: another run may just have written it
        sweep = Sweep(out_dir, flops=flops, source=source, warn=hooks.warn, gpu=gpu)
        if this_shard is not None:
            if out_dir is not None:
                write_manifest(out_dir, manifest(sweep_points, this_shard, points), resume)
            hooks.note(f"shard {this_shard}: {len(points)} of the sweep's {len(sweep_points)} point(s)")
            if not points:
                return SweepResult(out_dir=out_dir, total=0)
        todo, skipped = sweep.pending(points, resume)
        rows = measure(sweep, points, todo, skipped, hooks.progress)
    return SweepResult(rows, out_dir, skipped, len(points))


def measure(sweep, points: list, todo: list, skipped: int, progress: Callable | None) -> list[dict]:
    """Run `todo`, reporting each finished point to `progress` (weighed by estimated cost)."""
    from dynbench.estimate import point_tmacs
    from dynbench.records import RESUME_KEY, key_of

    weight = {key_of(p, RESUME_KEY): point_tmacs(p) for p in points}  # estimated from the counting rules
    costs = [weight[key_of(p, RESUME_KEY)] for p in todo]
    rows: list[dict] = []
    with progress(costs, skipped, len(points)) if progress else contextlib.nullcontext() as bar:
        try:
            for row in sweep.run(todo):
                rows.append(row)
                if bar is not None:
                    bar.point_done(row)
        except KeyboardInterrupt:
            if bar is not None:
                bar.stop()
            raise SweepInterrupted(len(rows), sweep.out_dir) from None
    return rows
