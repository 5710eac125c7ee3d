import os
import time
import warnings
from types import SimpleNamespace

import pynvml
import pytest
import torch

from dynbench.measure import env, memory
from dynbench.measure.memory import MemoryTracker, rss_bytes, weights_bytes
from dynbench.models.rules import kv_bytes


def test_kv_bytes_hand_count():
    # 3 layers cached 10, 10, 4 tokens; 8 kv heads x 128 dims in fp16, batch 2
    expected = 2 * (10 + 10 + 4) * 8 * 128 * 2 * 2
    assert kv_bytes([10, 10, 4], kv_heads=8, head_dim=128, element_bytes=2, batch=2) == expected
    assert kv_bytes([], 8, 128, 4, 1) == 0


def test_weights_bytes_meta_linear():
    lin = torch.nn.Linear(1024, 512, device="meta", dtype=torch.bfloat16)
    assert weights_bytes(lin) == (1024 * 512 + 512) * 2
    norm = torch.nn.BatchNorm1d(16)  # buffers count too: running mean/var (fp32) + counter (int64)
    assert weights_bytes(norm) == 2 * 16 * 4 + 2 * 16 * 4 + 8


def test_cpu_tracker_counts_tensor_peak_and_samples_rss():
    mem = MemoryTracker("cpu")
    assert mem.needs_own_run  # the profiler must not wrap timed runs
    mib = 2**20
    with mem.track(live_bytes=1000):
        a = torch.ones(64 * mib, dtype=torch.uint8)  # 64 MiB, touched
        b = torch.ones(32 * mib, dtype=torch.uint8)
        during = rss_bytes()
        time.sleep(0.05)  # several RSS polls while both are resident
        del a  # peak so far: 96 MiB
        c = torch.ones(16 * mib, dtype=torch.uint8)  # live: 48 MiB < the peak
        del b, c
    r = mem.result()
    # the peak of live tensor bytes, by hand: what was live before + 64 + 32 MiB
    assert r.peak_tensor_bytes == 1000 + 96 * mib
    assert r.mem_source == "cpu_tensors" and r.peak_mem_bytes == r.peak_tensor_bytes
    with mem.track():  # a new region starts from zero: the earlier peak is not carried over
        d = torch.ones(8 * mib, dtype=torch.uint8)
        del d
    assert mem.result().peak_tensor_bytes == 8 * mib
    assert r.peak_rss_bytes >= during - 2 * mib  # the secondary RSS sampler saw the resident blocks
    assert r.peak_alloc_bytes is None and r.nvml_process_bytes is None and r.nvml_source is None


def test_cpu_tracker_quiets_kineto(capfd):
    mem = MemoryTracker("cpu")
    with mem.track():
        torch.ones(10)
    err = capfd.readouterr().err
    assert "USDT" not in err


def test_meta_measures_nothing_and_result_needs_track():
    mem = MemoryTracker("meta")
    with pytest.raises(RuntimeError):
        mem.result()
    with mem.track():
        pass
    assert mem.result().peak_mem_bytes is None and mem.result().mem_source is None


class FakeAllocator:
    """The CUDA caching allocator's peak semantics: `reset_peak_memory_stats` sets the peak to the
    memory allocated right now (not to 0), `max_memory_*` read the peak since the last reset."""

    def __init__(self, log):
        self.log, self.current, self.peak, self.reserved = log, 0, 0, 0

    def alloc(self, n):
        self.current += n
        self.peak = max(self.peak, self.current)
        self.reserved = max(self.reserved, self.current + 1024)

    def free(self, n):
        self.current -= n

    def reset(self, device=None):
        self.log.append("reset")
        self.peak = self.current

    def max_allocated(self, device=None):
        self.log.append("read")
        return self.peak


def fake_cuda(monkeypatch, log, allocator=None):
    allocator = allocator or FakeAllocator(log)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "init", lambda: log.append("init"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", allocator.reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", allocator.max_allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: allocator.reserved)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    monkeypatch.setattr(memory, "_BASELINES", {})
    return allocator


def test_cuda_peak_is_the_regions_own(monkeypatch):
    """A big temporary freed before the region does not show; weights live throughout do; a
    known allocation inside does, to the byte."""
    log = []
    alloc = fake_cuda(monkeypatch, log)
    monkeypatch.setattr(memory, "nvml_handle", lambda device: None)
    alloc.alloc(100)  # weights
    alloc.alloc(10_000)  # an earlier point's temporary …
    alloc.free(10_000)  # … freed before this point's region
    mem = MemoryTracker("cuda")
    with mem.track():
        alloc.alloc(500)
        alloc.free(500)
        alloc.alloc(30)
    assert mem.result().peak_alloc_bytes == 100 + 500  # not 10_100: the reset came first


def test_cuda_order_reset_region_sync_read(monkeypatch):
    log = []
    alloc = fake_cuda(monkeypatch, log)
    monkeypatch.setattr(memory, "nvml_handle", lambda device: None)
    mem = MemoryTracker("cuda")
    with mem.track():
        log.append("region")
        alloc.alloc(1000)
    assert log == ["sync", "reset", "region", "sync", "read"]
    r = mem.result()
    assert (r.peak_alloc_bytes, r.peak_reserved_bytes, r.peak_mem_bytes) == (1000, 2024, 1000)
    assert r.mem_source == "torch_allocator"
    assert r.nvml_process_bytes is None and r.nvml_source is None and r.peak_rss_bytes is None


