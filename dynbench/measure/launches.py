"""Kernel launches per step: how many kernel-launching aten ops one step dispatches, exactly.

At batch 1 a decode step on a fast GPU is bound by the host launching ops one after another
(HF-eager style: ~40 per decoder layer), not by the GPU: the op count is what decides whether a
change costs latency there, and it is exact where a time is noise. It is counted once per point,
in one untimed run, with a `TorchDispatchMode` that sees every aten op after autograd and
composite decompositions, i.e. the ops a backend runs. Deterministic on CPU, CUDA and meta for a
given torch version and attention backend (SDPA dispatches to one fused op on CPU / CUDA, to its
math decomposition on meta), so `check` gates it exactly: per-layer Python or tensor bookkeeping
added by a change shows up on a CPU CI run.

Not counted (no kernel runs): view ops (`OpOverload.is_view`: they alias their input), allocations
without a fill (`empty*`), and metadata queries and aliasing helpers (`NO_KERNEL`). Counted: every
other op, including copies (`_to_copy`, `copy_`, `clone`) and device→host reads
(`_local_scalar_dense`, the learned policy's `.item()`), which launch work too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch.utils._python_dispatch import TorchDispatchMode

# op packets that dispatch no kernel though their schema is not a view's
NO_KERNEL = frozenset({
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided",  # allocate only
    "_unsafe_view", "lift_fresh", "detach", "alias", "set_", "resize_",  # aliasing / metadata
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_has_compatible_shallow_copy_type",
    "_assert_tensor_metadata", "record_stream",
})


def launches_kernel(func) -> bool:
    """True for an aten op that runs a kernel (see the module docstring for what is left out)."""
    return not (func.is_view or func.overloadpacket.__name__ in NO_KERNEL)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0
        self.names: list[str] = []  # packet names in dispatch order (what a test reads by hand)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if launches_kernel(func):
            self.n += 1
            self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class _Region:
    discarded = False

    def discard(self) -> None:
        self.discarded = True


class LaunchCounter:
    """A `run_mode(step_timer=…)`: counts each step's kernel-launching ops (`per_step`, in order)."""

    def __init__(self):
        self.per_step: list[int] = []
        self.names: list[list[str]] = []

    @contextmanager
    def track(self, name: str) -> Iterator[_Region]:
        region = _Region()
        with _Count() as count:
            yield region
        if not region.discarded:
            self.per_step.append(count.n)
            self.names.append(count.names)


def count_launches(mode: str, net, inputs, drop, gen_len: int = 1, reuse_vision: bool = False) -> list[int]:
    """Kernel-launching ops of each step of one untimed run of `mode`."""
    from dynbench.modes import run_mode

    counter = LaunchCounter()
    run_mode(mode, net, inputs, drop, gen_len, reuse_vision, step_timer=counter)
    return counter.per_step


def launch_columns(phases: Sequence[str], per_step: list[int] | None, *, headline: str) -> dict:
    """`ops_per_step` (the median over the headline steps, those whose phase is `headline`
    (`modes.HEADLINE_PHASE`): decode steps in kv-cache, forwards in no-cache, the prefill in
    prefill; a run without one, all its steps) and `ops_total` (Σ over the run's steps); null when
    not counted."""
    if not per_step:
        return {"ops_per_step": None, "ops_total": None}
    chosen = [n for n, phase in zip(per_step, phases, strict=True) if phase == headline] or per_step
    ordered = sorted(chosen)
    return {"ops_per_step": ordered[(len(ordered) - 1) // 2], "ops_total": sum(per_step)}
