"""A sweep as shard jobs (`run --executor local | slurm`): each job is `dynbench run --shard K/N`
into `--out DIR/shards/K` (so each runs `run.run_sweep`), then the shards are merged into DIR.
DIR's writer lock is held throughout; the local jobs end with this process (`folder_lock`)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynbench.errors import DynbenchError


@dataclass(frozen=True)
class JobPlan:
    """How to run the jobs: `argv` is the user's `run` options the jobs repeat (the point options,
    the measurement ones), without the executor's and the per-job ones."""

    executor: str
    jobs: int
    argv: tuple[str, ...] = ()
    parallel: int | None = None
    partition: str | None = None
    gpus_per_job: int = 1
    timeout_min: int | None = None


@dataclass
class JobsResult:
    merged: object  # merge.Merged of the finished shards
    target: Path
    jobs: int
    failed: int  # jobs that did not finish cleanly
    merge_cmd: str


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


def run_jobs(points: list, plan: JobPlan, *, out: str | None, resume: bool,
             say: Callable[[str], None]) -> JobsResult:
    """Shard the sweep into `plan.jobs` jobs, run them (`cluster`), merge them into `out`."""
    from dynbench import cluster
    from dynbench.folder_lock import folder_lock, wait_free

    target = prepare_out(out, resume)
    try:
        with folder_lock(target) as token, cluster.sigterm_as_interrupt():  # local jobs watch this lock
            return _run_jobs(points, plan, target, token, say)
    except BaseException:
        if plan.executor == "local":  # our lock is released: the jobs stop; return only once none writes
            wait_free([target / "shards" / str(k) for k in range(1, plan.jobs + 1)], timeout_s=15.0)
        raise


def _run_jobs(points, plan: JobPlan, target: Path, token: str, say) -> JobsResult:
    from dynbench import cluster
    from dynbench.estimate import point_tmacs
    from dynbench.folder_lock import parent_env
    from dynbench.merge import write_merged
    from dynbench.shards import partition as split

    jobs = plan.jobs
    shard_dirs = [target / "shards" / str(k) for k in range(1, jobs + 1)]
    base = ["run", *plan.argv]
    watch = tuple(parent_env(target, token).items()) if plan.executor == "local" else ()  # Slurm: scancel
    tasks = [cluster.Task(k, jobs, (*base, "--shard", f"{k}/{jobs}", "--out", str(d), "--resume", "--yes"),
                          os.getcwd(), watch) for k, d in enumerate(shard_dirs, start=1)]
    opts = cluster.Options(plan.executor, jobs, target / "jobs", plan.parallel, plan.partition, plan.gpus_per_job,
                           plan.timeout_min or cluster.DEFAULT_TIMEOUT_MIN)
    merge_cmd = shlex.join(["dynbench", "merge", *map(str, shard_dirs), "--out", str(target)])
    shards = split(points, jobs)
    say(f"{len(points)} point(s) in {jobs} shard(s): " + ", ".join(
        f"{k}: {len(s)} (~{sum(map(point_tmacs, s)):.3g} TMACs)" for k, s in enumerate(shards, start=1)))
    try:
        if plan.executor == "local":
            slots = cluster.local_slots({p.device for p in points}, jobs, plan.parallel, plan.gpus_per_job)
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
    return JobsResult(merged, target, jobs, sum(not o.ok for o in outcomes), merge_cmd)
