"""Latency: raw per-region samples, their statistics, and the GPU clock state around them.

- `LatencyTracker` times named regions. On CUDA it records a pair of `torch.cuda.Event`s on the
  current stream per region and never synchronizes inside the loop; `result()` synchronizes once
  and reads `elapsed_time`. Events time one stream only: host work inside a region (Python
  pruning logic, `.item()` syncs) shows up as GPU idle time inside the window, which is real cost.
  On CPU (and meta) it uses `time.perf_counter_ns` (`timer == "cpu"`).
  Warm-up runs are simply not tracked (or dropped with `reset()`).
- `latency_columns()` (statistics from `dynbench.stats`, torch-free) turns the
  per-run step samples and region samples of one point into its record columns — a pure
  function of lists, tested on lists.
- `Regions` lets a model's named regions through to a tracker: by default only the coarse ones
  (`COARSE_REGIONS`: vision tower, projector, LLM prefill — a few event pairs per run, none inside a
  decode step); `--regions` / `dynbench profile` let every region through (predictors, token drop,
  per-layer scoring, LM head), which adds event pairs inside every step.
- `ClockMonitor` watches the SM clock and throttling *while* a region runs (NVML's accumulated
  violation counters before/after, and clocks-event reasons sampled in a thread, each quantity
  read on its own); `throttled` flags numbers taken while a power or thermal limit held the clocks
  down. It does not lock clocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from dynbench.measure.env import nvml_handle, nvml_why, warn_once
from dynbench.measure.poll import NVML_POLL_INTERVAL_S, Poller
from dynbench.names import DECODE_PHASE, FORWARD_PHASE, PHASES, PREFILL_PHASE, REGIONS
from dynbench.stats import median_or_none as _median
from dynbench.stats import summarize


class _Region:
    """Handle of one tracked region; `discard()` inside it drops the sample (e.g. the call that
    found a step generator exhausted, which is not a step)."""

    discarded = False

    def discard(self) -> None:
        self.discarded = True


class LatencyTracker:
    """Times named regions: `with tracker.track("decode_step"): …`, then `tracker.result()`."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._values: dict[str, list[float]] = {}
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []
        self._host: dict[str, list[float]] = {}  # CUDA only: wall ms until each region's last launch returned

    @property
    def timer(self) -> str:
        return "cuda_event" if self.device.type == "cuda" else "cpu"

    @contextmanager
    def track(self, name: str) -> Iterator[_Region]:
        region = _Region()
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter_ns()
            start.record(stream)
            yield region
            if region.discarded:
                return
            end.record(stream)  # no sync: the launch queue keeps running
            # host time: until the region's last launch returned (measure/host.py: the host-bound signal)
            self._host.setdefault(name, []).append((time.perf_counter_ns() - t0) / 1e6)
            self._values.setdefault(name, [])  # keeps first-call order of names
            self._pending.append((name, start, end))
        else:
            t0 = time.perf_counter_ns()
            yield region
            elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
            if not region.discarded:
                self._values.setdefault(name, []).append(elapsed_ms)

    def result(self) -> dict[str, list[float]]:
        """Milliseconds per region name, in call order. On CUDA: one synchronize, then read."""
        if self._pending:
            torch.cuda.synchronize(self.device)
            for name, start, end in self._pending:
                self._values[name].append(start.elapsed_time(end))
            self._pending.clear()
        return {name: list(values) for name, values in self._values.items()}

    def host_result(self) -> dict[str, list[float]]:
        """CUDA: host milliseconds per region name, in call order (no sync needed); {} on CPU, where
        execution is synchronous and host time is the time."""
        return {name: list(values) for name, values in self._host.items()}

    def reset(self) -> None:
        """Forget all samples (e.g. after warm-up). Pending CUDA events are dropped unread."""
        self._values.clear()
        self._pending.clear()
        self._host.clear()


