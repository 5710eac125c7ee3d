"""Compute cost of a forward pass: measured MACs (fvcore) and the papers' analytic formulas.

Three conventions live side by side; every function and column names its own:

- **MACs, measured** (`count_macs`, `decoder_layer_macs`; the `tmacs` column). fvcore counts one
  multiply-add as one "flop", so its numbers are MACs. It traces the forward with torch.jit and
  counts the matmul-like ops (linear, matmul, bmm, conv, einsum), layer/group norms by its own
  rule, and scaled-dot-product attention through `sdpa_macs_handle` (without it SDPA counts 0).
  Attention is counted over the full Sq x Sk score matrix, no causal halving, which is also what
  fvcore counts for eager attention's two matmuls, so `sdpa` and `eager` give equal counts.
  Not counted, by design: elementwise ops (RMSNorm pieces, RoPE, activations, softmax, residual
  adds), embedding lookups, gathers, top-k. The JIT trace drops dead code, so work whose result
  never reaches an output is not counted (e.g. the last CLIP layer under
  `vision_feature_layer=-2`).
- **FLOPs, Dynamic-LLaVA paper** (`tflops_paper`): FLOPs = 2 x MACs, per decoder layer
  32nc^2 + 4n^2c (the authors' reply in Osilly/dynamic_llava issue #6).
- **MACs, FastV / PyramidDrop / SparseVLM** (`tmacs_fastv`): per layer 4nd^2 + 2n^2d + 3ndm;
  those papers call these MACs "FLOPs".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

with warnings.catch_warnings():  # importing fvcore.nn scripts a function; torch ≥ 2.10 warns from torch.jit
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated")
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape
from transformers import DynamicCache
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

# --- analytic formulas -------------------------------------------------------------------------


# --- fvcore counting ---------------------------------------------------------------------------


def sdpa_macs_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for SDPA ops: B*Hq*Sq*Sk*(Dqk + Dv) MACs (QK^T plus AV, no causal halving).

    Batch, query heads and Sq are read from the output (B, Hq, Sq, Dv): SDPA broadcasts the batch,
    and under GQA (`enable_gqa`) k and v have fewer heads than q. Sk comes from k, Dqk from q.
    """
    q, k, out = get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0])
    return math.prod(out[:-1]) * k[-2] * (q[-1] + out[-1])


# Traces on CPU and meta (torch 2.13, fp32/bf16, MHA/GQA, prefill/decode) record only the composite
# `aten::scaled_dot_product_attention`: the tracer records the op before it dispatches to a
# kernel. The fused kernels are registered too, in case a trace ever records one; all take
# (q, k, v, ...) first and return the attention output first.
SDPA_OPS = (
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
    "aten::_scaled_dot_product_attention_math",
)

# Ops we count as 0 on purpose: the elementwise and lookup ops seen in LLaVA / LLaMA / CLIP traces,
# plus the selection ops of token pruning; fvcore's own ignore list (shape ops, cat, gather, ...)
# comes on top. Ignoring them explicitly keeps `MacCount.unsupported` for ops that might really be
# missing from the count.
ZERO_COST_OPS = (
    "aten::add",
    "aten::sub",
    "aten::mul",
    "aten::div",
    "aten::neg",
    "aten::pow",
    "aten::rsqrt",
    "aten::sqrt",
    "aten::exp",
    "aten::mean",
    "aten::sum",
    "aten::cumsum",
    "aten::diff",
    "aten::cos",
    "aten::sin",
    "aten::softmax",
    "aten::log_softmax",
    "aten::silu",
    "aten::gelu",
    "aten::sigmoid",
    "aten::tanh",
    "aten::embedding",
    "aten::masked_scatter",
    "aten::index_select",
    "aten::where",
    "aten::ne",
    "aten::lt",
    "aten::le",
    "aten::new_ones",
    "aten::topk",
    "aten::sort",
    "aten::argsort",
    "aten::argmax",
    "aten::searchsorted",
)


@dataclass(frozen=True)
class MacCount:
    """fvcore MACs of one traced forward.

    `by_module`: MACs per submodule down to the requested depth (depth 1 = direct children),
    names relative to the counted module (e.g. "layers", or "layers.3" at depth 2); a module
    that ran no counted op shows 0. Empty when not requested.
    `unsupported`: ops the trace met that have no handle and are not in ZERO_COST_OPS, with
    their call counts; non-empty means the total may miss work.
    """

    total: int
    by_module: dict[str, int]
    unsupported: dict[str, int]


class _TensorOut(nn.Module):
    """Calls `module(*inputs, **kwargs)` and returns only the tensors of its output.

    torch.jit, which fvcore traces with, accepts only tensors (in tuples, lists, dicts) as
    outputs; HF models return ModelOutputs holding Caches and Nones. Keyword arguments are fixed
    at construction (tensors among them become trace constants, which counts the same).
    """

    def __init__(self, module: nn.Module, kwargs: Mapping[str, Any]):
        super().__init__()
        self.inner = module
        self.kwargs = dict(kwargs)

    def forward(self, *inputs: Any) -> tuple[torch.Tensor, ...]:
        return _tensors(self.inner(*inputs, **self.kwargs))