def fake_nvml(monkeypatch, used, processes):
    """`used`: device-global used bytes per call; `processes`: what the driver lists."""
    used = iter(used)
    last = [0]

    def memory_info(handle):
        assert handle == "handle", handle  # the device's own handle, not another's
        last[0] = next(used, last[0])
        return SimpleNamespace(used=last[0])

    def running(handle):
        assert handle == "handle", handle
        return processes

    monkeypatch.setattr(memory, "nvml_handle", lambda device: "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", memory_info)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", running)


def test_cuda_nvml_per_process(monkeypatch):
    fake_cuda(monkeypatch, [])
    procs = [SimpleNamespace(pid=1, usedGpuMemory=9 * 2**30),
             SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * 2**30)]
    fake_nvml(monkeypatch, [2**30, 5 * 2**30, 12 * 2**30], procs)
    mem = MemoryTracker("cuda")
    with mem.track():
        pass
    r = mem.result()
    assert (r.nvml_source, r.nvml_process_bytes) == ("process", 3 * 2**30)
    assert r.nvml_global_bytes == 12 * 2**30


def test_cuda_nvml_hidden_pid_falls_back_to_global_minus_baseline(monkeypatch):
    log = []
    fake_cuda(monkeypatch, log)
    fake_nvml(monkeypatch, [2**30, 5 * 2**30, 7 * 2**30, 2 * 2**30, 3 * 2**30],
              [SimpleNamespace(pid=123456789, usedGpuMemory=None)])
    mem = MemoryTracker("cuda")  # baseline: 1 GiB, read after CUDA initialised
    assert log[0] == "init"
    with mem.track():
        pass
    r = mem.result()
    assert (r.nvml_source, r.nvml_process_bytes) == ("global-minus-baseline", 6 * 2**30)
    # the next model's tracker reuses the process baseline (not a new one that would include
    # whatever this point left behind, nor exclude the CUDA context for the first model only)
    again = MemoryTracker("cuda")
    with again.track():
        pass
    assert again.result().nvml_process_bytes == 2 * 2**30 and log.count("init") == 1


def test_cuda_nvml_failure_mid_region_only_warns(monkeypatch):
    fake_cuda(monkeypatch, [])
    fake_nvml(monkeypatch, [2**30], [])

    def broken(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    mem = MemoryTracker("cuda")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", broken)
    monkeypatch.setattr(env, "_warned", set())
    with pytest.warns(RuntimeWarning, match="polling failed"):
        with mem.track():
            pass
    # a peak over part of the region is not its peak: NVML figures null, the allocator's still read
    r = mem.result()
    assert r.peak_alloc_bytes == 0 and r.nvml_process_bytes is None and r.nvml_global_bytes is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_peak_covers_known_tensor():
    n = 256 * 2**20
    mem = MemoryTracker("cuda")
    with mem.track():
        x = torch.empty(n, dtype=torch.uint8, device="cuda")
        del x
    r = mem.result()
    assert r.peak_alloc_bytes >= n and r.peak_reserved_bytes >= r.peak_alloc_bytes
    assert r.mem_source == "torch_allocator"
    assert r.nvml_process_bytes is None or r.nvml_process_bytes >= n


def test_rss_bytes_agrees_with_the_kernel_status():
    """`rss_bytes` against /proc/self/status's VmRSS (kB, an independent report of the same page
    count), and the fallback without /proc: the lifetime max from getrusage, in KiB on Linux."""
    import builtins
    import resource

    def vm_rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    before = vm_rss()
    got = rss_bytes()
    after = vm_rss()
    assert min(before, after) - 2**20 <= got <= max(before, after) + 2**20
    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(builtins, "open", no_proc)
    try:
        fallback = rss_bytes()
    finally:
        monkeypatch.undo()
    assert fallback == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 >= got - 2**20


def test_process_baseline_once_per_process_minus_what_the_allocator_holds(monkeypatch):
    log = []
    fake_cuda(monkeypatch, log)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2**30)  # the allocator holds 1 GiB
    fake_nvml(monkeypatch, [5 * 2**30], [])
    assert memory.process_baseline(torch.device("cuda"), "handle") == 4 * 2**30
    assert memory.process_baseline(torch.device("cuda"), "handle") == 4 * 2**30 and log.count("init") == 1
    assert memory.process_baseline(torch.device("cuda", 1), "handle") == 4 * 2**30  # each device its own
    assert set(memory._BASELINES) == {"cuda", "cuda:1"}


def test_process_baseline_failure_warns_and_disables_nvml(monkeypatch):
    fake_cuda(monkeypatch, [])

    def broken(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(memory, "nvml_handle", lambda device: "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", broken)
    monkeypatch.setattr(env, "_warned", set())
    with pytest.warns(RuntimeWarning, match="NVML memory query failed"):
        mem = MemoryTracker("cuda")
    asked = []
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda handle: asked.append(handle))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NVML is off for this tracker: no polling, no second warning
        with mem.track():
            pass
    assert asked == []
    assert mem.result().nvml_process_bytes is None and mem.result().nvml_global_bytes is None


