"""A sampler thread: call `sample()` now, every `interval` seconds while a region runs, and once
more at its end. Used by the memory tracker (NVML, RSS) and the clock monitor (SM clock, clocks-event
reasons), so what they report was seen while the work ran, not only at its two ends. NVML is polled
every `NVML_POLL_INTERVAL_S` (recorded as `nvml_poll_ms`), host-side RSS every `POLL_INTERVAL_S`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

POLL_INTERVAL_S = 0.01  # host-side samplers (RSS): cheap, no driver call
# NVML pollers (clocks, clocks-event reasons, NVML memory): every call enters the driver, and a 10 ms
# thread competing with a host-bound decode loop for the GIL slows the very steps it watches
NVML_POLL_INTERVAL_S = 0.05


class Poller:
    """Calls `sample()` now, every POLL_INTERVAL_S in a daemon thread, and once more on stop."""

    def __init__(self, sample: Callable[[], None], interval: float = POLL_INTERVAL_S):
        self._sample = sample
        self._stop = threading.Event()
        self.error: Exception | None = None
        self._interval = interval
        self._thread = threading.Thread(target=self._loop, name="dynbench-poll", daemon=True)

    def _safe_sample(self) -> None:
        if self.error is None:
            try:
                self._sample()
            except Exception as exc:  # NVML can fail in many ways; never kill the benchmark
                self.error = exc

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._safe_sample()

    def __enter__(self) -> Poller:
        self._safe_sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._safe_sample()


