"""Per-layer KV cache that grows only with the tokens each layer actually keeps.

HF's `LlamaAttention` calls `cache.update(k, v, layer_idx, ...)` and attends over what it returns.
Dynamic-LLaVA needs two things HF's `DynamicCache` does not give: layers hold different lengths
from the start (layers ≥ sparse layer cache the pruned prompt), and a decoded token that the
output-text predictor drops must still attend to itself in layers ≥ sparse layer without being
stored there (reference §4). `write[layer]` gates the store for the token being processed.

Tensors grow by concatenation (never preallocated to the dense length), so the allocator sees
exactly the memory the kept tokens take.
"""

from __future__ import annotations

import torch


class PrunableKVCache:
    def __init__(self, num_layers: int):
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.write: list[bool] = [True] * num_layers
        self.prompt_lens: list[int] = [0] * num_layers  # set after prefill

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Return (past ++ new) K/V for attention; store them only if `write[layer_idx]`."""
        past_k, past_v = self.keys[layer_idx], self.values[layer_idx]
        if past_k is not None:
            key_states = torch.cat([past_k, key_states], dim=-2)  # (B, H_kv, L + q, D)
            value_states = torch.cat([past_v, value_states], dim=-2)
        if self.write[layer_idx]:
            self.keys[layer_idx], self.values[layer_idx] = key_states, value_states
        return key_states, value_states

    def lengths(self) -> list[int]:
        return [0 if k is None else k.shape[-2] for k in self.keys]

    def mark_prompt(self) -> None:
        """Remember how much of each layer's cache is prompt (for the prompt/generated KV split)."""
        self.prompt_lens = self.lengths()

    def add_prompt(self, n: int) -> None:
        """`n` more prompt entries in every layer (a conversation's next turn, cached whole)."""
        self.prompt_lens = [p + n for p in self.prompt_lens]

    def kv_bytes(self) -> tuple[int, int]:
        """Logical (prompt, generated) KV bytes: Σ layers 2 × len × kv_heads × head_dim × elem × batch."""
        prompt = generated = 0
        for k, n_prompt in zip(self.keys, self.prompt_lens, strict=True):
            if k is None:
                continue
            batch, kv_heads, length, head_dim = k.shape
            per_token = 2 * batch * kv_heads * head_dim * k.element_size()
            prompt += n_prompt * per_token
            generated += (length - n_prompt) * per_token
        return prompt, generated
