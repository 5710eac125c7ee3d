"""THE record schema: every column a results row may carry, declared once, and the point keys.

A results folder's `records.jsonl` holds one summary row per point (`step` null) and one step row
per step of every measured run. Every column is declared here with its unit, type, which rows
carry it and which modes fill it; the runner writes only declared columns (`validate`, tested on
real sweeps), the report, the plots and the gate read them by these names, and docs/records.md's
column list is generated from this table (`report/columns.py`, a test keeps them equal).

Units are suffixes and values raw SI: `_ms` milliseconds, `_bytes` bytes, `tmacs` / `tflops_*`
tera multiply-adds / FLOPs (the convention in the name). null means "not measured", never 0.

Keys (every reader — merge, check, --resume, shards, report, printing — uses these, never its own):
* `COMPARISON_KEY` — what must match for two rows to be compared at all ("the same point" for
  Δ% vs `llava`): model, mode, batch, prompt_len, gen_len, dtype, device, attn.
* `POINT_KEY` — one measured point: the comparison key plus the method and everything that
  changes what it computes or how it is timed (keeps, policies, baseline parameters, seed,
  weights and inputs, fine regions). Readers take a point's last summary row
  (`latest_summaries`): a point run again after an error is appended again.
* `SHOWN_KEY` — a point as shown (report, plots): POINT_KEY and env_id (two machines, two points).
* `RESUME_KEY` — what `--resume` and a sweep's fingerprint compare: every spec field.
* `MODEL_KEY` — the points that build the same model (built once; a shard keeps them together).

Dataset points (`--dataset`) write, per sample, its step rows, its round rows (conversations of
several turns) and its sample row, then the point's aggregate row. `row_kind` tells the four kinds
apart (step, round, sample, point); only the point row stands for the point (`is_point_summary`),
so readers never mix a sample into a comparison, and merge keeps a point's other rows with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dynbench.fields import POINT_FIELDS
from dynbench.names import DECODE_PHASE, FORWARD_PHASE, MODES, PREFILL_PHASE

SUMMARY, STEP, BOTH = "summary", "step", "both"
DECODE = ("no-cache", "kv-cache")
WITH_PREFILL = ("prefill", "kv-cache")


@dataclass(frozen=True)
class Column:
    name: str
    group: str  # docs/records.md section: spec, identity, environment, where it ran, weights and inputs, counts, FLOPs,
    # memory, latency, roofline
    type: str  # str | int | float | bool | list[int] | list[float] | list | dict
    doc: str
    unit: str = ""
    rows: str = BOTH  # which rows carry it: summary | step | both
    modes: tuple[str, ...] = MODES  # modes that fill it; null in the others


def _c(name, group, type_, doc, unit="", rows=BOTH, modes=MODES) -> Column:
    return Column(name, group, type_, doc, unit, rows, tuple(modes))


SPEC, IDENT, ENV, SOURCE, COUNTS, FLOPS, MEMORY, LATENCY = (
    "spec", "identity", "environment", "weights and inputs", "counts", "FLOPs", "memory", "latency")
ROOFLINE = "roofline"
WHERE = "where it ran"
DATASET = "datasets"
# the aggregate row of a dataset point: the mean over samples in the column itself, and these
# percentiles over samples (linear interpolation, numpy's default) in `<column>_p10` / `_p50` / `_p90`
SPREAD_METRICS = ("vision_keep_realized", "text_keep_realized", "text_tokens_kept", "text_tokens_fed", "tmacs",
                  "kv_bytes", "kv_bytes_generated", "ttft_ms", "tpot_ms_median", "step_ms_median", "total_ms")
SPREAD_METRICS += ("ppl", "meteor")  # quality (dynbench/quality.py)
QUANTILES = {"p10": 10, "p50": 50, "p90": 90}
QUALITY = "quality"

# ---- spec: the RunSpec, one column per field (`fields.py`; a field a point does not use is null)
_SPEC_DECLARED = tuple(_c(f.name, SPEC, f.kind, f.column_doc, f.unit, modes=f.modes) for f in POINT_FIELDS)

_DECLARED: tuple[Column, ...] = _SPEC_DECLARED + (
    # ---- identity
    _c("step", IDENT, "int", "step index within a run; null on the summary row"),
    _c("repeat", IDENT, "int", "measured run the step row belongs to (0 … repeats − 1)", rows=STEP),
    _c("status", IDENT, "str", "ok | oom | error: <message>"),
    _c("point_id", IDENT, "str", "shared by a point's step rows and summary row"),
    _c("time_utc", IDENT, "str", "when the point started (ISO 8601)"),
    _c("git_sha", IDENT, "str", "dynbench checkout that measured it"),
    _c("text_keep_imposed", IDENT, "bool", "budget policy: the text keep was imposed, not the method's own"),
    _c("env_id", IDENT, "str", "hash of the comparability fields of the environment (DIR/env/<env_id>.json)"),
    _c("sample", IDENT, "int", "dataset points: index of the sample (0-based, after --limit / --sample-seed); "
       "null on the point's aggregate row"),
    _c("sample_id", IDENT, "str", "dataset points: the sample's `id` (else `line N` / `item N`)"),
    _c("round", IDENT, "int", "conversations: the round (0 = the first human turn, with the image) of a step "
       "row, or of a round row (step null)"),
    # ---- environment (the full snapshot is DIR/env/<env_id>.json)
    _c("gpu_name", ENV, "str", "NVML / torch device name (CUDA)"),
    _c("driver_version", ENV, "str", "NVIDIA driver (CUDA)"),
    _c("cuda_version", ENV, "str", "torch's CUDA version"),
    _c("torch_version", ENV, "str", "torch version"),
    _c("transformers_version", ENV, "str", "transformers version"),
    _c("fvcore_version", ENV, "str", "fvcore version"),
    _c("cpu_threads", ENV, "int", "torch intra-op threads (CPU timings scale with it)"),
    _c("load_avg_1m", ENV, "float", "1-minute load average when the point started", rows=SUMMARY),
    # ---- where it ran (per row, not in the env snapshot or the env_id: several machines share an environment)
    _c("hostname", WHERE, "str", "the machine's hostname (socket.gethostname())"),
    _c("job_id", WHERE, "str", "scheduler job: the Slurm job id (`<array job>_<task>` in an array) or submitit's "
       "local job id; null outside a job"),
    _c("array_index", WHERE, "int", "index of the task in its job array (0 … N − 1: shard K of N is K − 1)"),
    _c("gpu_uuid", WHERE, "str", "UUID of the CUDA device (NVML, else torch; CUDA only)"),
    # ---- weights and inputs
    _c("checkpoint_layout", SOURCE, "str", "hf | official (with --checkpoint)"),
    _c("vision_tower", SOURCE, "str", "--vision-tower folder"),
    _c("sparse_config", SOURCE, "dict", "the checkpoint's Dynamic-LLaVA sparse_config"),
    _c("inputs_source", SOURCE, "str", "synthetic | npz | image-prompt | dataset"),
    _c("preprocessing", SOURCE, "str", "image-prompt: pad | crop"),
    # ---- counts
    _c("image_tokens", COUNTS, "int", "image tokens in the prompt (576)", "tokens", SUMMARY),
    _c("seq_len", COUNTS, "int", "P = prompt_len + image tokens", "tokens", SUMMARY),
    _c("image_tokens_kept", COUNTS, "int", "image tokens kept from the pruned layer on (per row)", "tokens"),
    _c("text_tokens_fed", COUNTS, "int", "generated tokens fed back so far (gen_len − 1 at the end)", "tokens"),
    _c("text_tokens_kept", COUNTS, "int", "of those, kept from the sparse layer on (null: per layer/head)", "tokens"),
    _c("vision_keep_realized", COUNTS, "float", "image_tokens_kept / image_tokens", rows=SUMMARY),
    _c("text_keep_realized", COUNTS, "float", "text_tokens_kept / text_tokens_fed", rows=SUMMARY, modes=DECODE),
    _c("equivalent_tokens", COUNTS, "float", "image tokens averaged over decoder layers (FastV convention)",
       "tokens", SUMMARY),
    _c("layer_seq_lens", COUNTS, "list[int]", "input length of each decoder layer (full-sequence forwards; "
       "summary: the last step's)", "tokens"),
    _c("layer_cache_lens", COUNTS, "list[int]", "KV length of each layer after the step (cache modes; "
       "summary: the last step's)", "tokens", modes=WITH_PREFILL),
    _c("generated_ids", COUNTS, "list[int]", "tokens produced, batch row 0", rows=SUMMARY),
    _c("token_ids", COUNTS, "list[int]", "the token this step produced, per batch row", rows=STEP),
    _c("params", COUNTS, "int", "parameters of the model", rows=SUMMARY),
    _c("kv_budget_tokens", COUNTS, "int", "h2o / streaming-llm: cached entries per layer and head at most",
       "tokens", SUMMARY, WITH_PREFILL),
    _c("matched_ratio", COUNTS, "float", "the ratio --match-budget set (fastv R, random keep)", rows=SUMMARY),
    _c("attn_ledger", COUNTS, "dict", "attention implementation per phase and layer range"),
    # ---- FLOPs
    _c("tmacs", FLOPS, "float", "fvcore MACs of the whole forward (summary: Σ steps of one run)", "TMACs"),
    _c("tmacs_vision", FLOPS, "float", "vision tower + projector", "TMACs", SUMMARY),
    _c("tmacs_llm", FLOPS, "float", "decoder layers (and RoPE tables)", "TMACs", SUMMARY),
    _c("tmacs_predictors", FLOPS, "float", "Dynamic-LLaVA's predictors", "TMACs", SUMMARY),
    _c("tmacs_lm_head", FLOPS, "float", "LM head (one row per sequence)", "TMACs", SUMMARY),
    _c("flops_source", FLOPS, "str", "how tmacs was counted", rows=SUMMARY),
    _c("tflops_paper", FLOPS, "float", "analytic, Dynamic-LLaVA paper convention (2×MAC, 32NC² + 4N²C per "
       "layer); null for kv-cache", "TFLOPs", SUMMARY, ("prefill", "no-cache")),
    _c("tmacs_fastv", FLOPS, "float", "analytic, FastV convention (4nd² + 2n²d + 3ndm, image tokens)", "TMACs",
       SUMMARY, ("prefill",)),
    # ---- memory
    _c("weights_bytes", MEMORY, "int", "parameters + buffers", "bytes", SUMMARY),
    _c("kv_bytes", MEMORY, "int", "logical KV cache: Σ layers 2 × len × kv heads × head dim × bytes × batch",
       "bytes", modes=WITH_PREFILL),
    _c("kv_bytes_prompt", MEMORY, "int", "of which prompt entries", "bytes", modes=WITH_PREFILL),
    _c("kv_bytes_generated", MEMORY, "int", "of which generated-token entries (the paper's Mem.)", "bytes",
       modes=WITH_PREFILL),
    _c("peak_alloc_bytes", MEMORY, "int", "CUDA allocator peak over the measured runs", "bytes", SUMMARY),
    _c("peak_reserved_bytes", MEMORY, "int", "CUDA allocator reserved peak", "bytes", SUMMARY),
    _c("nvml_process_bytes", MEMORY, "int", "NVML memory of this process (polled; includes the CUDA context)",
       "bytes", SUMMARY),
    _c("nvml_source", MEMORY, "str", "process | global-minus-baseline", rows=SUMMARY),
    _c("peak_rss_bytes", MEMORY, "int", "CPU: sampled process RSS (approximate, secondary)", "bytes", SUMMARY),
    _c("peak_tensor_bytes", MEMORY, "int", "CPU: weights and inputs + the peak of tensors allocated in one run",
       "bytes", SUMMARY),
    _c("peak_mem_bytes", MEMORY, "int", "the headline peak: peak_alloc_bytes (CUDA) or peak_tensor_bytes (CPU)",
       "bytes", SUMMARY),
    _c("mem_source", MEMORY, "str", "torch_allocator | cpu_tensors", rows=SUMMARY),
    _c("energy_j", MEMORY, "float", "GPU board energy of one measured run (NVML counter over the runs ÷ runs)",
       "J", SUMMARY),
    _c("energy_j_per_token", MEMORY, "float", "energy_j / gen_len (decode modes)", "J", SUMMARY, DECODE),
    # ---- latency
    _c("timer", LATENCY, "str", "cuda_event | cpu", rows=SUMMARY),
    _c("ttft_ms", LATENCY, "float", "median over runs of the prefill step", "ms", SUMMARY, WITH_PREFILL),
    _c("vision_ms", LATENCY, "float", "vision tower + projector, median per pass", "ms", SUMMARY),
    _c("llm_prefill_ms", LATENCY, "float", "LLM part of the prefill, median over runs", "ms", SUMMARY, WITH_PREFILL),
    _c("tpot_ms_median", LATENCY, "float", "median over the decode steps of every run", "ms", SUMMARY, ("kv-cache",)),
    _c("tpot_ms_p90", LATENCY, "float", "p90 of the decode steps", "ms", SUMMARY, ("kv-cache",)),
    _c("tpot_ms_p99", LATENCY, "float", "p99 of the decode steps", "ms", SUMMARY, ("kv-cache",)),
    _c("step_ms_median", LATENCY, "float", "median over every forward of every run", "ms", SUMMARY, ("no-cache",)),
    _c("step_ms_p90", LATENCY, "float", "p90 of the forwards", "ms", SUMMARY, ("no-cache",)),
    _c("total_ms", LATENCY, "float", "median over runs of the run's Σ steps", "ms", SUMMARY),
    _c("latency_ms_samples", LATENCY, "list[float]", "the headline samples: TTFT per run (prefill), every decode "
       "step (kv-cache), every forward (no-cache)", "ms", SUMMARY),
    _c("ttft_ms_samples", LATENCY, "list[float]", "the prefill step of each run", "ms", SUMMARY, WITH_PREFILL),
    _c("total_ms_samples", LATENCY, "list[float]", "Σ steps of each run", "ms", SUMMARY),
    _c("latency_cv", LATENCY, "float", "std / mean of latency_ms_samples", rows=SUMMARY),
    _c("scoring_ms", LATENCY, "float", "baselines' attention scoring, Σ per run (with --regions)", "ms", SUMMARY),
    _c("throttled", LATENCY, "bool", "a power or thermal limit held the clocks down during the measured runs "
       "(NVML violation counters and sampled clocks-event reasons)", rows=SUMMARY),
    _c("sm_clock_mhz", LATENCY, "int", "median SM clock while the measured runs ran (NVML, sampled every 50 ms)",
       "MHz", SUMMARY),
    _c("step_ms", LATENCY, "float", "this step's time", "ms", STEP),
    # ---- roofline (measure/roofline.py): analytic lower bounds on roofline_gpu, null without one
    _c("step_roofline_ms", ROOFLINE, "float", "max(2 × tmacs / peak, roofline_bytes / bandwidth) of this step",
       "ms", STEP),
    _c("roofline_bound", ROOFLINE, "str", "compute | memory: which roof bounds this step", rows=STEP),
    _c("roofline_bytes", ROOFLINE, "int", "bytes the step moves: weights of the modules that ran, embedding "
       "rows, KV read and written (activations ignored; summary: Σ steps of one run)", "bytes"),
    _c("roofline_kv_bytes", ROOFLINE, "int", "of which KV read + written", "bytes"),
    _c("ttft_roofline_ms", ROOFLINE, "float", "roofline of the prefill step", "ms", SUMMARY, WITH_PREFILL),
    _c("tpot_roofline_ms", ROOFLINE, "float", "median roofline of the decode steps", "ms", SUMMARY, ("kv-cache",)),
    _c("step_roofline_ms_median", ROOFLINE, "float", "median roofline of the forwards", "ms", SUMMARY,
       ("no-cache",)),
    _c("total_roofline_ms", ROOFLINE, "float", "Σ steps' rooflines of one run", "ms", SUMMARY),
    _c("roofline_gpu", ROOFLINE, "str", "GPU spec of the bounds (dynbench gpus; custom = --gpu-spec)",
       rows=SUMMARY),
    _c("roofline_tflops", ROOFLINE, "float", "peak used: dense tensor-core bf16/fp16; fp32 CUDA cores "
       "(TF32 only when allowed)", "TFLOP/s", SUMMARY),
    _c("roofline_gbps", ROOFLINE, "float", "memory bandwidth used (decimal)", "GB/s", SUMMARY),
    _c("roofline_projected", ROOFLINE, "bool", "true: projected onto roofline_gpu (CPU / meta run, no latency "
       "measured there); false: a bound beside a CUDA measurement", rows=SUMMARY),
    _c("ttft_roofline_ratio", ROOFLINE, "float", "ttft_ms / ttft_roofline_ms (CUDA only)", rows=SUMMARY,
       modes=WITH_PREFILL),
    _c("tpot_roofline_ratio", ROOFLINE, "float", "tpot_ms_median / tpot_roofline_ms (CUDA only)", rows=SUMMARY,
       modes=("kv-cache",)),
    _c("total_roofline_ratio", ROOFLINE, "float", "total_ms / total_roofline_ms (CUDA only)", rows=SUMMARY),
    # ---- GPU first contact (issue 25): host-bound steps, kernel launches, why NVML figures are null
    _c("host_ms", LATENCY, "float", "CUDA: wall time from the step's start event until its last launch returned "
       "(no sync); null on CPU, where execution is synchronous", "ms", STEP),
    _c("host_bound", LATENCY, "bool", "CUDA: step_ms ≤ host_ms × 1.05 — the GPU waited for the host (Python "
       "launching ops), so step_ms measures the host", rows=STEP),
    _c("host_ms_median", LATENCY, "float", "CUDA: median host_ms over the headline steps (decode steps, "
       "forwards, the prefill)", "ms", SUMMARY),
    _c("host_bound_frac", LATENCY, "float", "CUDA: share of the headline steps that are host_bound (≥ 0.5: the "
       "report labels TPOT and its roofline ratio host-bound)", rows=SUMMARY),
    _c("ops_per_step", COUNTS, "int", "kernel-launching aten ops one step dispatches (views, empty and metadata "
       "ops excluded), counted in one untimed run; summary: median over the headline steps. Exact, gated",
       "ops"),
    _c("ops_total", COUNTS, "int", "Σ ops_per_step over one run's steps. Exact, gated", "ops", SUMMARY),
    _c("nvml_unavailable", MEMORY, "dict", "CUDA: NVML quantities that could not be read (sm_clock, "
       "clock_event_reasons, violation_counters, memory, energy) → why (NotSupported, NoPermission, a frozen "
       "energy counter); their columns are null", rows=SUMMARY),
    _c("nvml_poll_ms", MEMORY, "float", "CUDA: interval of the NVML sampling thread (clocks, reasons, memory)",
       "ms", SUMMARY),
    # ---- datasets (dynbench/samples.py): per-sample, per-round and aggregate rows of a dataset point
    _c("rounds", DATASET, "int", "rounds of the sample's conversation (human turns run)", rows=SUMMARY),
    _c("round_prompt_tokens", DATASET, "int", "round rows: prompt tokens the round added (round 0: P with the "
       "image; later rounds: `USER:{q}ASSISTANT:`)", "tokens", SUMMARY),
    _c("samples", DATASET, "int", "aggregate row: samples aggregated (status ok)", rows=SUMMARY),
    _c("samples_skipped", DATASET, "int", "aggregate row: dataset records skipped as bad (--skip-bad)",
       rows=SUMMARY),
    _c("text_keep_pooled", DATASET, "float", "aggregate row: Σ text_tokens_kept / Σ text_tokens_fed over samples "
       "(token-weighted, the official scripts' mean cache length / mean output length)", rows=SUMMARY,
       modes=DECODE),
    # ---- quality (dynbench/quality.py): PPL of teacher-forced answers, METEOR of free-run answers
    _c("nll", QUALITY, "float", "teacher forcing: cross-entropy of the answer token this step predicted (batch "
       "row 0; the first answer token is predicted by the prefill); null on a step past the answer", "nats",
       STEP, DECODE),
    _c("answer_tokens", QUALITY, "int", "teacher forcing: answer tokens scored (sample, round or point; the "
       "aggregate: mean over samples)", "tokens", SUMMARY, DECODE),
    _c("nll_mean", QUALITY, "float", "mean cross-entropy over the answer tokens", "nats", SUMMARY, DECODE),
    _c("ppl", QUALITY, "float", "exp(nll_mean); a conversation's sample row: the mean of its rounds' PPL (the "
       "official multi-round script); the aggregate: the mean of per-sample PPL (the paper's)", rows=SUMMARY,
       modes=DECODE),
    _c("ppl_pooled", QUALITY, "float", "aggregate row: exp(Σ NLL / Σ answer tokens) over samples (token-"
       "weighted)", rows=SUMMARY, modes=DECODE),
    _c("answer_argmax", QUALITY, "list[int]", "teacher forcing: the argmax id at each answer position (batch "
       "row 0); `report` compares it with llava's (top1_agree)", rows=SUMMARY, modes=DECODE),
    _c("meteor", QUALITY, "float", "free run with a reference answer: nltk single_meteor_score of the output cut "
       "at EOS (reference lower-cased, as the official script); conversations: mean over rounds; the aggregate: "
       "mean over samples", rows=SUMMARY, modes=DECODE),
    _c("output_tokens", QUALITY, "int", "free run: tokens produced before the first EOS (Σ over rounds)",
       "tokens", SUMMARY, DECODE),
    # ---- step phase (issue 24): what the step ran, so readers never re-derive it from the mode
    _c("phase", IDENT, "str", "prefill | forward | decode: a prefill (a conversation's next turn too), a "
       "no-cache forward, a decode step (names.PHASES); older records lack it (`step_phase`)", rows=STEP),
)
_BASE = {c.name: c for c in _DECLARED}
COLUMNS: tuple[Column, ...] = _DECLARED + tuple(
    _c(f"{m}_{q}", DATASET, "float", f"aggregate row: {q} over samples of {m}", _BASE[m].unit, SUMMARY,
       _BASE[m].modes) for m in SPREAD_METRICS for q in QUANTILES
)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}
assert len(BY_NAME) == len(COLUMNS), "a column is declared twice"

SPEC_COLUMNS = tuple(c.name for c in COLUMNS if c.group == SPEC)


# ---- the environment snapshot's fields (`measure.env.snapshot`), each with the roles it plays ----
ROW_ENV = "row"  # copied into every row (a column of group `environment`)
ENV_ID = "env id"  # hashed into `env_id`: a change makes two measurements incomparable
BASELINE_ENV = "baseline"  # kept in a baseline's header
VERSIONED = "version"  # the gate: a change shifts exact counts (FLOPs, launches), so a mismatch is explained
LATENCY_ENV = "latency"  # the gate: latency is compared only on the same GPU and driver
MEMORY_ENV = "memory"  # the gate: memory is compared only on the same GPU, driver, CUDA and torch


@dataclass(frozen=True)
class EnvField:
    name: str
    roles: frozenset[str]


def _env(name: str, *roles: str) -> EnvField:
    return EnvField(name, frozenset(roles))


ENV_SNAPSHOT_FIELDS: tuple[EnvField, ...] = (
    _env("gpu_name", ROW_ENV, ENV_ID, BASELINE_ENV, LATENCY_ENV, MEMORY_ENV),
    _env("driver_version", ROW_ENV, ENV_ID, BASELINE_ENV, LATENCY_ENV, MEMORY_ENV),
    _env("cuda_version", ROW_ENV, ENV_ID, BASELINE_ENV, MEMORY_ENV),
    _env("torch_version", ROW_ENV, ENV_ID, BASELINE_ENV, VERSIONED, MEMORY_ENV),
    _env("transformers_version", ROW_ENV, ENV_ID, BASELINE_ENV, VERSIONED),
    _env("fvcore_version", ROW_ENV, ENV_ID, BASELINE_ENV, VERSIONED),
    _env("python_version", BASELINE_ENV),
    _env("platform", BASELINE_ENV),
    _env("cpu_model", BASELINE_ENV),
    _env("cpu_count"),
    _env("cpu_threads", ROW_ENV),
    _env("device", BASELINE_ENV),
    _env("device_type", ENV_ID, BASELINE_ENV),
    _env("dtype", ENV_ID, BASELINE_ENV),
    _env("attn", ENV_ID, BASELINE_ENV),
    _env("git_sha"),
)


def env_fields(role: str) -> tuple[str, ...]:
    """The snapshot fields that play `role`, in declaration order."""
    return tuple(f.name for f in ENV_SNAPSHOT_FIELDS if role in f.roles)


ENV_COLUMNS = env_fields(ROW_ENV)
assert all(BY_NAME[name].group == ENV for name in ENV_COLUMNS), "a row's environment field is not a column"

# a dataset point's samples (which file, how many, drawn how, forced or free) are part of "the same
# point": a method is only compared with llava over the very same samples
DATASET_KEY = ("dataset", "limit", "sample_seed", "free_run")
COMPARISON_KEY = ("model", "mode", "batch", "prompt_len", "gen_len", "dtype", "device", "attn", *DATASET_KEY)
POINT_KEY = COMPARISON_KEY + ("method", "vision_keep", "text_keep", "text_policy", "fastv_k", "fastv_r",
                              "kv_budget", "match_budget", "reuse_vision", "seed", "checkpoint", "inputs",
                              "teacher_force", "regions", "image_folder",
                              "method_options")
assert set(POINT_KEY) <= set(SPEC_COLUMNS)
# one point as shown (report, plots): its identity and the environment it ran in
SHOWN_KEY = POINT_KEY + ("env_id",)
# what `--resume` compares: every RunSpec field (warm-up and repeats included, unlike POINT_KEY)
RESUME_KEY = SPEC_COLUMNS
# the points that build the same model: the sweep builds it once, a shard keeps them together
MODEL_KEY = ("model", "method", "dtype", "device", "attn", "seed", "checkpoint")
assert set(MODEL_KEY) <= set(POINT_KEY)

# row kinds (`row_kind`): a step of a measured run, one round of a sample's conversation, one sample
# of a dataset point, and the point's own summary (a dataset point's aggregate)
STEP_ROW, ROUND_ROW, SAMPLE_ROW, POINT_ROW = "step", "round", "sample", "point"
ROW_KINDS = (STEP_ROW, ROUND_ROW, SAMPLE_ROW, POINT_ROW)

_PY_TYPES = {"str": str, "int": int, "float": (int, float), "bool": bool, "dict": dict,
             "list[int]": list, "list[float]": list, "list": list}


def hashable(value: Any) -> Any:
    """A record value as a dict key: lists → tuples, NaN → None (as stored)."""
    if isinstance(value, list | tuple):
        return tuple(hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    if isinstance(value, float) and value != value:
        return None
    return value


def key_of(row: Mapping[str, Any] | Any, fields: Iterable[str] = POINT_KEY) -> tuple:
    """The values of `fields` in order (missing → None) of a row or a RunSpec: `key_of(row)` is the
    point's identity, `key_of(spec, RESUME_KEY)` what --resume compares, `key_of(spec, MODEL_KEY)`
    the model it needs."""
    values = row.as_dict() if hasattr(row, "as_dict") else row
    return tuple(hashable(values.get(name)) for name in fields)


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def row_kind(row: Mapping[str, Any]) -> str:
    """STEP_ROW (a step of a measured run: `step` set), ROUND_ROW (one round of a sample's conversation),
    SAMPLE_ROW (one sample of a dataset point) or POINT_ROW (the point's summary: for a dataset point,
    the aggregate). A sample's and a round's rows share their point's key and `point_id`."""
    if not _null(row.get("step")):
        return STEP_ROW
    if not _null(row.get("round")):
        return ROUND_ROW
    return POINT_ROW if _null(row.get("sample")) else SAMPLE_ROW


def is_summary(row: Mapping[str, Any]) -> bool:
    """Summary-shaped (any kind but a step row): the schema's summary columns apply to it."""
    return row_kind(row) != STEP_ROW


def is_point_summary(row: Mapping[str, Any]) -> bool:
    """The one row that stands for a whole point (what reports, the gate, merge and --resume read)."""
    return row_kind(row) == POINT_ROW


def step_phase(row: Mapping[str, Any]) -> str:
    """A step row's phase: its `phase` column, or for records written before it, the one-round rule
    (a prefill-mode step and kv-cache step 0 are prefills; no-cache steps forwards; the rest decode)."""
    if row.get("phase") is not None:
        return row["phase"]
    if row.get("mode") == "prefill" or (row.get("mode") == "kv-cache" and row.get("step") == 0):
        return PREFILL_PHASE
    return FORWARD_PHASE if row.get("mode") == "no-cache" else DECODE_PHASE


def latest_summaries(rows: Iterable[Mapping[str, Any]], fields: Iterable[str] = POINT_KEY) -> dict[tuple, dict]:
    """The last summary row of each point (dataset points: the aggregate, never a sample or round
    row), in the order of their last write."""
    fields = tuple(fields)
    latest: dict[tuple, dict] = {}
    for row in rows:
        if is_point_summary(row):
            key = key_of(row, fields)
            latest.pop(key, None)  # re-insert: order follows the last write
            latest[key] = dict(row)
    return latest


def validate(row: Mapping[str, Any]) -> list[str]:
    """What is wrong with one record against the schema ([] = valid): undeclared columns, values
    of the wrong type, step-only columns on a summary row and the reverse."""
    problems = []
    summary = is_summary(row)
    for name, value in row.items():
        col = BY_NAME.get(name)
        if col is None:
            problems.append(f"{name}: not a declared column")
            continue
        if value is None:
            continue
        expected = _PY_TYPES[col.type]
        if not isinstance(value, expected) or (col.type in ("int", "float") and isinstance(value, bool)):
            problems.append(f"{name}: {type(value).__name__} {value!r}, expected {col.type}")
        elif col.type in ("list[int]", "list[float]") and not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            problems.append(f"{name}: {value!r}, expected {col.type}")
        if col.rows == STEP and summary or col.rows == SUMMARY and not summary:
            problems.append(f"{name}: a {col.rows}-row column on a {'summary' if summary else 'step'} row")
    return problems
