"""`dynbench doctor`: the CPU half runs here (every CUDA check skips, never passes), a failing
check fails the command, and the NVML energy counter is read as documented (fake NVML)."""

import json

import pynvml
import pytest

from dynbench import doctor
from dynbench.cli import main
from dynbench.measure import energy as energy_mod
from dynbench.measure import env
from dynbench.measure.energy import EnergyMeter, energy_columns

CUDA_CHECKS = ("cuda-event-timer", "allocator-peak", "no-hidden-sync", "nvml-memory", "nvml-energy", "cuda-oom",
               "attention-backends", "host-bound-flag", "ci-gpu-suite")


def test_doctor_cpu_quick(tmp_path, capsys):
    assert main(["doctor", "--device", "cpu", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "doctor.json").read_text())
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert len(status) >= 8 and set(CUDA_CHECKS) <= set(status)
    assert all(status[name] == "skip" for name in CUDA_CHECKS)  # a CUDA check never passes on a CPU
    assert all(v == "pass" for k, v in status.items() if k.startswith("cpu-")), status
    assert data["env"]["env_id"] and all(c["seconds"] >= 0 for c in data["checks"])
    md = (tmp_path / "doctor.md").read_text()
    assert md.startswith("### dynbench doctor — OK") and "| cpu-gate | ✅ pass |" in md


