"""The method API: what a token-reduction method declares, so dynbench measures it like its own.

A method is a `Method` subclass (a plug-in registers it in the `dynbench.methods` entry-point
group, `registry.py`). It DECIDES, and only decides:

* its options (`options`: name, type, default, help) — each becomes the flag
  `--<method>-<option>`, the suite key `<method>_<option>`, a key of the record column
  `method_options` and part of the point key, with no edit anywhere else;
* the modes it supports (`modes`; others are refused in one line);
* which vision tokens survive at which layers: `image_stages` — (layer, tokens kept from that
  layer on) — for a method that ranks image tokens by the attention of the last instruction
  token (FastV, PyramidDrop); dynbench's `models.method_api.AttentionRankedPruner` does the
  mechanics (eager attention on the layer before each cut, ranking, physical drop, positions);
* or, for anything else (KV eviction, a learned predictor), its own model class (`model`,
  "package.module:Class", a `LlavaForBench` subclass imported only when a model is built);
* the per-layer image-token counts a `--device meta` plan uses (`layer_image_tokens`).

It may NOT measure (timers, FLOP counters and memory are dynbench's), do I/O, reach the network,
or read the spec beyond its options: it gets the preset's sizes and its option values.

This module imports no torch: the registry loads every plug-in's `Method` for `--help` and
`dynbench methods`; a plug-in keeps its torch code in the module named by `model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dynbench.errors import DynbenchError
from dynbench.names import MODES

OPTION_KINDS = ("int", "float", "str", "ints")  # "ints": a list of integers, "8,16,24" on the command line


@dataclass(frozen=True)
class Option:
    """One option of a method. `kind` int | float | str are sweep axes (`--pdrop-ratio 0.3,0.5`);
    `ints` is one list per sweep (`--pdrop-layers 8,16,24`, in a suite `[8, 16, 24]`)."""

    name: str
    kind: str
    default: Any
    help: str
    # the shipped methods' options predate this API and keep their own spec fields and record
    # columns (`fastv_k`, `kv_budget`); a plug-in's option leaves it None
    field: str | None = None

    def __post_init__(self):
        if self.kind not in OPTION_KINDS:
            raise ValueError(f"option {self.name}: kind must be one of {OPTION_KINDS}, got {self.kind!r}")
        if not self.name.isidentifier():
            raise ValueError(f"option name {self.name!r} must be an identifier (it names a flag and a column)")

    @property
    def is_axis(self) -> bool:
        return self.kind != "ints"

    def parse(self, value: Any, where: str = "") -> Any:
        """A flag, suite or record value as this option's type; one-line error otherwise."""
        try:
            if self.kind == "ints":
                items = value.split(",") if isinstance(value, str) else list(value)
                return tuple(_strict_int(v) for v in items if str(v).strip())
            if isinstance(value, bool):
                raise ValueError
            if self.kind == "int":
                return _strict_int(value)
            if self.kind == "float":
                return float(value)
            return str(value)
        except (TypeError, ValueError):
            raise DynbenchError(f"{where}{self.name}: cannot read {value!r} as {self.kind}") from None


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


