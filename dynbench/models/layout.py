"""Where the image sits in a prompt: plain integers, so the input builders (`inputs.py`) need no model code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptLayout:
    """Where the image sits in the prompt: [text before | image | text after] (same for every row)."""

    image_start: int
    image_tokens: int
    seq_len: int  # P = text tokens + image tokens

    @property
    def image_end(self) -> int:
        return self.image_start + self.image_tokens

    @property
    def prompt_len(self) -> int:  # text tokens only (DESIGN: `prompt_len`)
        return self.seq_len - self.image_tokens
