"""A sweep's shards as jobs through submitit: one Slurm job array, or local subprocesses.

Optional (`pip install 'dynbench[cluster]'`): nothing else in dynbench imports submitit, and this
module imports it only inside the functions that submit. A job is "run this argv in a fresh
process" (`run_task`): `python -m dynbench run … --shard K/N --out DIR/shards/K --resume --yes` —
plain strings and paths are pickled, never models or tensors, and the job's Python finds the same
dynbench checkout as the process that submitted it (its folder is put first on PYTHONPATH, for
submitit's worker and for the run it starts).

Traps avoided: submitit's local executor kills a job after 2 minutes by default (Slurm's default
is 5): `timeout_min` is always set (`--timeout-min`, default 12 h). Local jobs all get the same
GPUs by default: here each running local job gets its own GPU(s) through CUDA_VISIBLE_DEVICES,
so as many jobs run at once as there are GPUs (one after another with one GPU); sweeps on CPU /
meta run up to one job per core at once, the cores split between them (OMP_NUM_THREADS, unless
set) — CPU timings then come from fewer threads (the rows record `cpu_threads`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dynbench.errors import DynbenchError

EXECUTORS = ("local", "slurm")
DEFAULT_TIMEOUT_MIN = 12 * 60
SUBMITIT_MISSING = "--executor needs submitit, an optional dependency: pip install 'dynbench[cluster]'"


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise DynbenchError(SUBMITIT_MISSING) from None
    return submitit


def package_root() -> str:
    """The folder that holds this `dynbench` package (a checkout or site-packages)."""
    return str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class Task:
    """One shard job: dynbench's own argv, the folder to run it in, variables added for it."""

    shard: int  # K of N, 1-based
    of: int
    argv: tuple[str, ...]
    cwd: str
    env: tuple[tuple[str, str], ...] = ()


