"""The sweep runner: measure each point (FLOPs, memory, latency, counts) and write its records.

Per point: warm-up runs (not recorded), then `repeats` measured runs of the mode with a
`LatencyTracker` timing every step (CUDA events on GPU, no host sync inside the loop; perf_counter
on CPU) and the model's named regions, a `MemoryTracker` around the measured runs (allocator
peaks reset before, read after a sync; NVML polled; RSS sampled on CPU) and a `ClockMonitor` for
throttling. FLOPs are not timed: they are assembled from the steps by `ModelCost` (fvcore). On
the `meta` device nothing runs: the steps come from `plan_mode` and only counts are reported.

Rows (README "Result records"): one per step of the first measured run, then the summary row
(`step` = null) — written last, so a point cut short has no summary and `--resume` runs it again.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from dynbench.errors import DynbenchError
from dynbench.inputs import (
    ModelInputs,
    image_prompt_inputs,
    load_answer_ids,
    npz_inputs,
    synthetic_inputs,
    with_answer_ids,
)  # fmt: skip
from dynbench.measure import env as envmod
from dynbench.measure.flops import paper_decode_layer_tokens, tflops_paper, tmacs_fastv
from dynbench.measure.latency import COARSE_REGIONS, ClockMonitor, LatencyTracker, Regions, latency_columns
from dynbench.measure.memory import MemoryTracker, kv_bytes, tensor_bytes, weights_bytes
from dynbench.measure.model_cost import ModelCost
from dynbench.models.baselines import BASELINES, KV_METHODS, kv_budget_tokens
from dynbench.models.build import METHODS, build_model, count_parameters
from dynbench.models.checkpoints import LoadedModel, dense_view, load_checkpoint
from dynbench.models.presets import DTYPES, Preset, register_preset
from dynbench.modes import ModeResult, plan_mode, run_mode
from dynbench.results import RECORDS_FILE, append_record, write_atomic
from dynbench.spec import RunSpec

# measured columns: null when nothing ran (meta) or the mode does not define them
LATENCY_COLUMNS = ("timer", "ttft_ms", "vision_ms", "llm_prefill_ms", "tpot_ms_median", "tpot_ms_p90", "tpot_ms_p99",
                   "step_ms_median", "step_ms_p90", "total_ms", "latency_ms_samples", "ttft_ms_samples",
                   "total_ms_samples", "latency_cv", "throttled", "sm_clock_mhz", "scoring_ms")  # fmt: skip
MEMORY_COLUMNS = ("peak_alloc_bytes", "peak_reserved_bytes", "nvml_process_bytes", "nvml_source", "peak_rss_bytes",
                  "peak_tensor_bytes", "peak_mem_bytes", "mem_source")  # fmt: skip
ENV_COLUMNS = ("gpu_name", "driver_version", "cuda_version", "torch_version", "transformers_version",
               "fvcore_version")  # fmt: skip


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(exc, MemoryError)
    )


@dataclass
class Source:
    """Where weights and inputs come from, for every point of a run (the run's flags).

    Nothing set: random weights of a named preset and a synthetic prompt. `checkpoint`: local
    weights (`models/checkpoints.py`), loaded once per (dtype, device, attention) and shared by
    both methods (`llava` is a view of a Dynamic-LLaVA checkpoint without its predictors).
    `inputs` (.npz) or `image` + `prompt`: one real prompt, replicated over the batch;
    `teacher_force`: answer tokens fed instead of the model's own.
    """

    checkpoint: str | None = None
    vision_tower: str | None = None
    inputs: str | None = None
    image: str | None = None
    prompt: str | None = None
    teacher_force: str | None = None
    _meta: LoadedModel | None = field(default=None, repr=False)  # names and shapes only
    _inputs: ModelInputs | None = field(default=None, repr=False)

    def __post_init__(self):
        if (self.image is None) != (self.prompt is None):
            raise DynbenchError("--image and --prompt go together")
        if self.image is not None and self.inputs is not None:
            raise DynbenchError("give either --image/--prompt or --inputs, not both")
        if self.image is not None and self.checkpoint is None:
            raise DynbenchError("--image/--prompt need --checkpoint (its tokenizer and image processor)")
        if self.vision_tower is not None and self.checkpoint is None:
            raise DynbenchError("--vision-tower is used with --checkpoint")

    @property
    def labels(self) -> dict:
        """The RunSpec fields that name this source."""
        return {"checkpoint": self.checkpoint, "inputs": self.inputs or self.image,
                "teacher_force": self.teacher_force}  # fmt: skip

    def checkpoint_info(self, model: str | None = None) -> LoadedModel | None:
        """Read the checkpoint's config and check every tensor's name and shape (no data)."""
        if self.checkpoint is not None and self._meta is None:
            self._meta = load_checkpoint(self.checkpoint, vision_tower_dir=self.vision_tower, model=model,
                                         device="meta")  # fmt: skip
            register_preset(self._meta.preset)
            for note in self._meta.notes:
                warnings.warn(note, stacklevel=2)
        return self._meta

    def columns(self) -> dict:
        """What a row records about the weights and inputs."""
        info, real = self.checkpoint_info(), self._inputs
        return {
            "checkpoint_layout": info.layout if info else None,
            "vision_tower": str(info.vision_tower_dir) if info and info.vision_tower_dir else None,
            "sparse_config": info.sparse_config if info else None,
            "inputs_source": real.source if real is not None else "synthetic",
            "preprocessing": real.preprocessing if real is not None else None,
        }

    def real_inputs(self, preset: Preset) -> ModelInputs | None:
        """The real prompt (batch 1), built once; None for synthetic prompts."""
        if self._inputs is None:
            if self.inputs is not None:
                self._inputs = npz_inputs(self.inputs, preset)
            elif self.image is not None:
                info = self.checkpoint_info()
                self._inputs = image_prompt_inputs(self.image, self.prompt, info.tokenizer_dir,
                                                   info.image_processor_dir, preset, layout=info.layout,
                                                   preprocessing=info.preprocessing)  # fmt: skip
        return self._inputs

    def point_inputs(self, spec: RunSpec, preset: Preset) -> ModelInputs:
        real = self.real_inputs(preset)
        if real is None:
            inputs = synthetic_inputs(preset, spec.prompt_len, spec.batch, spec.seed)
        else:
            inputs = _replicate(real, spec.batch)
        if self.teacher_force is not None:
            inputs = with_answer_ids(inputs, load_answer_ids(self.teacher_force), vocab=preset.vocab)
        return inputs


def _replicate(inputs: ModelInputs, batch: int) -> ModelInputs:
    if inputs.batch == batch:
        return inputs
    if inputs.batch != 1:
        raise DynbenchError(f"the inputs hold {inputs.batch} rows but --batch is {batch}")
    grow = lambda t: None if t is None else t.expand(batch, *t.shape[1:]).clone()  # noqa: E731
    return replace(inputs, input_ids=grow(inputs.input_ids), pixel_values=grow(inputs.pixel_values),
                   answer_ids=grow(inputs.answer_ids))  # fmt: skip


@dataclass
class _Loaded:
    """A built model and what is measured once per model."""

    net: torch.nn.Module
    memory: MemoryTracker
    cost: ModelCost
    env: dict
    env_id: str
    params: int
    weights_bytes: int


@dataclass
class SweepOutcome:
    rows: list[dict] = field(default_factory=list)  # summary rows, in order
    errors: int = 0
    skipped: int = 0


class Runner:
    def __init__(self, out_dir: Path | None = None, flops: bool = True, source: Source | None = None):
        self.out_dir = out_dir
        self.flops = flops
        self.source = source or Source()
        self._loaded: tuple[tuple, _Loaded] | None = None  # one model in memory at a time
        self._checkpoint: tuple[tuple, LoadedModel] | None = None
        self._load: float | None = None  # 1-minute load average when the current point started
        self._load_warned = False

    # ---- models ---------------------------------------------------------------------------------
    def _model(self, spec: RunSpec) -> _Loaded:
        key = (spec.model, spec.method, spec.dtype, spec.device, spec.attn, spec.seed, spec.checkpoint)
        if self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1]
        self._loaded = None  # free the previous model before building the next
        if spec.device == "cuda":
            torch.cuda.empty_cache()
        memory = MemoryTracker(spec.device)  # before the build: NVML's container baseline
        net = self.build_net(spec)
        snap = envmod.snapshot(spec.device, DTYPES[spec.dtype], spec.attn)
        loaded = _Loaded(net, memory, ModelCost(net), snap, envmod.env_id(snap),
                         count_parameters(net), weights_bytes(net))  # fmt: skip
        if self.out_dir is not None:
            write_atomic(self.out_dir / "env" / f"{loaded.env_id}.json", _json(snap))
        self._loaded = (key, loaded)
        return loaded

    def build_net(self, spec: RunSpec) -> torch.nn.Module:
        if self.source.checkpoint is None:
            return build_model(spec.model, spec.method, attn=spec.attn, dtype=DTYPES[spec.dtype],
                               device=spec.device, seed=spec.seed)  # fmt: skip
        key = (spec.dtype, spec.device, spec.attn)
        if self._checkpoint is None or self._checkpoint[0] != key:
            self._checkpoint = None
            loaded = load_checkpoint(self.source.checkpoint, vision_tower_dir=self.source.vision_tower,
                                     dtype=DTYPES[spec.dtype], device=spec.device, attn=spec.attn)  # fmt: skip
            self._checkpoint = (key, loaded)
        loaded = self._checkpoint[1]
        if spec.method == loaded.method:
            return loaded.net
        if spec.method == "llava" or spec.method in BASELINES:  # the LLaVA weights, no predictor
            return dense_view(loaded.net, METHODS[spec.method])
        raise DynbenchError(f"--checkpoint {self.source.checkpoint} holds {loaded.method} weights, not {spec.method}")

    # ---- one point ------------------------------------------------------------------------------
    def run_point(self, spec: RunSpec) -> dict:
        """Measure one point, append its rows, return the summary row (status ok / oom)."""
        point_id = uuid.uuid4().hex[:12]
        base = {**spec.as_dict(), "point_id": point_id, "time_utc": _now(),
                "text_keep_imposed": spec.method == "dynamic-llava" and spec.text_policy == "budget",
                **self.source.columns()}  # fmt: skip
        try:
            loaded = self._model(spec)
            base.update(env_id=loaded.env_id, git_sha=loaded.env.get("git_sha"),
                        **{k: loaded.env.get(k) for k in ENV_COLUMNS})  # fmt: skip
            summary, steps = self._measure(spec, loaded)
        except Exception as exc:  # noqa: BLE001 — an OOM or a failing point must not end the sweep
            if isinstance(exc, DynbenchError):
                raise
            self._loaded = None
            if spec.device == "cuda":
                torch.cuda.empty_cache()
            status = "oom" if is_oom(exc) else f"error: {type(exc).__name__}: {exc}"
            row = {**base, "step": None, "status": status}
            self._write(row)
            return row
        for step_row in steps:
            self._write({**base, **step_row, "status": "ok"})
        row = {**base, **summary, "step": None, "status": "ok"}
        self._write(row)
        return row

    def _write(self, row: dict) -> None:
        if self.out_dir is not None:
            append_record(self.out_dir / RECORDS_FILE, row)

    def _measure(self, spec: RunSpec, loaded: _Loaded) -> tuple[dict, list[dict]]:
        net = loaded.net
        gen_len = spec.gen_len or 1
        if spec.device == "meta":
            result = plan_mode(net.preset, spec.method, spec.mode, spec.prompt_len, gen_len, spec.drop,
                               bool(spec.reuse_vision), spec.batch, DTYPES[spec.dtype], spec.attn)  # fmt: skip
            summary, step_rows = _count_fields(spec, loaded, result, self.flops)
            summary.update(dict.fromkeys(LATENCY_COLUMNS + MEMORY_COLUMNS))
            return summary, step_rows
        self._check_load(spec)
        inputs = self.source.point_inputs(spec, net.preset).to(net.device)  # once, before warm-up
        args = (spec.mode, net, inputs, spec.drop, gen_len, bool(spec.reuse_vision))
        for _ in range(spec.warmup):
            run_mode(*args)
        memory, clock = loaded.memory, ClockMonitor(spec.device)
        region_names = None if spec.regions else COARSE_REGIONS
        runs: list[ModeResult] = []
        trackers: list[LatencyTracker] = []
        with clock.track(), (nullcontext() if memory.needs_own_run else memory.track()):
            for _ in range(spec.repeats):
                tracker = LatencyTracker(spec.device)  # one per run: samples stay per run
                net.regions = Regions(tracker, region_names)
                try:
                    runs.append(run_mode(*args, step_timer=tracker))
                finally:
                    net.regions = None
                trackers.append(tracker)
        if memory.needs_own_run:  # CPU: the memory profiler would slow the timed runs
            live = loaded.weights_bytes + tensor_bytes(inputs.input_ids, inputs.pixel_values, inputs.answer_ids)
            with memory.track(live_bytes=live):
                run_mode(*args)
        timings = [t.result() for t in trackers]  # CUDA: one synchronize, then every event is read
        step_ms = [t.pop("step") for t in timings]
        # every measured run gets its step rows (counts, and its own step times); the summary's
        # counts are the first run's (runs of one point are deterministic on CPU)
        step_rows: list[dict] = []
        for repeat, (run, ms) in enumerate(zip(runs, step_ms, strict=True)):
            run_summary, rows = _count_fields(spec, loaded, run, self.flops)
            if repeat == 0:
                summary = run_summary
            for row, sample in zip(rows, ms, strict=True):
                row.update(repeat=repeat, step_ms=sample)
            step_rows += rows
        summary.update(dict.fromkeys(LATENCY_COLUMNS + MEMORY_COLUMNS), load_avg_1m=self._load)
        summary.update(latency_columns(spec.mode, step_ms, timings), timer=trackers[0].timer)
        clk = clock.result()
        summary.update(throttled=clk.throttled if clk is not None else None,
                       sm_clock_mhz=clk.sm_clock_mhz_end if clk is not None else None)  # fmt: skip
        mem = memory.result()
        summary.update({name: getattr(mem, name) for name in MEMORY_COLUMNS})
        return summary, step_rows

    def _check_load(self, spec: RunSpec) -> None:
        """Warn (once per sweep) when other work competes for the CPU the timings come from."""
        load, cores = envmod.load_average(), os.cpu_count()
        self._load = load
        if spec.device == "cpu" and load is not None and cores and load > cores and not self._load_warned:
            self._load_warned = True
            warnings.warn(f"the 1-minute load average ({load:.2f}) exceeds the {cores} CPU cores: "
                          "other work competes for the CPU and CPU timings are noisy", stacklevel=2)


SPEC_FIELDS = tuple(RunSpec.__dataclass_fields__)


def spec_key(spec: RunSpec) -> tuple:
    return tuple(getattr(spec, f) for f in SPEC_FIELDS)


# ---- row fields -----------------------------------------------------------------------------------
PHASES = {"prefill": "prefill", "no-cache": "forward", "kv-cache": "decode"}  # step ≥ 1 (kv-cache: step 0 is prefill)


def _phase(mode: str, step: int) -> str:
    return "prefill" if mode == "prefill" or (mode == "kv-cache" and step == 0) else PHASES[mode]


def layer_groups(values: list) -> dict[str, object]:
    """Per-layer values run-length encoded by layer range: [s, s, e, s] → {"0-1": s, "2": e, "3": s}."""
    groups, start = {}, 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            groups[f"{start}-{i - 1}" if i - 1 > start else str(start)] = values[start]
            start = i
    return groups


def attn_ledger(mode: str, steps) -> dict[str, dict[str, str]] | None:
    """Attention implementation per layer group, per phase of the run ("prefill", "forward" for
    no-cache steps, "decode"); within a phase every step runs the same implementations."""
    ledger = {}
    for step in steps:
        if step.layer_attn is not None:
            ledger.setdefault(_phase(mode, step.step), layer_groups(step.layer_attn))
    return ledger or None


def _count_fields(spec: RunSpec, loaded: _Loaded, result: ModeResult, flops: bool) -> tuple[dict, list[dict]]:
    p = loaded.net.preset
    last = result.last
    kv = lambda lens: kv_bytes(lens, p.kv_heads, p.hidden // p.heads, DTYPES[spec.dtype], spec.batch)  # noqa: E731
    step_rows, totals = [], {"vision": 0, "llm": 0, "predictors": 0, "lm_head": 0}
    for step in result.steps:
        row = {
            "step": step.step, "token_ids": step.token_ids,
            "layer_seq_lens": step.layer_seq_lens, "layer_cache_lens": step.layer_cache_lens,
            "image_tokens_kept": step.image_tokens_kept, "text_tokens_fed": step.text_tokens_fed,
            "text_tokens_kept": step.text_tokens_kept, "kv_bytes_prompt": step.kv_bytes_prompt,
            "kv_bytes_generated": step.kv_bytes_generated, "kv_bytes": _kv_total(step, kv),
            "attn_ledger": attn_ledger(spec.mode, [step]),
        }  # fmt: skip
        if flops:
            macs = loaded.cost.step(step, spec.batch)
            for part in totals:
                totals[part] += getattr(macs, part)
            row["tmacs"] = macs.total / 1e12
        step_rows.append(row)
    fed, kept = last.text_tokens_fed, last.text_tokens_kept
    image_lens = result.steps[0].layer_image_tokens  # the (first) full-sequence forward
    summary = {
        "image_tokens": p.image_tokens, "seq_len": spec.prompt_len + p.image_tokens,
        "image_tokens_kept": last.image_tokens_kept, "text_tokens_fed": fed, "text_tokens_kept": kept,
        "vision_keep_realized": last.image_tokens_kept / p.image_tokens,
        "text_keep_realized": kept / fed if fed and kept is not None else None,
        "equivalent_tokens": sum(image_lens) / len(image_lens) if image_lens else None,
        "layer_seq_lens": last.layer_seq_lens, "layer_cache_lens": last.layer_cache_lens,
        "generated_ids": result.generated_ids[0] if result.generated_ids else None,
        "params": loaded.params, "weights_bytes": loaded.weights_bytes,
        "kv_bytes": _kv_total(last, kv), "kv_bytes_prompt": last.kv_bytes_prompt,
        "kv_bytes_generated": last.kv_bytes_generated,
        "kv_budget_tokens": kv_budget_tokens(spec.kv_budget, spec.prompt_len + p.image_tokens)
        if spec.method in KV_METHODS else None,
        "matched_ratio": spec.matched_ratio, "attn_ledger": attn_ledger(spec.mode, result.steps),
    }  # fmt: skip
    if flops:
        summary.update({f"tmacs_{part}": value / 1e12 for part, value in totals.items()})
        summary["tmacs"] = sum(totals.values()) / 1e12
        meta = spec.device == "meta"
        summary["flops_source"] = "fvcore (meta; vision on a CPU stand-in)" if meta else "fvcore"
    summary.update(_analytic(spec, p, result))
    return summary, step_rows


def _analytic(spec: RunSpec, p, result: ModeResult) -> dict:
    """Paper-convention FLOPs (prefill, no-cache) and FastV-convention MACs (prefill): image
    tokens per layer as the prefill forward saw them; output-text tokens at the final length."""
    last = result.last
    if spec.mode == "prefill":
        image = result.steps[0].layer_image_tokens
        return {"tflops_paper": tflops_paper(image, p.hidden) * spec.batch,
                "tmacs_fastv": tmacs_fastv(image, p.hidden, p.intermediate) * spec.batch}  # fmt: skip
    if spec.mode == "no-cache":
        text = paper_decode_layer_tokens(p.layers, p.sparse_layer, last.text_tokens_fed, last.text_tokens_kept)
        return {"tflops_paper": tflops_paper(text, p.hidden) * spec.batch, "tmacs_fastv": None}
    return {"tflops_paper": None, "tmacs_fastv": None}


def _kv_total(step, kv) -> int | None:
    """Prompt + generated KV bytes; from the cache lengths where the split is unknown (h2o planned)."""
    if step.kv_bytes_prompt is not None:
        return step.kv_bytes_prompt + step.kv_bytes_generated
    if step.layer_cache_lens is None:
        return None
    return kv(step.layer_cache_lens)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _json(obj: dict) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
