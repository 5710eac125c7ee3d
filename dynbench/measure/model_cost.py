"""fvcore MACs of every step of a run, part by part, from what the step ran (`modes.Step`).

A decode mode runs thousands of distinct shapes, and a data-dependent drop cannot be traced once
for all inputs, so the whole forward is never traced per step. Each part is traced by fvcore on
its own and the step's count is assembled from the shapes the step recorded:

* vision tower + projector — one trace per vision shape per process (all CLIP layers: the trace returns the last
  layer too, so fvcore's dead-code pruning cannot drop it; the model does run it);
* one decoder layer — MACs(q, kv) = q·a + q·kv·b exactly (projections and MLP are linear in the
  query tokens, QKᵀ and AV in queries × keys). `a` and `b` come from fvcore traces at (1, 1)
  and (1, 2) and are checked against a third trace at (3, 3); a model whose layer breaks the
  identity is traced at every distinct shape instead;
* image predictor (per number of scored tokens), output-text predictor (per token, it has no token
  mixing), LM head (one row per sequence), the RoPE tables (once per forward, at the first layer's
  positions; kept tokens' tables are gathered, not recomputed).
All parts are traced at batch 1 and scaled by the batch (no op mixes batch rows). On the `meta`
device the vision tower is traced on a CPU copy with random weights (fvcore cannot trace a
convolution on meta; MACs depend on shapes only). Tests check the assembled count against one
fvcore trace of a whole real forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionModel
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from dynbench.measure.flops import ShapeCache, count_macs, decoder_layer_macs
from dynbench.models.llava import LlavaForBench, attention_implementation
from dynbench.modes import Step

PARTS = ("vision", "llm", "predictors", "lm_head")
_VISION_MACS: dict[str, int] = {}  # per vision shape, once per process (MACs depend on shapes only)


@dataclass(frozen=True)
class StepMacs:
    vision: int
    llm: int
    predictors: int
    lm_head: int

    @property
    def total(self) -> int:
        return self.vision + self.llm + self.predictors + self.lm_head


class _VisionPart(nn.Module):
    """encode_image as one traceable module; also returns the last CLIP layer so it stays live."""

    def __init__(self, tower: nn.Module, projector: nn.Module, feature_layer: int):
        super().__init__()
        self.tower, self.projector, self.feature_layer = tower, projector, feature_layer

    def forward(self, pixel_values):
        out = self.tower(pixel_values, output_hidden_states=True)
        return self.projector(out.hidden_states[self.feature_layer][:, 1:]), out.last_hidden_state


class ModelCost:
    """Per-part fvcore MAC counts for one model, memoized by shape."""

    def __init__(self, model: LlavaForBench):
        self.model = model
        self.cache = ShapeCache()
        self._layer_fit: tuple[int, int] | None | bool = False  # False = not fitted yet

    # ---- parts (batch 1) ----------------------------------------------------------------------
    def vision(self) -> int:
        return self.cache.get_or_count("vision", self._count_vision)

    def _count_vision(self) -> int:
        """Once per vision shape per process: both methods (and every sweep point) share it."""
        m, p = self.model, self.model.preset
        cfg = p.llava_config("sdpa")
        key = repr((cfg.vision_config.to_dict(), p.hidden, p.vision_feature_layer))
        if key in _VISION_MACS:
            return _VISION_MACS[key]
        tower, projector = m.model.vision_tower, m.model.multi_modal_projector
        device, dtype = m.device, m.dtype
        if device.type == "meta":  # fvcore cannot trace a convolution on meta
            with torch.device("meta"):  # skip random init: values do not change MACs
                tower, projector = CLIPVisionModel(cfg.vision_config), LlavaMultiModalProjector(cfg)
            part = _VisionPart(tower, projector, p.vision_feature_layer).to_empty(device="cpu").float()
            for name, ids in part.named_buffers():  # index buffers must hold valid indices
                if name.endswith("position_ids"):
                    ids.copy_(torch.arange(ids.shape[-1]).expand_as(ids))
            device, dtype = torch.device("cpu"), torch.float32
        else:
            part = _VisionPart(tower, projector, p.vision_feature_layer)
        pixels = torch.zeros(1, 3, p.image_size, p.image_size, dtype=dtype, device=device)
        _VISION_MACS[key] = count_macs(part, (pixels,), by_module=False).total
        return _VISION_MACS[key]

    def layer(self, q_len: int, kv_len: int) -> int:
        fit = self._fit_layer()
        if fit is None:
            trace = lambda: self._trace_layer(q_len, kv_len)  # noqa: E731
            return self.cache.get_or_count(("layer", q_len, kv_len), trace)
        a, b = fit
        return q_len * a + q_len * kv_len * b

    def _trace_layer(self, q_len: int, kv_len: int) -> int:
        layer = self.model.layers[0]
        config = layer.self_attn.config
        # flash_attention_2 is a Python op to fvcore (counts 0); sdpa has the same MACs
        impl = config._attn_implementation if config._attn_implementation in ("sdpa", "eager") else "sdpa"
        with attention_implementation(config, impl):
            return decoder_layer_macs(layer, q_len, kv_len, batch=1)

    def _fit_layer(self) -> tuple[int, int] | None:
        if self._layer_fit is False:
            one, two = self._trace_layer(1, 1), self._trace_layer(1, 2)
            b = two - one
            a = one - b
            self._layer_fit = (a, b) if self._trace_layer(3, 3) == 3 * a + 9 * b else None
        return self._layer_fit

    def _hidden(self, n_tokens: int) -> torch.Tensor:
        m = self.model
        return torch.zeros(1, n_tokens, m.preset.hidden, dtype=m.dtype, device=m.device)

    def vision_predictor(self, n_tokens: int) -> int:
        predictor = self.model.model.image_score_predictor
        count = lambda: count_macs(predictor, (self._hidden(n_tokens),)).total  # noqa: E731
        return self.cache.get_or_count(("vision_predictor", n_tokens), count)

    def text_predictor(self, n_tokens: int) -> int:
        predictor = self.model.model.output_text_score_predictor
        per_token = lambda: count_macs(predictor, (self._hidden(1),)).total  # noqa: E731
        return n_tokens * self.cache.get_or_count("text_predictor", per_token)

    def rotary(self, n_positions: int) -> int:
        """The RoPE tables, computed once per forward for its positions. transformers 5.17 builds
        them with a matmul (counted), 5.24 elementwise (0): what fvcore counts either way."""
        rotary = self.model.model.language_model.rotary_emb
        pos = torch.arange(n_positions, device=self.model.device)[None]
        count = lambda: count_macs(rotary, (self._hidden(1), pos)).total  # noqa: E731
        return self.cache.get_or_count(("rotary", n_positions), count)

    def lm_head(self) -> int:
        count = lambda: count_macs(self.model.lm_head, (self._hidden(1)[:, 0],)).total  # noqa: E731
        return self.cache.get_or_count("lm_head", count)

    # ---- a step ---------------------------------------------------------------------------------
    def step(self, step: Step, batch: int) -> StepMacs:
        predictors = 0
        if step.image_scored:
            predictors += self.vision_predictor(step.image_scored)
        if step.text_scored:
            predictors += self.text_predictor(step.text_scored)
        return StepMacs(
            vision=batch * (self.vision() if step.vision_ran else 0),
            llm=batch * (self.rotary(step.layer_shapes[0][0]) + sum(self.layer(q, kv) for q, kv in step.layer_shapes)),
            predictors=batch * predictors,
            lm_head=batch * self.lm_head(),
        )
