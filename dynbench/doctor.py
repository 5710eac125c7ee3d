"""`dynbench doctor`: prove every measurement path on this machine, in one short command.

Each check measures something whose answer is known independently (a host-synchronized clock, a
tensor of known size, a counter that must grow, the gate's verdict on an injected slowdown) and
returns `pass`, `fail` or `skip` with the reason. A CUDA check never passes without a GPU: it is
`skip`. Data only — `report/doctor.py` renders it; `cli/doctor.py` writes `doctor.json` and
`doctor.md`.

CPU checks: the perf_counter timer, the tensor-memory tracker, fvcore counts against one whole
trace, the latency columns against their own step rows, and the gate end to end (A/A passes, an
injected slowdown fails). CUDA checks: the event timer, allocator peaks, hidden host syncs, NVML
memory / clocks, NVML energy, out-of-memory rows, attention backends, the host-bound flag, and
the GPU CI suite. A check fails only for a real fault: what this machine cannot measure (NVML
quantities a sandbox refuses, a frozen energy counter, fvcore not installed) is a `skip` naming
why, and tolerances come from the measured noise, not from a fixed guess.
`--quick` uses the tiny preset where a check would otherwise build a 7B-shaped model.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dynbench.records import STEP_ROW, is_point_summary, row_kind

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class DoctorCheck:
    name: str
    status: str  # pass | fail | skip
    detail: str
    seconds: float


@dataclass
class DoctorReport:
    checks: list[DoctorCheck]
    env: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if any(c.status == FAIL for c in self.checks) else 0

    def as_dict(self) -> dict:
        return {"checks": [asdict(c) for c in self.checks], "env": self.env}


class Skip(Exception):
    """The check cannot run here; the message says why."""


@dataclass(frozen=True)
class Context:
    device: str  # cpu | cuda
    quick: bool
    work: Path  # scratch folder for results the checks write

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    @property
    def model(self) -> str:
        return "tiny" if self.quick else "llava-1.5-7b"


def _need_cuda(ctx: Context) -> None:
    if not ctx.cuda:
        raise Skip("no CUDA device here (a CUDA check never passes on a CPU machine)")


def _sweep_rows(ctx: Context, name: str, point: dict, flops: bool = False) -> list[dict]:
    """Run the points of `point` (flag values, as `dynbench run` takes them) into a fresh folder
    under the scratch dir, quietly; the records written."""
    from dynbench.fields import SUITE_FIELDS
    from dynbench.results import RECORDS_FILE, iter_records
    from dynbench.run import run_sweep
    from dynbench.sources import Source

    out = ctx.work / name
    point = {**dict.fromkeys(SUITE_FIELDS), **point}  # every field, as the CLI's flags give them
    rows = run_sweep(point, Source(), out=str(out), flops=flops, yes=True).rows  # yes: the checks size their points
    failed = [r["status"] for r in rows if r["status"] not in ("ok", "oom")]
    if failed:
        raise AssertionError(f"{name}: {failed[0]}")
    return list(iter_records(out / RECORDS_FILE))


# ---- CPU checks ----------------------------------------------------------------------------------
def cpu_timer(ctx: Context) -> str:
    """perf_counter regions: a 50 ms sleep reads 50 ms (± 20 %), and nested regions add up."""
    from dynbench.measure.latency import LatencyTracker

    tracker = LatencyTracker("cpu")
    for _ in range(3):
        with tracker.track("outer"):
            with tracker.track("inner"):
                time.sleep(0.05)
    got = tracker.result()
    inner, outer = statistics.median(got["inner"]), statistics.median(got["outer"])
    assert 40 <= inner <= 70, f"a 50 ms sleep timed at {inner:.1f} ms"
    assert inner <= outer, f"inner {inner:.2f} ms > outer {outer:.2f} ms"
    return f"50 ms sleep → {inner:.2f} ms (median of 3); outer ≥ inner"


def cpu_memory(ctx: Context) -> str:
    """The CPU tensor tracker: a 64 MiB tensor inside the region counts to the byte; one freed
    before it does not."""
    import torch

    from dynbench.measure.memory import MemoryTracker

    before = torch.ones(128 * 2**20, dtype=torch.uint8)
    del before  # freed before the region: must not count
    mem = MemoryTracker("cpu")
    with mem.track(live_bytes=0):
        x = torch.ones(64 * 2**20, dtype=torch.uint8)
        del x
    peak = mem.result().peak_tensor_bytes
    assert peak == 64 * 2**20, f"peak {peak} B, expected {64 * 2**20} B"
    return f"peak tensor bytes {peak:,} = 64 MiB exactly; the 128 MiB freed before is not counted"


def _have_fvcore() -> bool:
    import importlib.util

    return importlib.util.find_spec("fvcore") is not None


def cpu_flops(ctx: Context) -> str:
    """fvcore: the per-part count of a tiny prefill equals one trace of the whole forward."""
    if not _have_fvcore():
        raise Skip("fvcore is not installed here (FLOPs are counted only where it is: `make gpu-wheels`)")
    import torch

    from dynbench.inputs import synthetic_inputs
    from dynbench.measure.flops import count_macs
    from dynbench.measure.model_cost import ModelCost
    from dynbench.models.build import build_model
    from dynbench.models.rules import DropConfig
    from dynbench.modes import run_mode

    net = build_model("tiny", "dynamic-llava")
    inputs = synthetic_inputs(net.preset, prompt_len=16)
    drop = DropConfig(vision_keep=0.2)
    step = run_mode("prefill", net, inputs, drop).last
    assembled = ModelCost(net).step(step, 1).total

    class Whole(torch.nn.Module):  # the prefill as one traceable forward; every CLIP layer kept live
        def forward(self, ids, px):
            tower = net.model.vision_tower(px, output_hidden_states=True)
            feats = net.model.multi_modal_projector(tower.hidden_states[net.preset.vision_feature_layer][:, 1:])
            out = net.forward_sequence(net.embed_prompt(ids, feats, inputs.layout), inputs.layout, drop)
            return net.logits(out.hidden[:, -1]), tower.last_hidden_state

    with torch.inference_mode():
        whole = count_macs(Whole(), (inputs.input_ids, inputs.pixel_values), by_module=False).total
    assert assembled == whole, f"assembled per part {assembled:,} ≠ one whole trace {whole:,}"
    return f"tiny dynamic-llava prefill: {whole:,} MACs, per part = one trace of the whole forward"


def cpu_latency_columns(ctx: Context) -> str:
    """A real tiny sweep: every latency column follows from its own step rows."""
    rows = _sweep_rows(ctx, "latency", {"mode": ["prefill", "kv-cache"], "method": ["llava", "dynamic-llava"],
                                        "prompt_len": 8, "gen_len": 4, "warmup": 0, "repeats": 3, "device": "cpu"})
    checked = 0
    for s in (r for r in rows if is_point_summary(r)):
        steps = [r for r in rows if r["point_id"] == s["point_id"] and row_kind(r) == STEP_ROW]
        per_run = {}
        for r in steps:
            per_run.setdefault(r["repeat"], []).append((r["step"], r["step_ms"]))
        runs = [[ms for _, ms in sorted(v)] for _, v in sorted(per_run.items())]
        assert len(runs) == 3, f"{len(runs)} runs recorded"
        assert abs(s["ttft_ms"] - statistics.median(r[0] for r in runs)) < 1e-9
        assert abs(s["total_ms"] - statistics.median(sum(r) for r in runs)) < 1e-9
        if s["mode"] == "kv-cache":
            decode = [x for r in runs for x in r[1:]]
            assert abs(s["tpot_ms_median"] - statistics.median(decode)) < 1e-9
            assert sorted(s["latency_ms_samples"]) == sorted(decode)
        else:
            assert sorted(s["latency_ms_samples"]) == sorted(r[0] for r in runs)
        checked += 1
    return f"{checked} points: TTFT, TPOT, total and the raw samples equal their step rows"


def _gate(ctx: Context, name: str, point: dict, delay_ms: float, gate_cpu: bool, tol: float) -> str:
    """Run twice (A/A must pass), then with a delay in every decode step (must regress). The
    delay is at least `delay_ms` and at least 4 × the measured TPOT, so a loaded machine's own
    slowness cannot hide it."""
    from dynbench.regress import check_results, write_baseline

    flops = _have_fvcore()  # the exact FLOP metrics join the gate where fvcore is installed
    rows = _sweep_rows(ctx, f"{name}-a", point, flops=flops)
    rows_b = _sweep_rows(ctx, f"{name}-b", point, flops=flops)
    baseline = ctx.work / f"{name}.jsonl"
    write_baseline(ctx.work / f"{name}-a", baseline)
    if not gate_cpu:  # CUDA: the gated A/A; CPU A/A latency is info only, its fixed tolerance stays
        tol = aa_tolerance(rows, rows_b, tol)
    # A/A: on CPU latency is reported, not gated (shared CPUs are noisy); on CUDA it is gated
    aa = check_results(ctx.work / f"{name}-b", baseline, gate_cpu_latency=False, latency_tol=tol)
    assert aa.exit_code == 0, f"A/A check exited {aa.exit_code}: {[(r.metric, r.note) for r in aa.regressions]}"
    tpot = max(r["tpot_ms_median"] for r in rows if is_point_summary(r))
    delay_ms = max(delay_ms, 4 * tpot)
    _sweep_rows(ctx, f"{name}-slow", {**point, "debug_decode_delay_ms": delay_ms}, flops=flops)
    slow = check_results(ctx.work / f"{name}-slow", baseline, gate_cpu_latency=gate_cpu, latency_tol=tol)
    caught = [r for r in slow.regressions if r.metric == "latency_ms_samples"]
    assert slow.exit_code == 1 and caught, f"a decode delay of {delay_ms:.1f} ms was not flagged"
    assert not [r for r in slow.regressions if r.metric != "latency_ms_samples"], "exact metrics changed"
    ratio = max(r.ratio for r in caught)
    return (f"A/A: exit 0; +{delay_ms:.1f} ms per decode step (TPOT was {tpot:.2f} ms) → exit 1, TPOT ratio "
            f"{ratio:.2f} (tolerance {tol:.0%})")


def aa_tolerance(rows_a: list[dict], rows_b: list[dict], floor: float) -> float:
    """The A/A gate's tolerance from the samples themselves: the widest 95 % bootstrap CI of
    median(B) / median(A) over the points, as a distance from 1, and never below `floor`. Host-bound
    decode steps jitter by more than a fixed 5 %; two runs of the same code must pass by construction,
    and an injected slowdown (≥ 4 × TPOT) still lies far outside."""
    from dynbench.stats import MIN_CI_SAMPLES, ratio_of_medians_ci

    b_of = {(r["method"], r["mode"]): r for r in rows_b if is_point_summary(r)}
    widest = floor
    for a in (r for r in rows_a if is_point_summary(r)):
        b = b_of.get((a["method"], a["mode"]), {})
        xs, ys = a.get("latency_ms_samples") or [], b.get("latency_ms_samples") or []
        if min(len(xs), len(ys)) >= MIN_CI_SAMPLES:
            _, lo, hi = ratio_of_medians_ci(ys, xs)
            widest = max(widest, hi - 1.0, 1.0 - lo)
    return min(widest, 0.9)  # the gate takes a fraction below 1; ≥ 4 × TPOT injected still exceeds it


def cpu_gate(ctx: Context) -> str:
    """The regression gate end to end on CPU: A/A passes, a decode delay fails. CPU timings of a
    shared machine are noisy, so the delay is gated explicitly at a 50 % tolerance."""
    point = {"mode": "kv-cache", "method": "dynamic-llava", "prompt_len": 8, "gen_len": 12, "warmup": 1,
             "repeats": 1, "device": "cpu"}
    return _gate(ctx, "cpu-gate", point, delay_ms=20.0, gate_cpu=True, tol=0.5)


# ---- CUDA checks ---------------------------------------------------------------------------------
def cuda_event_timer(ctx: Context) -> str:
    """CUDA events of a matmul loop agree with a host-synchronized perf_counter window within
    5 %, and per-iteration events recorded with no sync in the loop add up to the same."""
    _need_cuda(ctx)
    import torch

    from dynbench.measure.latency import LatencyTracker

    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)  # ~1.4 ms each on an H100: a window of ~70 ms
    for _ in range(5):
        x @ x  # warm-up: cuBLAS handles, clocks
    tracker = LatencyTracker("cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the loop raises
    try:
        with tracker.track("loop"):
            for _ in range(50):
                with tracker.track("iter"):
                    x @ x
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) * 1e3
    got = tracker.result()
    loop, iters = got["loop"][0], sum(got["iter"])
    assert abs(loop - wall) / wall < 0.05, f"events {loop:.2f} ms vs host window {wall:.2f} ms"
    assert abs(iters - loop) / loop < 0.05, f"Σ per-iteration {iters:.2f} ms vs loop {loop:.2f} ms"
    return f"50 bf16 8192² matmuls: events {loop:.2f} ms, host window {wall:.2f} ms, Σ iterations {iters:.2f} ms"


def allocator_peak(ctx: Context) -> str:
    """A big temporary freed before the region is not in the peak; a known one inside is, to the
    byte; a real point's peak covers its weights and KV."""
    _need_cuda(ctx)
    import torch

    from dynbench.measure.memory import MemoryTracker

    temp = torch.empty(2 * 2**30, dtype=torch.uint8, device="cuda")
    del temp
    base = torch.cuda.memory_allocated()
    mem = MemoryTracker("cuda")
    with mem.track():
        x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
        del x
    extra = mem.result().peak_alloc_bytes - base
    assert extra == 256 * 2**20, f"peak − live = {extra:,} B, expected {256 * 2**20:,} B"
    rows = _sweep_rows(ctx, "peak", {"model": ctx.model, "mode": "kv-cache", "method": "llava", "gen_len": 8,
                                     "dtype": "bfloat16", "device": "cuda"})
    s = next(r for r in rows if is_point_summary(r))
    assert s["peak_alloc_bytes"] >= s["weights_bytes"] + s["kv_bytes"], "peak below weights + KV"
    return (f"256 MiB inside → +{extra:,} B; 2 GiB freed before: not counted; {ctx.model} kv-cache peak "
            f"{s['peak_alloc_bytes'] / 2**30:.2f} GiB ≥ weights {s['weights_bytes'] / 2**30:.2f} + KV "
            f"{s['kv_bytes'] / 2**20:.1f} MiB")


