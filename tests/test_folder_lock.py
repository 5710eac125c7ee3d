"""One writer per results folder: real processes hold and contend for the lock, and real writers
append concurrently; rows are counted, never assumed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from dynbench.folder_lock import LOCK_FILE, PARENT_LOCK_ENV, FolderBusy, folder_lock, holds, parent_env
from dynbench.results import RECORDS_FILE, append_record, iter_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}

HOLD = """
import sys, time
from dynbench.folder_lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, env=ENV, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_refuses_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusy) as err:
            with folder_lock(tmp_path, wait_s=0):
                pass
        message = str(err.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in message and "dynbench" in message
        assert "\n" not in message and "choose another --out" in message
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the flock
        proc.wait()
    with folder_lock(tmp_path, wait_s=0):
        assert holds(tmp_path)
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not holds(tmp_path)


def test_lock_is_reentrant_in_one_process_and_repairs_a_torn_tail_only_at_open(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_bytes(b'{"step": null, "status": "ok"}\n{"step": null, "sta')  # a crash mid-write
    with pytest.warns(RuntimeWarning, match="truncated last line"):
        with folder_lock(tmp_path) as token:
            with folder_lock(tmp_path) as inner:  # `run --executor` merges into the folder it holds
                assert inner == token
            assert holds(tmp_path)
            assert path.read_bytes() == b'{"step": null, "status": "ok"}\n'
            append_record(path, {"step": None, "status": "oom"})
    assert [r["status"] for r in iter_records(path)] == ["ok", "oom"]


def test_an_append_while_another_process_holds_the_folder_refuses(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusy, match=f"pid {proc.pid}"):
            append_record(tmp_path / RECORDS_FILE, {"step": None, "status": "ok"})
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / RECORDS_FILE).exists()


WRITER = """
import sys
from dynbench.results import append_record
for i in range(int(sys.argv[3])):
    append_record(sys.argv[1], {"writer": sys.argv[2], "i": i, "pad": "x" * 60000})
"""


@pytest.mark.processes
@pytest.mark.slow
def test_two_concurrent_writers_lose_no_row(tmp_path):
    """The stress that lost rows (28 of 6,000 4-kB rows; ~20 of 800 60-kB rows here): two processes
    appending to one file with `append_record`, which now serialises them under the folder lock."""
    path, n = tmp_path / RECORDS_FILE, 400
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), w, str(n)], env=ENV) for w in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    rows = list(iter_records(path))
    for w in "ab":
        assert sorted(r["i"] for r in rows if r["writer"] == w) == list(range(n))
    assert len(rows) == 2 * n


WATCHED = """
import time
from dynbench.folder_lock import watch_parent
watch_parent()
print("watching", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how", ["sigkill", "release"])
def test_a_shard_job_ends_when_its_parent_is_gone(tmp_path, how):
    """`kill -9` of the parent (or its lock released after Ctrl-C) ends the job that watches it."""
    parent = _holder(tmp_path)
    token = json.loads((tmp_path / LOCK_FILE).read_text())["token"]
    child = subprocess.Popen([sys.executable, "-c", WATCHED], env={**ENV, **parent_env(tmp_path, token)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "watching"
        time.sleep(1.0)
        assert child.poll() is None  # the parent lives: the job goes on
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        else:
            parent.send_signal(signal.SIGINT)  # KeyboardInterrupt: the `with` releases the lock
        parent.wait()
        assert child.wait(timeout=20) == -signal.SIGTERM
        assert "is gone" in child.stderr.read()
    finally:
        for p in (parent, child):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_parent_env_names_the_lock_and_token(tmp_path):
    env = parent_env(tmp_path, "abc")
    assert env[PARENT_LOCK_ENV] == f"{tmp_path.resolve() / LOCK_FILE}\tabc"


RUN = ["-m", "dynbench", "run", "--mode", "prefill", "--method", "llava", "--prompt-len", "8,16",
       "--repeats", "1", "--warmup", "0", "--no-flops", "--resume"]


@pytest.mark.processes
@pytest.mark.slow
def test_two_concurrent_resumed_runs_measure_each_point_once(tmp_path):
    out = tmp_path / "res"
    procs = [subprocess.Popen([sys.executable, *RUN, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    summaries = [r for r in iter_records(out) if r.get("step") is None]
    assert sorted(r["prompt_len"] for r in summaries) == [8, 16]  # each point exactly once
    codes = sorted(rc for rc, _ in results)
    if codes == [0, 2]:  # the second refused at once, in one line naming the holder
        refused = next(err for rc, err in results if rc == 2)
        assert "is being written by pid" in refused and "Traceback" not in refused
    else:  # or it started after the first ended, and --resume found nothing left
        assert codes == [0, 0]
        assert any("nothing was left to run" in err for _, err in results)


EXECUTOR = ["-m", "dynbench", "run", "--executor", "local", "--jobs", "2", "--mode", "prefill", "--method", "llava",
            "--prompt-len", "4,8,16,32", "--no-flops", "--warmup", "0", "--repeats", "500", "--yes"]


def _shard_pids(out) -> list[int]:
    pids = []
    for lock in out.glob("shards/*/" + LOCK_FILE):
        try:
            pids.append(json.loads(lock.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            pass
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split(") ")[1].startswith("Z")


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill -9", "ctrl-c"])
def test_local_job_arrays_die_with_their_parent(tmp_path, how):
    """`kill -9` of a `--executor local` parent, or a terminal's Ctrl-C (SIGINT to its process
    group): no shard job keeps running or writing, and Ctrl-C prints dynbench's line, no traceback."""
    pytest.importorskip("submitit")
    out = tmp_path / "sweep"
    parent = subprocess.Popen([sys.executable, *EXECUTOR, "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while len(_shard_pids(out)) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
        shards = _shard_pids(out)
        assert len(shards) == 2, "the shard jobs did not start"
        if how == "kill -9":
            parent.send_signal(signal.SIGKILL)
        else:
            os.killpg(parent.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        rc = parent.wait(timeout=60)
        err = parent.stderr.read()
        if how == "ctrl-c":
            assert rc == 130 and "Traceback" not in err and "Interrupted" in err, err
            assert not [p for p in shards if _alive(p)]  # gone before dynbench returned
        deadline = time.monotonic() + 20
        while [p for p in shards if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in shards if _alive(p)]
        sizes = {p: p.stat().st_size for p in out.glob("shards/*/records.jsonl")}
        time.sleep(1.0)
        assert sizes == {p: p.stat().st_size for p in out.glob("shards/*/records.jsonl")}  # no one writes
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in _shard_pids(out):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_filesystem_without_locks_is_written_with_a_warning(tmp_path, monkeypatch):
    import errno

    import dynbench.folder_lock as fl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fl.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="does not support file locks"):
        append_record(tmp_path / RECORDS_FILE, {"step": None, "status": "ok"})
    assert [r["status"] for r in iter_records(tmp_path)] == ["ok"]
