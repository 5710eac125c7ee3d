"""The rows of one point, assembled from what it measured (`measure.point.PointMeasurement`).

Step rows: one per step of every measured run (`repeat`, `step`, the step's counts, its fvcore
MACs and its time). The summary row: the counts of the first run's last step (runs of a point
are deterministic on CPU; on a GPU a learned text decision could flip on a near-tie, and each
run's step rows keep their own counts), FLOPs summed over that run's steps, the analytic FLOP
conventions, and every latency column from `latency_columns` — a pure function of the per-run
step samples — plus memory and clocks, and with a GPU spec the roofline bound of every step
(`measure/roofline.py`) and the run's. Columns are the schema's (`records.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dynbench.measure import roofline
from dynbench.measure.energy import energy_columns
from dynbench.measure.host import host_bound, host_columns
from dynbench.measure.latency import latency_columns
from dynbench.measure.launches import launch_columns
from dynbench.measure.point import PointMeasurement
from dynbench.measure.poll import NVML_POLL_INTERVAL_S
from dynbench.models.rules import (
    equivalent_tokens,
    kv_budget_tokens,
    kv_bytes,
    paper_decode_layer_tokens,
    tflops_paper,
    tmacs_fastv,
)
from dynbench.modes import HEADLINE_PHASE, ModeResult
from dynbench.names import DTYPE_BYTES
from dynbench.quality import step_answer_columns
from dynbench.registry import get as get_method

PARTS = ("vision", "llm", "predictors", "lm_head")  # tmacs_<part>
LATENCY_COLUMNS = ("timer", "ttft_ms", "vision_ms", "llm_prefill_ms", "tpot_ms_median", "tpot_ms_p90", "tpot_ms_p99",
                   "step_ms_median", "step_ms_p90", "total_ms", "latency_ms_samples", "ttft_ms_samples",
                   "total_ms_samples", "latency_cv", "scoring_ms", "throttled", "sm_clock_mhz")
MEMORY_COLUMNS = ("peak_alloc_bytes", "peak_reserved_bytes", "nvml_process_bytes", "nvml_source", "peak_rss_bytes",
                  "peak_tensor_bytes", "peak_mem_bytes", "mem_source")


@dataclass(frozen=True)
class ModelFacts:
    """What a row records about the model, measured once per build."""

    preset: object  # models.presets.Preset
    params: int
    weights_bytes: int
    module_bytes: roofline.ModuleBytes | None = None  # per-module weights, for roofline bounds


@dataclass(frozen=True)
class PointRows:
    summary: dict
    steps: list[dict]


def layer_groups(values: list) -> dict[str, object]:
    """Per-layer values run-length encoded by layer range: [s, s, e, s] → {"0-1": s, "2": e, "3": s}."""
    groups, start = {}, 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            groups[f"{start}-{i - 1}" if i - 1 > start else str(start)] = values[start]
            start = i
    return groups


def attn_ledger(steps) -> dict[str, dict[str, str]] | None:
    """Attention implementation per layer group, per phase of the run (`Step.phase`: "prefill",
    "forward" for no-cache steps, "decode"); the first step of a phase stands for it."""
    ledger = {}
    for step in steps:
        if step.layer_attn is not None:
            ledger.setdefault(step.phase, layer_groups(step.layer_attn))
    return ledger or None


def point_rows(spec, model: ModelFacts, measured: PointMeasurement, cost=None,
               roof: roofline.Roof | None = None) -> PointRows:
    """Rows of one point; `cost` (a `measure.model_cost.ModelCost`) adds fvcore MACs, and with
    them `roof` (`measure.roofline.Roof`) the roofline bound of every step."""
    steps: list[dict] = []
    summary: dict = {}
    for repeat, run in enumerate(measured.runs):
        run_summary, rows = _run_rows(spec, model, run, cost)
        if roof is not None and cost is not None and model.module_bytes is not None:
            run_summary.update(_roofline(spec, model, run, rows, roof))
        if repeat == 0:
            summary = run_summary
        ms = measured.step_ms[repeat] if measured.step_ms is not None else [None] * len(rows)
        host = measured.host_ms[repeat] if measured.host_ms is not None else [None] * len(rows)
        ops = measured.ops_per_step or [None] * len(rows)
        for row, sample, host_ms, n_ops in zip(rows, ms, host, ops, strict=True):
            row.update(repeat=repeat if measured.step_ms is not None else None, step_ms=sample)
            row.update(host_ms=host_ms, host_bound=host_bound(sample, host_ms), ops_per_step=n_ops)
            for name in roofline.ROOF_STEP:  # null without a GPU spec: every row carries every column
                row.setdefault(name, None)
        steps += rows
    summary.update(dict.fromkeys(LATENCY_COLUMNS + MEMORY_COLUMNS))
    headline = HEADLINE_PHASE[spec.mode]
    phases = [s.phase for s in measured.runs[0].steps] if measured.runs else []
    if measured.step_ms is not None:
        summary.update(latency_columns(phases, measured.step_ms, measured.regions or (), headline=headline),
                       timer=measured.timer)
    if measured.clock is not None:
        summary.update(throttled=measured.clock.throttled, sm_clock_mhz=measured.clock.sm_clock_mhz_median)
    if measured.memory is not None:
        summary.update({name: getattr(measured.memory, name) for name in MEMORY_COLUMNS})
    summary.update(energy_columns(measured.energy_j, len(measured.runs) if measured.step_ms else 0, spec.gen_len))
    summary.update(host_columns(phases, measured.step_ms, measured.host_ms, headline=headline),
                   **launch_columns(phases, measured.ops_per_step, headline=headline),
                   nvml_unavailable=measured.nvml_unavailable,
                   nvml_poll_ms=NVML_POLL_INTERVAL_S * 1e3 if spec.device == "cuda" else None)
    for name in roofline.ROOF_SUMMARY:  # null = no GPU named (CPU / meta without --gpu) or no FLOPs
        summary.setdefault(name, None)
    if summary["roofline_gpu"] is not None and not roof.projected:
        summary.update(roofline.ratio_columns(summary))  # measured / bound, beside a CUDA measurement
    return PointRows(summary, steps)


def _roofline(spec, model: ModelFacts, result: ModeResult, rows: list[dict], roof: roofline.Roof) -> dict:
    """Each step row's bound (added to `rows`) and the run's roofline summary columns."""
    p = model.preset
    entry = roofline.kv_entry_bytes(p.kv_heads, p.head_dim, DTYPE_BYTES[spec.dtype])
    nbytes = [roofline.step_bytes(step, model.module_bytes, p.image_tokens, entry, spec.batch)
              for step in result.steps]
    for row, b in zip(rows, nbytes, strict=True):
        row.update(roofline.step_columns(roof, row["tmacs"], b))
    return roofline.summary_columns([s.phase for s in result.steps], roof, [row["step_roofline_ms"] for row in rows],
                                    nbytes)


def _kv(spec, preset):
    return lambda lens: kv_bytes(lens, preset.kv_heads, preset.head_dim, DTYPE_BYTES[spec.dtype], spec.batch)


def _run_rows(spec, model: ModelFacts, result: ModeResult, cost) -> tuple[dict, list[dict]]:
    p = model.preset
    last = result.last
    kv = _kv(spec, p)
    step_rows, totals = [], dict.fromkeys(PARTS, 0)
    for step in result.steps:
        row = {
            "step": step.step, "phase": step.phase, "token_ids": step.token_ids,
            "layer_seq_lens": step.layer_seq_lens, "layer_cache_lens": step.layer_cache_lens,
            "image_tokens_kept": step.image_tokens_kept, "text_tokens_fed": step.text_tokens_fed,
            "text_tokens_kept": step.text_tokens_kept, "kv_bytes_prompt": step.kv_bytes_prompt,
            "kv_bytes_generated": step.kv_bytes_generated, "kv_bytes": _kv_total(step, kv),
            "attn_ledger": attn_ledger([step]), "nll": step.nll,
        }
        if cost is not None:
            macs = cost.step(step, spec.batch)
            for part in PARTS:
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
        "equivalent_tokens": equivalent_tokens(image_lens) if image_lens else None,
        "layer_seq_lens": last.layer_seq_lens, "layer_cache_lens": last.layer_cache_lens,
        "generated_ids": result.generated_ids[0] if result.generated_ids else None,
        "params": model.params, "weights_bytes": model.weights_bytes,
        "kv_bytes": _kv_total(last, kv), "kv_bytes_prompt": last.kv_bytes_prompt,
        "kv_bytes_generated": last.kv_bytes_generated,
        "kv_budget_tokens": kv_budget_tokens(spec.kv_budget, spec.prompt_len + p.image_tokens)
        if get_method(spec.method).evicts_kv else None,
        "matched_ratio": spec.matched_ratio, "attn_ledger": attn_ledger(result.steps),
    }
    if cost is not None:
        summary.update({f"tmacs_{part}": value / 1e12 for part, value in totals.items()})
        summary["tmacs"] = sum(totals.values()) / 1e12
        meta = spec.device == "meta"
        summary["flops_source"] = "fvcore (meta; vision on a CPU stand-in)" if meta else "fvcore"
    summary.update(_analytic(spec, p, result))
    summary.update(step_answer_columns(result.steps))
    return summary, step_rows


def _analytic(spec, p, result: ModeResult) -> dict:
    """Paper-convention FLOPs (prefill, no-cache) and FastV-convention MACs (prefill): image
    tokens per layer as the prefill forward saw them; output-text tokens at the final length."""
    last = result.last
    if spec.mode == "prefill":
        image = result.steps[0].layer_image_tokens
        return {"tflops_paper": tflops_paper(image, p.hidden) * spec.batch,
                "tmacs_fastv": tmacs_fastv(image, p.hidden, p.intermediate) * spec.batch}
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
