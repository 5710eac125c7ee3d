"""The names a user types and a record stores — one definition each, no heavy imports.

Modes, methods, attention backends, dtypes, devices and text policies are validated against these
tuples everywhere (spec, CLI help, suites, records, reports), so `dynbench --help` and suite
loading never import torch. The modules that implement them check they agree (`models/build.py`,
`modes.py`).
"""

MODES = ("prefill", "no-cache", "kv-cache")
# the phase of a step (`modes.Step.phase`, the step rows' `phase`): a forward over a prompt that fills the
# cache (the prefill; a conversation's next turn), a full-sequence forward without a cache (no-cache), a
# one-token decode step over the cache
PREFILL_PHASE, FORWARD_PHASE, DECODE_PHASE = "prefill", "forward", "decode"
PHASES = (PREFILL_PHASE, FORWARD_PHASE, DECODE_PHASE)
BASELINE = "llava"  # the dense model every other method is compared with
PRUNE_METHODS = ("random", "fastv")  # drop image tokens in full-sequence forwards
KV_METHODS = ("h2o", "streaming-llm")  # evict KV-cache entries while decoding; prefill unpruned
METHODS = (BASELINE, "dynamic-llava", *PRUNE_METHODS, *KV_METHODS)  # the shipped ones; plug-ins: registry.py
METHOD_ORDER = METHODS  # display order; unknown methods follow, alphabetically
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # element size, for logical byte counts
DEVICES = ("auto", "cpu", "cuda", "meta")
TEXT_POLICIES = ("learned", "budget")
MATCH_BUDGETS = ("flops", "tokens")
# a row's `status`: measured, out of memory, or failed ("error: <exception type>: <message>")
STATUS_OK, STATUS_OOM, ERROR_PREFIX = "ok", "oom", "error: "
# fine regions a model lets through to a timer (`measure.latency.Regions`; `dynbench profile`)
# (tests/test_layers.py checks every `region("…")` in the models is one of these)
REGIONS = ("vision_tower", "projector", "llm_prefill", "llm_forward", "decode_step", "predictor_vision",
           "predictor_text", "token_drop", "scoring", "kv_evict", "lm_head")


def is_error(status: object) -> bool:
    """A status that is neither ok nor oom: the point (or sample) failed."""
    return str(status or "").startswith(ERROR_PREFIX.rstrip(": "))