# Regions timed while headline latency is measured: a few event pairs per run, outside the
# decode steps. The rest (predictors, token drop, scoring, KV eviction, LM head) sit inside every
# step and are timed only on request (`--regions`, `dynbench profile`).
COARSE_REGIONS = frozenset({"vision_tower", "projector", "llm_prefill"})
assert COARSE_REGIONS <= set(REGIONS)


class Regions:
    """What a model's `region(name)` calls reach: `tracker.track(name)` for the names let through
    (`names` None = every region), a no-op for the rest."""

    def __init__(self, tracker, names: frozenset[str] | None = COARSE_REGIONS):
        self.tracker, self.names = tracker, names

    def track(self, name: str):
        if self.names is None or name in self.names:
            return self.tracker.track(name)
        return nullcontext()


def _per_run_sum(regions: Sequence[Mapping[str, Sequence[float]]], name: str) -> list[float] | None:
    """Σ of one region's calls in each run; None when the region was not timed in some run."""
    if not regions or any(name not in run for run in regions):
        return None
    return [math.fsum(run[name]) for run in regions]


LATENCY_SAMPLE_COLUMNS = ("latency_ms_samples", "ttft_ms_samples", "total_ms_samples")


def latency_columns(phases: Sequence[str], step_ms: Sequence[Sequence[float]],
                    regions: Sequence[Mapping[str, Sequence[float]]] = (), *, headline: str) -> dict:
    """The latency columns of one point, from its raw samples (docs/measurement.md).

    `phases[i]`: the phase of step i (`modes.Step.phase`; every run has the same steps), `step_ms[r][i]`:
    milliseconds of step i of measured run r. `regions[r][name]`: milliseconds of each call of region
    `name` in run r (absent = not timed). `headline`: the mode's headline phase (`modes.HEADLINE_PHASE`).
    Definitions (which steps make which column: `modes.HEADLINE_PHASE`'s comment):

    * `ttft_ms` (a run opening with a prefill) = median over runs of the run's step 0; `ttft_ms_samples` them;
    * `tpot_ms_*` over the decode steps of every run (a conversation's next-turn prefills are not decode steps);
    * `step_ms_*` over the forwards (no-cache) of every run;
    * `total_ms` = median over runs of Σ steps of the run; `total_ms_samples` them;
    * `latency_ms_samples` = the headline samples, the steps of the `headline` phase: TTFTs (prefill),
      decode steps (kv-cache), forwards (no-cache); `latency_cv` their std / mean (None below 2 samples);
    * `vision_ms` = median over every vision pass of vision tower + projector; `llm_prefill_ms` =
      median over runs of the LLM part of the prefill; `scoring_ms` = median over runs of Σ of the
      run's `scoring` calls (baselines' attention scoring; timed only with every region).
    """
    if not step_ms or not step_ms[0]:
        raise ValueError("latency_columns() needs at least one run with at least one step")
    if any(len(run) != len(phases) for run in step_ms):
        raise ValueError(f"runs of one point differ in steps: {[len(run) for run in step_ms]} ({len(phases)} phases)")
    if headline not in PHASES or any(p not in PHASES for p in phases):
        raise ValueError(f"unknown phase in {headline!r} / {sorted(set(phases))}; phases are {PHASES}")
    if regions and len(regions) != len(step_ms):
        raise ValueError(f"{len(regions)} region records for {len(step_ms)} runs")
    cols: dict = dict.fromkeys(("ttft_ms", "vision_ms", "llm_prefill_ms", "tpot_ms_median", "tpot_ms_p90",
                                "tpot_ms_p99", "step_ms_median", "step_ms_p90", "total_ms", "latency_cv",
                                "scoring_ms", *LATENCY_SAMPLE_COLUMNS))
    totals = [math.fsum(run) for run in step_ms]
    cols.update(total_ms=_median(totals), total_ms_samples=totals)
    vision = [t + p for run in regions
              for t, p in zip(run.get("vision_tower", ()), run.get("projector", ()), strict=True)]
    cols["vision_ms"] = _median(vision)
    scoring = _per_run_sum(regions, "scoring")
    cols["scoring_ms"] = _median(scoring) if scoring is not None else None
    of_phase = {p: [x for run in step_ms for x, q in zip(run, phases, strict=True) if q == p] for p in PHASES}
    if phases[0] == PREFILL_PHASE:
        ttft = [run[0] for run in step_ms]
        cols.update(ttft_ms=_median(ttft), ttft_ms_samples=ttft)
        llm = _per_run_sum(regions, "llm_prefill")
        cols["llm_prefill_ms"] = _median(llm) if llm is not None else None
    if of_phase[DECODE_PHASE]:
        stats = summarize(of_phase[DECODE_PHASE])
        cols.update(tpot_ms_median=stats.median, tpot_ms_p90=stats.p90, tpot_ms_p99=stats.p99)
    if of_phase[FORWARD_PHASE]:
        stats = summarize(of_phase[FORWARD_PHASE])
        cols.update(step_ms_median=stats.median, step_ms_p90=stats.p90)
    samples = cols["ttft_ms_samples"] if headline == PREFILL_PHASE else of_phase[headline]
    cols["latency_ms_samples"] = samples or None
    cols["latency_cv"] = summarize(samples).cv if samples and len(samples) > 1 else None
    return cols


