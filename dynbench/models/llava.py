"""LLaVA-1.5 built from HF transformers modules, with our own decoder layer loop.

Modules (and state-dict names) are HF's: `model.vision_tower` (CLIPVisionModel),
`model.multi_modal_projector` (LlavaMultiModalProjector), `model.language_model` (LlamaModel:
embeddings, `LlamaDecoderLayer`s, RMSNorm, rotary embedding) and `lm_head` — the same names
as `LlavaForConditionalGeneration`, so HF-format weights load by name. What we write ourselves
is the loop over decoder layers: Dynamic-LLaVA (`dynamic_llava.py`) hooks into it at the input
of `sparse_layer` to physically remove tokens or to gate a decoded token's cache entry.

The dense model (`--method llava`) is this loop with nothing removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPVisionModel, LlamaModel
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from dynbench.models.kv_cache import PrunableKVCache
from dynbench.models.layout import PromptLayout
from dynbench.models.presets import Preset
from dynbench.models.rules import DropConfig

__all__ = ["DropConfig", "LlavaForBench", "PromptLayout", "SequenceOut", "attention_implementation", "sorted_topk"]


@dataclass
class SequenceOut:
    """Result of one full-sequence forward (prefill or a no-cache step)."""

    hidden: torch.Tensor  # (B, n_out, C) final-norm hidden states of the tokens that reached the top
    kept_index: torch.Tensor  # (B, n_out) index of each surviving token in the input sequence
    layer_seq_lens: list[int]  # input length of every decoder layer
    image_kept: int | None = None  # image tokens kept from the sparse layer on (per row)
    text_kept: int | None = None  # fed generated tokens kept from the sparse layer on (per row)
    image_scored: int = 0  # tokens the image predictor scored (per row)
    text_scored: int = 0  # tokens the output-text predictor scored (per row)
    layer_image_tokens: list[int] | None = None  # image tokens into each layer (None: derive)


def sorted_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores per row, back in original order. (B, N) -> (B, k).

    Ties are broken by the lower index, on every device: `topk` leaves the order of equal scores
    unspecified (CUDA and CPU differ), and casting bf16 scores to float32 cannot undo a tie made
    by bf16 rounding, so a stable descending sort decides instead (N = 576: cheap).
    """
    order = scores.sort(dim=1, descending=True, stable=True).indices  # (B, N), ties: lower index first
    return order[:, :k].sort(dim=1).values


@contextmanager
def attention_implementation(config, impl: str) -> Iterator[None]:
    """Run the modules sharing `config` with attention implementation `impl` for a block (every
    decoder layer of a model shares one attention config, so switch back right after)."""
    old = config._attn_implementation
    config._attn_implementation = impl
    try:
        yield
    finally:
        config._attn_implementation = old


def _select_positions(cos_sin, positions: torch.Tensor, kept: torch.Tensor):
    """RoPE tables of the kept positions, gathered rather than recomputed (same values, and the
    rotary embedding runs once per forward as in HF's own loop). Both position rows are sorted."""
    index = torch.searchsorted(positions.contiguous(), kept.contiguous())  # (B, n_kept)
    return tuple(t.gather(1, index[..., None].expand(-1, -1, t.shape[-1])) for t in cos_sin)


class LlavaBackbone(nn.Module):
    """Container so parameter names match HF's `LlavaForConditionalGeneration.model`."""

    def __init__(self, preset: Preset, attn: str):
        super().__init__()
        cfg = preset.llava_config(attn)
        self.vision_tower = CLIPVisionModel(cfg.vision_config)
        self.multi_modal_projector = LlavaMultiModalProjector(cfg)
        self.language_model = LlamaModel(cfg.text_config)


