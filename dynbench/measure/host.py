"""Host-bound steps: did the GPU wait for Python?

On CUDA every timed step has two times: the device time between its CUDA events (`step_ms`) and
`host_ms`, the wall time from recording the start event until the step's last launch returned
(no sync: `LatencyTracker` reads the clock right after recording the end event). When the GPU is
the bottleneck the launch queue runs ahead, and the device time exceeds the host time; when the
host is (batch-1 decode of a 7B model on an H200: ~1,300 ops of a few µs each against ~3 ms of
weight reading), the GPU finishes each kernel before the next launch arrives and the device time
is the host time plus the last kernel. A step is **host-bound** when its device time is within
`HOST_BOUND_TOL` of its host time; `host_bound_frac` is the share of the headline steps (decode
steps in kv-cache, forwards in no-cache, the prefill in prefill) that are. A TPOT measured on
host-bound steps measures Python, and a roofline ratio from it says nothing about the kernels.

Null on CPU: execution is synchronous there, so host time *is* the step time.
"""

from __future__ import annotations

from collections.abc import Sequence

from dynbench.stats import median_or_none

HOST_BOUND_TOL = 0.05  # device time ≤ host time × (1 + this): the GPU never ran ahead of the host
HOST_BOUND_DOMINATES = 0.5  # report: a TPOT with at least this share of host-bound steps is labelled


def host_bound(device_ms: float | None, host_ms: float | None) -> bool | None:
    """A step's flag; None where either time is missing (CPU, meta)."""
    if device_ms is None or host_ms is None:
        return None
    return device_ms <= host_ms * (1.0 + HOST_BOUND_TOL)


def host_columns(phases: Sequence[str], step_ms: Sequence[Sequence[float]] | None,
                 host_ms: Sequence[Sequence[float]] | None, *, headline: str) -> dict:
    """`host_ms_median` and `host_bound_frac` over the headline steps of every run (the steps whose
    phase, `phases[i]`, is `headline`: `modes.HEADLINE_PHASE`); null off CUDA."""
    cols = {"host_ms_median": None, "host_bound_frac": None}
    if not host_ms or not step_ms:
        return cols
    pairs = [(d, h) for dev, host in zip(step_ms, host_ms, strict=True)
             for d, h, phase in zip(dev, host, phases, strict=True) if phase == headline]
    if not pairs:
        return cols
    cols["host_ms_median"] = median_or_none([h for _, h in pairs])
    cols["host_bound_frac"] = sum(bool(host_bound(d, h)) for d, h in pairs) / len(pairs)
    return cols


def dominates(row) -> bool:
    """True when most of a point's headline steps were host-bound (the report's label)."""
    frac = row.get("host_bound_frac")
    return frac is not None and frac == frac and frac >= HOST_BOUND_DOMINATES
