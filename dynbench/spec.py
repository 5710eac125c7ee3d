"""What one benchmark point is (`RunSpec`), and how lists of flag values expand into points.

Axes a point does not use are None, so the same measurement never appears twice: `llava` has no
keep ratios or text policy, `prefill` has no `gen_len` or text keep, only `no-cache` uses
`reuse_vision`, and the `learned` text policy has no `text_keep`.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass

from dynbench.errors import DynbenchError
from dynbench.models.build import ATTN_IMPLEMENTATIONS, METHODS
from dynbench.models.dynamic_llava import TEXT_POLICIES
from dynbench.models.llava import DropConfig
from dynbench.models.presets import DTYPES, get_preset
from dynbench.modes import MODES

MAX_TOTAL_TOKENS = 1_048_576
DEVICES = ("auto", "cpu", "cuda", "meta")
DEFAULT_VISION_KEEP = 0.2  # official `vision_keep_rate`
DEFAULT_TEXT_KEEP = 0.5  # official `output_text_keep_rate` (the training target)


@dataclass(frozen=True)
class RunSpec:
    model: str = "tiny"
    method: str = "dynamic-llava"
    mode: str = "kv-cache"
    prompt_len: int = 64
    gen_len: int | None = 32
    vision_keep: float | None = DEFAULT_VISION_KEEP
    text_keep: float | None = DEFAULT_TEXT_KEEP
    text_policy: str | None = "budget"
    reuse_vision: bool | None = None
    batch: int = 1
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    attn: str = "sdpa"

    def __post_init__(self):
        preset = get_preset(self.model)
        _one_of("mode", self.mode, MODES)
        _one_of("method", self.method, METHODS)
        _one_of("device", self.device, DEVICES)
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("attn", self.attn, ATTN_IMPLEMENTATIONS)
        if self.text_policy is not None:
            _one_of("text-policy", self.text_policy, TEXT_POLICIES)
        for name in ("vision_keep", "text_keep"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise DynbenchError(f"--{name.replace('_', '-')} must be in (0, 1], got {value}")
        if self.text_policy == "learned" and self.text_keep is not None:
            raise DynbenchError(
                "--text-keep cannot be used with --text-policy learned (the predictor decides); "
                "use --text-policy budget to impose a keep ratio"
            )
        if self.prompt_len < 0:
            raise DynbenchError(f"--prompt-len must be ≥ 0, got {self.prompt_len}")
        if self.gen_len is not None and self.gen_len < 1:
            raise DynbenchError(f"--gen-len must be ≥ 1, got {self.gen_len}")
        if self.batch < 1:
            raise DynbenchError(f"--batch must be ≥ 1, got {self.batch}")
        total = self.prompt_len + (self.gen_len or 0)
        if total > MAX_TOTAL_TOKENS:
            raise DynbenchError(
                f"--prompt-len + --gen-len = {total} is over the limit of {MAX_TOTAL_TOKENS:,} tokens"
            )
        positions = total + preset.image_tokens
        if positions > preset.max_position_embeddings:
            warnings.warn(
                f"{positions} positions exceed {self.model}'s max_position_embeddings "
                f"({preset.max_position_embeddings}); RoPE extrapolates (the paper's Table 4 does too)",
                stacklevel=2,
            )

    @property
    def drop(self) -> DropConfig:
        return DropConfig(
            vision_keep=self.vision_keep or 1.0,
            text_keep=self.text_keep,
            text_policy=self.text_policy or "budget",
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _one_of(flag: str, value, choices) -> None:
    if value not in choices:
        raise DynbenchError(f"unknown {flag} {value!r}; choose one of: {', '.join(choices)}")


def collapse(fields: dict) -> dict:
    """Set to None every axis a point does not use (see module docstring)."""
    fields = dict(fields)
    if fields.get("mode") == "prefill":
        fields.update(gen_len=None, text_keep=None, text_policy=None)
    if fields.get("mode") != "no-cache":
        fields["reuse_vision"] = None
    if fields.get("method") == "llava":
        fields.update(vision_keep=None, text_keep=None, text_policy=None)
    elif fields.get("text_policy") == "learned":
        fields["text_keep"] = None
    return fields


def expand(axes: dict[str, list], fixed: dict) -> list[RunSpec]:
    """Cross product of the list-valued `axes` plus the `fixed` fields, collapsed and
    de-duplicated, in order. `--text-keep` with the learned policy is refused, not ignored."""
    if fixed.get("text_policy") == "learned" and any(v is not None for v in axes.get("text_keep", [])):
        raise DynbenchError(
            "--text-keep cannot be used with --text-policy learned (the predictor decides); "
            "use --text-policy budget to impose a keep ratio"
        )
    names = list(axes)
    points: dict[RunSpec, None] = {}
    for values in itertools.product(*(axes[n] for n in names)):
        points[RunSpec(**collapse(dict(zip(names, values, strict=True), **fixed)))] = None
    return list(points)