class _SyncCounter:
    """A step timer for `run_mode` that turns torch's sync debug mode on inside each step only
    (not around the copies after the run) and counts the host syncs it reports."""

    def __init__(self):
        self.per_step: list[int] = []

    @contextmanager
    def track(self, name):
        import torch

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield _NoDiscard()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        self.per_step.append(sum("synchroniz" in str(w.message) for w in caught))


class _NoDiscard:
    def discard(self) -> None:  # the generator's end: not a step
        pass


def no_hidden_sync(ctx: Context) -> str:
    """The timed steps of every mode and method run under torch's sync debug mode: no host sync
    with the budget policy; with the learned policy exactly the documented ones — one `.item()`
    per kv-cache decode step (the keep decision) and per no-cache forward with candidates (the
    count)."""
    _need_cuda(ctx)
    import torch

    from dynbench.inputs import synthetic_inputs
    from dynbench.models.build import build_model
    from dynbench.models.rules import DropConfig
    from dynbench.modes import run_mode
    from dynbench.names import METHODS
    from dynbench.registry import get as get_method

    gen = 6
    counts, bad = {}, {}
    for method in METHODS:
        net = build_model("tiny", method, device="cuda", dtype=torch.bfloat16)
        inputs = synthetic_inputs(net.preset, 16).to("cuda")
        for mode in ("prefill", "no-cache", "kv-cache"):
            info = get_method(method)
            if mode not in info.modes:
                continue
            for policy in (("budget", "learned") if info.text_policy and mode != "prefill" else ("budget",)):
                drop = DropConfig(text_keep=0.5 if policy == "budget" else None, text_policy=policy)
                run_mode(mode, net, inputs, drop, gen_len=gen)  # warm-up: first draws, cuBLAS handles
                counter = _SyncCounter()
                run_mode(mode, net, inputs, drop, gen_len=gen, step_timer=counter)
                syncs = sum(counter.per_step)
                expected = 0
                if policy == "learned":
                    expected = gen - 1 if mode == "kv-cache" else gen - 2  # no-cache: forwards with ≥ 1 candidate
                counts[f"{method} {mode} {policy}"] = syncs
                if syncs != expected:
                    bad[f"{method} {mode} {policy}"] = f"{syncs} (expected {expected}; per step {counter.per_step})"
    assert not bad, f"host syncs inside timed steps: {bad}"
    learned = {k: v for k, v in counts.items() if v}
    return f"{len(counts)} runs: no sync inside a step but the learned policy's decisions {learned}"