class Method:
    """Base class of a method's declaration (class attributes; the registry makes one instance).

    Subclasses set `name` and either `image_stages` or `model`; everything else has a default.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for `dynbench methods`
    options: ClassVar[tuple[Option, ...]] = ()
    modes: ClassVar[tuple[str, ...]] = MODES
    # "package.module:Class" of a `LlavaForBench` subclass; None: dynbench's `AttentionRankedPruner`
    # runs `image_stages`
    model: ClassVar[str | None] = None
    # runs on LLaVA-1.5's weights (a --checkpoint of llava weights serves it); False: own weights
    llava_weights: ClassVar[bool] = True
    # properties the shipped methods set (dynbench's own code asks these, never a method's name)
    uses_vision_keep: ClassVar[bool] = False  # --vision-keep applies (dynamic-llava, random)
    text_policy: ClassVar[bool] = False  # decides which generated tokens are cached (--text-policy/--text-keep)
    evicts_kv: ClassVar[bool] = False  # bounds the KV cache while decoding (h2o, streaming-llm)
    budget_matched: ClassVar[bool] = False  # --match-budget sets its ratio (random, fastv)
    matched_ratio_field: ClassVar[str] = "vision_keep"  # the `matched_ratio` column of a matched point
    # how reports name a point's own parameters: (prefix, spec field, format spec) each, e.g. fastv's
    # (("K", "fastv_k", "g"), ("R", "fastv_r", ".3g")) → "K2 R0.5"; () = the keep ratios (or a
    # plug-in's `method_options`)
    label_fields: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    # ---- decisions (pure: the preset's sizes and the option values in, counts out) --------------
    # `preset`: `models.presets.Preset` (layers, image_tokens, hidden, sparse_layer, …);
    # `options`: option name → value, every option present (`option_values`)
    def image_stages(self, preset, options: Mapping[str, Any]) -> list[tuple[int, int]]:
        """(layer, image tokens kept from that layer on), layers ascending, counts not increasing.
        The tokens are ranked by the attention the last instruction token pays them in the layer
        before the cut (head mean). [] = no image token is dropped."""
        return []

    def check(self, preset, options: Mapping[str, Any]) -> None:
        """Refuse option values that make no sense for this preset (raise `DynbenchError`). The
        default checks the stages `image_stages` gives."""
        check_stages(self.name, self.image_stages(preset, options), preset.layers, preset.image_tokens)

    def layer_image_tokens(self, preset, options: Mapping[str, Any]) -> list[int]:
        """Image tokens into each decoder layer of a full-sequence forward (the meta plan, paper
        FLOPs, FastV-convention MACs, equivalent tokens)."""
        return stage_tokens(preset.layers, preset.image_tokens, self.image_stages(preset, options))

    def scored_layers(self, preset, options: Mapping[str, Any], phase: str) -> frozenset[int]:
        """Layers whose attention weights the method reads (they run eager attention) in a forward
        of `phase` ("prefill", "forward" = a no-cache step, "decode")."""
        if phase == "decode":
            return frozenset()
        return frozenset(layer - 1 for layer, _ in self.image_stages(preset, options))

    def matched_options(self, preset, vision_keep: float, by: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """`--match-budget` (methods with `budget_matched`): the option values that make this method's
        prefill cost (`by`: paper TFLOPs or equivalent tokens) equal dynamic-llava's at `vision_keep`."""
        raise DynbenchError(f"--match-budget does not apply to {self.name}")

    def kv_prompt_kept(self, n_prompt: int, n: int, budget: int) -> int | None:
        """KV-evicting methods (`evicts_kv`), for the meta plan: prompt entries left when a layer of `n`
        entries (the first `n_prompt` of them prompt) is cut to `budget`; None = it depends on the
        attention weights (the plan then reports the total KV bytes only)."""
        return None

    def check_mode(self, mode: str) -> None:
        if mode not in self.modes:
            raise DynbenchError(f"{self.name} runs in {' and '.join(self.modes)} mode only, not {mode}"
                                + (" (it evicts KV-cache entries while decoding; no-cache mode has no cache "
                                   "to evict)" if self.evicts_kv else ""))

    def layer_attn(self, preset, options: Mapping[str, Any], attn: str, phase: str) -> list[str]:
        """Attention implementation of every decoder layer in a forward of `phase`."""
        eager = self.scored_layers(preset, options, phase)
        return ["eager" if i in eager else attn for i in range(preset.layers)]

    # ---- helpers --------------------------------------------------------------------------------
    def option_values(self, given: Mapping[str, Any] | None = None, where: str = "") -> dict[str, Any]:
        """Every option's value: the given one (parsed) or its default; unknown names refused."""
        given = dict(given or {})
        unknown = sorted(set(given) - {o.name for o in self.options})
        if unknown:
            raise DynbenchError(f"{where}{self.name} has no option {', '.join(unknown)}; "
                                f"its options: {', '.join(o.name for o in self.options) or 'none'}")
        return {o.name: o.parse(o.default if given.get(o.name) is None else given[o.name], where)
                for o in self.options}

    def values_of(self, drop) -> dict[str, Any]:
        """Option values of a point's `rules.DropConfig`: a shipped method's from its own fields,
        a plug-in's from `drop.options`."""
        given = dict(drop.options or ())
        values = {o.name: getattr(drop, o.field) if o.field else given.get(o.name) for o in self.options}
        return self.option_values(values)

    def field(self, option: Option) -> str:
        """The suite key / spec field of an option: `pdrop_ratio`, `my_method_k` (a shipped
        method's own field where it has one: `fastv_k`)."""
        return option.field or f"{self.name.replace('-', '_')}_{option.name}"


def stage_tokens(num_layers: int, n_image: int, stages: Sequence[tuple[int, int]]) -> list[int]:
    """Per-layer image tokens of a staged drop: N before the first cut, each stage's count after it."""
    lens, count, cuts = [], n_image, dict(stages)
    for i in range(num_layers):
        count = cuts.get(i, count)
        lens.append(count)
    return lens


def check_stages(method: str, stages: Sequence[tuple[int, int]], num_layers: int, n_image: int) -> None:
    layers = [layer for layer, _ in stages]
    if any(not 1 <= layer < num_layers for layer in layers) or layers != sorted(set(layers)):
        raise DynbenchError(f"{method}: cut layers must be distinct, ascending and in [1, {num_layers - 1}] "
                            f"(scores come from the layer before), got {layers}")
    counts = [n_image] + [kept for _, kept in stages]
    if any(not 0 <= b <= a for a, b in zip(counts, counts[1:], strict=False)):
        raise DynbenchError(f"{method}: tokens kept per stage must not grow, got {counts}")