# NVML clocks-event reason bits (nvml.h `nvmlClocksEventReason*`, formerly `…ThrottleReason*`)
# that mean a power or thermal limit held the clocks below what the workload asked for. Not
# counted: GpuIdle (0x1; normal between kernels when decode is launch-bound),
# ApplicationsClocksSetting (0x2; clocks set on purpose), SyncBoost (0x10) and
# DisplayClockSetting (0x100).
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
# NVML performance policies whose accumulated violation time (ns since the driver loaded) grows
# while that limit holds the clocks down (`nvmlDeviceGetViolationStatus`). All are recorded; only
# power and thermal mark a point throttled: board-limit and reliability counters grow on healthy
# boards (an H200 accrues them at idle), and gating on them made every point "throttled" — and the
# doctor's injected-regression check blind.
VIOLATION_POLICIES = {0: "power", 1: "thermal", 3: "board_limit", 5: "reliability"}
GATING_VIOLATIONS = ("power", "thermal")


@dataclass(frozen=True)
class ClockResult:
    sm_clock_mhz_start: int | None  # None: the SM clock query is unsupported here (see `unavailable`)
    sm_clock_mhz_end: int | None
    sm_clock_mhz_median: int | None  # over the samples taken while the region ran
    clock_event_reasons: int | None  # raw NVML bitmask, OR of every sample (None: unsupported)
    throttle_reasons: tuple[str, ...]  # names of the THROTTLE_REASONS bits set, and of power / thermal violations
    throttled: bool | None  # None: neither the reasons nor a power / thermal counter could be read
    violation_ms: dict[str, float] | None = None  # per policy, accrued during the region (None: unsupported)
    unavailable: dict[str, str] = field(default_factory=dict)  # quantity → why it is missing


