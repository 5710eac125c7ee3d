"""The mechanics behind a declared method (`dynbench.method_api.Method`) that names no model class
of its own: `AttentionRankedPruner` runs its `image_stages` on LLaVA-1.5's layer loop.

At the input of each stage's layer, the image tokens still in the sequence are ranked by the
attention the last instruction token (the prompt's last token; in a no-cache step the generated
tokens after it are not queries here) pays them in the layer before — HF's eager attention there,
weights averaged over heads, as FastV and PyramidDrop read them — and the top ones are kept,
physically, in their original order and at their original positions. Every full-sequence forward
(prefill, each no-cache step) cuts; kv-cache decode steps are dense over the pruned cache. The
ranking and selection are timed as the `scoring` region, the gather as `token_drop`.
"""

from __future__ import annotations

import torch

from dynbench.method_api import Method, stage_tokens
from dynbench.models.baselines import AttentionScores
from dynbench.models.llava import DropConfig, LlavaForBench, PromptLayout, SequenceOut, sorted_topk


class AttentionRankedPruner(LlavaForBench):
    method = "attention-ranked"  # replaced by the method's name when built (`build.build_model`)
    info: Method | None = None  # the declaration whose `image_stages` this model runs

    def forward_sequence(self, hidden, layout: PromptLayout, drop: DropConfig | None = None, cache=None):
        drop = drop or DropConfig()
        options = self.info.values_of(drop)
        self.info.check(self.preset, options)
        stages = self.info.image_stages(self.preset, options)
        batch, n, C = hidden.shape
        a, fed = layout.image_start, n - layout.seq_len  # fed: generated tokens after the prompt
        state = {"index": torch.arange(n, device=hidden.device).expand(batch, n), "image": layout.image_tokens}
        scores: dict[int, torch.Tensor] = {}

        def take(layer_idx, weights):  # (B, H, q, kv): the prompt's last token → the image block, head mean
            q, m = weights.shape[2] - 1 - fed, state["image"]
            scores[layer_idx] = weights[:, :, q, a:a + m].float().mean(dim=1)

        def cut(layer: int, keep: int):
            def hook(h, pos):
                m, length = state["image"], h.shape[1]
                with self.region("scoring"):
                    image = sorted_topk(scores.pop(layer - 1), keep) + a
                rows = lambda lo, hi: torch.arange(lo, hi, device=h.device).expand(batch, hi - lo)  # noqa: E731
                index = torch.cat([rows(0, a), image, rows(a + m, length)], dim=1)  # ascending
                state.update(index=state["index"].gather(1, index), image=keep)
                with self.region("token_drop"):
                    return h.gather(1, index[..., None].expand(-1, -1, C)), pos.gather(1, index)
            return hook

        scorer = AttentionScores(self, [layer - 1 for layer, _ in stages], take)
        pos = torch.arange(n, device=hidden.device).expand(batch, n)
        hidden, pos, seq_lens = self.run_layers(hidden, pos, cache, scorer=scorer,
                                                hooks={layer: cut(layer, keep) for layer, keep in stages})
        image_lens = stage_tokens(len(self.layers), layout.image_tokens, stages)
        return SequenceOut(hidden, state["index"], seq_lens, image_kept=image_lens[-1] if stages else None,
                           layer_image_tokens=image_lens)
