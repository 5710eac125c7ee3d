"""Roofline bounds: the fastest a GPU could run each counted step, from its FLOPs and its bytes.

A step cannot finish faster than `max(FLOPs / peak, bytes / bandwidth)` (Williams et al., "Roofline",
CACM 2009): whichever of compute or memory traffic is the tighter limit names its `bound`. This
module turns the counts a step already carries into that bound, so a CPU-only user can project a
saving onto a GPU (`--gpu h100-sxm`) and a GPU user sees how far each mode runs from it.

What is counted (per step, the model's own dtype):
* FLOPs = 2 × the step's fvcore MACs (`tmacs`, whole forward, batch included);
* bytes = the weights read by the modules that ran in that step — vision tower + projector only
  when they ran, every decoder layer, the final norm, the LM head, each predictor only when it
  scored something — plus the token-embedding rows gathered (not the table), plus KV read (in
  every layer, the cache entries from earlier steps that the step attends to) plus KV written
  (the entries the step leaves stored: what the cache grew by). Weights are read once per step
  whatever the batch; FLOPs, embedding rows and KV scale with it.
What is ignored: activations (hidden states, attention scores and the step's own K/V before they
are stored), the RoPE tables, masks, the re-copies a growing or evicting cache makes, kernel
launch gaps and caches on chip. So a roofline time is a lower bound, never a prediction.

Peak compute (`peak_for`): bfloat16 / float16 use the dense tensor-core figure; float32 the FP32
CUDA-core figure (`tflops_fp32_nontensor`), because PyTorch does not run float32 matmuls on TF32
tensor cores by default — the TF32 figure only when `torch.backends.cuda.matmul.allow_tf32` is on.

Pure arithmetic: no torch import. `module_bytes` reads a model's parameters (it works on `meta`);
`step_bytes` takes any object with a `modes.Step`'s shape fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynbench.errors import DynbenchError
from dynbench.measure.gpus import GpuSpec, custom_gpu, get_gpu, gpu_from_nvml_name, peak_tflops
from dynbench.names import DECODE_PHASE, FORWARD_PHASE, PREFILL_PHASE
from dynbench.stats import median_or_none

COMPUTE, MEMORY = "compute", "memory"


@dataclass(frozen=True)
class ModuleBytes:
    """Bytes of each module's parameters and buffers, measured once per model."""

    vision: int  # vision tower + projector
    layers: tuple[int, ...]  # each decoder layer
    final_norm: int
    lm_head: int
    embed_row: int  # one row of the token-embedding table: a step gathers rows, never the table
    embed_table: int  # the whole table (bookkeeping: the parts add up to the model)
    vision_predictor: int = 0  # Dynamic-LLaVA's image predictor
    text_predictor: int = 0  # Dynamic-LLaVA's output-text predictor

    @property
    def total(self) -> int:
        return (self.vision + sum(self.layers) + self.final_norm + self.lm_head + self.embed_table
                + self.vision_predictor + self.text_predictor)


def _tensor_bytes(module: Any) -> int:
    if module is None:
        return 0
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def module_bytes(net: Any) -> ModuleBytes:
    """The parts of a `models.llava.LlavaForBench` (or a subclass) by the module names HF uses."""
    lm = net.model.language_model
    table = lm.embed_tokens.weight
    return ModuleBytes(
        vision=_tensor_bytes(net.model.vision_tower) + _tensor_bytes(net.model.multi_modal_projector),
        layers=tuple(_tensor_bytes(layer) for layer in lm.layers),
        final_norm=_tensor_bytes(lm.norm),
        lm_head=_tensor_bytes(net.lm_head),
        embed_row=table.shape[1] * table.element_size(),
        embed_table=table.numel() * table.element_size(),
        vision_predictor=_tensor_bytes(getattr(net.model, "image_score_predictor", None)),
        text_predictor=_tensor_bytes(getattr(net.model, "output_text_score_predictor", None)),
    )


@dataclass(frozen=True)
class StepBytes:
    weights: int  # modules that ran, read once
    embed: int  # embedding rows gathered (× batch)
    kv_read: int  # cache entries from earlier steps attended (× batch)
    kv_written: int  # entries the cache grew by (× batch)

    @property
    def kv(self) -> int:
        return self.kv_read + self.kv_written

    @property
    def total(self) -> int:
        return self.weights + self.embed + self.kv_read + self.kv_written


