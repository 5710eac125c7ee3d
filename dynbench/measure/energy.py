"""GPU energy: NVML's accumulated energy counter around the measured runs.

`nvmlDeviceGetTotalEnergyConsumption` counts millijoules since the driver loaded (Volta and
newer); the difference over the measured runs, divided by the runs, is `energy_j` (one run: a
prefill or a whole generation) and, in decode modes, `energy_j_per_token` = that / `gen_len`.
It is the whole board's energy, idle power between kernels included — what a user pays for.
None off CUDA, without NVML, or where the counter is unsupported (warned once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dynbench.measure.env import nvml_handle, warn_once


class EnergyMeter:
    def __init__(self, device):
        self._handle = nvml_handle(device)
        self.joules: float | None = None

    def _read_mj(self) -> int | None:
        import pynvml

        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except pynvml.NVMLError as exc:
            warn_once(f"NVML energy counter unavailable ({exc}); energy_j will be null.")
            self._handle = None
            return None

    @contextmanager
    def track(self) -> Iterator[None]:
        self.joules = None
        before = self._read_mj() if self._handle is not None else None
        yield
        after = self._read_mj() if before is not None else None
        if before is not None and after is not None:
            self.joules = (after - before) / 1000.0


def energy_columns(joules: float | None, runs: int, tokens: int | None) -> dict:
    """`energy_j` (per measured run) and `energy_j_per_token` from the total; `tokens`: what a run
    generates (the point's gen_len — null in prefill, so no per-token energy there)."""
    if joules is None or runs < 1:
        return {"energy_j": None, "energy_j_per_token": None}
    per_run = joules / runs
    per_token = per_run / tokens if tokens else None
    return {"energy_j": per_run, "energy_j_per_token": per_token}
