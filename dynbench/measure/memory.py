"""Memory: allocator peaks, NVML process memory, CPU RSS, and logical byte counts.

On CUDA, `MemoryTracker.track()` synchronizes and resets the allocator peak *before* the region,
synchronizes after it, then reads `max_memory_allocated` / `max_memory_reserved` (exact; the
headline `peak_mem_bytes` is the allocated peak, `mem_source = "torch_allocator"`). NVML memory
(includes the CUDA context, cuBLAS workspaces and allocator slack) is polled every ~10 ms in a
thread, so short peaks can be missed; it is per-process when this PID is visible to the driver,
otherwise device-global used memory minus a baseline taken once per process right after CUDA
initialised (`process_baseline`: the CUDA context is in it for every model alike; other
processes on the GPU leak into the figure). A polling failure makes the NVML figures null.

On CPU there is no allocator with peak statistics, so `track()` records the allocator's
memory events with `torch.profiler` (`profile_memory=True`): `peak_tensor_bytes` = the tensor
bytes already live when the region starts (`live_bytes`: the weights and inputs) + the peak of
the running sum of allocations minus frees inside it — per point, reset for every region, exact
for tensors (the headline `peak_mem_bytes`, `mem_source = "cpu_tensors"`). The profiler slows
the work down, so on CPU memory is measured in a run of its own, never around timed runs
(`MemoryTracker.needs_own_run`). The process RSS is sampled in a thread as a secondary,
approximate column (`peak_rss_bytes`: absolute, Python and torch included, and the allocator
keeps freed pages, so it mostly grows through a sweep).
On `meta` nothing is measured. `kv_bytes` and `weights_bytes` are logical counts from shapes.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from dynbench.measure.env import nvml_handle, nvml_why, warn_once
from dynbench.measure.native_stderr import profiler_stderr_filtered
from dynbench.measure.poll import NVML_POLL_INTERVAL_S, Poller


@dataclass(frozen=True)
class MemoryResult:
    """Peaks over one tracked region, in bytes; None = not measured on this device."""

    peak_alloc_bytes: int | None
    peak_reserved_bytes: int | None
    nvml_process_bytes: int | None
    nvml_source: str | None  # "process" | "global-minus-baseline" | None
    nvml_global_bytes: int | None  # device-global used memory (all processes), peak
    peak_rss_bytes: int | None
    peak_mem_bytes: int | None  # headline: peak_alloc_bytes on CUDA, peak_tensor_bytes on CPU
    mem_source: str | None  # "torch_allocator" | "cpu_tensors" | None
    peak_tensor_bytes: int | None = None  # CPU: live tensors + the profiled allocation peak
    nvml_unavailable: str | None = None  # why the NVML figures are null on CUDA (the NVML error)


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc), else the lifetime max RSS."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB else


class MemoryTracker:
    """`with mem.track(): …` then `mem.result()`; one region per result."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._result: MemoryResult | None = None
        self._nvml = nvml_handle(self.device)  # None off CUDA or without NVML
        self._baseline: int | None = None
        if self._nvml is not None:
            self._baseline = process_baseline(self.device, self._nvml)
            if self._baseline is None:
                self._nvml = None

    @property
    def needs_own_run(self) -> bool:
        """True where tracking slows the tracked work (CPU: the profiler), so it must not wrap
        timed runs; on CUDA the allocator keeps its peak for free."""
        return self.device.type == "cpu"

    @contextmanager
    def track(self, live_bytes: int = 0) -> Iterator[None]:
        """`live_bytes`: tensor bytes live before the region (CPU; the allocator knows it on CUDA)."""
        self._result = None
        if self.device.type == "cuda":
            with self._track_cuda():
                yield
        elif self.device.type == "cpu":
            with self._track_cpu(live_bytes):
                yield
        else:  # meta: shapes only, nothing to measure
            yield
            self._result = MemoryResult(None, None, None, None, None, None, None, None)

    @contextmanager
    def _track_cpu(self, live_bytes: int) -> Iterator[None]:
        from torch.profiler import ProfilerActivity, profile

        peak = [0]

        def sample() -> None:
            peak[0] = max(peak[0], rss_bytes())

        with profiler_stderr_filtered(), Poller(sample), \
                profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            yield
        allocated = profiled_peak_bytes(prof)
        tensors = None if allocated is None else live_bytes + allocated
        self._result = MemoryResult(
            peak_alloc_bytes=None, peak_reserved_bytes=None, nvml_process_bytes=None,
            nvml_source=None, nvml_global_bytes=None, peak_rss_bytes=peak[0],
            peak_mem_bytes=tensors, mem_source=None if tensors is None else "cpu_tensors",
            peak_tensor_bytes=tensors,
        )

    @contextmanager
    def _track_cuda(self) -> Iterator[None]:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        nvml = _NvmlPeaks(self._nvml) if self._nvml is not None else None
        with Poller(nvml.sample, NVML_POLL_INTERVAL_S) if nvml is not None else nullcontext() as poller:
            yield
            torch.cuda.synchronize(self.device)  # the region's kernels are done before reading
        failed = poller is not None and poller.error is not None
        why = nvml_why(poller.error) if failed else None
        if failed:  # a peak over part of the region is not the region's peak: null, never partial
            warn_once(f"NVML memory polling failed ({poller.error}); NVML figures are null.")
        alloc = int(torch.cuda.max_memory_allocated(self.device))
        reserved = int(torch.cuda.max_memory_reserved(self.device))
        process = source = global_peak = None
        if nvml is not None and not failed:
            global_peak = nvml.global_peak
            if nvml.process_peak is not None:
                process, source = nvml.process_peak, "process"
            elif global_peak is not None and self._baseline is not None:
                process, source = global_peak - self._baseline, "global-minus-baseline"
                if process < reserved:  # another process freed memory meanwhile: the figure means nothing
                    warn_once("NVML global-minus-baseline fell below the allocator's reserved bytes (another "
                              "process on the GPU?); nvml_process_bytes is null.")
                    process = source = None
        self._result = MemoryResult(
            peak_alloc_bytes=alloc, peak_reserved_bytes=reserved, nvml_process_bytes=process,
            nvml_source=source, nvml_global_bytes=global_peak, peak_rss_bytes=None,
            peak_mem_bytes=alloc, mem_source="torch_allocator", nvml_unavailable=why,
        )

    def result(self) -> MemoryResult:
        if self._result is None:
            raise RuntimeError("MemoryTracker.result() called before a completed track() region")
        return self._result


