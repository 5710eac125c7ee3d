"""The sweep runner through the CLI: records, resume, OOM rows, FLOP deltas, meta counts, errors."""

import json

import pytest
import torch

from dynbench import sweep as sweep_mod
from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.measure import point as point_mod
from dynbench.measure.flops import count_macs
from dynbench.models.build import build_model
from dynbench.models.rules import analytic_layer_macs
from dynbench.results import load

FAST = ["--warmup", "0", "--repeats", "1"]


def summaries(path):
    df = load(path)
    return df[df["step"].isna()]


def test_records_and_json_stdout(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["run", "--mode", "kv-cache", "--gen-len", "4", "--prompt-len", "8", "--out", str(out), "--json", *FAST]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]  # stdout is JSON Lines only
    assert [r["method"] for r in rows] == ["llava", "dynamic-llava"]
    df = load(out)
    assert len(df) == 2 * (4 + 1)  # 4 step rows + 1 summary per point
    s = summaries(out).set_index("method")
    # 8 + 576 prompt + 3 fed below layer 2; from it on 461 image tokens fewer and 2 of 3 fed kept (t=1, t=3)
    assert s.loc["dynamic-llava", "layer_cache_lens"] == [587, 587, 125, 125]
    assert s.loc["llava", "tflops_paper"] is None or s["tflops_paper"].isna().all()  # kv-cache: undefined
    for col in ("ttft_ms", "tpot_ms_median", "peak_mem_bytes", "tmacs", "kv_bytes_generated"):
        assert (s[col] > 0).all(), col
    assert s.loc["llava", "timer"] == "cpu" and s.loc["llava", "mem_source"] == "cpu_tensors"
    steps = df[df["step"].notna()].groupby("point_id")["tmacs"].sum()
    for _, row in s.iterrows():
        assert steps[row["point_id"]] == pytest.approx(row["tmacs"], rel=1e-12)
    assert (tmp_path / "res" / "env").is_dir()


def test_prefill_tmacs_drop_matches_per_layer_counts(tmp_path):
    out = tmp_path / "res"
    assert main(["run", "--mode", "prefill", "--prompt-len", "20", "--out", str(out), *FAST]) == 0
    s = summaries(out).set_index("method")
    p = build_model("tiny", "dynamic-llava", device="meta").preset
    hand = lambda n: analytic_layer_macs(n, n, p.hidden, p.intermediate, p.heads, p.kv_heads, p.hidden // p.heads)  # noqa: E731
    P = 20 + 576
    removed = (p.layers - p.sparse_layer) * (hand(P) - hand(P - 461))  # the layers from the sparse one on
    dyn = build_model("tiny", "dynamic-llava")
    predictor = count_macs(dyn.model.image_score_predictor, (torch.zeros(1, 576, p.hidden),)).total
    saved = (s.loc["llava", "tmacs"] - s.loc["dynamic-llava", "tmacs"]) * 1e12
    assert round(saved) == removed - predictor
    assert s.loc["llava", "tmacs_vision"] == s.loc["dynamic-llava", "tmacs_vision"]


def test_resume_records_each_point_once(tmp_path, monkeypatch, capsys):
    out = tmp_path / "res"
    argv = ["run", "--mode", "prefill", "--vision-keep", "0.2,0.5,0.8", "--prompt-len", "4", "--out", str(out),
            "--no-flops", *FAST]
    real = sweep_mod.Sweep.run_point
    calls = []

    def interrupted(self, spec):
        calls.append(spec)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, spec)

    monkeypatch.setattr(sweep_mod.Sweep, "run_point", interrupted)
    assert main(argv) == 130
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(sweep_mod.Sweep, "run_point", real)
    assert len(summaries(out)) == 2
    assert main(argv) == 2  # the folder holds records: refused without --resume
    assert main([*argv, "--resume"]) == 0
    s = summaries(out)
    keys = [(m, None if k != k or k is None else k) for m, k in zip(s["method"], s["vision_keep"], strict=True)]
    assert sorted(keys, key=str) == sorted(
        [("llava", None), ("dynamic-llava", 0.2), ("dynamic-llava", 0.5), ("dynamic-llava", 0.8)], key=str
    )
    assert main([*argv, "--resume"]) == 0  # nothing left to do
    assert len(summaries(out)) == 4


