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
               "attention-backends", "ci-gpu-suite")  # fmt: skip


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