def kv_entry_bytes(kv_heads: int, head_dim: int, element_bytes: int) -> int:
    """One token's K and V in one layer, one batch row."""
    return 2 * kv_heads * head_dim * element_bytes


def step_bytes(step: Any, weights: ModuleBytes, image_tokens: int, kv_entry: int, batch: int) -> StepBytes:
    """Bytes one step must move (module docstring). `step` has `modes.Step`'s fields:
    `layer_shapes` (queries, keys attended) per decoder layer, `layer_seq_lens` (set for a
    full-sequence forward: the prompt's image tokens come from the projector, not the table),
    `layer_cache_lens` (after the step; None without a cache), `vision_ran`, `image_scored`,
    `text_scored`."""
    shapes: Sequence[tuple[int, int]] = step.layer_shapes
    if len(shapes) != len(weights.layers):
        raise ValueError(f"the step ran {len(shapes)} decoder layers, the model has {len(weights.layers)}")
    w = sum(weights.layers) + weights.final_norm + weights.lm_head
    w += weights.vision if step.vision_ran else 0
    w += weights.vision_predictor if step.image_scored else 0
    w += weights.text_predictor if step.text_scored else 0
    q0 = shapes[0][0]
    rows = max(q0 - image_tokens, 0) if step.layer_seq_lens is not None else q0  # text tokens embedded
    before = [kv - q for q, kv in shapes]  # cached entries when the step began
    after = step.layer_cache_lens
    written = 0 if after is None else sum(max(a - b, 0) for a, b in zip(after, before, strict=True))
    return StepBytes(weights=w, embed=rows * weights.embed_row * batch,
                     kv_read=sum(before) * kv_entry * batch, kv_written=written * kv_entry * batch)


# ---- the roof ---------------------------------------------------------------------------------
def peak_for(gpu: GpuSpec, dtype: str, tf32: bool = False) -> float:
    """Peak TFLOP/s a roofline uses for matmuls in `dtype`: the dense tensor-core figure for
    bfloat16 / float16; for float32 the FP32 CUDA-core figure, or TF32 when `tf32` (PyTorch's
    `torch.backends.cuda.matmul.allow_tf32`, off by default) is on."""
    if dtype == "float32" and not tf32:
        return gpu.tflops_fp32_nontensor
    return peak_tflops(gpu, dtype)


@dataclass(frozen=True)
class Roof:
    """The two numbers of one roofline, and whether its times are projections (no measurement
    on that GPU: CPU and meta runs) or bounds beside a measurement (CUDA)."""

    gpu: str  # GpuSpec.name ("custom" for --gpu-spec)
    tflops: float
    gbps: float
    projected: bool

    @classmethod
    def of(cls, gpu: GpuSpec, dtype: str, tf32: bool, projected: bool) -> Roof:
        return cls(gpu.name, peak_for(gpu, dtype, tf32), gpu.mem_gbps, projected)

    @property
    def ridge(self) -> float:
        """FLOP/byte where the compute roof meets the memory roof."""
        return self.tflops * 1e12 / (self.gbps * 1e9)

    def bound(self, flops: float, nbytes: float) -> tuple[float, str]:
        """(fastest time in ms, "compute" | "memory")."""
        compute_ms = flops / (self.tflops * 1e12) * 1e3
        memory_ms = nbytes / (self.gbps * 1e9) * 1e3
        return (compute_ms, COMPUTE) if compute_ms >= memory_ms else (memory_ms, MEMORY)


def resolve_gpu(gpu: str | None = None, gpu_spec: str | None = None) -> GpuSpec | None:
    """The spec `--gpu NAME` or `--gpu-spec TFLOPS,GBPS` names; None when neither is given."""
    if gpu is not None and gpu_spec is not None:
        raise DynbenchError("--gpu and --gpu-spec both name the GPU; give one")
    if gpu_spec is not None:
        return custom_gpu(gpu_spec)
    return None if gpu is None else get_gpu(gpu)


