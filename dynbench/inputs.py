"""Model inputs: synthetic prompts (random token ids around one image) for random-weight runs.

Synthetic layout, fixed and documented (README "Inputs"): `prompt_len` counts text tokens only;
the first min(prompt_len, SYSTEM_TOKENS) of them come before the image (BOS + LLaVA-1.5's system
prompt and "USER:" are about 35 Vicuna tokens), the rest after it (the instruction). Every batch
row is the same prompt and image, as in the paper's Table 4 (one prompt replicated).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dynbench.models.llava import PromptLayout
from dynbench.models.presets import Preset

SYSTEM_TOKENS = 35
BOS_ID = 1


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # (B, P) with `image_token_index` placeholders at the image span
    pixel_values: torch.Tensor  # (B, 3, H, W)
    layout: PromptLayout
    answer_ids: torch.Tensor | None = None  # (B, gen_len) teacher-forced tokens, if any

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]

    def rows_identical(self) -> bool:
        """True when every row repeats row 0 (one prompt replicated)."""
        same = lambda t: t is None or bool((t == t[:1]).all())
        return same(self.input_ids) and same(self.pixel_values) and same(self.answer_ids)


def synthetic_inputs(preset: Preset, prompt_len: int, batch: int = 1, seed: int = 0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    n_before = min(prompt_len, SYSTEM_TOKENS)
    text = torch.randint(3, preset.image_token_index, (prompt_len,), generator=g)
    if prompt_len:
        text[0] = BOS_ID
    image = torch.full((preset.image_tokens,), preset.image_token_index)
    ids = torch.cat([text[:n_before], image, text[n_before:]])
    pixels = torch.randn(3, preset.image_size, preset.image_size, generator=g)
    layout = PromptLayout(n_before, preset.image_tokens, prompt_len + preset.image_tokens)
    return ModelInputs(ids.expand(batch, -1).clone(), pixels.expand(batch, -1, -1, -1).clone(), layout)
