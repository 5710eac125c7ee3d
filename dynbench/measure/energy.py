"""GPU energy: NVML's accumulated energy counter around the measured runs.

`nvmlDeviceGetTotalEnergyConsumption` counts millijoules since the driver loaded (Volta and
newer); the difference over the measured runs, divided by the runs, is `energy_j` (one run: a
prefill or a whole generation) and, in decode modes, `energy_j_per_token` = that / `gen_len`.
It is the whole board's energy, idle power between kernels included — what a user pays for.
None off CUDA, without NVML, where the counter is unsupported (warned once), and where it does not
advance over the window (a sandbox may answer with a frozen or zero counter: 0 J is not a
measurement); `unavailable` then says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from dynbench.measure.env import nvml_handle, nvml_why, warn_once


class EnergyMeter:
    def __init__(self, device):
        self._handle = nvml_handle(device)
        self.joules: float | None = None
        self.unavailable: str | None = None  # why `joules` is None on CUDA

    def _read_mj(self) -> int | None:
        import pynvml

        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except pynvml.NVMLError as exc:
            self.unavailable = nvml_why(exc)
            warn_once(f"NVML energy counter unavailable ({exc}); energy_j will be null.")
            self._handle = None
            return None

    @contextmanager
    def track(self) -> Iterator[None]:
        self.joules = None
        before = self._read_mj() if self._handle is not None else None
        t0 = time.perf_counter()
        yield
        after = self._read_mj() if before is not None else None
        if before is None or after is None:
            return
        if after <= before:  # a powered board always draws: a counter that did not move is not 0 J
            self.unavailable = (f"the energy counter did not advance over {time.perf_counter() - t0:.2f} s "
                                f"(read {before} then {after} mJ)")
            warn_once(f"NVML {self.unavailable}; energy_j is null.")
            return
        self.joules = (after - before) / 1000.0


def energy_columns(joules: float | None, runs: int, tokens: int | None) -> dict:
    """`energy_j` (per measured run) and `energy_j_per_token` from the total; `tokens`: what a run
    generates (the point's gen_len — null in prefill, so no per-token energy there)."""
    if joules is None or runs < 1:
        return {"energy_j": None, "energy_j_per_token": None}
    per_run = joules / runs
    per_token = per_run / tokens if tokens else None
    return {"energy_j": per_run, "energy_j_per_token": per_token}
