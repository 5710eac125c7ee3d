"""Profiling one point with `torch.profiler`: a trace for TensorBoard / Perfetto, and cost tables.

`profile_point()` runs a mode under `torch.profiler.profile` (CPU activity, plus CUDA when the
model is on a CUDA device) with a wait / warmup / active `schedule`; one scheduler step is one
whole run of the mode (the prefill forward, or a whole generation), so the mode runs
`wait + warmup + active` times. The model's named regions (`LlavaForBench.region`) become
`record_function` ranges, and the trace is written as one
`<model>_<method>_<mode>_<UTC time>.pt.trace.json` (e.g. `…_kv-cache_20261201T104501Z.pt.trace.json`;
Chrome trace format, the name TensorBoard's profiler plugin looks for) that opens in Perfetto
(ui.perfetto.dev, maintained) and in TensorBoard's torch-tb-profiler plugin (deprecated upstream).

From the active steps' events it computes (data only; `report/profile.py` renders the tables):
  * **traced total** — the CPU wall time of the active step ranges `ProfilerStep#N` (end − start
    as recorded by the profiler, summed over the `active` runs). Every event of the run nests
    inside it on the driver thread, so it also equals the sum of the self CPU times of all
    events in those trees.
  * **ranges** — the top-level named ranges, i.e. those whose nearest enclosing named range is
    the step itself (vision_tower, projector, llm_prefill / llm_forward / decode_step, and
    lm_head where it is not inside decode_step), aggregated by name, plus `other` = traced total
    − Σ top-level ranges: the driver's own work between regions (embedding the prompt, argmax,
    cache bookkeeping, the end-of-step synchronize). Ranges on one thread nest or follow each
    other, so top-level ranges never overlap and the identity Σ ranges + other = traced total
    is exact up to float rounding.
  * **nested** — named ranges inside another named range (predictor_vision, predictor_text,
    token_drop, lm_head inside decode_step), grouped by (name, nearest named parent), as a share
    of the parent range (Σ of every occurrence of the parent name) and of the traced total. The
    method-specific ones (`METHOD_RANGES`) summed are the overhead the method adds, which the
    paper does not report.
  * **top operators** — events grouped by name as `prof.key_averages()` does, restricted to the
    active step trees and to operators (named ranges, ProfilerStep, Python function events of
    `with_stack` and `[memory]` markers left out): calls, self CPU time, self CUDA time (kernels
    an operator launched itself), each as a share of the traced totals.

Nesting comes from `prof.events()`: each `FunctionEvent` has a `cpu_parent` built by the
profiler from time containment on its thread; walking it up to the first named range (or
ProfilerStep) gives the parent, also when `with_stack` inserts Python function events between.

Not measured here: latency. The profiler's own overhead (shapes, memory, stacks) inflates every
range; use `dynbench run` for timings. On CUDA the CPU columns are host time (launches are
asynchronous; the drivers synchronize at the end of each step, outside every region, so the
wait lands in `other`), and the CUDA columns are the kernels each range launched.
"""

from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import (
    ProfilerAction,
    ProfilerActivity,
    profile,
    record_function,
    schedule,
)

from dynbench.errors import DynbenchError
from dynbench.inputs import ModelInputs
from dynbench.measure.native_stderr import profiler_stderr_filtered
from dynbench.models.llava import DropConfig, LlavaForBench
from dynbench.modes import ModeResult, run_mode
from dynbench.names import MODES
from dynbench.registry import get as get_method
from dynbench.results import writable_dir

# The regions the model and drivers name (LlavaForBench.region callers), in table order; any
# other `record_function` range is tabulated too, after these.
RANGES = (
    "vision_tower",
    "projector",
    "llm_prefill",
    "llm_forward",
    "decode_step",
    "lm_head",
    "predictor_vision",
    "predictor_text",
    "token_drop",
)
# The ranges only Dynamic-LLaVA runs: its cost over the dense model.
METHOD_RANGES = ("predictor_vision", "predictor_text", "token_drop", "scoring", "kv_evict")
STEP_PREFIX = "ProfilerStep"  # torch's range around one scheduler step (`ProfilerStep#N`)
OTHER = "other"
TRACED_TOTAL = (
    "CPU wall time of the active ProfilerStep#N ranges (one per active run of the mode), "
    "= sum of the self CPU times of every event inside them"
)


class ProfilerRegions:
    """`model.regions` for profiling: each named region becomes a `record_function` range."""

    def track(self, name: str):
        return record_function(name)