def _tensors(out: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, Mapping):  # ModelOutput is a dict
        out = tuple(out.values())
    if isinstance(out, (tuple, list)):
        return tuple(t for item in out for t in _tensors(item))
    return ()  # Cache, None, scalars: nothing to keep


def count_macs(
    module: nn.Module,
    inputs: tuple[Any, ...],
    *,
    kwargs: Mapping[str, Any] | None = None,
    by_module: bool = True,
    depth: int = 1,
) -> MacCount:
    """Trace `module(*inputs, **kwargs)` once with fvcore and count its MACs.

    `inputs` must be tensors (JIT trace inputs); everything else goes in `kwargs`. Any output
    type is fine: only its tensors are kept. The module runs once, under no_grad.
    """
    wrapped = _TensorOut(module, kwargs or {})
    analysis = FlopCountAnalysis(wrapped, inputs)
    analysis.set_op_handle(**{op: sdpa_macs_handle for op in SDPA_OPS})
    analysis.set_op_handle(**{op: None for op in ZERO_COST_OPS})
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with torch.no_grad():
        total = analysis.total()
    per_module = {}
    if by_module:
        for name, macs in analysis.by_module().items():
            relative = name.removeprefix("inner.")
            if name.startswith("inner.") and relative.count(".") < depth:
                per_module[relative] = macs
    return MacCount(total=total, by_module=per_module, unsupported=dict(analysis.unsupported_ops()))


class ShapeCache:
    """MAC counts memoized by a hashable shape key, e.g. ("layer", q_len, kv_len).

    A decode mode runs one decoder layer at many lengths; tracing it once per distinct shape
    instead of every step keeps counting in seconds. The key must hold everything the count
    depends on (module identity, lengths, batch, kept tokens).
    """

    def __init__(self) -> None:
        self._counts: dict[Hashable, int] = {}

    def get_or_count(self, key: Hashable, fn: Callable[[], int]) -> int:
        if key not in self._counts:
            self._counts[key] = fn()
        return self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)


class _LayerStep(nn.Module):
    """One decoder layer with tensor-only inputs; the KV cache is built inside the forward.

    The cache goes in as the layer's 4th positional argument: its keyword is `past_key_values`
    in transformers 5.17 and `cache` in 5.24. `mask` and `past` are trace constants.
    """

    def __init__(
        self,
        layer: LlamaDecoderLayer,
        mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ):
        super().__init__()
        self.layer = layer
        self.mask = mask
        self.past = past

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        cache = None
        if self.past is not None:
            cache = DynamicCache()
            cache.update(*self.past, self.layer.self_attn.layer_idx)
        return self.layer(hidden, self.mask, None, cache, position_embeddings=(cos, sin))


def _causal_mask(
    batch: int, q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive 4D mask (B, 1, q_len, kv_len): query i sees keys up to kv_len - q_len + i."""
    blocked = torch.full((q_len, kv_len), torch.finfo(dtype).min, dtype=dtype, device=device)
    return blocked.triu(kv_len - q_len + 1).expand(batch, 1, q_len, kv_len)


def decoder_layer_macs(
    layer: LlamaDecoderLayer,
    q_len: int,
    kv_len: int,
    batch: int = 1,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> int:
    """fvcore MACs of one HF LlamaDecoderLayer: `q_len` new tokens attending to `kv_len` keys.

    kv_len > q_len runs with a DynamicCache prefilled with kv_len - q_len random entries (a decode
    step, or a chunk). Inputs are random (counts depend on shapes only); dtype and device default
    to the layer's own, and `meta` works. RoPE is computed outside the trace, as the model does it
    once per forward for all layers.
    """
    assert 1 <= q_len <= kv_len, (q_len, kv_len)
    config = layer.self_attn.config
    impl = config._attn_implementation
    if impl not in ("sdpa", "eager"):
        # flash_attention_2 is a Python op to fvcore and would count 0
        raise ValueError(f"count a layer with attn 'sdpa' or 'eager' (same MACs), not {impl!r}")
    weight = next(layer.parameters())
    dtype = dtype or weight.dtype
    device = torch.device(device or weight.device)

    hidden = torch.randn(batch, q_len, config.hidden_size, dtype=dtype, device=device)
    positions = torch.arange(kv_len - q_len, kv_len)[None]
    cos, sin = LlamaRotaryEmbedding(config)(torch.empty(0, dtype=dtype), positions)
    past = None
    if kv_len > q_len:
        past_shape = (batch, config.num_key_value_heads, kv_len - q_len, layer.self_attn.head_dim)
        past_k = torch.randn(past_shape, dtype=dtype, device=device)
        past = (past_k, torch.randn_like(past_k))
    # Eager applies no causal mask by itself. SDPA without a mask uses is_causal, but HF then
    # crops the keys to q_len whenever kv_len > q_len > 1, so such chunks need the explicit mask.
    mask = None
    if q_len > 1 and (impl == "eager" or kv_len > q_len):
        mask = _causal_mask(batch, q_len, kv_len, dtype, device)

    step = _LayerStep(layer, mask, past)
    return count_macs(step, (hidden, cos.to(device), sin.to(device)), by_module=False).total
