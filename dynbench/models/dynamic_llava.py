"""Dynamic-LLaVA (arXiv 2412.00876): LLaVA-1.5 plus two learned predictors that drop tokens.

At the input of decoder layer `sparse_layer` (s = 2):
  * prefill / every no-cache step — the image predictor scores the 576 image tokens and the
    top-k (k = int(576 × vision_keep), 115 at 0.2) are kept, re-sorted to their original order;
    in no-cache decoding the output-text predictor also scores every fed generated token but the
    newest (always kept) and the kept ones survive. Dropped tokens' hidden states are physically
    removed (gather), so layers ≥ s run on shorter sequences and cache less.
  * kv-cache decoding — the new token runs through all layers; the output-text predictor decides
    whether its K/V enter the caches of layers ≥ s (it always attends to itself).
Kept tokens keep their ORIGINAL position ids for RoPE (reference §2, pitfall 11).

Predictors follow the official architecture and parameter names (`DML` L1308-1387 at commit
e1469bc) so official weights load by name: `model.image_score_predictor.*`,
`model.output_text_score_predictor.*`. Logit channel 0 = keep.

Text policies (DESIGN "Text policy"):
  * learned — official rules. kv-cache: keep iff keep-logit > drop-logit. no-cache: count = #(keep
    > drop) over the candidates (max over rows, as the official code), members = that many with
    the largest keep logits.
  * budget — exact counts, scores ignored (the predictor still runs: its cost is the method's).
    no-cache: floor(text_keep × candidates) by keep logit; kv-cache: keep token t iff
    kept_so_far < round_half_up(text_keep × t), t = tokens decided so far including this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dynbench.errors import DynbenchError
from dynbench.models.kv_cache import PrunableKVCache
from dynbench.models.llava import DropConfig, LlavaForBench, PromptLayout, SequenceOut, sorted_topk
from dynbench.models.presets import Preset
from dynbench.models.rules import budget_keeps, keep_count
from dynbench.names import TEXT_POLICIES


# ---- predictors (official architecture and names) --------------------------------------------
class PredictorAttention(nn.Module):
    """timm-style multi-head self-attention (qkv without bias), through torch SDPA."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, C/H) each
        x = F.scaled_dot_product_attention(q, k, v)  # no mask: image tokens attend to each other
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class PredictorMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SelfTransformerEncoderBlock(nn.Module):
    """Pre-norm ViT block (official `custom_transformer_layer.py` L276; no LayerScale/DropPath)."""

    def __init__(self, dim: int, num_heads: int, dim_feedforward: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PredictorAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = PredictorMlp(dim, dim_feedforward)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionPredictor(nn.Module):
    """Scores image tokens from their hidden states at the input of the sparse layer."""

    def __init__(self, input_dim: int, d_model: int, nhead: int, dim_feedforward: int, num_layers: int):
        super().__init__()
        self.down_mlp = nn.Sequential(nn.LayerNorm(input_dim), nn.Linear(input_dim, d_model), nn.GELU())
        self.transformer = nn.Sequential(
            *[SelfTransformerEncoderBlock(d_model, nhead, dim_feedforward) for _ in range(num_layers)]
        )
        self.output_mlp = nn.Sequential(
            nn.Linear(d_model, d_model // 2),
            nn.GELU(),
            nn.Linear(d_model // 2, d_model // 4),
            nn.GELU(),
            nn.Linear(d_model // 4, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transformer(self.down_mlp(x))  # (B, N, d)
        B, N, d = x.shape
        # half the channels stay per token, half are averaged over the image (global context)
        local_x, global_x = x[..., : d // 2], x[..., d // 2 :].mean(dim=1, keepdim=True)
        return self.output_mlp(torch.cat([local_x, global_x.expand(B, N, d // 2)], dim=-1))  # (B,N,2)


class TextPredictor(nn.Module):
    """Per-token MLP scoring generated text tokens (no token mixing)."""

    def __init__(self, input_dim: int, d_model: int):
        super().__init__()
        self.output_mlp = nn.Sequential(
            nn.LayerNorm(input_dim),
            nn.Linear(input_dim, d_model),
            nn.GELU(),
            nn.Linear(d_model, d_model // 2),
            nn.GELU(),
            nn.Linear(d_model // 2, d_model // 4),
            nn.GELU(),
            nn.Linear(d_model // 4, 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_mlp(x)  # (B, N, 2)


# ---- decision rules (pure functions; tests drive them with forced logits) ----------------------
def image_keep_index(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k image tokens by log-prob of keep (the official rule). float32 keeps the softmax from
    adding ties of its own; ties already in bf16 logits go to the lower index (`sorted_topk`)."""
    score = F.log_softmax(logits.float(), dim=-1)[..., 0]  # (B, N)
    return sorted_topk(score, k)


def text_keep_index(logits: torch.Tensor, policy: str, text_keep: float | None) -> torch.Tensor:
    """No-cache rule for the candidate generated tokens (all fed but the newest). (B,m,2) -> (B,n)."""
    keep_logit = logits[..., 0].float()  # (B, m)
    if policy == "learned":
        n_keep = int((logits[..., 0] > logits[..., 1]).sum(dim=1).max().item())
    else:
        n_keep = keep_count(text_keep, logits.shape[1])
    return sorted_topk(keep_logit, n_keep)


class TextDecider:
    """Kv-cache rule, one decoded token at a time; keeps the running counts."""

    def __init__(self, policy: str, text_keep: float | None):
        if policy not in TEXT_POLICIES:
            raise DynbenchError(f"unknown text policy {policy!r}; choose learned or budget")
        self.policy, self.text_keep = policy, text_keep
        self.decided = self.kept = 0

    def decide(self, logits: torch.Tensor) -> bool:
        """`logits` (B, 1, 2) of the new token. Rows are replicated prompts (checked by the
        drivers), so row 0 decides for all; `.item()` is the one host sync the method needs."""
        self.decided += 1
        if self.policy == "learned":
            keep = bool((logits[0, 0, 0] > logits[0, 0, 1]).item())
        else:
            keep = budget_keeps(self.kept, self.decided, self.text_keep)
        self.kept += keep
        return keep


# ---- the model -------------------------------------------------------------------------------
class DynamicLlava(LlavaForBench):
    method = "dynamic-llava"

    def __init__(self, preset: Preset, attn: str = "sdpa"):
        super().__init__(preset, attn)
        p = preset
        self.model.image_score_predictor = VisionPredictor(
            p.hidden, p.predictor_d_model, p.predictor_nhead, p.predictor_dim_feedforward,
            p.predictor_num_layers,
        )
        self.model.output_text_score_predictor = TextPredictor(p.hidden, p.predictor_d_model)

    def forward_sequence(
        self,
        hidden: torch.Tensor,
        layout: PromptLayout,
        drop: DropConfig | None = None,
        cache: PrunableKVCache | None = None,
    ) -> SequenceOut:
        drop = drop or DropConfig()
        batch, n, C = hidden.shape
        P, a, b = layout.seq_len, layout.image_start, layout.image_end
        counts = {}

        def sparse_hook(h, pos):  # h: (B, n, C) at the input of layer s
            rows = lambda lo, hi: torch.arange(lo, hi, device=h.device).expand(batch, hi - lo)
            with self.region("predictor_vision"):
                img_logits = self.model.image_score_predictor(h[:, a:b])  # (B, 576, 2)
            img_idx = image_keep_index(img_logits, keep_count(drop.vision_keep, b - a)) + a
            parts = [rows(0, a), img_idx, rows(b, P)]
            counts["image"] = img_idx.shape[1]
            if n > P:  # no-cache decoding: fed generated tokens follow the prompt
                counts["text_scored"] = n - 1 - P
                if n - 1 > P:
                    with self.region("predictor_text"):
                        txt_logits = self.model.output_text_score_predictor(h[:, P : n - 1])
                    parts.append(text_keep_index(txt_logits, drop.text_policy, drop.text_keep) + P)
                parts.append(rows(n - 1, n))  # the newest token is always kept
                counts["text"] = sum(p.shape[1] for p in parts[3:])
            index = torch.cat(parts, dim=1)  # (B, n_kept), ascending
            counts["index"] = index
            with self.region("token_drop"):
                h = h.gather(1, index[..., None].expand(-1, -1, C))
                pos = pos.gather(1, index)
            return h, pos

        pos = torch.arange(n, device=hidden.device).expand(batch, n)
        hidden, pos, seq_lens = self.run_layers(hidden, pos, cache, sparse_hook)
        return SequenceOut(
            hidden, counts["index"], seq_lens, counts["image"], counts.get("text"),
            image_scored=b - a, text_scored=counts.get("text_scored", 0),
        )

    def forward_token(self, hidden, position, cache, decider=None):
        decision = {}

        def sparse_hook(h, pos):  # h: (B, 1, C) — the new token at the input of layer s
            with self.region("predictor_text"):
                logits = self.model.output_text_score_predictor(h)
            keep = decider.decide(logits)
            for i in range(self.sparse_layer, len(self.layers)):
                cache.write[i] = keep
            decision["keep"] = keep
            return h, pos

        pos = torch.full((hidden.shape[0], 1), position, device=hidden.device, dtype=torch.long)
        try:
            hidden, _, _ = self.run_layers(hidden, pos, cache, sparse_hook)
        finally:
            cache.write = [True] * len(self.layers)
        return hidden, decision["keep"]