def test_oom_becomes_a_row_and_the_sweep_goes_on(tmp_path, monkeypatch):
    out = tmp_path / "res"
    real = point_mod.run_mode

    def flaky(mode, net, *args, **kwargs):
        if net.method == "llava":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(mode, net, *args, **kwargs)

    monkeypatch.setattr(point_mod, "run_mode", flaky)
    assert main(["run", "--mode", "prefill", "--prompt-len", "4", "--out", str(out), "--no-flops", *FAST]) == 0
    s = summaries(out).set_index("method")
    assert s.loc["llava", "status"] == "oom" and s.loc["dynamic-llava", "status"] == "ok"


def test_error_row_exits_1(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(point_mod, "run_mode", broken)
    out = tmp_path / "res"
    assert main(["run", "--mode", "prefill", "--out", str(out), "--no-flops", *FAST]) == 1
    assert set(summaries(out)["status"]) == {"error: ValueError: boom"}


def test_meta_7b_prefill_counts(capsys):
    assert main(["run", "--device", "meta", "--model", "llava-1.5-7b", "--mode", "prefill", "--prompt-len", "40",
                 "--json"]) == 0
    rows = {r["method"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert round(rows["llava"]["tflops_paper"], 2) == 10.07
    assert round(rows["dynamic-llava"]["tflops_paper"], 2) == 2.49
    assert round(rows["llava"]["tmacs_fastv"], 3) == 3.817
    assert rows["dynamic-llava"]["tmacs"] < 0.4 * rows["llava"]["tmacs"]
    assert rows["llava"]["ttft_ms"] is None and rows["llava"]["peak_mem_bytes"] is None  # nothing ran
    assert rows["dynamic-llava"]["layer_seq_lens"] == [616] * 2 + [155] * 30



def test_meta_points_follow_their_own_keep(capsys):
    """A meta point is planned with its own drop settings, not the defaults: vision keep 0.5 keeps
    floor(576 × 0.5) = 288 image tokens from layer 2 on (40 + 288 = 328), keep 0.1 keeps 57."""
    assert main(["run", "--device", "meta", "--model", "llava-1.5-7b", "--mode", "prefill", "--prompt-len", "40",
                 "--method", "dynamic-llava", "--vision-keep", "0.5,0.1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["vision_keep"]: r["layer_seq_lens"] for r in rows} == {0.5: [616] * 2 + [328] * 30,
                                                                    0.1: [616] * 2 + [97] * 30}

BAD = [
    (["--suite", "SUITE", "--mode", "prefill"], "--suite sets the points"),
    (["--suite", "BADYAML"], "not valid YAML at line"),
    (["--suite", "UNKNOWN"], "unknown key(s) modes"),
    (["--suite", "missing.yaml"], "cannot read suite"),
    (["--out", "FILE/sub"], "is a file; give a directory path"),
    (["--prompt-len", ",".join(map(str, range(101))), "--gen-len", ",".join(map(str, range(1, 101))),
      "--mode", "no-cache", "--method", "llava"], "add --yes"),
    (["--resume"], "--resume needs --out"),
    (["--device", "meta", "--text-policy", "learned", "--mode", "kv-cache"], "learned text decisions"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_run_input(tmp_path, capsys, extra, message):
    (tmp_path / "suite.yaml").write_text("mode: prefill\nmethod: llava\nprompt_len: 4\n")
    (tmp_path / "bad.yaml").write_text("mode: [prefill\n  x: 1\n")
    (tmp_path / "unknown.yaml").write_text("modes: [prefill]\n")
    (tmp_path / "file").write_text("")
    names = {"SUITE": "suite.yaml", "BADYAML": "bad.yaml", "UNKNOWN": "unknown.yaml", "FILE/sub": "file/sub",
             "missing.yaml": "missing.yaml"}
    extra = [str(tmp_path / names[a]) if a in names else a for a in extra]
    assert main(["run", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err


def test_suite_points(tmp_path, monkeypatch):
    from dynbench import spec as spec_mod
    from dynbench.spec import load_suite

    points = load_suite("suites/smoke.yaml")
    assert {(p.mode, p.method) for p in points} == {
        (m, k) for m in ("prefill", "no-cache", "kv-cache") for k in ("llava", "dynamic-llava")
    }
    assert len(points) == 1 + 2 + 2 + 2  # llava prefill once; dynamic prefill at two keeps
    # a GPU suite loads anywhere (a Slurm login node expands it); its device is checked when it runs
    ci = load_suite("suites/ci-gpu.yaml")
    if not torch.cuda.is_available():  # --device cuda on a CPU machine: refused, in one line
        with pytest.raises(DynbenchError, match="no CUDA device"):
            spec_mod.resolved(ci)
    # prefill: llava + 2 keeps; kv-cache at batch 1 and 8 for both methods; no-cache for both
    assert len(ci) == (1 + 2) + 2 * 2 + 2 and {p.batch for p in ci if p.mode == "kv-cache"} == {1, 8}
    assert all(p.device == "cuda" and p.dtype == "bfloat16" for p in ci)
    assert len(load_suite("suites/paper.yaml")) == 2 + 2 + 12
    assert load_suite("suites/baselines-gpu.yaml")


def test_meta_points_follow_the_counting_rules(capsys):
    """The meta device reports what the rules give, per spec field: every step of the generation,
    one vision pass with --reuse-vision, the attention backend asked for."""
    argv = ["run", "--device", "meta", "--method", "dynamic-llava", "--prompt-len", "8", "--gen-len", "4", "--json"]
    assert main([*argv, "--mode", "kv-cache", "--attn", "eager"]) == 0
    kv = json.loads(capsys.readouterr().out)
    p = build_model("tiny", "dynamic-llava", device="meta").preset
    # 3 fed tokens, the budget rule at 0.5 keeps tokens 1 and 3: layers 0-1 cache all 3, 2-3 two
    per_token = 2 * p.kv_heads * (p.hidden // p.heads) * 4  # K and V, float32
    assert kv["kv_bytes_generated"] == (2 * 3 + 2 * 2) * per_token
    assert kv["attn_ledger"] == {"prefill": {"0-3": "eager"}, "decode": {"0-3": "eager"}}
    assert main([*argv, "--mode", "no-cache"]) == 0
    every = json.loads(capsys.readouterr().out)
    assert main([*argv, "--mode", "no-cache", "--reuse-vision"]) == 0
    once = json.loads(capsys.readouterr().out)
    assert once["tmacs_vision"] * 4 == pytest.approx(every["tmacs_vision"], rel=1e-12)  # 1 pass vs 4
    assert once["tmacs_llm"] == every["tmacs_llm"]


def test_measured_no_cache_runs_encode_the_image_once_with_reuse_vision(capsys):
    """On a real run (not only the plan), --reuse-vision reaches the measured runs: the vision
    tower's MACs are one pass, not one per forward, and the LLM's are unchanged."""
    argv = ["run", "--mode", "no-cache", "--method", "llava", "--prompt-len", "4", "--gen-len", "3", "--json", *FAST]
    assert main(argv) == 0
    every = json.loads(capsys.readouterr().out)
    assert main([*argv, "--reuse-vision"]) == 0
    once = json.loads(capsys.readouterr().out)
    assert once["tmacs_vision"] * 3 == pytest.approx(every["tmacs_vision"], rel=1e-12)
    assert once["tmacs_llm"] == every["tmacs_llm"] and once["generated_ids"] == every["generated_ids"]


def test_meta_h2o_kv_bytes_from_the_budgeted_caches(capsys):
    """Planned h2o cannot split its cache into prompt and generated once decoding evicts, yet the
    total is exact: every layer holds the budget, floor(0.1 × (8 + 576)) = 58 tokens."""
    assert main(["run", "--device", "meta", "--method", "h2o", "--mode", "kv-cache", "--prompt-len", "8",
                 "--gen-len", "4", "--kv-budget", "0.1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    p = build_model("tiny", "llava", device="meta").preset
    per_token = 2 * p.kv_heads * (p.hidden // p.heads) * 4  # K and V, float32
    assert (row["kv_bytes_prompt"], row["kv_bytes_generated"]) == (None, None)
    assert row["kv_bytes"] == p.layers * 58 * per_token


def test_layer_groups_run_length_encode_by_layer_range():
    from dynbench.rows import layer_groups

    assert layer_groups(["sdpa", "sdpa", "eager", "sdpa"]) == {"0-1": "sdpa", "2": "eager", "3": "sdpa"}
    assert layer_groups(["eager"]) == {"0": "eager"} and layer_groups([]) == {}
    assert layer_groups([1, 1, 1]) == {"0-2": 1}


def test_meta_paper_tflops_scale_with_the_batch(capsys):
    """The paper's convention counts one sample (10.07 TFLOPs for 7B llava, prompt 40): a batch of
    2 costs twice that."""
    argv = ["run", "--device", "meta", "--model", "llava-1.5-7b", "--mode", "prefill", "--prompt-len", "40",
            "--method", "llava", "--json"]
    assert main([*argv, "--batch", "2"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["batch"] == 2 and row["tflops_paper"] == pytest.approx(2 * 10.07, abs=0.01)


def test_after_an_oom_the_model_is_gone_before_the_cache_is_emptied(tmp_path, monkeypatch):
    """`_release` empties the CUDA cache after a gc: memory comes back only when nothing (this
    frame's locals included) still references the model by then."""
    import weakref

    from dynbench.spec import RunSpec
    from dynbench.sweep import Sweep

    nets, alive = [], []

    def oom(mode, net, *args, **kwargs):
        nets.append(weakref.ref(net))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    sweep = Sweep(tmp_path / "res", flops=False)
    real_release = sweep._release

    def release():
        real_release()
        alive.extend(ref() is not None for ref in nets)

    monkeypatch.setattr(point_mod, "run_mode", oom)
    monkeypatch.setattr(sweep, "_release", release)
    row = sweep.run_point(RunSpec(method="llava", mode="prefill", prompt_len=4, device="cpu", warmup=0, repeats=1))
    assert row["status"] == "oom" and nets and alive == [False]


@pytest.mark.processes
def test_no_flops_never_imports_fvcore():
    """The GPU machine has no fvcore unless carried: a --no-flops sweep must not need it."""
    import subprocess
    import sys

    code = ("import sys\nfrom dynbench.spec import points_from\nfrom dynbench.sweep import Sweep, order_points\n"
            "pts = order_points(points_from({'mode': 'prefill', 'method': 'dynamic-llava', 'prompt_len': 4, "
            "'warmup': 0, 'repeats': 1, 'device': 'cpu'}))\n"
            "rows = list(Sweep(None, flops=False, warn=lambda m: None).run(pts))\n"
            "assert rows[0]['status'] == 'ok' and rows[0]['tmacs'] is None, rows[0]\n"
            "print(sorted(m for m in sys.modules if m.startswith('fvcore')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_auto_and_cuda_stay_in_the_spec_until_the_sweep_runs_here():
    """A Slurm login node without a GPU expands a `--device cuda` sweep (its jobs resolve the device
    on their nodes); a local run resolves `auto` to this machine's device and refuses cuda without one."""
    from dynbench.fields import SUITE_FIELDS
    from dynbench.run import expand_points
    from dynbench.sources import Source

    flags = {**dict.fromkeys(SUITE_FIELDS), "device": "cuda", "mode": ["prefill"], "method": ["llava"]}
    points = expand_points(dict(flags), Source(), None, executor="slurm", yes=False, warn=print)
    assert [(p.device, p.repeats) for p in points] == [("cuda", 10)]
    unresolved = expand_points({**flags, "device": "auto"}, Source(), None, executor="slurm", yes=False, warn=print)
    assert [(p.device, p.repeats) for p in unresolved] == [("auto", None)]  # 10 on a GPU node, 5 on a CPU one
    local = expand_points({**flags, "device": None}, Source(), None, executor=None, yes=False, warn=print)
    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert [(p.device, p.repeats) for p in local] == [(here, 10 if here == "cuda" else 5)]
    if here == "cpu":
        with pytest.raises(DynbenchError, match="no CUDA device"):
            expand_points(dict(flags), Source(), None, executor=None, yes=False, warn=print)