_BASELINES: dict[str, int] = {}  # device → NVML used memory after CUDA init, before any model


def process_baseline(device: torch.device, handle) -> int | None:
    """Device-global used memory once per process, right after CUDA initialised (so the CUDA
    context is inside it for every model, not only the first): what the container fallback
    (`global-minus-baseline`, when NVML hides this PID) subtracts. None when NVML fails."""
    import pynvml

    key = str(device)
    if key not in _BASELINES:
        try:
            torch.cuda.init()  # initialise CUDA (and its context) first
            torch.cuda.synchronize(device)
            # what the allocator already holds is this process's and counted by every point:
            # the baseline is the rest (context, other processes)
            _BASELINES[key] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).used) - int(torch.cuda.memory_reserved(device))
        except (pynvml.NVMLError, RuntimeError) as exc:
            warn_once(f"NVML memory query failed ({exc}); NVML memory figures will be null.")
            return None
    return _BASELINES[key]


def profiled_peak_bytes(prof) -> int | None:
    """Peak of Σ allocations − frees, in time order, over the CPU memory events a finished
    `torch.profiler.profile(profile_memory=True)` recorded (0 = nothing beyond the start).

    Reads the raw kineto events: `prof.events()` attaches memory events to operators and loses
    allocations made outside any operator. None (with a warning) if this torch lacks them.
    """
    try:
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    except (AttributeError, RuntimeError) as exc:
        warn_once(f"torch.profiler memory events unreadable ({exc}); CPU tensor memory will be null.")
        return None
    running = peak = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        running += nbytes
        peak = max(peak, running)
    return peak


def tensor_bytes(*tensors: torch.Tensor | None) -> int:
    """Bytes of the given tensors' data (None skipped)."""
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class _NvmlPeaks:
    """Max of this PID's NVML used memory (None while the PID is invisible) and of global used."""

    def __init__(self, handle):
        self.handle = handle
        self.pid = os.getpid()
        self.process_peak: int | None = None
        self.global_peak: int | None = None
        self.processes_unsupported = False

    def sample(self) -> None:
        import pynvml

        used = int(pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)  # a failure here ends sampling
        self.global_peak = used if self.global_peak is None else max(self.global_peak, used)
        if self.processes_unsupported:
            return
        try:  # per-process attribution may be unsupported (sandboxes, containers): global goes on
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:  # noqa: BLE001 — NVMLError, or a binding / driver mismatch
            self.processes_unsupported = True
            return
        for proc in processes:
            # usedGpuMemory is None where the driver cannot attribute memory (e.g. WDDM)
            if proc.pid == self.pid and proc.usedGpuMemory is not None:
                mem = int(proc.usedGpuMemory)
                self.process_peak = max(mem, self.process_peak or 0)


def weights_bytes(module: torch.nn.Module) -> int:
    """Bytes of parameters + buffers (shared tensors once); works on meta tensors."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
