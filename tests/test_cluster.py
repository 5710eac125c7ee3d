"""Shards, merge and executors (issue 17).

Oracles: the set of point keys from the suite's own expansion, the committed smoke baseline (a
whole run of suites/smoke.yaml; tests/test_smoke_baseline.py keeps a fresh whole run equal to it)
and the gate's exact check; brute-force optimum for the balance bound.
"""

import collections
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from dynbench import cluster, shards
from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.measure.env import where_it_ran
from dynbench.merge import MERGED_FILE, merge_folders, write_merged
from dynbench.records import is_summary, key_of, row_kind, validate
from dynbench.regress import check_results, write_baseline
from dynbench.results import RECORDS_FILE, append_record, iter_records
from dynbench.spec import RunSpec, load_suite

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "baselines" / "smoke-cpu.jsonl"
CHEAP = ["--mode", "prefill", "--prompt-len", "4", "--no-flops", "--warmup", "0", "--repeats", "1"]


def spec(seed=0, method="llava", prompt_len=8, keep=None):
    return RunSpec(model="tiny", method=method, mode="prefill", prompt_len=prompt_len, gen_len=None,
                   vision_keep=keep, text_keep=None, text_policy=None, seed=seed)


def cost(p):
    return float(p.prompt_len)


def summaries(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a killed job's truncated last line
        return [r for r in iter_records(folder) if is_summary(r)]


# ------------------------------------------------------------------------------- the partition
def sweep_points():
    """4 model groups (seeds) of 3 points, costs 1 … 40 (prompt_len)."""
    lens = [[40, 3, 2], [10, 9, 8], [7, 6, 1], [5, 4, 30]]
    return [spec(seed=s, method="dynamic-llava", prompt_len=n, keep=0.2) for s, ns in enumerate(lens) for n in ns]


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_partition_is_a_partition_and_free_of_order(n):
    points = sweep_points()
    parts = shards.partition(points, n, cost)
    flat = [p for part in parts for p in part]
    assert len(parts) == n and len(flat) == len(points) and set(flat) == set(points)
    shuffled = points[:]
    random.Random(7).shuffle(shuffled)
    assert [set(s) for s in shards.partition(shuffled, n, cost)] == [set(s) for s in parts]


@pytest.mark.parametrize("n", [2, 3])
def test_groups_stay_whole_unless_over_a_fair_share_and_the_balance_bound_holds(n):
    points = sweep_points()
    parts = shards.partition(points, n, cost)
    total = sum(map(cost, points))
    where = {p: i for i, part in enumerate(parts) for p in part}
    units = []
    for seed in range(4):
        group = [p for p in points if p.seed == seed]
        group_cost = sum(map(cost, group))
        if group_cost <= total / n:
            assert len({where[p] for p in group}) == 1, f"group {seed} ({group_cost}) split"
            units.append(group_cost)
        else:
            units += [cost(p) for p in group]
    best = min(max(sum(u for u, b in zip(units, assign, strict=True) if b == k) for k in range(n))
               for assign in itertools.product(range(n), repeat=len(units)))  # brute-force optimum
    worst = max(sum(map(cost, part)) for part in parts)
    assert worst <= 4 / 3 * best + 1e-9, (worst, best)


def test_a_cheapest_new_point_moves_no_other_point():
    points = [spec(seed=s, prompt_len=n) for s, n in enumerate([12, 11, 10, 9, 8, 7])]  # 6 groups of 1
    before = {p: i for i, part in enumerate(shards.partition(points, 3, cost)) for p in part}
    after = {p: i for i, part in enumerate(shards.partition([*points, spec(seed=9, prompt_len=1)], 3, cost))
             for p in part}
    assert all(after[p] == before[p] for p in points)


@pytest.mark.processes
def test_partition_does_not_depend_on_the_hash_seed():
    code = ("from dynbench.shards import partition, point_digest; from dynbench.spec import load_suite; "
            "print([[point_digest(p) for p in s] for s in partition(load_suite('suites/smoke.yaml'), 3)])")
    here = [[shards.point_digest(p) for p in s] for s in shards.partition(load_suite("suites/smoke.yaml"), 3)]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == here
    assert all(here), "every smoke shard gets points"


BAD = [
    (["--shard", "0/3"], "1 ≤ K ≤ N"),
    (["--shard", "4/3"], "1 ≤ K ≤ N"),
    (["--shard", "two"], "use K/N"),
    (["--jobs", "2"], "add --executor"),
    (["--executor", "pbs", "--jobs", "2"], "unknown --executor"),
    (["--executor", "local"], "needs --jobs N"),
    (["--executor", "local", "--jobs", "2", "--shard", "1/2"], "drop --shard"),
    (["--executor", "local", "--jobs", "2", "--slurm-partition", "gpu"], "is for --executor slurm"),
    (["--executor", "local", "--jobs", "2", *CHEAP], "needs --out DIR"),
    (["--executor", "slurm", "--jobs", "2", *CHEAP], "no sbatch / srun on PATH"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_cluster_flags_are_one_line(capsys, monkeypatch, extra, message):
    if "slurm" in extra:
        monkeypatch.setenv("PATH", "/nonexistent")  # no Slurm here, whatever this machine has
    assert main(["run", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err


def test_executor_without_submitit_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    assert main(["run", "--executor", "local", "--jobs", "2", "--out", str(tmp_path), *CHEAP]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'dynbench[cluster]'" in err[0]


def test_a_shard_folder_is_resumed_only_as_the_same_shard(tmp_path, capsys):
    out = tmp_path / "s"
    flags = [*CHEAP, "--method", "llava,dynamic-llava"]  # two cheap groups: one per shard
    assert main(["run", *flags, "--shard", "1/2", "--out", str(out)]) == 0
    assert json.loads((out / shards.MANIFEST_FILE).read_text())["shard"] == 1
    capsys.readouterr()
    assert main(["run", *flags, "--shard", "2/2", "--out", str(out), "--resume"]) == 2
    assert "holds shard 1/2" in capsys.readouterr().err
    assert main(["run", *flags, "--vision-keep", "0.5", "--shard", "1/2", "--out", str(out), "--resume"]) == 2
    assert "another sweep" in capsys.readouterr().err
    merged = merge_folders([out])
    assert merged.points == 1 and any("2/2 of the sweep are not among the inputs" in n for n in merged.notes)


# ------------------------------------------------------------------------------- merge rules
def write_point(folder, point, pid, status="ok", steps=2, env="e1", **metrics):
    base = {**point.as_dict(), "point_id": pid, "env_id": env}
    for i in range(steps):
        append_record(folder / RECORDS_FILE, {**base, "step": i, "status": "ok", "step_ms": 1.0})
    if status is not None:
        append_record(folder / RECORDS_FILE, {**base, "step": None, "status": status, **metrics})


def test_merge_keeps_the_last_finished_summary_with_its_steps(tmp_path):
    a, b, c, d, e = (spec(seed=s) for s in range(5))
    fa, fb = tmp_path / "a", tmp_path / "b"
    write_point(fa, a, "a1", image_tokens_kept=576)
    write_point(fa, b, "b1", status="error: RuntimeError: x")
    write_point(fa, c, "c1", image_tokens_kept=576)
    write_point(fa, d, "d1", status=None)  # cut short: steps, no summary
    write_point(fb, a, "a2", status="error: RuntimeError: y")
    write_point(fb, b, "b2", image_tokens_kept=576)
    write_point(fb, c, "c2", steps=3, image_tokens_kept=576)
    write_point(fb, e, "e2", status="oom", steps=0)
    (fa / "env").mkdir()
    (fa / "env" / "e1.json").write_text(json.dumps({"env_id": "e1", "torch_version": "x"}))
    merged = merge_folders([fa, fb])
    won = {key_of(r): r["point_id"] for r in merged.rows if is_summary(r)}
    assert won == {key_of(a.as_dict()): "a1", key_of(b.as_dict()): "b2", key_of(c.as_dict()): "c2",
                   key_of(e.as_dict()): "e2"}
    steps = [r["point_id"] for r in merged.rows if not is_summary(r)]
    assert sorted(steps) == ["a1", "a1", "b2", "b2", "c2", "c2", "c2"]
    assert len(merged.rows) == 11 and merged.dropped == 22 - 11 and merged.points == 4
    for i, row in enumerate(merged.rows):  # a point's steps come right before its summary
        if not is_summary(row):
            nxt = next(r for r in merged.rows[i:] if is_summary(r))
            assert nxt["point_id"] == row["point_id"]
    out = tmp_path / "m"
    write_merged([fa, fb], out)
    assert (out / "env" / "e1.json").is_file() and json.loads((out / MERGED_FILE).read_text())["points"] == 4
    assert [r["point_id"] for r in iter_records(out, strict=True)] == [r["point_id"] for r in merged.rows]


def write_dataset_point(folder, point, pid, samples=2, rounds=1, steps=2):
    """A dataset point as the sweep writes it: per sample its step rows, its round rows (a conversation:
    `rounds` > 1) and its sample row; then the point's aggregate row."""
    base = {**point.as_dict(), "point_id": pid, "env_id": "e1", "dataset": "d.jsonl"}
    for s in range(samples):
        mine = {**base, "sample": s, "sample_id": f"line {s + 1}"}
        for r in range(rounds):
            for i in range(steps):
                append_record(folder / RECORDS_FILE, {**mine, "step": r * steps + i, "status": "ok",
                                                      "round": r if rounds > 1 else None})
        for r in range(rounds if rounds > 1 else 0):
            append_record(folder / RECORDS_FILE, {**mine, "step": None, "round": r, "status": "ok"})
        append_record(folder / RECORDS_FILE, {**mine, "step": None, "status": "ok", "rounds": rounds})
    append_record(folder / RECORDS_FILE, {**base, "step": None, "status": "ok", "samples": samples})


def kinds(rows):
    return collections.Counter(row_kind(r) for r in rows)


def test_merge_keeps_every_row_kind_of_dataset_conversation_and_executor_folders(tmp_path):
    """By hand: a dataset point (3 samples of 2 steps), a conversation (2 samples of 3 rounds of 2 steps) and a
    plain point, in two shard folders; merged, then the merge refreshed like `--executor` does."""
    fa, fb, out = tmp_path / "a", tmp_path / "b", tmp_path / "m"
    write_dataset_point(fa, spec(seed=0), "ds", samples=3)
    write_dataset_point(fa, spec(seed=1), "conv", samples=2, rounds=3)
    write_point(fb, spec(seed=2), "plain", steps=2)
    write_dataset_point(fb, spec(seed=3), "cut", samples=2)  # cut short: no aggregate, left out
    (fb / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in list(iter_records(fb))[:-1]))
    expected = {"step": 3 * 2 + 2 * 3 * 2 + 2, "round": 2 * 3, "sample": 3 + 2, "point": 3}
    merged = merge_folders([fa, fb])
    assert kinds(merged.rows) == expected and merged.points == 3
    assert merged.dropped == 2 * 2 + 2 and not any(r["point_id"] == "cut" for r in merged.rows)
    written = list(iter_records(fa)) + list(iter_records(fb))[:3]
    assert merged.rows == [r for r in written if r["point_id"] != "cut"]  # file order kept, nothing else
    write_merged([fa], out)
    write_merged([fb], out)  # a refresh, as `run --executor --resume` does: the target is the first input
    assert kinds(iter_records(out, strict=True)) == expected


def test_merge_refuses_disagreeing_exact_metrics_in_one_environment(tmp_path, capsys):
    a = spec()
    for name, env, kept in (("x", "e1", 115), ("y", "e1", 116), ("z", "e2", 116)):
        write_point(tmp_path / name, a, name, env=env, image_tokens_kept=kept, layer_seq_lens=[584, 584, 123, 123])
    with pytest.raises(DynbenchError, match="image_tokens_kept"):
        merge_folders([tmp_path / "x", tmp_path / "y"])
    assert main(["merge", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagree" in err[0] and "same environment e1" in err[0]
    assert not (tmp_path / "m" / RECORDS_FILE).exists()
    merged = merge_folders([tmp_path / "x", tmp_path / "z"])  # another environment: the last wins
    assert [r["image_tokens_kept"] for r in merged.rows if is_summary(r)] == [116]


def test_merge_refreshes_a_merge_and_never_writes_over_a_run(tmp_path, capsys):
    a, b = spec(seed=0), spec(seed=1)
    write_point(tmp_path / "s1", a, "a1")
    write_point(tmp_path / "s2", b, "b1")
    out = tmp_path / "m"
    assert main(["merge", str(tmp_path / "s1"), "--out", str(out)]) == 0
    assert main(["merge", str(tmp_path / "s2"), "--out", str(out)]) == 0  # a refresh keeps what it held
    assert sorted(r["point_id"] for r in summaries(out)) == ["a1", "b1"]
    assert len(json.loads((out / MERGED_FILE).read_text())["inputs"]) == 2
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "s2"), "--out", str(tmp_path / "s1")]) == 2
    assert "written by `dynbench run`" in capsys.readouterr().err


def test_check_merges_several_folders_in_memory(tmp_path, capsys):
    rows = [json.loads(line) for line in BASELINE.read_text().splitlines()][1:]
    for name, part in (("p1", rows[:3]), ("p2", rows[3:])):
        (tmp_path / name).mkdir()
        (tmp_path / name / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in part))
    argv = ["check", str(tmp_path / "p1"), str(tmp_path / "p2"), "--baseline", str(BASELINE)]
    assert main(argv) == 0
    assert main(["check", str(tmp_path / "p1"), "--baseline", str(BASELINE)]) == 1  # 4 points missing
    capsys.readouterr()


def test_where_it_ran_reads_the_job_and_falls_back_to_slurm(monkeypatch):
    for var in ("DYNBENCH_JOB_ID", "DYNBENCH_ARRAY_INDEX", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    plain = where_it_ran()
    assert plain["hostname"] and plain["job_id"] is None and plain["array_index"] is None
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "812")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert where_it_ran() | {"hostname": None} == {"hostname": None, "job_id": "812_3", "array_index": 3}
    monkeypatch.setenv("DYNBENCH_JOB_ID", "4242")
    monkeypatch.setenv("DYNBENCH_ARRAY_INDEX", "1")
    assert (where_it_ran()["job_id"], where_it_ran()["array_index"]) == ("4242", 1)
    assert not validate({"step": None, **where_it_ran(), "gpu_uuid": "GPU-1"})


# ------------------------------------------------------------------------------- executors
@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`sbatch` and `srun` on PATH (never called: nothing is submitted)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_executors_set_every_limit(tmp_path, fake_slurm):
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    local = cluster.make_executor(cluster.Options("local", 3, tmp_path / "l"))
    assert local._executor.parameters["timeout_min"] == cluster.DEFAULT_TIMEOUT_MIN  # not submitit's 2 min
    slurm = cluster.make_executor(cluster.Options("slurm", 3, tmp_path / "s", parallel=2, partition="gpu",
                                                  gpus_per_job=1, timeout_min=90))
    text = _make_sbatch_string(command="x", folder=str(tmp_path / "s"), map_count=3, **slurm._executor.parameters)
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=90", f"export PYTHONPATH={ROOT}"):
        assert line in text, line


def test_local_slots_give_each_job_its_own_gpu_or_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0", "1", "2"])
    assert cluster.local_slots({"cuda"}, 4, None, 1) == [{"CUDA_VISIBLE_DEVICES": g} for g in "012"]
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["GPU-a"])
    assert cluster.local_slots({"cuda"}, 3, None, 1) == [{"CUDA_VISIBLE_DEVICES": "GPU-a"}]  # one after another
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert cluster.local_slots({"cpu"}, 3, None, 1) == [{"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2"}] * 3
    assert len(cluster.local_slots({"cpu"}, 16, None, 1)) == 8


class FakeJob:
    """A Slurm array task, run in this process when its result is asked for."""

    def __init__(self, task):
        self.task, self.job_id = task, f"777_{task.shard - 1}"
        self.paths = type("P", (), {"stderr": Path(task.cwd) / f"{self.job_id}.err"})  # never written

    def result(self):
        return main(list(self.task.argv))


def test_slurm_submits_one_array_and_merges(tmp_path, capsys, monkeypatch, fake_slurm):
    """Slurm itself is faked: each array task's job runs its argv in this process."""
    pytest.importorskip("submitit")
    submitted = []

    def fake_submit(tasks, opts):
        submitted.append((list(tasks), opts))
        return [FakeJob(t) for t in tasks]

    monkeypatch.setattr(cluster, "submit_slurm", fake_submit)
    out = tmp_path / "sweep"
    argv = ["run", *CHEAP, "--vision-keep", "0.2,0.5", "--executor", "slurm", "--jobs", "2", "--slurm-partition",
            "gpu", "--timeout-min", "30", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"dynbench merge {out}/shards/1 {out}/shards/2 --out {out}" in err
    (tasks, opts), = submitted
    assert (opts.kind, opts.partition, opts.timeout_min, opts.jobs) == ("slurm", "gpu", 30, 2)
    for k, task in enumerate(tasks, start=1):
        args = list(task.argv)
        assert args[:1] == ["run"] and "--no-flops" in args and "--executor" not in args and "--jobs" not in args
        assert args[args.index("--shard") + 1] == f"{k}/2" and args[args.index("--out") + 1] == f"{out}/shards/{k}"
        assert "--resume" in args and "--yes" in args
    from dynbench.spec import points_from, resolved

    flag_points = resolved(points_from({"mode": ["prefill"], "prompt_len": [4], "vision_keep": [0.2, 0.5], "warmup": 0,
                                        "repeats": 1}))
    expected = {key_of(p.as_dict()) for p in flag_points}
    assert sorted(map(key_of, summaries(out)), key=str) == sorted(expected, key=str)
    assert main(argv) == 2  # the folder holds shards: --resume to continue
    assert "add --resume" in capsys.readouterr().err


def test_executor_keeps_a_dataset_points_samples_and_prints_only_point_rows(tmp_path, capsys, monkeypatch,
                                                                           fake_slurm):
    """A real dataset sweep (3 npz samples, 2 methods) as 2 faked Slurm jobs with --json: the merged folder
    holds every row its shards wrote, by kind; stdout holds one row per point, like plain `run`."""
    pytest.importorskip("submitit")
    import numpy as np

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):
        ids = np.concatenate([[1], rng.integers(3, 32000, 4 + 2 * i), [-200], rng.integers(3, 32000, 3)])
        np.savez(tmp_path / f"p{i}.npz", input_ids=ids, pixel_values=rng.standard_normal((3, 336, 336)).astype("f4"))
        lines.append(json.dumps({"inputs": f"p{i}.npz"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(cluster, "submit_slurm", lambda tasks, opts: [FakeJob(t) for t in tasks])
    out = tmp_path / "sweep"
    assert main(["run", "--dataset", str(tmp_path / "data.jsonl"), "--mode", "kv-cache", "--gen-len", "3",
                 "--no-flops", "--warmup", "0", "--repeats", "1", "--executor", "slurm", "--jobs", "2",
                 "--slurm-partition", "gpu", "--out", str(out), "--json"]) == 0
    out_lines = capsys.readouterr().out.splitlines()  # the in-process jobs' tables, then the sweep's rows
    printed = [json.loads(line) for line in out_lines if line.startswith("{")]
    assert sorted((r["method"], row_kind(r), r["samples"]) for r in printed) == [("dynamic-llava", "point", 3),
                                                                                ("llava", "point", 3)]
    shard_rows = [r for k in (1, 2) for r in iter_records(out / "shards" / str(k))]
    merged = list(iter_records(out, strict=True))
    assert kinds(merged) == kinds(shard_rows)
    assert kinds(merged) == {"step": 2 * 3 * 3, "sample": 2 * 3, "point": 2}  # 3 steps (gen_len) per sample


@pytest.fixture
def fast_smoke(tmp_path):
    """suites/smoke.yaml with one run per point: the same points (warm-up and repeats are not part of a
    point's key), a fraction of the time."""
    suite = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
    suite["defaults"].update(warmup=0, repeats=1)
    path = tmp_path / "smoke-fast.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def steps_per_run(row):
    return 1 if row["mode"] == "prefill" else row["gen_len"]


def assert_whole_sweep(folder, keys):
    rows = list(iter_records(folder, strict=True))
    tops = [r for r in rows if is_summary(r)]
    assert sorted(map(key_of, tops), key=str) == sorted(keys, key=str)  # every point, none twice
    for top in tops:
        steps = [r for r in rows if not is_summary(r) and r["point_id"] == top["point_id"]]
        assert len(steps) == steps_per_run(top) * top["repeats"], top["point_id"]
        assert top["hostname"] and top["status"] == "ok"
    assert len(rows) == sum(steps_per_run(t) * t["repeats"] + 1 for t in tops)


def exact_passes(report):
    return [(r.metric, r.verdict) for r in report.results if r.kind == "exact"]


@pytest.mark.processes
@pytest.mark.slow
def test_smoke_whole_sharded_and_local_jobs_agree(tmp_path, fast_smoke, capsys):
    pytest.importorskip("submitit")
    keys = [key_of(p.as_dict()) for p in load_suite(fast_smoke)]
    assert len(keys) == len(set(keys)) == 7
    run = ["run", "--suite", str(fast_smoke), "--no-flops"]
    assert main([*run, "--out", str(tmp_path / "whole")]) == 0
    parts = [tmp_path / "shards" / str(k) for k in (1, 2, 3)]
    for k, part in enumerate(parts, start=1):
        assert main([*run, "--shard", f"{k}/3", "--out", str(part)]) == 0
    assert main(["merge", *map(str, parts), "--out", str(tmp_path / "merged")]) == 0
    # no wall-clock bound (a loaded machine fails one, a fast one proves nothing): what the jobs did is checked
    # below, and a job that never ends shows as a test that never ends
    assert main([*run, "--executor", "local", "--jobs", "3", "--out", str(tmp_path / "jobs")]) == 0
    write_baseline(tmp_path / "whole", tmp_path / "whole.jsonl")
    for folder in ("whole", "merged", "jobs"):
        assert_whole_sweep(tmp_path / folder, keys)
        # the committed baseline: a whole run recorded earlier (tmacs not counted here: --no-flops)
        report = check_results(tmp_path / folder, BASELINE, allow_missing=True)
        assert report.exit_code == 0 and not report.regressions
        assert {m for m, v in exact_passes(report) if v != "pass"} == {"tmacs"}
        assert sum(v == "pass" for _, v in exact_passes(report)) >= 7 * 7
        report = check_results(tmp_path / folder, tmp_path / "whole.jsonl")  # this whole run: nothing missing
        assert report.exit_code == 0 and all(v == "pass" for _, v in exact_passes(report))
    jobs_rows = summaries(tmp_path / "jobs")
    for k in (1, 2, 3):
        mine = set(json.loads((tmp_path / "jobs" / "shards" / str(k) / shards.MANIFEST_FILE).read_text())["points"])
        assert {r["array_index"] for r in jobs_rows if shards.point_digest(r) in mine} == {k - 1}
    assert all(r["job_id"] for r in jobs_rows)
    assert check_results(parts, BASELINE, allow_missing=True).exit_code == 0  # check reads shards directly
    assert main(["report", *map(str, parts), "--format", "csv"]) == 0
    capsys.readouterr()


@pytest.mark.processes
@pytest.mark.slow
def test_a_killed_job_resumes_only_its_missing_points(tmp_path, capsys):
    pytest.importorskip("submitit")
    flags = ["--mode", "prefill", "--vision-keep", "0.2,0.5,0.8", "--prompt-len", "8", "--no-flops", "--warmup", "0",
             "--repeats", "10"]
    out = tmp_path / "jobs"
    argv = ["run", *flags, "--executor", "local", "--jobs", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "dynbench", *argv], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not any(summaries(p) for p in out.glob("shards/*") if (p / RECORDS_FILE).exists()):
        assert proc.poll() is None and time.monotonic() < deadline, "no point finished"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent, submitit's controllers and the runs they started
    proc.wait()
    time.sleep(0.5)
    before = {p.name: {key_of(r): r["point_id"] for r in summaries(p)}
              for p in out.glob("shards/*") if (p / RECORDS_FILE).exists()}
    done = sum(map(len, before.values()))
    assert 1 <= done < 4, before  # killed mid-way
    assert main([*argv, "--resume"]) == 0
    capsys.readouterr()
    for name, old in before.items():
        rows = summaries(out / "shards" / name)
        assert len({key_of(r) for r in rows}) == len(rows)  # nothing ran twice
        assert all({key_of(r): r["point_id"] for r in rows}[k] == pid for k, pid in old.items())
    assert sum(len(summaries(p)) for p in out.glob("shards/*")) == 4
    assert len(summaries(out)) == 4 and not merge_folders([out]).notes


def test_submitit_stays_optional():
    code = ("import sys, dynbench.cli.commands, dynbench.cluster, dynbench.merge, dynbench.shards, dynbench.sweep; "
            "assert 'submitit' not in sys.modules, 'imported submitit'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)


def test_a_failed_job_makes_the_executor_run_exit_1_after_merging_the_rest(tmp_path, capsys, monkeypatch):
    # shard 1 runs (in this process), shard 2's job fails: what finished is merged, the run exits 1
    def one_fails(tasks, opts, slots, report):
        assert main(list(tasks[0].argv)) == 0
        return [cluster.Outcome(tasks[0], "1", 0, None), cluster.Outcome(tasks[1], "2", 1, None, "exit 1")]

    monkeypatch.setattr(cluster, "run_local", one_fails)
    monkeypatch.setattr(cluster, "make_executor", lambda opts: None)
    out = tmp_path / "jobs"
    argv = ["run", "--mode", "prefill", "--method", "llava", "--prompt-len", "4,8", "--no-flops", "--warmup", "0",
            "--repeats", "1", "--executor", "local", "--jobs", "2", "--out", str(out)]
    assert main(argv) == 1
    assert "1 of 2 shard job(s) did not finish cleanly" in capsys.readouterr().err
    assert len(summaries(out)) == 1