class ClockMonitor:
    """SM clock and throttling while a region runs; `result()` is None without NVML.

    Two sources, both taken while the work runs (never only at the region's ends, where a
    synchronize leaves the GPU idle and its clocks say nothing about the work):
    * NVML's accumulated violation counters (`nvmlDeviceGetViolationStatus`: nanoseconds a power,
      thermal, board or reliability limit held the clocks down) read before and after: growth of
      the power or thermal counter means the region was throttled, however briefly (the others are
      recorded in `violation_ms`, not gating);
    * the clocks-event reasons and the SM clock sampled every `NVML_POLL_INTERVAL_S` in a thread
      (`Poller`): the OR of every sample's reasons, and the median clock (`sm_clock_mhz`).
    Each quantity is read on its own: a sandbox answering `NotSupported` / `NoPermission` for one
    (say the reasons) leaves the others measured, and `unavailable` names what is missing and why.
    Drivers before R535 lack the clocks-event call though nvidia-ml-py 12+ exposes it (NVML answers
    FunctionNotFound): the throttle-reasons call is used instead. Clocks are not locked.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._handle = nvml_handle(self.device)  # None on CPU/meta, or when NVML is unavailable
        self._result: ClockResult | None = None
        self._reasons_call = None
        self._unavailable: dict[str, str] = {}

    def _reasons(self, handle) -> int:
        import pynvml

        if self._reasons_call is None:  # first query: the clocks-event call where the binding has it
            self._reasons_call = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        try:
            return int(self._reasons_call(handle))
        except pynvml.NVMLError_FunctionNotFound:  # a pre-R535 driver: the throttle-reasons call
            self._reasons_call = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
            return int(self._reasons_call(handle))

    def _read(self, quantity: str, call) -> int | None:
        """One NVML quantity, or None once NVML refused it (remembered with the reason, warned once)."""
        import pynvml

        if quantity in self._unavailable:
            return None
        try:
            return int(call())
        except pynvml.NVMLError as exc:
            self._unavailable[quantity] = nvml_why(exc)
            warn_once(f"NVML {quantity} unavailable ({nvml_why(exc)}); its columns will be null.")
            return None

    def _sample(self) -> tuple[int | None, int | None]:
        import pynvml

        clock = self._read("sm_clock", lambda: pynvml.nvmlDeviceGetClockInfo(self._handle, pynvml.NVML_CLOCK_SM))
        return clock, self._read("clock_event_reasons", lambda: self._reasons(self._handle))

    def _violations(self) -> dict[str, int] | None:
        """Each policy's counter that this GPU / driver / binding supports; None if none is."""
        import pynvml

        counters = {}
        for policy, name in VIOLATION_POLICIES.items():
            try:
                counters[name] = int(pynvml.nvmlDeviceGetViolationStatus(self._handle, policy).violationTime)
            except Exception:  # noqa: BLE001 — NVMLError (not supported), a missing or mismatched binding
                continue
        return counters or None

    @contextmanager
    def track(self) -> Iterator[None]:
        self._result = None
        if self._handle is None:
            yield
            return
        samples: list[tuple[int | None, int | None]] = []
        before = self._violations()
        poller = Poller(lambda: samples.append(self._sample()), NVML_POLL_INTERVAL_S)
        with poller:
            yield
        after = self._violations() if before is not None else None
        if poller.error is not None or not samples:
            warn_once(f"NVML clock query failed ({type(poller.error).__name__}: {poller.error}); "
                      "`throttled` will be null.")
            self._handle = None
            return
        self._result = _clock_result(samples, before, after, dict(self._unavailable))

    def result(self) -> ClockResult | None:
        return self._result


def _clock_result(samples, before: dict | None, after: dict | None, unavailable: dict[str, str]) -> ClockResult:
    """The region's clock state from its samples (None entries: unsupported) and counters."""
    clocks = [c for c, _ in samples if c is not None]
    bits = [r for _, r in samples if r is not None]
    reasons = None
    if bits:
        reasons = 0
        for b in bits:
            reasons |= b
    names = [name for bit, name in THROTTLE_REASONS.items() if reasons and reasons & bit]
    violation_ms = None
    if before is not None and after is not None:
        violation_ms = {k: (after[k] - before[k]) / 1e6 for k in before if k in after}
        names += [f"{k}_violation" for k in GATING_VIOLATIONS if violation_ms.get(k, 0) > 0]
    else:
        unavailable.setdefault("violation_counters", "no policy's counter answered")
    gating_read = reasons is not None or any(k in (violation_ms or {}) for k in GATING_VIOLATIONS)
    return ClockResult(
        sm_clock_mhz_start=clocks[0] if clocks else None, sm_clock_mhz_end=clocks[-1] if clocks else None,
        sm_clock_mhz_median=int(_median(clocks)) if clocks else None, clock_event_reasons=reasons,
        throttle_reasons=tuple(names), throttled=bool(names) if gating_read else None, violation_ms=violation_ms,
        unavailable=unavailable,
    )