def gpu_for_device(chosen: GpuSpec | None, device: str, nvml_name: str | None) -> GpuSpec | None:
    """The spec a point's roofline uses: the one chosen on the command line, else on CUDA the
    table entry for the NVML device name (None when it is not in the table), else none."""
    if chosen is not None:
        return chosen
    if device == "cuda" and nvml_name:
        return gpu_from_nvml_name(nvml_name)
    return None


def point_roof(gpu: GpuSpec, dtype: str, device: str) -> Roof:
    """The roofline of a point on `gpu`: float32 matmuls at the TF32 peak when torch lets them run on
    TF32 tensor cores (on CUDA), a projection unless the point runs on CUDA."""
    tf32 = False
    if dtype == "float32":
        import torch

        tf32 = _tf32_matmuls(torch)
    return Roof.of(gpu, dtype, tf32, projected=device != "cuda")


def _tf32_matmuls(torch) -> bool:
    """Whether float32 matmuls run on TF32 tensor cores: torch ≥ 2.9's `fp32_precision` ("tf32"),
    else the older `allow_tf32` (reading it can raise when a user mixed the two APIs)."""
    matmul = torch.backends.cuda.matmul
    try:
        precision = getattr(matmul, "fp32_precision", None)
        return precision == "tf32" if precision is not None else bool(matmul.allow_tf32)
    except RuntimeError:
        return False


# ---- columns ----------------------------------------------------------------------------------
ROOF_SUMMARY = ("ttft_roofline_ms", "tpot_roofline_ms", "step_roofline_ms_median", "total_roofline_ms",
                "roofline_bytes", "roofline_kv_bytes", "roofline_gpu", "roofline_tflops", "roofline_gbps",
                "roofline_projected", "ttft_roofline_ratio", "tpot_roofline_ratio", "total_roofline_ratio")
ROOF_STEP = ("step_roofline_ms", "roofline_bound", "roofline_bytes", "roofline_kv_bytes")
RATIOS = {"ttft_roofline_ratio": ("ttft_ms", "ttft_roofline_ms"),
          "tpot_roofline_ratio": ("tpot_ms_median", "tpot_roofline_ms"),
          "total_roofline_ratio": ("total_ms", "total_roofline_ms")}


def step_columns(roof: Roof, tmacs: float | None, nbytes: StepBytes) -> dict:
    """One step row's roofline columns (`tmacs` in tera-MACs, batch included)."""
    ms, bound = (None, None) if tmacs is None else roof.bound(2 * tmacs * 1e12, nbytes.total)
    return {"step_roofline_ms": ms, "roofline_bound": bound, "roofline_bytes": nbytes.total,
            "roofline_kv_bytes": nbytes.kv}


def summary_columns(phases: Sequence[str], roof: Roof, step_ms: Sequence[float],
                    step_bytes_: Iterable[StepBytes]) -> dict:
    """A run's roofline columns from its steps' phases and bounds (`step_ms`, one per step, in order),
    as the latency columns (`modes.HEADLINE_PHASE`): TTFT = a first step that is a prefill, TPOT = median
    of the decode steps, the median of the forwards (no-cache), total = Σ steps."""
    nbytes = list(step_bytes_)
    decode = [ms for ms, p in zip(step_ms, phases, strict=True) if p == DECODE_PHASE]
    forward = [ms for ms, p in zip(step_ms, phases, strict=True) if p == FORWARD_PHASE]
    return {
        "ttft_roofline_ms": step_ms[0] if phases[0] == PREFILL_PHASE else None,
        "tpot_roofline_ms": median_or_none(decode),
        "step_roofline_ms_median": median_or_none(forward),
        "total_roofline_ms": sum(step_ms),
        "roofline_bytes": sum(b.total for b in nbytes), "roofline_kv_bytes": sum(b.kv for b in nbytes),
        "roofline_gpu": roof.gpu, "roofline_tflops": roof.tflops, "roofline_gbps": roof.gbps,
        "roofline_projected": roof.projected,
    }


def ratio_columns(summary: Mapping[str, Any]) -> dict:
    """measured / roofline for TTFT, TPOT (median) and total; None where either is missing."""
    out = {}
    for name, (measured, bound) in RATIOS.items():
        m, b = summary.get(measured), summary.get(bound)
        out[name] = m / b if m is not None and b else None
    return out