class LlavaForBench(nn.Module):
    method = "llava"

    def __init__(self, preset: Preset, attn: str = "sdpa"):
        super().__init__()
        self.preset = preset
        self.attn = attn
        self.sparse_layer = preset.sparse_layer
        self.model = LlavaBackbone(preset, attn)
        self.lm_head = nn.Linear(preset.hidden, preset.vocab, bias=False)
        self.regions = None  # optional timer/profiler with `.track(name)`; see `region()`

    # ---- helpers -------------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return self.model.language_model.layers

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def region(self, name: str):
        """A named region for timers / profilers (no-op unless `self.regions` is set)."""
        return self.regions.track(name) if self.regions is not None else nullcontext()

    def new_cache(self) -> PrunableKVCache:
        return PrunableKVCache(len(self.layers))

    # ---- embeddings ----------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP penultimate layer, patch tokens only (CLS dropped), then the projector."""
        with self.region("vision_tower"):
            out = self.model.vision_tower(pixel_values.to(self.dtype), output_hidden_states=True)
            feats = out.hidden_states[self.preset.vision_feature_layer][:, 1:]  # (B, 576, C_v)
        with self.region("projector"):
            return self.model.multi_modal_projector(feats)  # (B, 576, C)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.language_model.embed_tokens(ids)

    def embed_prompt(
        self, input_ids: torch.Tensor, image_features: torch.Tensor, layout: PromptLayout
    ) -> torch.Tensor:
        """Text embeddings around the image features; the placeholder ids are never embedded."""
        a, b = layout.image_start, layout.image_end
        return torch.cat(
            [
                self.embed_tokens(input_ids[:, :a]),
                image_features.to(self.dtype),
                self.embed_tokens(input_ids[:, b:]),
            ],
            dim=1,
        )  # (B, P, C)

    def logits(self, hidden_last: torch.Tensor) -> torch.Tensor:
        with self.region("lm_head"):
            return self.lm_head(hidden_last)  # (B, V)

    # ---- the layer loop ------------------------------------------------------------------------
    def attention_mask(self, q_len: int, kv_len: int, attn: str | None = None) -> torch.Tensor | None:
        """Causal mask for `q_len` new tokens after `kv_len - q_len` cached ones, for the attention
        implementation `attn` (default: the model's).

        SDPA / flash apply `is_causal` themselves when there is no prefix; eager applies no causal
        mask at all (stack_facts.md), so it always gets an explicit one. A chunk after a prefix (a
        conversation's next turn) needs the explicit mask under SDPA too; flash-attn aligns its
        causal mask to the bottom right (the last query sees every key), which is that mask already.
        A single query attends to everything. Kept tokens stay in their original order, so causal
        order survives a drop.
        """
        impl = attn or self.attn
        # flash-attention takes no 4D mask (it would read one as a 2D padding mask): it applies the
        # causal mask itself, aligned to the end of the keys, also after a cached prefix
        if q_len == 1 or impl == "flash_attention_2" or (q_len == kv_len and impl != "eager"):
            return None
        q = torch.arange(q_len, device=self.device)[:, None]
        k = torch.arange(kv_len, device=self.device)[None, :]
        allowed = k <= q + (kv_len - q_len)
        mask = torch.zeros(q_len, kv_len, dtype=self.dtype, device=self.device)
        return mask.masked_fill(~allowed, torch.finfo(self.dtype).min)[None, None]  # (1,1,q,kv)

    def run_layers(self, hidden, position_ids, cache, sparse_hook=None, *, hook_layer=None, scorer=None,
                   hooks=None):
        """Run every decoder layer; `sparse_hook(hidden, position_ids)` may shrink the sequence at
        the input of `hook_layer` (default: `sparse_layer`) and returns the new (hidden, position_ids).
        `hooks` ({layer: hook}, methods that cut at several layers) adds more such hooks.
        `scorer` (baselines that read attention weights, `baselines.AttentionScores`): the layers in
        `scorer.layers` run eager attention inside `scorer.capture(layer)`, which receives the weights.

        Returns (final-norm hidden, position_ids, layer_seq_lens).
        """
        lm = self.model.language_model
        cos_sin = lm.rotary_emb(hidden, position_ids)
        hooks = dict(hooks or {})
        if sparse_hook is not None:
            hooks[self.sparse_layer if hook_layer is None else hook_layer] = sparse_hook
        seq_lens = []
        # each layer's cache grows only when that layer runs: its length before it runs is the one
        # at the start of the forward (read once, not once per layer)
        cached = cache.lengths() if cache is not None else [0] * len(self.layers)
        for i, layer in enumerate(self.layers):
            if i in hooks:
                new_hidden, new_pos = hooks[i](hidden, position_ids)
                if new_pos is not position_ids:  # kept tokens keep their ORIGINAL positions
                    cos_sin = _select_positions(cos_sin, position_ids, new_pos)
                hidden, position_ids = new_hidden, new_pos
            q_len = hidden.shape[1]
            kv_len = q_len + cached[i]
            seq_lens.append(q_len)
            # cache goes positionally: its keyword is `past_key_values` in transformers 5.17 and
            # `cache` in 5.24. RoPE arrives through `position_embeddings`, so `position_ids` is None:
            # given gapped ids (after a drop), HF's flash path would test them for packed sequences
            # (a host sync per layer) and route to the varlen kernel.
            if scorer is not None and i in scorer.layers:
                mask = self.attention_mask(q_len, kv_len, "eager")
                with scorer.capture(layer):
                    hidden = layer(hidden, mask, None, cache, position_embeddings=cos_sin)
            else:
                mask = self.attention_mask(q_len, kv_len)
                hidden = layer(hidden, mask, None, cache, position_embeddings=cos_sin)
        return lm.norm(hidden), position_ids, seq_lens

    # ---- the two kinds of forward the modes use -------------------------------------------------
    def forward_sequence(
        self,
        hidden: torch.Tensor,
        layout: PromptLayout,
        drop: DropConfig | None = None,
        cache: PrunableKVCache | None = None,
    ) -> SequenceOut:
        """Full forward over a whole sequence: the prompt, plus the fed generated tokens in
        no-cache decoding. Dense: nothing is dropped."""
        batch, n, _ = hidden.shape
        pos = torch.arange(n, device=hidden.device).expand(batch, n)
        hidden, pos, seq_lens = self.run_layers(hidden, pos, cache)
        return SequenceOut(hidden, pos, seq_lens)

    def forward_token(
        self, hidden: torch.Tensor, position: int, cache: PrunableKVCache, decider=None
    ) -> tuple[torch.Tensor, bool | None]:
        """One decode step with the cache: the new token at its absolute `position`.

        Returns (final-norm hidden (B, 1, C), whether the token was cached in layers ≥ the sparse
        layer — None for the dense model, which caches every token everywhere).
        """
        pos = torch.full((hidden.shape[0], 1), position, device=hidden.device, dtype=torch.long)
        hidden, _, _ = self.run_layers(hidden, pos, cache)
        return hidden, None

    def forward_chunk(self, hidden: torch.Tensor, start: int, cache: PrunableKVCache) -> torch.Tensor:
        """Several new tokens after the cache (a conversation's next turn), at absolute positions
        `start …`: every token is cached in every layer — for Dynamic-LLaVA too, whose instruction
        predictor is off in the released checkpoints, so no branch drops new-turn tokens there
        (notes/official_multiround.md §1.3). Returns the final-norm hidden states (B, m, C)."""
        batch, m, _ = hidden.shape
        pos = torch.arange(start, start + m, device=hidden.device).expand(batch, m)
        hidden, _, _ = self.run_layers(hidden, pos, cache)
        return hidden
