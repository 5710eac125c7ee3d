"""Job arrays die with their parent: the Slurm array is cancelled on Ctrl-C, local jobs are stopped
on any exception, and SIGTERM ends dynbench like Ctrl-C. (Real local jobs killed with their
parent: tests/test_folder_lock.py.)"""

import os
import signal

import pytest

from dynbench import cluster


class FakeJob:
    def __init__(self, n, interrupt=False):
        self.job_id, self.interrupt, self.cancelled = f"9_{n}", interrupt, False
        self.paths = type("P", (), {"stderr": f"/tmp/9_{n}.err"})

    def result(self):
        if self.interrupt:
            raise KeyboardInterrupt
        return 0

    def cancel(self, check=True):
        self.cancelled = True


def test_ctrl_c_while_waiting_cancels_the_unfinished_slurm_jobs():
    tasks = [cluster.Task(k, 3, ("run",), ".") for k in (1, 2, 3)]
    jobs = [FakeJob(0), FakeJob(1, interrupt=True), FakeJob(2)]
    with pytest.raises(KeyboardInterrupt):
        cluster.wait(tasks, jobs, lambda line: None)
    assert [j.cancelled for j in jobs] == [False, True, True]  # scancel of what had not finished


def test_local_jobs_are_stopped_on_any_exception(monkeypatch, tmp_path):
    started = []

    class Executor:
        def submit(self, fn, task):
            job = FakeJob(len(started))
            job.done = lambda: (_ for _ in ()).throw(RuntimeError("a bug while polling"))
            started.append(job)
            return job

    monkeypatch.setattr(cluster, "make_executor", lambda opts: Executor())
    tasks = [cluster.Task(k, 2, ("run",), ".") for k in (1, 2)]
    with pytest.raises(RuntimeError, match="a bug"):
        cluster.run_local(tasks, cluster.Options("local", 2, tmp_path), [{}, {}], lambda line: None)
    assert len(started) == 2 and all(j.cancelled for j in started)


def test_sigterm_ends_the_wait_like_ctrl_c_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with cluster.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
    assert signal.getsignal(signal.SIGTERM) is before


def test_local_job_setup_ignores_ctrl_c_in_the_jobs():
    assert cluster._setup()[0] == "trap '' INT"  # the terminal's SIGINT reaches dynbench alone