def run_task(task: Task) -> int:
    """The job function (runs inside the submitit job): `python -m dynbench <argv>` in a fresh
    process with this checkout first on PYTHONPATH; returns that process's exit code."""
    env = {**os.environ, **dict(task.env)}
    env["PYTHONPATH"] = os.pathsep.join([package_root(), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env["DYNBENCH_ARRAY_INDEX"] = str(task.shard - 1)  # rows: array_index, job_id (measure.env.where_it_ran)
    try:
        import submitit

        env["DYNBENCH_JOB_ID"] = str(submitit.JobEnvironment().job_id)
    except Exception:  # noqa: BLE001 — called outside a job (tests): no job id
        pass
    # its own session: a terminal's Ctrl-C reaches only the parent, which ends the jobs (the shard
    # run watches the parent's folder lock, `folder_lock.watch_parent`) — no traceback per job
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return subprocess.run([sys.executable, "-m", "dynbench", *task.argv], cwd=task.cwd, env=env,
                          check=False, start_new_session=True).returncode


@dataclass(frozen=True)
class Options:
    kind: str  # local | slurm
    jobs: int
    folder: Path  # submitit's logs and pickles (DIR/jobs; on a shared filesystem for Slurm)
    parallel: int | None = None  # jobs running at once (Slurm: the array's %limit)
    partition: str | None = None
    gpus_per_job: int = 1
    timeout_min: int = DEFAULT_TIMEOUT_MIN


@dataclass(frozen=True)
class Outcome:
    task: Task
    job_id: str | None
    returncode: int | None  # None: the job itself failed (timeout, killed, cancelled)
    log: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def check_options(kind: str | None, jobs: int | None, shard, parallel, partition, gpus_per_job, timeout_min) -> None:
    """Flag combinations; the error names the fix."""
    if kind is None:
        given = [f for f, v in (("--jobs", jobs), ("--parallel", parallel), ("--slurm-partition", partition),
                                ("--timeout-min", timeout_min)) if v is not None]
        if given:
            raise DynbenchError(f"{', '.join(given)} configure --executor local|slurm; add --executor")
        return
    if kind not in EXECUTORS:
        raise DynbenchError(f"unknown --executor {kind!r}; choose one of: {', '.join(EXECUTORS)}")
    if shard is not None:
        raise DynbenchError("--executor runs every shard itself (--jobs N); drop --shard")
    if jobs is None or jobs < 1:
        raise DynbenchError("--executor needs --jobs N (N ≥ 1): the number of shard jobs")
    if parallel is not None and parallel < 1:
        raise DynbenchError(f"--parallel must be ≥ 1, got {parallel}")
    if gpus_per_job < 0:
        raise DynbenchError(f"--gpus-per-job must be ≥ 0, got {gpus_per_job}")
    if timeout_min is not None and timeout_min < 1:
        raise DynbenchError(f"--timeout-min must be ≥ 1, got {timeout_min}")
    if partition is not None and kind != "slurm":
        raise DynbenchError("--slurm-partition is for --executor slurm")
    require_submitit()
    if kind == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise DynbenchError("--executor slurm: no sbatch / srun on PATH; submit from a Slurm login node, or use "
                            "--executor local")


def _setup() -> list[str]:
    root = shlex.quote(package_root())
    # SIGINT ignored by the job's shell and so by submitit's processes under it: a terminal Ctrl-C
    # goes to dynbench alone (one line), not to every job (a KeyboardInterrupt traceback each)
    return ["trap '' INT", f"export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}"]


def make_executor(opts: Options):
    """A submitit AutoExecutor for `opts`, every limit set explicitly."""
    submitit = require_submitit()
    executor = submitit.AutoExecutor(folder=str(opts.folder), cluster=opts.kind)  # logs: <job id>_0_log.*
    params = {"timeout_min": int(opts.timeout_min), "name": "dynbench"}
    if opts.kind == "slurm":
        params.update(gpus_per_node=opts.gpus_per_job, slurm_array_parallelism=opts.parallel or opts.jobs,
                      slurm_setup=_setup())
        if opts.partition:
            params["slurm_partition"] = opts.partition
    else:  # GPUs are given per job through the task's CUDA_VISIBLE_DEVICES (`local_slots`)
        params.update(gpus_per_node=0, local_setup=_setup())
    executor.update_parameters(**params)
    return executor


def visible_gpus() -> list[str]:
    """CUDA_VISIBLE_DEVICES entries of the GPUs this process sees (indices when it is unset)."""
    import torch

    count = torch.cuda.device_count()
    listed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return listed[:count] if "CUDA_VISIBLE_DEVICES" in os.environ else [str(i) for i in range(count)]


def local_slots(devices: set[str], jobs: int, parallel: int | None, gpus_per_job: int) -> list[dict[str, str]]:
    """The environment of each concurrent local job: its own GPU(s) on CUDA; a share of the cores
    on CPU / meta."""
    if "cuda" in devices:
        gpus, per = visible_gpus(), max(gpus_per_job, 1)
        if len(gpus) < per:
            raise DynbenchError(f"--executor local: the sweep runs on cuda but {len(gpus)} GPU(s) are visible "
                                f"(--gpus-per-job {per})")
        n = min(len(gpus) // per, jobs, parallel or jobs)
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * per:(i + 1) * per])} for i in range(n)]
    cores = os.cpu_count() or 1
    n = min(jobs, parallel or cores)
    slot = {"CUDA_VISIBLE_DEVICES": ""}
    if "OMP_NUM_THREADS" not in os.environ:
        slot["OMP_NUM_THREADS"] = str(max(1, cores // n))
    return [dict(slot) for _ in range(n)]


def _outcome(task: Task, job) -> Outcome:
    log = str(job.paths.stderr)
    try:
        rc = job.result()
    except Exception as exc:  # noqa: BLE001 — submitit's UncompletedJobError / FailedJobError
        first = str(exc).strip().splitlines()
        return Outcome(task, str(job.job_id), None, log, first[0] if first else type(exc).__name__)
    return Outcome(task, str(job.job_id), rc, log)


def run_local(tasks: Sequence[Task], opts: Options, slots: list[dict[str, str]],
              report: Callable[[str], None]) -> list[Outcome]:
    """Run the tasks as submitit local jobs, `len(slots)` at a time, each with its slot's variables."""
    executor = make_executor(opts)
    pending, running, free, done = list(tasks), {}, list(range(len(slots))), []
    try:
        while pending or running:
            while pending and free:
                slot, task = free.pop(0), pending.pop(0)
                task = replace(task, env=tuple({**dict(task.env), **slots[slot]}.items()))
                running[slot] = (task, executor.submit(run_task, task))
                report(f"shard {task.shard}/{task.of}: started (local job {running[slot][1].job_id}"
                       f"{slot_note(slots[slot])})")
            time.sleep(0.2)
            for slot, (task, job) in list(running.items()):
                if job.done():
                    done.append(_outcome(task, job))
                    report(describe(done[-1]))
                    del running[slot]
                    free.append(slot)
    except BaseException:  # Ctrl-C, SIGTERM (`sigterm_as_interrupt`), a bug: no job outlives this process
        stop_jobs([job for _, job in running.values()])
        raise
    return sorted(done, key=lambda o: o.task.shard)


def stop_jobs(jobs: Sequence) -> None:
    """Cancel submitted jobs (Slurm: scancel; local: SIGTERM to each job's controller, which ignores
    SIGINT). A local shard run also stops by itself once this process's folder lock is gone."""
    for job in jobs:
        try:
            process = getattr(job, "_process", None)  # submitit's LocalJob keeps its controller here
            if process is not None:
                process.send_signal(signal.SIGTERM)
            job.cancel(check=False)
        except Exception:  # noqa: BLE001 — a job that already ended
            pass


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While jobs run, SIGTERM (a scheduler, `kill`) ends dynbench like Ctrl-C: jobs stopped, one
    line. The previous handler comes back after."""
    def _raise(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def slot_note(slot: dict[str, str]) -> str:
    if slot.get("CUDA_VISIBLE_DEVICES"):
        return f", CUDA_VISIBLE_DEVICES={slot['CUDA_VISIBLE_DEVICES']}"
    return f", {slot['OMP_NUM_THREADS']} thread(s)" if "OMP_NUM_THREADS" in slot else ""


def submit_slurm(tasks: Sequence[Task], opts: Options) -> list:
    """One Slurm job array (`map_array`), one task per shard; returns the jobs (not waited for)."""
    return make_executor(opts).map_array(run_task, list(tasks))


def wait(tasks: Sequence[Task], jobs: Sequence, report: Callable[[str], None]) -> list[Outcome]:
    """Wait for the jobs in order; Ctrl-C cancels the array's unfinished jobs (scancel)."""
    outcomes = []
    try:
        for task, job in zip(tasks, jobs, strict=True):
            outcomes.append(_outcome(task, job))
            report(describe(outcomes[-1]))
    except KeyboardInterrupt:
        stop_jobs(jobs[len(outcomes):])
        raise
    return outcomes


def describe(o: Outcome) -> str:
    head = f"shard {o.task.shard}/{o.task.of} (job {o.job_id})"
    if o.returncode == 0:
        return f"{head}: done"
    what = {1: "exit 1: points failed (rows 'error: …')", 2: "exit 2: refused its input"}.get(
        o.returncode, f"exit {o.returncode}" if o.returncode is not None else f"the job failed: {o.error}")
    return f"{head}: {what}; log {o.log}"
