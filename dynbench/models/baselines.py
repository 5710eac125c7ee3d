"""Baselines on the same layer loop as LLaVA / Dynamic-LLaVA: random pruning, FastV, H2O, StreamingLLM.

Every baseline is `llava` (same modules, same weights, no predictor) plus what it drops:

* `random` — at the input of the sparse layer (2, as Dynamic-LLaVA) keeps `int(576 × vision_keep)`
  image tokens chosen uniformly by a generator seeded with the point's seed: the same *number* of
  tokens at the same layer as `dynamic-llava`, without its predictor. The control.
* `fastv` (Chen et al. 2024, official `fastv_forward`) — after layer K − 1 keeps the
  `round(576 × (1 − R))` image tokens with the largest attention from the LAST token at layer K − 1,
  averaged over heads; layers ≥ K run on the kept tokens. Layer K − 1 runs HF's eager attention
  (the official code asks that layer for `output_attentions`, which falls back to eager); the
  other layers keep the point's backend. Every full-sequence forward prunes (prefill, each
  no-cache step); kv-cache decode steps add their token everywhere (only the prefill prunes).
* `h2o` (Zhang et al. 2023, "real drop" implementation) — a KV budget of `heavy + recent` tokens
  per layer and head, `heavy = recent = floor(kv_budget / 2 × P)` (P = prompt incl. the image;
  kv_budget 0.2 = "10 % + 10 %"). Every layer runs eager attention to read its weights; each
  cached token accumulates the attention it receives (prefill: summed over all queries; then one
  row per decode step), per head. When a layer holds more than the budget, it keeps the `recent`
  newest entries and the `heavy` older ones with the largest accumulated score — per head, so
  heads keep different tokens.
* `streaming-llm` (Xiao et al. 2024) — 4 attention-sink tokens (the first four) plus a window of
  the newest `budget − 4` entries, budget = the same total as h2o's; needs no weights.

Both KV methods run the prefill in full (every token, every layer) and bound the cache at the end
of the prefill and after every decode step, so the first decoded token already sees at most the
budget. Positions stay absolute (no re-rotation of cached keys; StreamingLLM's cache-relative
positions matter beyond the pretraining length, not for cost). They have no KV cache to evict
in no-cache mode: that point is refused (`DynbenchError`).

Kept tokens keep their ORIGINAL position ids (as Dynamic-LLaVA and the official FastV inplace
code). Attention weights are read through an attention function registered with transformers
(`SCORED_ATTN`: HF's `eager_attention_forward` that hands the weights over); the time in it and in
the score reduction and selection is the `scoring` region (`scoring_ms`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import eager_attention_forward

from dynbench.models.kv_cache import PrunableKVCache
from dynbench.models.llava import (
    DropConfig,
    LlavaForBench,
    PromptLayout,
    SequenceOut,
    attention_implementation,
    sorted_topk,
)
from dynbench.models.presets import Preset
from dynbench.models.rules import (
    SINK_TOKENS,
    check_fastv,
    check_kv_budget,
    fastv_kept,
    keep_count,
    kv_budget_split,
    kv_budget_tokens,
    paper_prefill_layer_tokens,
    streaming_prompt_kept,
)
from dynbench.names import KV_METHODS, PRUNE_METHODS
from dynbench.registry import get as get_method

SCORED_ATTN = "dynbench_eager_scored"
# the scorer of the layer whose attention runs now; set by `AttentionScores.capture`
_ACTIVE_SCORER: ContextVar[AttentionScores | None] = ContextVar("dynbench_active_scorer", default=None)

# ---- reading attention weights ----------------------------------------------------------------
def _scored_eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """HF's eager attention that also hands its weights (B, H, q, kv) to the layer's scorer."""
    scorer = _ACTIVE_SCORER.get()
    assert scorer is not None, "SCORED_ATTN runs only inside AttentionScores.capture()"
    with scorer.model.region("scoring"):
        out, weights = eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout)
        scorer.take(module.layer_idx, weights)
    return out, weights


AttentionInterface.register(SCORED_ATTN, _scored_eager)


class AttentionScores:
    """The layers in `layers` run eager attention; `take(layer_idx, weights)` receives their weights.

    `capture(layer)` switches that one layer to `SCORED_ATTN` (the attention config is shared by
    all layers, so it is switched back right after); `run_layers` gives it the explicit causal
    mask eager needs.
    """

    def __init__(self, model: LlavaForBench, layers: Iterable[int], take: Callable[[int, torch.Tensor], None]):
        self.model, self.layers, self.take = model, frozenset(layers), take

    @contextmanager
    def capture(self, layer):
        token = _ACTIVE_SCORER.set(self)
        try:
            with attention_implementation(layer.self_attn.config, SCORED_ATTN):
                yield
        finally:
            _ACTIVE_SCORER.reset(token)


# ---- a cache that evicts ----------------------------------------------------------------------
class EvictingKVCache(PrunableKVCache):
    """`PrunableKVCache` whose entries can be evicted (`keep`), per layer, shared by all heads or
    per head; it carries h2o's accumulated scores and the budget set at prefill.

    `n_prompt[layer]`: prompt entries per (row, head) — an int while every head holds the same
    tokens, a (B, H_kv) tensor once h2o's per-head choices differ (kept on the device: reading
    it would be a host sync inside a timed step; `modes.Step.to_host` reads it after the run).
    """

    def __init__(self, num_layers: int):
        super().__init__(num_layers)
        self.scores: list[torch.Tensor | None] = [None] * num_layers  # (B, H_kv, len), float32
        self.n_prompt: list[int | torch.Tensor] = [0] * num_layers
        self.budget: tuple[int, int] | None = None  # h2o (heavy, recent); streaming (sinks, window)

    def mark_prompt(self) -> None:
        super().mark_prompt()
        self.n_prompt = list(self.prompt_lens)

    def accumulate(self, layer_idx: int, weights: torch.Tensor) -> None:
        """Add the attention each cached entry received (weights (B, H, q, kv), summed over q)."""
        batch, heads, q, kv = weights.shape
        kv_heads = self.keys[layer_idx].shape[1]
        received = weights.float().view(batch, kv_heads, heads // kv_heads, q, kv).mean(2).sum(2)
        old = self.scores[layer_idx]
        self.scores[layer_idx] = received if old is None else F.pad(old, (0, kv - old.shape[-1])) + received

    def keep(self, layer_idx: int, index: torch.Tensor, n_prompt: int | None = None) -> None:
        """Keep the entries `index` of a layer, in order: (n,) for every head (then `n_prompt`, the
        prompt entries left, is given by the caller), or (B, H_kv, n) per head."""
        k, v, s = self.keys[layer_idx], self.values[layer_idx], self.scores[layer_idx]
        if index.dim() == 1:
            self.keys[layer_idx], self.values[layer_idx] = k.index_select(-2, index), v.index_select(-2, index)
            if s is not None:
                self.scores[layer_idx] = s.index_select(-1, index)
            self.n_prompt[layer_idx] = n_prompt
            return
        rows = index[..., None].expand(-1, -1, -1, k.shape[-1])
        self.keys[layer_idx], self.values[layer_idx] = k.gather(-2, rows), v.gather(-2, rows)
        if s is not None:
            self.scores[layer_idx] = s.gather(-1, index)
        old = self.n_prompt[layer_idx]
        bound = old if isinstance(old, int) else old[..., None]
        self.n_prompt[layer_idx] = (index < bound).sum(-1)  # entries stay in order: prompt first

    def kv_bytes(self):
        """(prompt, generated) logical KV bytes: ints while every head holds the same tokens; once
        h2o's heads differ, a `DeferredSplit` — summing the per-head counts would launch a few
        kernels per layer inside the timed step, so `Step.to_host` resolves it after the run."""
        total, prompt, per_head = 0, 0, []
        for k, n_prompt in zip(self.keys, self.n_prompt, strict=True):
            if k is None:
                continue
            batch, kv_heads, length, head_dim = k.shape
            per_entry = 2 * head_dim * k.element_size()
            total += batch * kv_heads * length * per_entry
            if isinstance(n_prompt, int):
                prompt += n_prompt * batch * kv_heads * per_entry
            else:
                per_head.append((n_prompt, per_entry))  # the tensor is replaced, never changed in place
        if not per_head:
            return prompt, total - prompt
        split = DeferredSplit(total, prompt, per_head)
        return split.prompt, split.generated


class DeferredSplit:
    """A prompt / generated KV split whose per-head counts are still on the device."""

    def __init__(self, total: int, prompt_known: int, per_head: list[tuple[torch.Tensor, int]]):
        self.total, self.prompt_known, self.per_head = total, prompt_known, per_head
        self._prompt: int | None = None
        self.prompt, self.generated = _Part(self, "prompt"), _Part(self, "generated")

    def resolve(self) -> int:
        """Prompt bytes (reads the device once: the per-layer sums stacked, then one copy)."""
        if self._prompt is None:
            sums = torch.stack([n.sum() for n, _ in self.per_head]).tolist()
            self._prompt = self.prompt_known + sum(int(n) * per_entry for n, (_, per_entry)
                                                   in zip(sums, self.per_head, strict=True))
        return self._prompt


class _Part:
    """One side of a `DeferredSplit`; `Step.to_host` calls `resolve()`."""

    def __init__(self, split: DeferredSplit, side: str):
        self.split, self.side = split, side

    def resolve(self) -> int:
        prompt = self.split.resolve()
        return prompt if self.side == "prompt" else self.split.total - prompt


# ---- the models -------------------------------------------------------------------------------
class _ImagePruner(LlavaForBench):
    """Drops image tokens at the input of one layer of every full-sequence forward; decode steps
    are dense (`LlavaForBench.forward_token`)."""

    def _drop_image(self, hidden, layout: PromptLayout, cache, first: int, choose, scorer=None) -> SequenceOut:
        """`choose(h)` → (B, k) image-token indices (0 … N − 1, ascending) kept from layer `first` on."""
        batch, n, C = hidden.shape
        a, b = layout.image_start, layout.image_end
        out = {}

        def hook(h, pos):
            rows = lambda lo, hi: torch.arange(lo, hi, device=h.device).expand(batch, hi - lo)  # noqa: E731
            image = choose(h) + a
            index = torch.cat([rows(0, a), image, rows(b, n)], dim=1)  # (B, n_kept), ascending
            out.update(index=index, kept=image.shape[1])
            with self.region("token_drop"):
                return h.gather(1, index[..., None].expand(-1, -1, C)), pos.gather(1, index)

        pos = torch.arange(n, device=hidden.device).expand(batch, n)
        hidden, pos, seq_lens = self.run_layers(hidden, pos, cache, hook, hook_layer=first, scorer=scorer)
        kept = out["kept"]
        image_lens = paper_prefill_layer_tokens(len(self.layers), first, b - a, kept)
        return SequenceOut(hidden, out["index"], seq_lens, image_kept=kept, layer_image_tokens=image_lens)


class RandomPrune(_ImagePruner):
    method = "random"

    def __init__(self, preset: Preset, attn: str = "sdpa"):
        super().__init__(preset, attn)
        self._chosen: dict[tuple, torch.Tensor] = {}  # drawn once per (seed, N, k, device)

    def image_choice(self, seed: int, n_image: int, k: int, device) -> torch.Tensor:
        """(k,) ascending image-token indices drawn uniformly by a CPU generator seeded with `seed`
        (the same tokens on every device). Kept on the device after the first draw, so measured
        runs (after warm-up) pay no host-to-device copy."""
        key = (seed, n_image, k, str(device))
        if key not in self._chosen:
            g = torch.Generator().manual_seed(seed)
            self._chosen[key] = torch.randperm(n_image, generator=g)[:k].sort().values.to(device)
        return self._chosen[key]

    def forward_sequence(self, hidden, layout, drop=None, cache=None) -> SequenceOut:
        drop = drop or DropConfig()
        k = keep_count(drop.vision_keep, layout.image_tokens)
        choose = lambda h: self.image_choice(drop.seed, layout.image_tokens, k, h.device).expand(h.shape[0], k)  # noqa: E731
        return self._drop_image(hidden, layout, cache, self.sparse_layer, choose)


class FastV(_ImagePruner):
    method = "fastv"

    def forward_sequence(self, hidden, layout, drop=None, cache=None) -> SequenceOut:
        drop = drop or DropConfig()
        check_fastv(drop.fastv_k, drop.fastv_r, len(self.layers))
        a, b = layout.image_start, layout.image_end
        k = fastv_kept(drop.fastv_r, b - a)
        seen = {}

        def take(layer_idx, weights):  # (B, H, q, kv) at layer K - 1, nothing dropped yet
            seen["image"] = weights[:, :, -1, a:b].float().mean(dim=1)  # last token → image, head mean

        def choose(h):
            with self.region("scoring"):
                return sorted_topk(seen.pop("image"), k)

        scorer = AttentionScores(self, [drop.fastv_k - 1], take)  # the layer before the cut
        return self._drop_image(hidden, layout, cache, drop.fastv_k, choose, scorer)


class _KVEvictor(LlavaForBench):
    """Prefill and decode steps run in full; the cache is cut to the budget after each of them."""

    evicts_kv = True

    def new_cache(self) -> EvictingKVCache:
        return EvictingKVCache(len(self.layers))

    def _scorer(self, cache, drop: DropConfig, phase: str) -> AttentionScores | None:
        return None

    def _set_budget(self, cache: EvictingKVCache, drop: DropConfig, prompt_tokens: int) -> None:
        raise NotImplementedError

    def _evict(self, cache: EvictingKVCache) -> None:
        raise NotImplementedError

    def forward_sequence(self, hidden, layout, drop=None, cache=None) -> SequenceOut:
        if cache is None:
            get_method(self.method).check_mode("no-cache")
        drop = drop or DropConfig()
        self._set_budget(cache, drop, layout.seq_len)
        batch, n, _ = hidden.shape
        pos = torch.arange(n, device=hidden.device).expand(batch, n)
        hidden, pos, seq_lens = self.run_layers(hidden, pos, cache, scorer=self._scorer(cache, drop, "prefill"))
        with self.region("kv_evict"):
            self._evict(cache)
        return SequenceOut(hidden, pos, seq_lens)

    def forward_token(self, hidden, position, cache, decider=None):
        pos = torch.full((hidden.shape[0], 1), position, device=hidden.device, dtype=torch.long)
        hidden, _, _ = self.run_layers(hidden, pos, cache, scorer=self._scorer(cache, None, "decode"))
        with self.region("kv_evict"):
            self._evict(cache)
        return hidden, None


class H2O(_KVEvictor):
    method = "h2o"

    def _set_budget(self, cache, drop, prompt_tokens):
        cache.budget = kv_budget_split(drop.kv_budget, prompt_tokens)
        check_kv_budget(sum(cache.budget), self.method)

    def _scorer(self, cache, drop, phase):
        return AttentionScores(self, range(len(self.layers)), cache.accumulate)

    def _evict(self, cache):
        heavy, recent = cache.budget
        for i, n in enumerate(cache.lengths()):
            if n <= heavy + recent:
                continue
            with self.region("scoring"):
                scores = cache.scores[i]  # (B, H_kv, n)
                top = scores[..., : n - recent].topk(heavy, dim=-1).indices
                newest = torch.arange(n - recent, n, device=scores.device).expand(*top.shape[:2], recent)
                index = torch.cat([top, newest], dim=-1).sort(dim=-1).values
            cache.keep(i, index)


class StreamingLLM(_KVEvictor):
    method = "streaming-llm"

    def _set_budget(self, cache, drop, prompt_tokens):
        budget = kv_budget_tokens(drop.kv_budget, prompt_tokens)
        check_kv_budget(budget, self.method)
        cache.budget = (SINK_TOKENS, budget - SINK_TOKENS)

    def _evict(self, cache):
        sinks, window = cache.budget
        for i, n in enumerate(cache.lengths()):
            if n <= sinks + window:
                continue
            device = cache.keys[i].device
            index = torch.cat([torch.arange(sinks, device=device), torch.arange(n - window, n, device=device)])
            cache.keep(i, index, streaming_prompt_kept(cache.n_prompt[i], n, window))


BASELINES: dict[str, type[LlavaForBench]] = {
    "random": RandomPrune,
    "fastv": FastV,
    "h2o": H2O,
    "streaming-llm": StreamingLLM,
}
assert tuple(BASELINES) == PRUNE_METHODS + KV_METHODS