def test_a_failing_check_fails_the_command(tmp_path, monkeypatch, capsys):
    def broken(ctx):
        raise AssertionError("measured 3 ms, expected 5")

    monkeypatch.setitem(doctor.CHECKS, "cpu-timer", broken)
    assert main(["doctor", "--device", "cpu", "--only", "cpu-timer", "--out", str(tmp_path)]) == 1
    check = json.loads((tmp_path / "doctor.json").read_text())["checks"][0]
    assert check["status"] == "fail" and "measured 3 ms, expected 5" in check["detail"]
    assert main(["doctor", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown check(s) nope" in capsys.readouterr().err


class FakeEnergy:
    def __init__(self, monkeypatch, readings):
        self.readings = iter(readings)

        def read(h):
            assert h == "handle", h
            return next(self.readings)

        monkeypatch.setattr(energy_mod, "nvml_handle", lambda device: "handle")
        monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", read)


def test_energy_is_the_counter_difference(monkeypatch):
    FakeEnergy(monkeypatch, [1_000_000, 1_012_500])  # mJ since the driver loaded
    meter = EnergyMeter("cuda")
    with meter.track():
        pass
    assert meter.joules == 12.5
    assert energy_columns(12.5, runs=5, tokens=10) == {"energy_j": 2.5, "energy_j_per_token": 0.25}
    assert energy_columns(12.5, runs=5, tokens=None) == {"energy_j": 2.5, "energy_j_per_token": None}
    assert energy_columns(None, runs=1, tokens=4) == {"energy_j": None, "energy_j_per_token": None}
    assert energy_columns(3.0, runs=1, tokens=6) == {"energy_j": 3.0, "energy_j_per_token": 0.5}
    # a prefill point carries no per-token energy even where a gen_len is given: its gen_len is null
    from dynbench.spec import points_from

    (prefill,) = points_from({"mode": ["prefill"], "method": ["llava"], "gen_len": [6]})
    assert prefill.gen_len is None


def test_energy_unsupported_is_null(monkeypatch):
    calls = []

    def unsupported(h):
        calls.append(h)
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(energy_mod, "nvml_handle", lambda device: "handle")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", unsupported)
    monkeypatch.setattr(env, "_warned", set())  # warn_once: an earlier test may have warned already
    meter = EnergyMeter("cuda")
    with pytest.warns(RuntimeWarning, match="energy counter unavailable"):
        with meter.track():
            pass
    assert meter.joules is None
    with meter.track():  # once unsupported, never asked again
        pass
    assert meter.joules is None and calls == ["handle"]
    assert EnergyMeter("cpu").joules is None


@pytest.mark.parametrize("readings", [[5_000, 5_000], [0, 0]], ids=["frozen", "zero"])
def test_energy_counter_that_does_not_advance_is_null_not_zero(monkeypatch, readings):
    FakeEnergy(monkeypatch, readings)
    monkeypatch.setattr(env, "_warned", set())
    meter = EnergyMeter("cuda")
    with pytest.warns(RuntimeWarning, match="did not advance"):
        with meter.track():
            pass
    assert meter.joules is None and "did not advance" in meter.unavailable


def _refuse(*args):
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def _fake_cuda_row(monkeypatch, energy_readings=None):
    """A CUDA kv-cache summary row whose NVML columns come from the real trackers reading a fake NVML
    that answers NotSupported to every query (and, with `energy_readings`, an energy counter that
    answers those values)."""
    from dynbench.measure import latency
    from dynbench.measure.latency import ClockMonitor
    from dynbench.measure.memory import MemoryResult
    from dynbench.measure.point import _nvml_unavailable

    for name in ("nvmlDeviceGetClockInfo", "nvmlDeviceGetCurrentClocksEventReasons",
                 "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetViolationStatus",
                 "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTotalEnergyConsumption"):
        monkeypatch.setattr(pynvml, name, _refuse, raising=False)
    monkeypatch.setattr(latency, "nvml_handle", lambda device: "handle")
    monkeypatch.setattr(latency, "NVML_POLL_INTERVAL_S", 0.01)
    if energy_readings is not None:
        FakeEnergy(monkeypatch, energy_readings)
    else:
        monkeypatch.setattr(energy_mod, "nvml_handle", lambda device: "handle")
    clock, energy = ClockMonitor("cuda"), EnergyMeter("cuda")
    with clock.track(), energy.track():
        pass
    try:
        pynvml.nvmlDeviceGetMemoryInfo("handle")
    except pynvml.NVMLError as exc:
        memory = MemoryResult(1, 2, None, None, None, None, 1, "torch_allocator", nvml_unavailable=env.nvml_why(exc))
    c = clock.result()
    return {"step": None, "method": "llava", "mode": "kv-cache", "nvml_source": None, "nvml_process_bytes": None,
            "peak_reserved_bytes": 2, "sm_clock_mhz": c.sm_clock_mhz_median, "throttled": c.throttled,
            "energy_j": energy.joules, "energy_j_per_token": None,
            "nvml_unavailable": _nvml_unavailable(memory, c, energy)}


@pytest.mark.parametrize("energy", [None, [5_000, 5_000], [0, 0]], ids=["not-supported", "frozen", "zero"])
def test_doctor_with_an_nvml_that_refuses_everything_skips_by_name(monkeypatch, tmp_path, energy):
    """A sandbox's NVML (NotSupported everywhere; a frozen or zero energy counter): the NVML checks
    skip, each naming what was refused and why, and the doctor exits 0."""
    import dynbench.spec
    from dynbench.measure import env as envmod

    monkeypatch.setattr(env, "_warned", set())
    with pytest.warns(RuntimeWarning):
        row = _fake_cuda_row(monkeypatch, energy)
    assert row["throttled"] is None and row["sm_clock_mhz"] is None and row["energy_j"] is None
    monkeypatch.setattr(doctor, "_sweep_rows", lambda ctx, name, point, flops=False: [row])
    monkeypatch.setattr(dynbench.spec, "resolve_device", lambda device: "cuda")
    monkeypatch.setattr(envmod, "snapshot", lambda *a: {"gpu_name": "fake"})
    report = doctor.run_doctor("cuda", quick=True, only=["nvml-memory", "nvml-energy"])
    status = {c.name: (c.status, c.detail) for c in report.checks}
    assert report.exit_code == 0 and {s for s, _ in status.values()} == {"skip"}, status
    memory_detail = status["nvml-memory"][1]
    assert all(q in memory_detail for q in ("memory", "sm_clock", "clock_event_reasons"))
    assert "NotSupported" in memory_detail
    assert ("did not advance" if energy else "NotSupported") in status["nvml-energy"][1]


def test_nvml_memory_checks_what_was_read_and_names_what_was_not():
    row = {"nvml_source": "process", "nvml_process_bytes": 3 * 2**30, "peak_reserved_bytes": 2 * 2**30,
           "sm_clock_mhz": None, "throttled": None, "nvml_unavailable": {"sm_clock": "NVMLError_NoPermission"}}
    detail = doctor.nvml_memory_verdict(row)
    assert "3072 MiB ≥ reserved 2048 MiB" in detail and "sm_clock skipped (NVMLError_NoPermission)" in detail
    with pytest.raises(AssertionError):  # a real fault still fails: NVML below the allocator's reserved
        doctor.nvml_memory_verdict({**row, "nvml_process_bytes": 2**30})


def test_attention_backends_gate_structure_and_report_tokens():
    from types import SimpleNamespace

    def run(ids, cache):
        step = SimpleNamespace(step=1, layer_seq_lens=None, layer_cache_lens=cache, image_tokens_kept=115,
                               text_tokens_fed=1, text_tokens_kept=1)
        return SimpleNamespace(steps=[step], generated_ids=[ids])

    ref = run([1, 2, 3, 4], [5, 5, 3, 3])
    agree = doctor.backend_agreement({"sdpa": ref, "eager": run([1, 2, 9, 9], [5, 5, 3, 3])})
    assert agree == {"sdpa": 1.0, "eager": 0.5}  # half the tokens differ: reported, not a failure
    with pytest.raises(AssertionError, match="layer_cache_lens"):
        doctor.backend_agreement({"sdpa": ref, "eager": run([1, 2, 3, 4], [5, 5, 4, 3])})


def test_doctor_json_is_written_after_every_check(tmp_path, monkeypatch, capsys):
    """A run cut short (a device tool's time limit) keeps what it proved: when the second check
    runs, doctor.json already holds the first one's result. A failure prints the rerun command."""
    seen = []

    def first(ctx):
        return "first done"

    def second(ctx):
        seen.append(json.loads((tmp_path / "doctor.json").read_text()))
        raise AssertionError("second broke")

    monkeypatch.setattr(doctor, "CHECKS", {"first": first, "second": second})
    assert main(["doctor", "--device", "cpu", "--only", "first,second", "--out", str(tmp_path)]) == 1
    assert [(c["name"], c["status"], c["detail"]) for c in seen[0]["checks"]] == [("first", "pass", "first done")]
    assert seen[0]["partial"] is True
    final = json.loads((tmp_path / "doctor.json").read_text())
    assert [c["status"] for c in final["checks"]] == ["pass", "fail"] and "partial" not in final
    assert f"rerun what failed: dynbench doctor --only second --out {tmp_path}" in capsys.readouterr().err


def test_aa_tolerance_comes_from_the_samples():
    """Steady samples keep the floor; jittery ones (host-bound steps) widen it to the CI of
    median(B) / median(A), and never to 1 or beyond (the gate's limit)."""
    def rows(samples):
        return [{"step": None, "method": "llava", "mode": "kv-cache", "point_id": "p", "latency_ms_samples": samples}]

    steady = [5.0] * 20
    assert doctor.aa_tolerance(rows(steady), rows(steady), 0.05) == 0.05
    jitter_a = [5.0, 9.0, 5.2, 8.8, 5.1, 9.1, 5.3, 8.9, 5.0, 9.2]
    jitter_b = [9.0, 5.0, 8.8, 5.2, 9.1, 5.1, 8.9, 5.3, 9.2, 5.0]
    tol = doctor.aa_tolerance(rows(jitter_a), rows(jitter_b), 0.05)
    assert 0.2 < tol <= 0.9
    assert doctor.aa_tolerance(rows([1.0] * 5 + [100.0] * 5), rows([100.0] * 5 + [1.0] * 5), 0.05) == 0.9
