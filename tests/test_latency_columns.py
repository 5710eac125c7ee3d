"""Latency columns: the pure function on hand-computed lists, and invariants on real CPU runs.

Every summary column must follow from the raw samples a point recorded: its own step rows
(`step_ms`, one row per step of every measured run, `repeat` = the run) and the region samples.
Part 1 feeds `latency_columns` lists whose answers are worked out by hand; part 2 runs every
mode and method on the tiny preset with one and with three repeats and checks each summary row
against its own step rows with numpy (an independent implementation of median / percentiles).
"""

import json
import math

import numpy as np
import pytest
import torch
from assets import SWEEP_GEN, SWEEP_METHODS

from dynbench.cli import main
from dynbench.measure import point as point_mod
from dynbench.measure.latency import latency_columns
from dynbench.measure.memory import MemoryTracker
from dynbench.names import KV_METHODS
from dynbench.results import load

# ---- part 1: the pure function ------------------------------------------------------------------
HEADLINE = {"prefill": "prefill", "no-cache": "forward", "kv-cache": "decode"}


def columns(mode, step_ms, regions=()):
    """`latency_columns` of a one-round run of `mode`: a prefill then decode steps (kv-cache), a prefill
    (prefill), forwards (no-cache) — the phases written by hand, not taken from dynbench.modes."""
    n = len(step_ms[0]) if step_ms else 0
    phases = {"prefill": ["prefill"], "no-cache": ["forward"] * n, "kv-cache": ["prefill"] + ["decode"] * (n - 1)}
    return latency_columns(phases[mode][:n], step_ms, regions, headline=HEADLINE[mode])



def test_prefill_ttft_is_the_median_over_runs_and_every_run_is_a_sample():
    cols = columns("prefill", [[10.0], [30.0], [20.0], [40.0]])
    assert cols["ttft_ms"] == 25.0  # median of 10, 20, 30, 40
    assert cols["latency_ms_samples"] == [10.0, 30.0, 20.0, 40.0] == cols["ttft_ms_samples"]
    assert cols["total_ms"] == 25.0 and cols["total_ms_samples"] == [10.0, 30.0, 20.0, 40.0]
    assert cols["tpot_ms_median"] is None and cols["step_ms_median"] is None
    # sample std / mean of 10, 20, 30, 40: std = sqrt(500/3), mean 25
    assert cols["latency_cv"] == pytest.approx(math.sqrt(500 / 3) / 25)


