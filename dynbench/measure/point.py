"""Measure one point: warm-up, the timed runs, memory, clocks — what happened, as typed data.

`measure_point` runs the point's mode `warmup` times unrecorded, then `repeats` times with one
`LatencyTracker` per run timing every step (CUDA events, no host sync inside the loop; CPU
`perf_counter`) and the model's regions (`Regions`: coarse ones only unless `spec.regions`),
inside the clock monitor, the energy counter and — where it costs nothing (CUDA) — the memory
tracker. On CPU memory
is measured in one more, untimed run (the profiler would slow the timed ones), and every device
counts its kernel-launching ops per step in one more (`measure/launches.py`). The samples are
read once at the end (one synchronize on CUDA). `plan_point` is the `meta` analogue: the steps
the counting rules give, nothing timed.

What it does not do: count FLOPs or build rows (`rows.py`), or catch errors (`sweep.py`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from dynbench.measure.energy import EnergyMeter
from dynbench.measure.latency import COARSE_REGIONS, ClockMonitor, ClockResult, LatencyTracker, Regions
from dynbench.measure.launches import count_launches
from dynbench.measure.memory import MemoryResult, MemoryTracker, tensor_bytes
from dynbench.modes import ModeResult, plan_mode, run_mode
from dynbench.names import DTYPE_BYTES


@dataclass(frozen=True)
class PointMeasurement:
    """Everything one point measured. On `meta` only `runs` (one planned run) is set."""

    runs: list[ModeResult]  # one per measured run, in order
    step_ms: list[list[float]] | None = None  # [run][step]
    regions: list[dict[str, list[float]]] | None = None  # [run] region name → ms of each call
    timer: str | None = None  # "cuda_event" | "cpu"
    memory: MemoryResult | None = None
    clock: ClockResult | None = None
    energy_j: float | None = None  # NVML, over all measured runs (CUDA)
    # GPU first contact: host time per step, kernel launches, why NVML figures are missing
    host_ms: list[list[float]] | None = None  # [run][step], CUDA only (measure/host.py)
    ops_per_step: list[int] | None = None  # kernel-launching ops of each step of one untimed run
    nvml_unavailable: dict[str, str] | None = None  # NVML quantity → why it is null


def plan_point(spec, preset) -> PointMeasurement:
    """The steps of a `meta` point from the counting rules (budget policy)."""
    planned = plan_mode(preset, spec.method, spec.mode, spec.prompt_len, spec.gen_len or 1, spec.drop,
                        bool(spec.reuse_vision), spec.batch, DTYPE_BYTES[spec.dtype], spec.attn)
    return PointMeasurement(runs=[planned])


def measure_point(spec, net, inputs, memory: MemoryTracker, weights_bytes: int) -> PointMeasurement:
    """Warm up, time `spec.repeats` runs, measure memory; `inputs` are already on the device."""
    args = (spec.mode, net, inputs, spec.drop, spec.gen_len or 1, bool(spec.reuse_vision))
    for _ in range(spec.warmup):
        run_mode(*args)
    clock, energy = ClockMonitor(spec.device), EnergyMeter(spec.device)
    names = None if spec.regions else COARSE_REGIONS
    runs: list[ModeResult] = []
    trackers: list[LatencyTracker] = []
    delay = (spec.debug_decode_delay_ms or 0.0) / 1000.0
    with clock.track(), energy.track(), (nullcontext() if memory.needs_own_run else memory.track()):
        for _ in range(spec.repeats):
            tracker = LatencyTracker(spec.device)  # one per run: samples stay per run
            net.regions = Regions(tracker, names)
            try:
                runs.append(run_mode(*args, step_timer=tracker, decode_delay_s=delay))
            finally:
                net.regions = None
            trackers.append(tracker)
    if memory.needs_own_run:
        live = weights_bytes + tensor_bytes(inputs.input_ids, inputs.pixel_values, inputs.answer_ids)
        with memory.track(live_bytes=live):
            run_mode(*args)
    timings = [t.result() for t in trackers]  # CUDA: one synchronize, then every event is read
    step_ms = [t.pop("step") for t in timings]
    hosts = [t.host_result().get("step") for t in trackers]
    ops = count_launches(*args)  # untimed: the dispatch mode's own overhead never reaches a timing
    return PointMeasurement(runs, step_ms, timings, trackers[0].timer, memory.result(), clock.result(),
                            energy.joules, host_ms=hosts if all(hosts) else None, ops_per_step=ops,
                            nvml_unavailable=_nvml_unavailable(memory.result(), clock.result(), energy))


def _nvml_unavailable(memory: MemoryResult, clock: ClockResult | None, energy: EnergyMeter) -> dict[str, str] | None:
    """Every NVML quantity this point could not read, and why (a CUDA row's nulls explained)."""
    why = dict(clock.unavailable) if clock is not None else {}
    if memory.nvml_unavailable:
        why["memory"] = memory.nvml_unavailable
    if energy.unavailable:
        why["energy"] = energy.unavailable
    return why or None
