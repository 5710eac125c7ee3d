"""The names a user types and a record stores — one definition each, no heavy imports.

Modes, methods, attention backends, dtypes, devices and text policies are validated against these
tuples everywhere (spec, CLI help, suites, records, reports), so `dynbench --help` and suite
loading never import torch. The modules that implement them check they agree (`models/build.py`,
`modes.py`).
"""

MODES = ("prefill", "no-cache", "kv-cache")
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