def test_kv_cache_tpot_is_over_decode_steps_only():
    cols = columns("kv-cache", [[100.0, 1.0, 2.0, 3.0], [120.0, 4.0, 5.0, 6.0]])
    assert cols["ttft_ms"] == 110.0 and cols["ttft_ms_samples"] == [100.0, 120.0]
    assert cols["latency_ms_samples"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # no TTFT among them
    assert cols["tpot_ms_median"] == 3.5
    assert cols["tpot_ms_p90"] == 5.5  # rank 0.9 × 5 = 4.5 → halfway between 5 and 6
    assert cols["tpot_ms_p99"] == pytest.approx(5.95)
    assert cols["total_ms_samples"] == [106.0, 135.0] and cols["total_ms"] == 120.5
    assert cols["step_ms_median"] is None


def test_kv_cache_without_decode_steps_has_no_tpot():
    cols = columns("kv-cache", [[50.0]])
    assert cols["ttft_ms"] == 50.0 and cols["tpot_ms_median"] is None
    assert cols["latency_ms_samples"] is None and cols["latency_cv"] is None


def test_no_cache_steps_are_every_forward():
    cols = columns("no-cache", [[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]])
    assert cols["step_ms_median"] == 7.5 and cols["step_ms_p90"] == 9.5
    assert cols["latency_ms_samples"] == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert cols["total_ms"] == 22.5  # median of 18 and 27
    assert cols["ttft_ms"] is None and cols["tpot_ms_median"] is None


def test_region_columns():
    steps = [[20.0], [22.0], [24.0]]
    regions = [
        {"vision_tower": [2.0], "projector": [1.0], "llm_prefill": [15.0], "scoring": [1.0, 1.0, 4.0]},
        {"vision_tower": [4.0], "projector": [2.0], "llm_prefill": [16.0], "scoring": [1.0, 1.0, 1.0]},
        {"vision_tower": [3.0], "projector": [0.5], "llm_prefill": [17.0], "scoring": [2.0, 2.0, 2.0]},
    ]
    cols = columns("prefill", steps, regions)
    assert cols["vision_ms"] == 3.5  # tower + projector per pass: 3, 6, 3.5
    assert cols["llm_prefill_ms"] == 16.0
    assert cols["scoring_ms"] == 6.0  # Σ per run: 6, 3, 6 → median 6 (max per run would give 4, 1, 2)
    no_scoring = columns("prefill", steps, [{k: v for k, v in r.items() if k != "scoring"} for r in regions])
    assert no_scoring["scoring_ms"] is None  # not timed ≠ zero


def test_no_cache_vision_is_per_pass():
    regions = [{"vision_tower": [3.0, 3.0, 5.0], "projector": [1.0, 1.0, 1.0]}]
    cols = columns("no-cache", [[10.0, 10.0, 12.0]], regions)
    assert cols["vision_ms"] == 4.0  # passes: 4, 4, 6
    assert cols["llm_prefill_ms"] is None


def test_misaligned_samples_are_refused():
    with pytest.raises(ValueError, match="differ in steps"):
        columns("kv-cache", [[1.0, 2.0], [1.0, 2.0, 0.001]])
    with pytest.raises(ValueError, match="differ in steps"):
        latency_columns(["prefill"], [[1.0, 2.0]], headline="prefill")
    with pytest.raises(ValueError, match=r"^latency_columns\(\) needs at least one run with at least one step$"):
        columns("prefill", [])
    with pytest.raises(ValueError, match="region records"):
        columns("prefill", [[1.0], [2.0]], [{}])
    with pytest.raises(ValueError, match="unknown phase"):
        latency_columns(["decode"], [[1.0]], headline="tpot")
    with pytest.raises(ValueError, match="unknown phase"):
        latency_columns(["token"], [[1.0]], headline="decode")
    # a vision-tower call without its projector call is a broken record, not a shorter median
    with pytest.raises(ValueError):
        columns("prefill", [[1.0]], [{"vision_tower": [2.0, 2.0], "projector": [1.0]}])


def test_regions_without_the_vision_pass_leave_vision_empty():
    cols = columns("prefill", [[20.0]], [{"llm_prefill": [15.0]}])
    assert cols["vision_ms"] is None and cols["llm_prefill_ms"] == 15.0


def test_latency_cv_needs_two_samples():
    assert columns("prefill", [[10.0]])["latency_cv"] is None  # one run: no spread to speak of
    # two runs: sample std of 10, 30 = sqrt(200) / mean 20
    assert columns("prefill", [[10.0], [30.0]])["latency_cv"] == pytest.approx(math.sqrt(200) / 20)


# ---- part 2: invariants on real runs --------------------------------------------------------------

METHODS, GEN = SWEEP_METHODS, SWEEP_GEN  # 3 fed tokens: see assets.py


@pytest.fixture(scope="module")
def runs(every_method_sweep):
    """Every mode × method, with one measured run (and FLOPs) and with three (timing only)."""
    return {repeats: load(folder) for repeats, folder in every_method_sweep.items()}


def _points(df):
    summaries = df[df["step"].isna()]
    for _, s in summaries.iterrows():
        steps = df[(df["point_id"] == s["point_id"]) & df["step"].notna()]
        yield s, steps


def _per_run(steps):
    return [g.sort_values("step")["step_ms"].tolist() for _, g in steps.groupby("repeat", sort=True)]


@pytest.mark.parametrize("repeats", [1, 3])
def test_every_point_ran(runs, repeats):
    s = runs[repeats][runs[repeats]["step"].isna()]
    expected = {(mode, m) for mode in ("prefill", "kv-cache") for m in METHODS}
    expected |= {("no-cache", m) for m in METHODS if m not in KV_METHODS}
    assert set(zip(s["mode"], s["method"], strict=True)) == expected and (s["status"] == "ok").all()


@pytest.mark.parametrize("repeats", [1, 3])
def test_step_rows_are_every_step_of_every_run(runs, repeats):
    for s, steps in _points(runs[repeats]):
        n = {"prefill": 1, "no-cache": GEN, "kv-cache": GEN}[s["mode"]]
        assert len(steps) == repeats * n, (s["method"], s["mode"])
        assert sorted(zip(steps["repeat"], steps["step"], strict=True)) == [(r, i) for r in range(repeats)
                                                                           for i in range(n)]
        assert (steps["step_ms"] > 0).all()


@pytest.mark.parametrize("repeats", [1, 3])
def test_summary_latency_follows_from_its_step_rows(runs, repeats):
    for s, steps in _points(runs[repeats]):
        what = (s["method"], s["mode"], repeats)
        per_run = _per_run(steps)
        samples = sorted(s["latency_ms_samples"])
        assert s["total_ms"] == pytest.approx(np.median([sum(r) for r in per_run])), what
        if s["mode"] in ("prefill", "kv-cache"):
            ttft = [r[0] for r in per_run]
            assert s["ttft_ms"] == pytest.approx(np.median(ttft)), what
            assert sorted(s["ttft_ms_samples"]) == sorted(ttft), what
            # each run: vision + LLM prefill nest inside the prefill step; over 1 or 3 (odd) runs the
            # medians' sum is at most the largest TTFT
            assert s["vision_ms"] + s["llm_prefill_ms"] <= max(ttft), what
        if s["mode"] == "prefill":
            assert samples == sorted(ttft) and len(samples) == repeats, what
        elif s["mode"] == "kv-cache":
            decode = [x for r in per_run for x in r[1:]]
            assert samples == sorted(decode) and len(samples) == repeats * (GEN - 1), what
            assert s["tpot_ms_median"] == pytest.approx(np.median(decode)), what
            assert s["tpot_ms_p90"] == pytest.approx(np.percentile(decode, 90)), what
            assert s["tpot_ms_p99"] == pytest.approx(np.percentile(decode, 99)), what
        else:
            forwards = [x for r in per_run for x in r]
            assert samples == sorted(forwards) and len(samples) == repeats * GEN, what
            assert s["step_ms_median"] == pytest.approx(np.median(forwards)), what
            assert s["step_ms_p90"] == pytest.approx(np.percentile(forwards, 90)), what
            assert s["vision_ms"] > 0 and math.isnan(s["llm_prefill_ms"]), what
        if len(samples) > 1:
            assert s["latency_cv"] == pytest.approx(np.std(samples, ddof=1) / np.mean(samples)), what


@pytest.mark.parametrize("repeats", [1, 3])
def test_summary_counts_follow_from_its_step_rows(runs, repeats):
    for s, steps in _points(runs[repeats]):
        what = (s["method"], s["mode"], repeats)
        for _, run in steps.groupby("repeat"):
            if repeats == 1:  # FLOPs counted
                assert s["tmacs"] == pytest.approx(run["tmacs"].sum(), rel=1e-12), what
            last = run.sort_values("step").iloc[-1]
            assert s["text_tokens_fed"] == last["text_tokens_fed"], what
        if s["mode"] == "prefill":
            continue
        fed = s["text_tokens_fed"]
        assert fed == GEN - 1 and s["text_tokens_fed"] == GEN - 1, what
        # by hand: dense decoding keeps every fed token; the budget rule at 0.5 keeps 2 of 3;
        # the KV-eviction methods keep per layer and head (no single count)
        kept = {"dynamic-llava": 2}.get(s["method"], None if s["method"] in KV_METHODS else fed)
        if kept is None:
            assert math.isnan(s["text_keep_realized"]), what
        else:
            assert s["text_tokens_kept"] == kept, what
            assert s["text_keep_realized"] == pytest.approx(kept / fed), what


@pytest.fixture
def run_mode_calls(monkeypatch):
    """Every `run_mode` call the measurement makes, in order: timed or not, the debugging delay it
    was given and whether a profiler was running around it."""
    calls = []
    real = point_mod.run_mode

    def spy(*args, step_timer=None, **kwargs):
        calls.append({"timed": step_timer is not None, "delay": kwargs.get("decode_delay_s"),
                      "profiled": torch.autograd._profiler_enabled()})
        return real(*args, step_timer=step_timer, **kwargs)

    monkeypatch.setattr(point_mod, "run_mode", spy)
    return calls


def test_warmup_runs_before_the_measured_runs(tmp_path, run_mode_calls):
    argv = ["run", "--mode", "kv-cache", "--method", "llava", "--prompt-len", "4", "--gen-len", "3",
            "--warmup", "2", "--repeats", "3", "--no-flops", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    # 2 warm-ups, 3 timed runs, then (CPU) one untimed run under the memory profiler
    assert [c["timed"] for c in run_mode_calls] == [False, False, True, True, True, False]
    timed = [c for c in run_mode_calls if c["timed"]]  # no debugging delay unless asked; no profiler around them
    assert [c["delay"] for c in timed] == [0.0] * 3 and [c["profiled"] for c in timed] == [False] * 3
    s = load(tmp_path / "r")
    assert len(s[s["step"].notna()]) == 3 * 3  # warm-ups write no rows


@pytest.mark.parametrize("repeats", [1, 3])
def test_headline_runs_time_only_the_coarse_regions(runs, repeats):
    """Without --regions no event pair sits inside a step: the baselines' scoring is not timed."""
    s = runs[repeats][runs[repeats]["step"].isna()]
    assert s["scoring_ms"].isna().all() and not s["regions"].any()


def test_debug_decode_delay_reaches_the_timed_runs_in_seconds(run_mode_calls):
    argv = ["run", "--mode", "kv-cache", "--method", "llava", "--prompt-len", "4", "--gen-len", "2",
            "--debug-decode-delay-ms", "5", "--warmup", "0", "--repeats", "2", "--no-flops", "--json"]
    assert main(argv) == 0
    assert [c["delay"] for c in run_mode_calls if c["timed"]] == [0.005, 0.005]


def test_clock_and_energy_of_the_timed_runs_reach_the_row(monkeypatch, capsys):
    """What the GPU monitors saw around the timed runs lands in the summary row (NVML faked: on
    CPU both would be None): clocks and throttling, energy per run and per generated token."""
    from contextlib import contextmanager

    from dynbench.measure.latency import ClockResult

    class Clock:
        def __init__(self, device):
            self.ran = False

        @contextmanager
        def track(self):
            yield
            self.ran = True

        def result(self):
            return ClockResult(1700, 1500, 1600, 0x4, ("sw_power_cap",), True, None) if self.ran else None

    class Energy:
        def __init__(self, device):
            self.joules = None
            self.unavailable = None  # why joules is None (EnergyMeter's interface)

        @contextmanager
        def track(self):
            yield
            self.joules = 12.0  # two runs of 3 generated tokens

    monkeypatch.setattr(point_mod, "ClockMonitor", Clock)
    monkeypatch.setattr(point_mod, "EnergyMeter", Energy)
    argv = ["run", "--mode", "kv-cache", "--method", "llava", "--prompt-len", "4", "--gen-len", "3",
            "--warmup", "0", "--repeats", "2", "--no-flops", "--json"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["throttled"], row["sm_clock_mhz"]) == (True, 1600)
    assert (row["energy_j"], row["energy_j_per_token"]) == (6.0, 2.0)


def test_where_tracking_is_free_memory_wraps_the_timed_runs(tmp_path, monkeypatch, run_mode_calls):
    """CUDA's allocator keeps its peak at no cost, so there the memory region wraps the timed runs
    and no extra run is made (modelled on CPU by a tracker that says it needs no run of its own)."""
    monkeypatch.setattr(MemoryTracker, "needs_own_run", property(lambda self: False))
    argv = ["run", "--mode", "kv-cache", "--method", "llava", "--prompt-len", "4", "--gen-len", "3",
            "--warmup", "0", "--repeats", "2", "--no-flops", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    assert [c["timed"] for c in run_mode_calls] == [True, True]
    s = load(tmp_path / "r")
    assert s[s["step"].isna()]["peak_mem_bytes"].iloc[0] > 0


def test_done_when_prefill_four_repeats_and_kv_cache_sixteen_tpot(capsys):
    assert main(["run", "--mode", "prefill", "--method", "llava", "--repeats", "4", "--prompt-len", "8",
                 "--no-flops", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["latency_ms_samples"]) == 4 and min(row["latency_ms_samples"]) > 0.1  # no ~0 ms phantom
    assert row["ttft_ms"] == pytest.approx(np.median(row["latency_ms_samples"]))
    assert main(["run", "--mode", "kv-cache", "--method", "llava", "--repeats", "4", "--gen-len", "5",
                 "--prompt-len", "8", "--no-flops", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["latency_ms_samples"]) == 16 and len(row["ttft_ms_samples"]) == 4


def test_cpu_tensor_memory_counts_weights_and_every_input(tmp_path, monkeypatch, capsys):
    """`peak_tensor_bytes` = weights + the inputs live before the run + what the run allocated.
    With the run's own allocations zeroed, the rest is by hand: input ids (8 prompt + 576 image
    tokens, int64), one 3×336×336 float32 image, 2 teacher-forced int64 answer ids."""
    import numpy as np

    from dynbench.measure import memory

    monkeypatch.setattr(memory, "profiled_peak_bytes", lambda prof: 0)
    answer = tmp_path / "answer.npz"
    np.savez(answer, answer_ids=np.array([5, 7], dtype=np.int64))
    argv = ["run", "--mode", "kv-cache", "--method", "llava", "--prompt-len", "8", "--gen-len", "3",
            "--teacher-force", str(answer), "--warmup", "0", "--repeats", "1", "--no-flops", "--json"]
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    inputs = (8 + 576) * 8 + 3 * 336 * 336 * 4 + 2 * 8
    assert row["peak_tensor_bytes"] == row["weights_bytes"] + inputs
