import math
import statistics
import time
import warnings
from types import SimpleNamespace

import numpy as np
import pynvml
import pytest
import torch

from dynbench.measure import env, latency
from dynbench.measure.latency import ClockMonitor, LatencyTracker
from dynbench.stats import summarize

VALUES = [12.0, 10.5, 11.0, 30.0, 10.0, 10.25, 9.75, 11.5, 10.0, 13.0, 10.8]


def test_summarize_matches_numpy_and_statistics():
    s = summarize(VALUES)
    assert s.n == len(VALUES)
    assert s.median == pytest.approx(statistics.median(VALUES))
    assert s.p90 == pytest.approx(np.percentile(VALUES, 90))
    assert s.p99 == pytest.approx(np.percentile(VALUES, 99))
    assert s.mean == pytest.approx(statistics.mean(VALUES))
    assert s.std == pytest.approx(statistics.stdev(VALUES))
    assert s.cv == pytest.approx(statistics.stdev(VALUES) / statistics.mean(VALUES))
    assert (s.min, s.max) == (9.75, 30.0)


def test_summarize_single_and_empty():
    s = summarize([4.0])
    assert (s.median, s.p90, s.p99, s.std, s.cv) == (4.0, 4.0, 4.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"^summarize\(\) needs at least one sample$"):
        summarize([])


def test_summarize_two_samples_and_a_zero_mean():
    s = summarize([1.0, 3.0])
    assert s.std == pytest.approx(math.sqrt(2)) and s.cv == pytest.approx(math.sqrt(2) / 2)  # n − 1 = 1
    assert summarize([0.5, 1.5]).cv == pytest.approx(math.sqrt(0.5))  # a mean of exactly 1 is no special case
    assert summarize([0.0, 0.0]).cv == 0.0  # no spread around zero
    assert math.isnan(summarize([-1.0, 1.0]).cv)  # spread around a zero mean: undefined, not 0 or inf


def test_stats_as_dict_prefixes_columns():
    d = summarize([1.0, 2.0, 3.0]).as_dict("tpot_ms")
    assert d["tpot_ms_median"] == 2.0 and d["tpot_ms_n"] == 3 and len(d) == 9


def test_cpu_tracker_times_sleep_and_keeps_order():
    tracker = LatencyTracker(torch.device("cpu"))
    assert tracker.timer == "cpu"
    with tracker.track("slow"):
        time.sleep(0.02)
    with tracker.track("fast"):
        pass
    with tracker.track("slow"):
        time.sleep(0.001)
    result = tracker.result()
    assert list(result) == ["slow", "fast"]
    slow = result["slow"]
    assert len(slow) == 2 and slow[0] >= 19.0 and slow[0] < 1000.0
    assert slow[1] < slow[0]  # call order kept, not sorted
    tracker.reset()
    assert tracker.result() == {}


class FakeEvent:
    def __init__(self, log, enable_timing=False):
        assert enable_timing
        self.log, self.t = log, None

    def record(self, stream=None):
        assert stream == "stream"
        self.t = len(self.log)
        self.log.append("record")

    def elapsed_time(self, end):
        assert "synchronize" in self.log, "read before sync"
        return float(end.t - self.t)


def test_cuda_tracker_records_events_and_syncs_once(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "Event",
                        lambda enable_timing=False: FakeEvent(log, enable_timing))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    def synchronize(device=None):
        assert device == torch.device("cuda"), device  # the tracker's own device
        log.append("synchronize")

    monkeypatch.setattr(torch.cuda, "synchronize", synchronize)
    tracker = LatencyTracker("cuda")
    assert tracker.timer == "cuda_event"
    for _ in range(3):
        with tracker.track("step"):
            log.append("work")
    assert "synchronize" not in log  # nothing blocks inside the loop
    result = tracker.result()
    assert log.count("synchronize") == 1 and log[-1] == "synchronize"
    assert result == {"step": [2.0, 2.0, 2.0]}
    assert tracker.result() == result and log.count("synchronize") == 1  # read once