def _unavailable(s: dict, *quantities: str) -> dict[str, str]:
    """The NVML quantities of a summary row that NVML refused (NotSupported, NoPermission, …), and why."""
    why = s.get("nvml_unavailable") or {}
    return {q: why[q] for q in quantities if q in why}


def nvml_memory(ctx: Context) -> str:
    """NVML memory for this process (or the container fallback, named) ≥ the allocator's
    reserved; the SM clock and the throttle state read while the region ran. Each quantity NVML
    refuses here (a sandbox answers NotSupported / NoPermission) is skipped by name, never failed;
    the check skips when none could be read."""
    _need_cuda(ctx)
    rows = _sweep_rows(ctx, "nvml", {"model": "tiny", "mode": "kv-cache", "method": "llava", "gen_len": 32,
                                     "device": "cuda"})
    s = next(r for r in rows if is_point_summary(r))
    return nvml_memory_verdict(s)


def nvml_memory_verdict(s: dict) -> str:
    """`nvml-memory` from one CUDA summary row: what was read is checked, what NVML refused is named."""
    done, skipped = [], _unavailable(s, "memory", "sm_clock", "clock_event_reasons")
    if "memory" not in skipped:
        assert s["nvml_source"] in ("process", "global-minus-baseline"), f"nvml_source {s['nvml_source']}"
        assert s["nvml_process_bytes"] >= s["peak_reserved_bytes"], (s["nvml_process_bytes"],
                                                                      s["peak_reserved_bytes"])
        done.append(f"NVML {s['nvml_source']} {s['nvml_process_bytes'] / 2**20:.0f} MiB ≥ reserved "
                    f"{s['peak_reserved_bytes'] / 2**20:.0f} MiB")
    if "sm_clock" not in skipped:
        assert s["sm_clock_mhz"], "no SM clock reading"
        done.append(f"SM clock {s['sm_clock_mhz']} MHz")
    if s["throttled"] is not None:
        done.append(f"throttled {s['throttled']}")
    note = "; ".join(f"{q} skipped ({why})" for q, why in skipped.items())
    if not done:
        raise Skip(f"NVML refused every quantity: {note}")
    return "; ".join(done) + (f"; {note}" if note else "")