@dataclass(frozen=True)
class RangeRow:
    """A top-level range (or `other`), summed over its occurrences in the active runs."""

    name: str
    calls: int | None  # None for `other`
    cpu_ms: float
    share: float  # of the traced total, 0..1
    outside_ops_ms: float | None  # host time in the range outside every operator (Python, driver)
    device_ms: float | None = None  # CUDA kernels launched inside the range (None without CUDA)
    device_share: float | None = None


@dataclass(frozen=True)
class NestedRow:
    name: str
    parent: str  # nearest enclosing named range
    calls: int
    cpu_ms: float
    share_of_parent: float  # of the parent name's total CPU time
    share_of_total: float  # of the traced total
    method_specific: bool  # in METHOD_RANGES: cost the dense model does not pay
    device_ms: float | None = None
    device_share_of_parent: float | None = None
    device_share_of_total: float | None = None


@dataclass(frozen=True)
class OpRow:
    name: str
    calls: int
    self_cpu_ms: float
    self_cpu_share: float  # of the traced total
    self_device_ms: float | None = None
    self_device_share: float | None = None  # of the device total


@dataclass
class ProfileResult:
    model: str
    method: str
    mode: str
    device: str
    out_dir: str
    trace_path: str
    wait: int
    warmup: int
    active: int
    traced_total_ms: float  # see TRACED_TOTAL
    device_total_ms: float | None  # CUDA kernels launched inside the active steps (None on CPU)
    ranges: list[RangeRow]  # top-level ranges, then `other`; Σ cpu_ms == traced_total_ms
    nested: list[NestedRow]
    top_ops: list[OpRow]
    result: ModeResult = field(repr=False)  # the last active run's result

    @property
    def other_ms(self) -> float:
        return next(r.cpu_ms for r in self.ranges if r.name == OTHER)

    @property
    def method_overhead_ms(self) -> float:
        """Σ of method-specific ranges (never one inside another, so nothing counts twice)."""
        return sum(n.cpu_ms for n in self.nested if n.method_specific and n.parent not in METHOD_RANGES)

    @property
    def largest_overhead(self) -> NestedRow | None:
        rows = [n for n in self.nested if n.method_specific]
        return max(rows, key=lambda n: n.cpu_ms) if rows else None


# ---- output directory ----------------------------------------------------------------------------
def _trace_files(path: Path) -> set[Path]:
    return {p for p in path.iterdir() if p.name.endswith((".pt.trace.json", ".pt.trace.json.gz"))}


