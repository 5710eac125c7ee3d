"""Latency: raw per-region samples, their statistics, and the GPU clock state around them.

- `LatencyTracker` times named regions. On CUDA it records a pair of `torch.cuda.Event`s on the
  current stream per region and never synchronizes inside the loop; `result()` synchronizes once
  and reads `elapsed_time`. Events time one stream only: host work inside a region (Python
  pruning logic, `.item()` syncs) shows up as GPU idle time inside the window, which is real cost.
  On CPU (and meta) it uses `time.perf_counter_ns` (`timer == "cpu"`).
  Warm-up runs are simply not tracked (or dropped with `reset()`).
- `summarize()` turns raw samples into `LatencyStats` (pytest-benchmark style: statistics are
  derived from the kept samples, never measured directly).
- `ClockMonitor` reads the SM clock and NVML clocks-event ("throttle") reasons before and after a
  region; `throttled` flags numbers taken while a power or thermal limit held the clocks down.
  It does not lock clocks and samples only at the two ends of the region.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from dynbench.measure.env import nvml_handle, warn_once


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of raw samples, in the samples' unit (ms throughout dynbench)."""

    n: int
    median: float
    p90: float
    p99: float
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for a single sample
    cv: float  # std / mean
    min: float
    max: float

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Record columns, e.g. `as_dict("tpot_ms")` -> {"tpot_ms_median": …, "tpot_ms_p90": …}."""
        return {f"{prefix}_{f.name}": getattr(self, f.name) for f in dataclasses.fields(self)}


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default `method="linear"`)."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values_ms: Sequence[float]) -> LatencyStats:
    """Statistics of raw samples; raises ValueError on an empty sequence."""
    values = sorted(float(v) for v in values_ms)
    n = len(values)
    if n == 0:
        raise ValueError("summarize() needs at least one sample")
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    cv = std / mean if mean != 0 else (0.0 if std == 0 else math.nan)
    return LatencyStats(
        n=n, median=_percentile(values, 0.5), p90=_percentile(values, 0.9),
        p99=_percentile(values, 0.99), mean=mean, std=std, cv=cv, min=values[0], max=values[-1],
    )


class LatencyTracker:
    """Times named regions: `with tracker.track("decode_step"): …`, then `tracker.result()`."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._values: dict[str, list[float]] = {}
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def timer(self) -> str:
        return "cuda_event" if self.device.type == "cuda" else "cpu"

    @contextmanager
    def track(self, name: str) -> Iterator[None]:
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            yield
            end.record(stream)  # no sync: the launch queue keeps running
            self._values.setdefault(name, [])  # keeps first-call order of names
            self._pending.append((name, start, end))
        else:
            t0 = time.perf_counter_ns()
            yield
            elapsed_ms = (time.perf_counter_ns() - t0) / 1e6
            self._values.setdefault(name, []).append(elapsed_ms)

    def result(self) -> dict[str, list[float]]:
        """Milliseconds per region name, in call order. On CUDA: one synchronize, then read."""
        if self._pending:
            torch.cuda.synchronize(self.device)
            for name, start, end in self._pending:
                self._values[name].append(start.elapsed_time(end))
            self._pending.clear()
        return {name: list(values) for name, values in self._values.items()}

    def reset(self) -> None:
        """Forget all samples (e.g. after warm-up). Pending CUDA events are dropped unread."""
        self._values.clear()
        self._pending.clear()


# NVML clocks-event reason bits (nvml.h `nvmlClocksEventReason*`, formerly `…ThrottleReason*`)
# that mean a limit held the clocks below what the workload asked for. Not counted: GpuIdle
# (0x1; normal between kernels when decode is launch-bound), ApplicationsClocksSetting (0x2;
# clocks set on purpose), SyncBoost (0x10) and DisplayClockSetting (0x100).
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}


@dataclass(frozen=True)
class ClockResult:
    sm_clock_mhz_start: int
    sm_clock_mhz_end: int
    clock_event_reasons: int  # raw NVML bitmask, OR of the two readings
    throttle_reasons: tuple[str, ...]  # names of the THROTTLE_REASONS bits set
    throttled: bool


class ClockMonitor:
    """SM clock and clocks-event reasons around a region; `result()` is None without NVML.

    The end reading is taken when the host leaves the region, typically while the GPU is still
    busy with queued work, which is what we want (after a sync the GPU idles and may clock down).
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._handle = nvml_handle(self.device)  # None on CPU/meta, or when NVML is unavailable
        self._start: tuple[int, int] | None = None
        self._result: ClockResult | None = None

    def _read(self) -> tuple[int, int] | None:
        if self._handle is None:
            return None
        try:
            import pynvml

            clock = pynvml.nvmlDeviceGetClockInfo(self._handle, pynvml.NVML_CLOCK_SM)
            get_reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            if get_reasons is None:  # nvidia-ml-py < 12.535: the "throttle" name only
                get_reasons = pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
            return int(clock), int(get_reasons(self._handle))
        except Exception as exc:  # NVMLError, or an old binding without either function
            warn_once(f"NVML clock query failed ({type(exc).__name__}: {exc}); "
                      "`throttled` will be null.")
            self._handle = None
            return None

    @contextmanager
    def track(self) -> Iterator[None]:
        self._result = None
        start = self._read()
        yield
        end = self._read()
        if start is not None and end is not None:
            reasons = start[1] | end[1]
            names = tuple(name for bit, name in THROTTLE_REASONS.items() if reasons & bit)
            self._result = ClockResult(start[0], end[0], reasons, names, bool(names))

    def result(self) -> ClockResult | None:
        return self._result