def nvml_energy(ctx: Context) -> str:
    """NVML's energy counter grows over a point: energy_j > 0, and per token in decode modes.
    Unsupported, or a counter that does not advance (frozen, or always 0), is a skip with the reason."""
    _need_cuda(ctx)
    # ten generations: the counter updates every few ms to ~100 ms, a window of ~1 s or more is read safely
    rows = _sweep_rows(ctx, "energy", {"model": ctx.model, "mode": "kv-cache", "method": "llava", "gen_len": 32,
                                       "repeats": 10, "dtype": "bfloat16", "device": "cuda"})
    return nvml_energy_verdict(next(r for r in rows if is_point_summary(r)))


def nvml_energy_verdict(s: dict) -> str:
    skipped = _unavailable(s, "energy")
    if skipped:
        raise Skip(f"energy: {skipped['energy']}")
    assert s["energy_j"] is not None and s["energy_j"] > 0, f"energy_j {s['energy_j']}"
    assert s["energy_j_per_token"] is not None and s["energy_j_per_token"] > 0
    return f"{s['energy_j']:.2f} J per generation, {s['energy_j_per_token'] * 1e3:.1f} mJ per token"


def cuda_oom(ctx: Context) -> str:
    """A point that cannot fit becomes an `oom` row, the sweep goes on, and memory comes back."""
    _need_cuda(ctx)
    import gc

    import torch

    from dynbench.spec import RunSpec
    from dynbench.sweep import Sweep

    gc.collect()
    torch.cuda.empty_cache()  # what the allocator caches counts as used to the driver: give it back first
    free, _ = torch.cuda.mem_get_info()
    filler = torch.empty(max(free - 768 * 2**20, 0), dtype=torch.uint8, device="cuda")  # leave 768 MiB
    sweep = Sweep(ctx.work / "oom", flops=False)
    big = RunSpec(method="llava", mode="prefill", batch=512, device="cuda", dtype="bfloat16", warmup=0, repeats=1)
    try:
        row = sweep.run_point(big)
    finally:
        del filler
        torch.cuda.empty_cache()
    assert row["status"] == "oom", f"status {row['status']}"
    after = torch.cuda.memory_allocated()
    small = sweep.run_point(RunSpec(method="llava", mode="prefill", device="cuda", dtype="bfloat16", warmup=0,
                                    repeats=1))
    assert small["status"] == "ok" and small["peak_alloc_bytes"] < 2 * 2**30, small["peak_alloc_bytes"]
    return (f"batch 512 with 768 MiB free → oom row; {after / 2**20:.0f} MiB still allocated after it; "
            f"the next point ok, peak {small['peak_alloc_bytes'] / 2**20:.0f} MiB")


