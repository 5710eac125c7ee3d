"""Shape presets: `tiny` (random weights, CPU-fast) and the published LLaVA-1.5 7B / 13B shapes.

Every preset keeps the real CLIP ViT-L/14-336 geometry (336-px images, 14-px patches → 576 image
tokens), so token arithmetic (115 kept at vision keep 0.2) matches the real models even on `tiny`.
Sources for the big shapes: the LLaVA-1.5 configs (`liuhaotian/llava-v1.5-{7b,13b}`, Vicuna-1.5 =
LLaMA-2 shapes, vocab 32000) and `openai/clip-vit-large-patch14-336`; Dynamic-LLaVA's predictor
sizes are the official `sparse_config` defaults (d_model 512, 8 heads, ffn 2048, 2 layers,
sparse layer 2; `reference/dynamic_llava_method.md` §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynbench.errors import DynbenchError

if TYPE_CHECKING:
    from transformers import LlavaConfig


@dataclass(frozen=True)
class Preset:
    name: str
    # CLIP vision tower
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_intermediate: int
    # LLaMA decoder
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_position_embeddings: int
    # Dynamic-LLaVA predictors (official `sparse_config` names)
    sparse_layer: int = 2
    predictor_d_model: int = 512
    predictor_nhead: int = 8
    predictor_dim_feedforward: int = 2048
    predictor_num_layers: int = 2
    # geometry shared by every preset
    image_size: int = 336
    patch_size: int = 14
    vision_feature_layer: int = -2  # LLaVA-1.5 uses the penultimate CLIP layer
    image_token_index: int = 32000  # placeholder id in the expanded input_ids (llava-hf convention)
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    description: str = ""
    # published parameter count (vision tower + projector + LLM) and where it comes from
    published_params: float | None = None
    published_source: str = ""

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def llava_config(self, attn: str = "sdpa") -> LlavaConfig:
        """An HF `LlavaConfig` for this shape; `attn` is the HF attention implementation."""
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig  # heavy: only when building

        vision = CLIPVisionConfig(
            hidden_size=self.vision_hidden,
            intermediate_size=self.vision_intermediate,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=768,
        )
        text = LlamaConfig(
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            vocab_size=self.vocab,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=False,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
        cfg = LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=self.image_token_index,
            vision_feature_layer=self.vision_feature_layer,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
            image_seq_length=self.image_tokens,
            tie_word_embeddings=False,
        )
        for c in (cfg, cfg.vision_config, cfg.text_config):
            c._attn_implementation = attn
        return cfg


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        vision_hidden=64,
        vision_layers=2,
        vision_heads=2,
        vision_intermediate=128,
        hidden=128,
        layers=4,
        heads=4,
        kv_heads=4,
        intermediate=344,
        vocab=32064,
        max_position_embeddings=2048,
        predictor_d_model=64,
        predictor_nhead=4,
        predictor_dim_feedforward=128,
        description="random weights, seconds on a CPU; real 576-token image geometry",
    ),
    "llava-1.5-7b": Preset(
        name="llava-1.5-7b",
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate=4096,
        hidden=4096,
        layers=32,
        heads=32,
        kv_heads=32,
        intermediate=11008,
        vocab=32000,
        max_position_embeddings=4096,
        description="LLaVA-1.5-7B / Dynamic-LLaVA-7B shapes (Vicuna-7B-v1.5 + CLIP ViT-L/14-336)",
        published_params=7.06e9,
        published_source="llava-hf/llava-1.5-7b-hf model card: 7.06B params",
    ),
    "llava-1.5-13b": Preset(
        name="llava-1.5-13b",
        vision_hidden=1024,
        vision_layers=24,
        vision_heads=16,
        vision_intermediate=4096,
        hidden=5120,
        layers=40,
        heads=40,
        kv_heads=40,
        intermediate=13824,
        vocab=32000,
        max_position_embeddings=4096,
        description="LLaVA-1.5-13B / Dynamic-LLaVA-13B shapes (Vicuna-13B-v1.5 + CLIP ViT-L/14-336)",
        published_params=13.35e9,
        published_source="LLaMA-2-13B 13.016B (Touvron et al. 2023) + CLIP ViT-L/14-336 0.304B "
        "+ projector 0.031B",
    ),
}


_FROM_CHECKPOINTS: dict[str, Preset] = {}  # shapes read from a loaded checkpoint's config


def register_preset(preset: Preset) -> None:
    """Make a checkpoint's shape known by name for this process (named presets take precedence)."""
    if preset.name not in PRESETS:
        _FROM_CHECKPOINTS[preset.name] = preset


def get_preset(name: str) -> Preset:
    preset = PRESETS.get(name) or _FROM_CHECKPOINTS.get(name)
    if preset is None:
        raise DynbenchError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return preset