def test_unsupported_process_list_keeps_the_global_figure(monkeypatch):
    log = []
    fake_cuda(monkeypatch, log)
    calls = []

    def unsupported(handle):
        calls.append(handle)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    fake_nvml(monkeypatch, [2**30, 3 * 2**30, 4 * 2**30], [])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", unsupported)
    mem = MemoryTracker("cuda")
    with mem.track():
        pass
    r = mem.result()
    assert r.nvml_global_bytes == 4 * 2**30 and r.nvml_source == "global-minus-baseline"
    assert len(calls) == 1  # asked once, then not again in that region


def test_profiled_peak_unreadable_warns_and_is_null(monkeypatch):
    class Broken:
        profiler = None  # no kineto results

    monkeypatch.setattr(env, "_warned", set())
    with pytest.warns(RuntimeWarning, match="profiler memory events unreadable"):
        assert memory.profiled_peak_bytes(Broken()) is None


def test_process_baseline_asks_about_its_own_device(monkeypatch):
    """On a multi-GPU box the baseline of cuda:1 must sync and read cuda:1's allocator, not the
    current device's."""
    asked = []
    fake_cuda(monkeypatch, [])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: asked.append(("sync", str(device))))
    monkeypatch.setattr(torch.cuda, "memory_reserved",
                        lambda device=None: asked.append(("reserved", str(device))) or 2**30)
    fake_nvml(monkeypatch, [5 * 2**30], [])
    assert memory.process_baseline(torch.device("cuda", 1), "handle") == 4 * 2**30
    assert asked == [("sync", "cuda:1"), ("reserved", "cuda:1")]
    # and a tracker of cuda:1 asks for cuda:1's baseline
    monkeypatch.setattr(memory, "nvml_handle", lambda device: "handle")
    monkeypatch.setattr(memory, "process_baseline", lambda device, handle: asked.append(("baseline", str(device))))
    MemoryTracker("cuda:1")
    assert asked[-1] == ("baseline", "cuda:1")


def test_rss_fallback_on_macos_is_already_bytes(monkeypatch):
    """getrusage's ru_maxrss is bytes on macOS, KiB on Linux (and the BSDs)."""
    import builtins
    import resource
    import sys

    real_open = builtins.open

    def no_proc(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise OSError("no /proc here")
        return real_open(path, *args, **kwargs)

    class Usage:
        ru_maxrss = 123_456

    monkeypatch.setattr(builtins, "open", no_proc)
    monkeypatch.setattr(resource, "getrusage", lambda who: Usage() if who == resource.RUSAGE_SELF else None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert rss_bytes() == 123_456
    monkeypatch.setattr(sys, "platform", "linux")
    assert rss_bytes() == 123_456 * 1024


def test_profiled_peak_keeps_the_recorded_order_of_simultaneous_events():
    """Events in time order; two with the same timestamp stay in the order the profiler recorded
    them (an allocation then its free is a peak of its size, not zero)."""

    class Event:
        def __init__(self, t, n, name="[memory]"):
            self.t, self.n, self._name = t, n, name

        def start_ns(self):
            return self.t

        def nbytes(self):
            return self.n

        def name(self):
            return self._name

        def device_type(self):
            return torch.autograd.DeviceType.CPU

    class Prof:
        class profiler:  # noqa: N801 — mirrors torch.profiler.profile().profiler
            class kineto_results:  # noqa: N801
                @staticmethod
                def events():
                    return [Event(20, -300), Event(5, 400), Event(5, -400), Event(10, 300),
                            Event(15, 1000, name="aten::mm")]  # not a memory event

    # t=5: +400 then −400 (peak 400), t=10: +300, t=20: −300; sorting by (time, bytes) would give 300
    assert memory.profiled_peak_bytes(Prof()) == 400


def test_memory_result_before_a_region_says_so():
    with pytest.raises(RuntimeError, match=r"^MemoryTracker\.result\(\) called before a completed track\(\) region$"):
        MemoryTracker("cpu").result()


def test_nvml_global_peak_is_the_max_over_the_region_not_the_last_reading(monkeypatch):
    """The peak was seen at the region's start; later samples (polled while it ran, and at its end)
    read less. The figure is the high-water mark, not whatever NVML said last."""
    fake_cuda(monkeypatch, [])
    fake_nvml(monkeypatch, [2**30, 6 * 2**30, 2 * 2**30],
              [SimpleNamespace(pid=123456789, usedGpuMemory=None)])
    mem = MemoryTracker("cuda")  # baseline 1 GiB
    with mem.track():
        time.sleep(0.05)  # several polls of 2 GiB after the 6 GiB one
    r = mem.result()
    assert r.nvml_global_bytes == 6 * 2**30
    assert (r.nvml_source, r.nvml_process_bytes) == ("global-minus-baseline", 5 * 2**30)
