"""The shipped methods' declarations (`method_api.Method`), registered like any plug-in.

Their counting rules live in `rules.py` and their models in `llava.py`, `dynamic_llava.py` and
`baselines.py`; what the rest of dynbench needs to know about them is declared here as
properties, so no code elsewhere asks which method it is. No torch: `--help` reads these.
Their options keep the spec fields and record columns they had before the method API (`field`).
"""

from __future__ import annotations

from dynbench.errors import DynbenchError
from dynbench.fields import FIELD
from dynbench.method_api import Method, Option
from dynbench.models.rules import (
    SINK_TOKENS,
    check_fastv,
    fastv_kept,
    fastv_ratio,
    keep_count,
    match_fastv_keep,
    streaming_prompt_kept,
)
from dynbench.names import METHODS


def _own(name: str, field: str) -> Option:
    """A shipped method's option kept in a spec field of its own (`fields.py`): kind, default and help
    as declared there."""
    declared = FIELD[field]
    return Option(name, declared.kind, declared.default, declared.help.split(": ", 1)[-1], field=field)

class _AtSparseLayer(Method):
    """Keeps `int(N × vision_keep)` image tokens from the sparse layer on, chosen without reading
    attention (dynamic-llava's predictor, random's draw)."""

    def image_stages(self, preset, options):
        return [(preset.sparse_layer, keep_count(options["vision_keep"], preset.image_tokens))]

    def scored_layers(self, preset, options, phase):
        return frozenset()


class Llava(Method):
    name = "llava"
    summary = "LLaVA-1.5, dense: the baseline every method is compared with"
    model = "dynbench.models.llava:LlavaForBench"


class DynamicLlava(_AtSparseLayer):
    name = "dynamic-llava"
    summary = "Dynamic-LLaVA: learned image and output-text predictors at the sparse layer"
    model = "dynbench.models.dynamic_llava:DynamicLlava"
    llava_weights = False
    uses_vision_keep = text_policy = True
    options = (_own("vision_keep", "vision_keep"), _own("text_keep", "text_keep"))


class RandomPrune(_AtSparseLayer):
    name = "random"
    summary = "uniformly random image tokens at the sparse layer, as many as dynamic-llava keeps"
    model = "dynbench.models.baselines:RandomPrune"
    uses_vision_keep = budget_matched = True
    options = (_own("vision_keep", "vision_keep"),)

    def matched_options(self, preset, vision_keep, by, options):
        return {}  # the same count at the same layer as dynamic-llava: its keep, by construction


class FastV(Method):
    name = "fastv"
    summary = "FastV: image tokens ranked by the last token's attention at layer K-1, R of them dropped"
    model = "dynbench.models.baselines:FastV"
    budget_matched = True
    matched_ratio_field = "fastv_r"
    label_fields = (("K", "fastv_k", "g"), ("R", "fastv_r", ".3g"))
    options = (_own("k", "fastv_k"), _own("r", "fastv_r"))

    def check(self, preset, options):
        check_fastv(options["k"], options["r"], preset.layers)

    def image_stages(self, preset, options):
        return [(options["k"], fastv_kept(options["r"], preset.image_tokens))]

    def matched_options(self, preset, vision_keep, by, options):
        if options.get("r") is not None:
            raise DynbenchError("fastv_r is set by --match-budget; drop one of them")
        k = self.options[0].default if options.get("k") is None else options["k"]
        kept = match_fastv_keep(preset, vision_keep, k, by)
        return {"k": k, "r": fastv_ratio(kept, preset.image_tokens)}


class _EvictsKV(Method):
    """The KV-eviction baselines: an unpruned prefill, then a cache bounded to a share of the prompt."""

    modes = ("prefill", "kv-cache")
    evicts_kv = True
    label_fields = (("KV ", "kv_budget", "g"),)
    options = (_own("budget", "kv_budget"),)


class H2O(_EvictsKV):
    name = "h2o"
    summary = "H2O: KV cache of heavy hitters + recent tokens, per layer and head"
    model = "dynbench.models.baselines:H2O"

    def scored_layers(self, preset, options, phase):
        return frozenset(range(preset.layers))  # every layer accumulates attention received, every phase


class StreamingLLM(_EvictsKV):
    name = "streaming-llm"
    summary = "StreamingLLM: 4 attention sinks + a window of the newest KV entries"
    model = "dynbench.models.baselines:StreamingLLM"

    def kv_prompt_kept(self, n_prompt, n, budget):
        return streaming_prompt_kept(n_prompt, n, budget - SINK_TOKENS)  # sinks + the newest window


SHIPPED: tuple[Method, ...] = tuple(cls() for cls in (Llava, DynamicLlava, RandomPrune, FastV, H2O, StreamingLLM))
assert tuple(m.name for m in SHIPPED) == METHODS, [m.name for m in SHIPPED]
