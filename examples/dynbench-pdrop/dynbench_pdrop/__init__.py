"""PyramidDrop (Xing et al., "PyramidDrop: Accelerating Your Large Vision-Language Models via
Pyramid Visual Redundancy Reduction", 2024) as a dynbench method plug-in.

The language model is split into stages at `layers` (default 8, 16, 24 for LLaVA-1.5's 32
layers); at the end of each stage the image tokens still in the sequence are ranked by the
attention the last instruction token pays them, and the top ⌊n × λ⌋ are kept (λ = `ratio`,
default 0.5: 576 → 288 → 144 → 72). Only the decision is written here — dynbench's
`AttentionRankedPruner` reads the attention (eager, on the layer before each cut), drops the
tokens physically and keeps their positions, and dynbench measures it like its own methods.

No torch import here: dynbench loads this module for `--help` and `dynbench methods`.
"""

from __future__ import annotations

from dynbench.errors import DynbenchError
from dynbench.method_api import Method, Option
from dynbench.models.rules import keep_count

__all__ = ["PDrop"]


class PDrop(Method):
    name = "pdrop"
    summary = "PyramidDrop: image tokens ranked by the last instruction token's attention, λ kept per stage"
    options = (
        Option("layers", "ints", (8, 16, 24), "stage boundaries: image tokens are cut at the input of these layers"),
        Option("ratio", "float", 0.5, "λ: share of the remaining image tokens kept at each boundary"),
    )

    def image_stages(self, preset, options):
        kept, stages = preset.image_tokens, []
        for layer in options["layers"]:
            kept = keep_count(options["ratio"], kept)
            stages.append((layer, kept))
        return stages

    def check(self, preset, options):
        if not 0 < options["ratio"] <= 1:
            raise DynbenchError(f"pdrop: ratio (λ) must be in (0, 1], got {options['ratio']}")
        if not options["layers"]:
            raise DynbenchError("pdrop: give at least one stage boundary (--pdrop-layers 8,16,24)")
        super().check(preset, options)