def attention_backends(ctx: Context) -> str:
    """sdpa, eager and flash_attention_2 (if installed), bf16, teacher-forced, budget policy: the
    structural facts must agree exactly — per-step layer input and cache lengths, kept image and
    text counts (a backend that broke the cache or the drop would change them). Greedy-token
    agreement with sdpa is reported, not gated: bf16 near-ties flip predictor top-k indices and
    tokens between kernels (84–97 % at 7B depth on a CPU stand-in), which is rounding, not a fault."""
    _need_cuda(ctx)
    import importlib.util

    import torch

    from dynbench.inputs import synthetic_inputs, with_answer_ids
    from dynbench.models.build import build_model
    from dynbench.models.rules import DropConfig
    from dynbench.modes import run_mode

    backends = ["sdpa", "eager"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    details = []
    for model in (["tiny"] if ctx.quick else ["tiny", "llava-1.5-7b"]):
        results = {}
        for attn in backends:
            net = build_model(model, "dynamic-llava", attn=attn, device="cuda", dtype=torch.bfloat16, seed=0)
            inputs = synthetic_inputs(net.preset, 32)
            answers = torch.arange(3, 3 + 32)[None]
            inputs = with_answer_ids(inputs, answers, vocab=net.preset.vocab).to("cuda")
            results[attn] = run_mode("kv-cache", net, inputs, DropConfig(0.2, 0.5, "budget"), gen_len=32)
            del net
            torch.cuda.empty_cache()
        details += [f"{model} {attn} {agree:.0%}" for attn, agree in backend_agreement(results).items()]
    skipped = "" if "flash_attention_2" in backends else "; flash_attention_2 not installed"
    return "structure identical; tokens = sdpa (reported, not gated): " + ", ".join(details) + skipped


STRUCTURE = ("layer_seq_lens", "layer_cache_lens", "image_tokens_kept", "text_tokens_fed", "text_tokens_kept")


def backend_agreement(results: dict) -> dict[str, float]:
    """Each backend's run against sdpa's: every step's `STRUCTURE` must be equal (AssertionError
    naming the first difference); returns the share of greedy tokens equal to sdpa's."""
    ref = results["sdpa"]
    agree = {}
    for attn, res in results.items():
        assert len(res.steps) == len(ref.steps), f"{attn}: {len(res.steps)} steps, sdpa {len(ref.steps)}"
        for a, b in zip(res.steps, ref.steps, strict=True):
            for name in STRUCTURE:
                assert getattr(a, name) == getattr(b, name), \
                    f"{attn} step {a.step}: {name} {getattr(a, name)} ≠ sdpa's {getattr(b, name)}"
        ids, ref_ids = res.generated_ids[0], ref.generated_ids[0]
        agree[attn] = sum(x == y for x, y in zip(ids, ref_ids, strict=True)) / max(len(ref_ids), 1)
    return agree


def host_bound_flag(ctx: Context) -> str:
    """The host-bound flag means what it says: timed like decode steps (events + host clock, no
    sync), a step whose few small kernels wait on a 5 ms host delay is host-bound, and a step whose
    kernel keeps the GPU busy ~5 ms (`torch.cuda._sleep`) while the host returns at once is not."""
    _need_cuda(ctx)
    import torch

    from dynbench.measure.host import host_bound
    from dynbench.measure.latency import LatencyTracker

    x = torch.ones(1024, device="cuda")
    khz = getattr(torch.cuda.get_device_properties(0), "clock_rate", 0) or 1_980_000
    cycles = int(khz * 5)  # kHz × 5 ms ≈ 5 ms of device time (boost clock: a little less)
    torch.cuda._sleep(cycles)  # warm-up: the first call loads the kernel
    torch.cuda.synchronize()
    verdicts = {}
    for kind in ("host", "device"):
        tracker = LatencyTracker("cuda")
        for _ in range(5):
            with tracker.track("step"):
                x.add_(1)
                if kind == "host":
                    time.sleep(0.005)  # the GPU idles until the next launch: Python is the bottleneck
                else:
                    torch.cuda._sleep(cycles)  # the host returns at once: the GPU is the bottleneck
                x.add_(1)
        dev, host = tracker.result()["step"], tracker.host_result()["step"]
        flags = [host_bound(d, h) for d, h in zip(dev, host, strict=True)]
        verdicts[kind] = (statistics.median(dev), statistics.median(host), sum(flags))
    (hd, hh, hn), (dd, dh, dn) = verdicts["host"], verdicts["device"]
    assert hn == 5, f"host delay: {hn}/5 steps host-bound (device {hd:.2f} ms, host {hh:.2f} ms)"
    assert dn == 0, f"device delay: {dn}/5 steps host-bound (device {dd:.2f} ms, host {dh:.2f} ms)"
    return (f"5 ms host delay → 5/5 host-bound (device {hd:.2f} ms ≈ host {hh:.2f} ms); 5 ms device delay → "
            f"0/5 (device {dd:.2f} ms ≫ host {dh:.2f} ms)")


def ci_gpu_suite(ctx: Context) -> str:
    """A cut of suites/ci-gpu.yaml end to end: baseline, A/A check exit 0, an injected decode
    slowdown exit 1 (the GPU gate fires)."""
    _need_cuda(ctx)
    point = {"model": ctx.model, "mode": "kv-cache", "method": ["llava", "dynamic-llava"], "prompt_len": 64,
             "gen_len": 48, "dtype": "bfloat16", "device": "cuda", "text_keep": 0.5}
    return _gate(ctx, "ci-gpu", point, delay_ms=5.0, gate_cpu=False, tol=0.05)


CHECKS: dict[str, Callable[[Context], str]] = {
    "cpu-timer": cpu_timer,
    "cpu-memory": cpu_memory,
    "cpu-flops": cpu_flops,
    "cpu-latency-columns": cpu_latency_columns,
    "cpu-gate": cpu_gate,
    "cuda-event-timer": cuda_event_timer,
    "allocator-peak": allocator_peak,
    "no-hidden-sync": no_hidden_sync,
    "nvml-memory": nvml_memory,
    "nvml-energy": nvml_energy,
    "cuda-oom": cuda_oom,
    "attention-backends": attention_backends,
    "host-bound-flag": host_bound_flag,
    "ci-gpu-suite": ci_gpu_suite,
}


def run_doctor(device: str = "auto", quick: bool = False, only: list[str] | None = None,
               on_check: Callable[[DoctorCheck], None] | None = None) -> DoctorReport:
    """Every check (or `only` those), in order; `on_check` is told each result as it lands."""
    from dynbench.measure import env as envmod
    from dynbench.spec import resolve_device

    device = resolve_device(device)
    if device not in ("cpu", "cuda"):
        from dynbench.errors import DynbenchError

        raise DynbenchError(f"doctor runs on cpu or cuda, not {device}")
    import torch

    snap = envmod.snapshot(device, torch.bfloat16 if device == "cuda" else torch.float32, "sdpa")
    snap["env_id"] = envmod.env_id(snap)
    checks = []
    with tempfile.TemporaryDirectory(prefix="dynbench-doctor-") as tmp:
        ctx = Context(device, quick, Path(tmp))
        for name, fn in CHECKS.items():
            if only and name not in only:
                continue
            t0 = time.perf_counter()
            try:
                status, detail = PASS, fn(ctx)
            except Skip as exc:
                status, detail = SKIP, str(exc)
            except Exception as exc:  # noqa: BLE001 — a failing check is a result, not a crash
                status = FAIL
                where = traceback.extract_tb(exc.__traceback__)[-1]
                detail = f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
            result = DoctorCheck(name, status, detail, round(time.perf_counter() - t0, 2))
            checks.append(result)
            if on_check is not None:
                on_check(result)
    return DoctorReport(checks, snap)