class FakeGpu:
    """NVML as the clock monitor sees it: the SM clock and clocks-event reasons at each query,
    and accumulated violation counters (ns) that grow while a limit holds the clocks down.
    `during` is what every query inside the region returns; `idle` what queries at its ends
    (after a synchronize) return."""

    def __init__(self, monkeypatch, during=(1980, 0x0), idle=(1980, 0x1), violation_ns=0, new_api=True,
                 old_driver=False, violations=True):
        self.during, self.idle, self.inside = during, idle, False
        self.counters = {0: 0, 1: 0, 3: 0, 5: 0}
        self.supported = set(self.counters)
        self.violation_ns = violation_ns
        monkeypatch.setattr(latency, "nvml_handle", lambda device: "handle")
        monkeypatch.setattr(latency, "NVML_POLL_INTERVAL_S", 0.01)  # several samples in a 50 ms region

        def clock(h, kind):
            assert h == "handle" and kind == pynvml.NVML_CLOCK_SM, (h, kind)
            return self.now()[0]

        monkeypatch.setattr(pynvml, "nvmlDeviceGetClockInfo", clock)
        if new_api:
            def events(h):
                assert h == "handle", h
                if old_driver:
                    raise pynvml.NVMLError_FunctionNotFound(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
                return self.now()[1]
            monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", events, raising=False)
        else:
            monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
        def throttle(h):
            assert h == "handle", h
            return self.now()[1]

        monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", throttle)

        def violation(h, policy):
            assert h == "handle", h
            if not violations or policy not in self.supported:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return SimpleNamespace(violationTime=self.counters[policy], referenceTime=0)
        monkeypatch.setattr(pynvml, "nvmlDeviceGetViolationStatus", violation)

    def now(self):
        return self.during if self.inside else self.idle

    def run(self, mon, seconds=0.05):
        with mon.track():
            self.inside = True
            time.sleep(seconds)  # several 10 ms samples
            self.counters[0] += self.violation_ns  # power-capped for a while during the region
            self.inside = False


def test_clock_monitor_samples_while_the_region_runs(monkeypatch):
    gpu = FakeGpu(monkeypatch, during=(1755, 0x4 | 0x1), idle=(1980, 0x1))  # power-capped only mid-region
    mon = ClockMonitor("cuda")
    gpu.run(mon)
    r = mon.result()
    assert r.throttled and "sw_power_cap" in r.throttle_reasons
    assert r.sm_clock_mhz_median == 1755  # the clock while the work ran, not the idle reading at the ends
    assert r.clock_event_reasons & 0x4


def test_clock_monitor_counts_violations_between_samples(monkeypatch):
    gpu = FakeGpu(monkeypatch, during=(1980, 0x0), violation_ns=3_000_000)  # 3 ms capped, missed by sampling
    mon = ClockMonitor("cuda")
    gpu.run(mon)
    r = mon.result()
    assert r.throttled and r.throttle_reasons == ("power_violation",) and r.violation_ms["power"] == 3.0


def test_clock_monitor_idle_is_not_throttling_and_old_drivers_fall_back(monkeypatch):
    for kwargs in ({"new_api": False}, {"old_driver": True}, {"violations": False}):
        gpu = FakeGpu(monkeypatch, during=(1980, 0x1 | 0x2 | 0x10), **kwargs)  # idle, app clocks, sync boost
        mon = ClockMonitor("cuda")
        gpu.run(mon, seconds=0.02)
        r = mon.result()
        assert r is not None and r.throttled is False and r.throttle_reasons == (), kwargs
        assert (r.violation_ms is None) == (kwargs == {"violations": False})


def test_clock_monitor_prefers_the_current_call_where_the_binding_has_it(monkeypatch):
    """The throttle-reasons call is deprecated since R535 (and may go): where the clocks-event call
    exists and works, it alone is asked."""
    gpu = FakeGpu(monkeypatch, during=(1755, 0x4))

    def deprecated(h):
        raise pynvml.NVMLError_FunctionNotFound(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", deprecated)
    mon = ClockMonitor("cuda")
    gpu.run(mon)
    r = mon.result()
    assert r is not None and r.clock_event_reasons & 0x4 and "sw_power_cap" in r.throttle_reasons


def test_clock_monitor_none_without_nvml(monkeypatch):
    def boom():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    monkeypatch.setattr(env, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            mon = ClockMonitor("cuda")
            with mon.track():
                pass
            assert mon.result() is None
    assert len(caught) == 1
    cpu = ClockMonitor("cpu")
    assert cpu.result() is None  # nothing measured yet
    with cpu.track():
        pass
    assert cpu.result() is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tracker_real_gpu():
    tracker = LatencyTracker("cuda")
    x = torch.randn(2048, 2048, device="cuda")
    with tracker.track("mm"):
        for _ in range(10):
            x = x @ x / 2048
    assert tracker.result()["mm"][0] > 0
    mon = ClockMonitor("cuda")
    with mon.track():
        torch.cuda._sleep(1000)
    r = mon.result()
    assert r is None or r.sm_clock_mhz_start > 0


def test_clock_monitor_keeps_the_counters_a_gpu_supports(monkeypatch):
    gpu = FakeGpu(monkeypatch, during=(1980, 0x0))
    gpu.supported = {1, 3}  # power (0) unsupported on this board: thermal and board limit still read
    mon = ClockMonitor("cuda")
    gpu.run(mon, seconds=0.02)
    assert set(mon.result().violation_ms) == {"thermal", "board_limit"}


def test_regions_let_through_only_the_named_ones():
    tracker = LatencyTracker("cpu")
    coarse = latency.Regions(tracker)  # the default: COARSE_REGIONS
    for name in ("vision_tower", "predictor_text", "llm_prefill", "token_drop"):
        with coarse.track(name):
            pass
    assert set(tracker.result()) == {"vision_tower", "llm_prefill"}
    every = latency.Regions(LatencyTracker("cpu"), None)
    with every.track("predictor_text"):
        pass
    assert list(every.tracker.result()) == ["predictor_text"]


def test_clock_monitor_reads_each_quantity_on_its_own(monkeypatch):
    """A sandbox answering NotSupported for the clocks-event reasons still yields the SM clock, and
    the reverse; with everything unsupported `throttled` is null, and each missing quantity is named."""
    def refuse(*args):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    gpu = FakeGpu(monkeypatch, during=(1755, 0x4))
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", refuse)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", refuse)
    mon = ClockMonitor("cuda")
    gpu.run(mon)
    r = mon.result()
    assert r.sm_clock_mhz_median == 1755 and r.clock_event_reasons is None
    assert r.throttled is False and set(r.unavailable) == {"clock_event_reasons"}  # power/thermal counters read 0

    gpu = FakeGpu(monkeypatch, during=(1755, 0x4), violations=False)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetClockInfo", refuse)
    mon = ClockMonitor("cuda")
    gpu.run(mon)
    r = mon.result()
    assert r.sm_clock_mhz_median is None and r.throttled is True and "sw_power_cap" in r.throttle_reasons

    for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        monkeypatch.setattr(pynvml, name, refuse)
    mon = ClockMonitor("cuda")
    gpu.run(mon)
    r = mon.result()
    assert r.throttled is None and r.sm_clock_mhz_median is None and r.clock_event_reasons is None
    assert set(r.unavailable) == {"sm_clock", "clock_event_reasons", "violation_counters"}
    assert "NotSupported" in r.unavailable["sm_clock"]


def test_board_limit_and_reliability_violations_are_recorded_not_gating(monkeypatch):
    gpu = FakeGpu(monkeypatch, during=(1980, 0x0))
    mon = ClockMonitor("cuda")
    with mon.track():
        gpu.counters[3] += 5_000_000  # board limit: 5 ms
        gpu.counters[5] += 1_000_000  # reliability: 1 ms
    r = mon.result()
    assert r.throttled is False and r.throttle_reasons == ()
    assert r.violation_ms["board_limit"] == 5.0 and r.violation_ms["reliability"] == 1.0
    with mon.track():
        gpu.counters[1] += 2_000_000  # thermal: gating
    assert mon.result().throttled is True and mon.result().throttle_reasons == ("thermal_violation",)


def test_cuda_tracker_host_time_covers_the_launches_and_needs_no_sync(monkeypatch):
    """host_ms: from recording the start event until the end event's record returned — a 30 ms
    host sleep inside the region is in it, and reading it synchronizes nothing. CPU: no host times."""
    log = []
    monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: FakeEvent(log, enable_timing))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("synchronize"))
    tracker = LatencyTracker("cuda")
    for _ in range(2):
        with tracker.track("step"):
            time.sleep(0.03)
    host = tracker.host_result()
    assert "synchronize" not in log and len(host["step"]) == 2
    assert all(30.0 <= ms < 1000.0 for ms in host["step"]), host
    with tracker.track("step") as region:
        region.discard()  # a discarded region has no host time either
    assert len(tracker.host_result()["step"]) == 2
    tracker.reset()
    assert tracker.host_result() == {}
    cpu = LatencyTracker("cpu")
    with cpu.track("step"):
        pass
    assert cpu.host_result() == {}