def load_trace(trace_path: str | os.PathLike) -> dict:
    """A Chrome-format trace written by `profile_point` (plain or gzipped JSON)."""
    path = Path(trace_path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def _trace_writer(path: Path, worker: str, use_gzip: bool):
    """`on_trace_ready` writing `<worker>_<UTC time>.pt.trace.json[.gz]` (a readable stamp instead
    of the handler's 19-digit nanosecond counter); `_2`, `_3` … if that name exists already."""

    def write(prof) -> None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        name, n = f"{worker}_{stamp}", 1
        while any((path / f"{name}.pt.trace.json{ext}").exists() for ext in ("", ".gz")):
            n += 1
            name = f"{worker}_{stamp}_{n}"
        target = path / f"{name}.pt.trace.json"
        prof.export_chrome_trace(str(target))
        if use_gzip:
            with open(target, "rb") as src, gzip.open(f"{target}.gz", "wb") as dst:
                dst.write(src.read())
            target.unlink()

    return write


# ---- profiling -----------------------------------------------------------------------------------
def profile_point(
    model: LlavaForBench,
    inputs: ModelInputs,
    drop: DropConfig | None,
    mode: str,
    gen_len: int,
    out_dir: str | os.PathLike,
    *,
    reuse_vision: bool = False,
    wait: int = 1,
    warmup: int = 1,
    active: int = 1,
    record_shapes: bool = True,
    profile_memory: bool = True,
    with_stack: bool = False,
    use_gzip: bool = False,
    top: int = 15,
) -> ProfileResult:
    """Run one point `wait + warmup + active` times under the profiler; write the trace to
    `out_dir` and return the tables and the last active run's `ModeResult`."""
    _check_point(model, mode, wait=wait, warmup=warmup, active=active)
    path = writable_dir(out_dir)
    drop = drop or DropConfig()
    cuda = model.device.type == "cuda" and torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    info = get_method(model.method)
    worker = f"{model.preset.name}_{info.name}_{mode}"  # the declared name: checked safe for a file name
    meta = {
        "model": model.preset.name, "method": model.method, "mode": mode, "gen_len": gen_len,
        "prompt_len": inputs.layout.prompt_len, "batch": inputs.batch, "reuse_vision": reuse_vision,
        "drop": dataclasses.asdict(drop) if info.options else None,  # a method with nothing to set: none
        "wait": wait, "warmup": warmup, "active": active,
    }

    before = _trace_files(path)
    settings = dict(activities=activities, schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
                    on_trace_ready=_trace_writer(path, worker, use_gzip), record_shapes=record_shapes,
                    profile_memory=profile_memory, with_stack=with_stack)
    run = lambda: run_mode(mode, model, inputs, drop, gen_len, reuse_vision)  # noqa: E731
    prof, result = _profiled(model, run, settings, runs=wait + warmup + active, meta=meta)
    written = sorted(_trace_files(path) - before, key=lambda p: p.stat().st_mtime)
    assert written, f"torch.profiler wrote no trace to {path}"
    ranges, nested, ops, total_ms, device_ms = tabulate(prof.events(), cuda=cuda, top=top)
    return ProfileResult(
        model.preset.name, model.method, mode, str(model.device), str(path), str(written[-1]),
        wait, warmup, active, total_ms, device_ms, ranges, nested, ops, result,
    )


def _check_point(model: LlavaForBench, mode: str, *, wait: int, warmup: int, active: int) -> None:
    if mode not in MODES:
        raise DynbenchError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if wait < 0 or warmup < 0 or active < 1:
        raise DynbenchError(
            f"profiler schedule needs --wait ≥ 0, --warmup ≥ 0 and --active ≥ 1 (got {wait}, {warmup}, {active})"
        )
    if model.device.type == "meta":
        raise DynbenchError("the meta device computes shapes only, nothing to profile; use cpu or cuda")


def _profiled(model: LlavaForBench, run, settings: dict, *, runs: int, meta: dict):
    """(the profiler, the last run's result): `run()` called `runs` times under `profile(**settings)`,
    the model's regions as profiler ranges meanwhile."""
    previous, model.regions = model.regions, ProfilerRegions()
    result = None
    try:
        with profiler_stderr_filtered(), profile(**settings) as prof:
            for _ in range(runs):
                if prof.current_action != ProfilerAction.NONE:  # kineto drops metadata before
                    prof.add_metadata_json("dynbench", json.dumps(meta))
                result = run()
                prof.step()
    finally:
        model.regions = previous
    return prof, result


# ---- tables from events ----------------------------------------------------------------------
def _is_step(e) -> bool:
    return e.name.startswith(STEP_PREFIX)


def _is_range(e) -> bool:
    """A `record_function` range other than ProfilerStep (any name, so a new region is not lost)."""
    return e.is_user_annotation and not _is_step(e)


def _named_parent(e):
    """Nearest enclosing named range or ProfilerStep (skipping ops and Python function events)."""
    p = e.cpu_parent
    while p is not None and not (_is_range(p) or _is_step(p)):
        p = p.cpu_parent
    return p


def _is_python_function(e) -> bool:
    """A `with_stack` Python function event. `FunctionEvent.is_python_function` exists from torch
    2.13; before it (the declared floor is 2.11) the profiler does not list Python function events
    among `prof.events()` at all, so an event without the attribute is never one."""
    return bool(getattr(e, "is_python_function", False))


def _is_op(e) -> bool:
    return not (e.is_user_annotation or _is_python_function(e) or e.name == "[memory]" or _is_step(e))


def _ops_us(e) -> float:
    """Wall time of the outermost operators inside `e` (ops nest on one thread: no overlap)."""
    return sum(c.time_range.elapsed_us() if _is_op(c) else _ops_us(c) for c in e.cpu_children)


def _in_steps(events):
    """CPU events whose ancestry reaches an active ProfilerStep range."""
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        p = e
        while p is not None and not _is_step(p):
            p = p.cpu_parent
        if p is not None:
            yield e


def tabulate(events, *, cuda: bool = False, top: int = 15):
    """(ranges, nested, top_ops, traced_total_ms, device_total_ms) from `prof.events()`."""
    events = list(_in_steps(events))
    steps = [e for e in events if _is_step(e)]
    assert steps, "no ProfilerStep range among the profiler events"
    total_us = sum(s.time_range.elapsed_us() for s in steps)
    dev_total_us = sum(s.device_time_total for s in steps) if cuda else None
    share = lambda part, whole: part / whole if whole else 0.0
    dev = lambda us: us / 1e3 if cuda else None
    dev_share = lambda part, whole: share(part, whole) if cuda else None

    groups, by_name = _range_groups(events, cuda)
    order = lambda name: (RANGES.index(name) if name in RANGES else len(RANGES), name)
    top_level = sorted(((n, g) for (n, p), g in groups.items() if p == STEP_PREFIX), key=lambda x: order(x[0]))
    ranges = [
        RangeRow(n, g["calls"], g["cpu"] / 1e3, share(g["cpu"], total_us), (g["cpu"] - g["ops"]) / 1e3,
                 dev(g["dev"]), dev_share(g["dev"], dev_total_us))
        for n, g in top_level
    ]
    other_us = total_us - sum(g["cpu"] for _, g in top_level)
    other_dev = dev_total_us - sum(g["dev"] for _, g in top_level) if cuda else None
    ranges.append(
        RangeRow(OTHER, None, other_us / 1e3, share(other_us, total_us), None, dev(other_dev),
                 dev_share(other_dev, dev_total_us))
    )

    nested = [
        NestedRow(
            n, p, g["calls"], g["cpu"] / 1e3, share(g["cpu"], by_name[p]["cpu"]), share(g["cpu"], total_us),
            n in METHOD_RANGES, dev(g["dev"]), dev_share(g["dev"], by_name[p]["dev"]),
            dev_share(g["dev"], dev_total_us),
        )
        for (n, p), g in groups.items()
        if p != STEP_PREFIX
    ]
    nested.sort(key=lambda r: (order(r.parent), not r.method_specific, order(r.name)))

    rows = _op_rows(events, cuda, total_us, dev_total_us)
    return ranges, nested, rows[:top], total_us / 1e3, dev(dev_total_us)


def _range_groups(events, cuda: bool) -> tuple[dict, dict]:
    """Named ranges grouped by (name, nearest named parent) — top-level: the parent is the step —
    and each name's total over all levels (what the parents' shares divide by)."""
    groups: dict[tuple[str, str], dict] = {}
    for e in events:
        if not _is_range(e):
            continue
        parent = _named_parent(e)
        key = (e.name, STEP_PREFIX if _is_step(parent) else parent.name)
        g = groups.setdefault(key, {"calls": 0, "cpu": 0.0, "ops": 0.0, "dev": 0.0})
        g["calls"] += 1
        g["cpu"] += e.time_range.elapsed_us()
        g["ops"] += _ops_us(e)
        g["dev"] += e.device_time_total if cuda else 0.0
    by_name: dict[str, dict] = {}
    for (name, _), g in groups.items():
        t = by_name.setdefault(name, {"cpu": 0.0, "dev": 0.0})
        t["cpu"] += g["cpu"]
        t["dev"] += g["dev"]
    return groups, by_name


def _op_rows(events, cuda: bool, total_us: float, dev_total_us: float | None) -> list[OpRow]:
    """Operators by self time (device first), largest first."""
    share = lambda part, whole: part / whole if whole else 0.0  # noqa: E731
    ops: dict[str, list[float]] = {}
    for e in events:
        if _is_op(e):
            o = ops.setdefault(e.name, [0, 0.0, 0.0])
            o[0] += 1
            o[1] += e.self_cpu_time_total
            o[2] += e.self_device_time_total if cuda else 0.0
    rows = [
        OpRow(n, c, cpu / 1e3, share(cpu, total_us), d / 1e3 if cuda else None,
              share(d, dev_total_us) if cuda else None)
        for n, (c, cpu, d) in ops.items()
    ]
    rows.sort(key=lambda r: (r.self_device_ms or 0.0, r.self_cpu_ms), reverse=True)
    return rows


# ---- output ------------------------------------------------------------------------------------
def to_json(result: ProfileResult) -> dict:
    """One JSON document for `--json` (shares are fractions; times in ms)."""
    r = result.result
    largest = result.largest_overhead
    return {
        "model": result.model, "method": result.method, "mode": result.mode, "device": result.device,
        "out_dir": result.out_dir, "trace_path": result.trace_path,
        "schedule": {"wait": result.wait, "warmup": result.warmup, "active": result.active},
        "traced_total_ms": result.traced_total_ms, "traced_total_definition": TRACED_TOTAL,
        "device_total_ms": result.device_total_ms,
        "ranges": [dataclasses.asdict(x) for x in result.ranges],
        "nested": [dataclasses.asdict(x) for x in result.nested],
        "method_overhead_ms": result.method_overhead_ms,
        "method_overhead_share": result.method_overhead_ms / result.traced_total_ms
        if result.traced_total_ms else 0.0,
        "largest_overhead": dataclasses.asdict(largest) if largest else None,
        "top_ops": [dataclasses.asdict(x) for x in result.top_ops],
        "generated_ids": r.generated_ids,
        "image_tokens_kept": r.last.image_tokens_kept,
        "text_tokens_fed": r.last.text_tokens_fed,
        "text_tokens_kept": r.last.text_tokens_kept,
        "layer_seq_lens": r.last.layer_seq_lens,
        "layer_cache_lens": r.last.layer_cache_lens,
    }
