"""Pure counting rules: what each method keeps, and what that costs in the papers' conventions.

One definition each, shared by the models, the counting plan (`modes.plan_mode`), the sweep spec
(`spec.py`: FLOP-matched FastV) and the record assembly. Plain integers and floats — no torch, so
spec validation and `--help` stay light.

* keep counts — `keep_count` (the official `int(N × keep_rate)`), `round_half_up`, the kv-cache
  budget schedule (`budget_keeps`), FastV's `round(N × (1 − R))`, H2O / StreamingLLM budgets;
* analytic cost conventions — Dynamic-LLaVA paper FLOPs (2 × MAC, per layer 32NC² + 4N²C), the
  FastV-family MACs (4nd² + 2n²d + 3ndm), exact per-layer matmul MACs, logical KV bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynbench.errors import DynbenchError
from dynbench.fields import FIELD
from dynbench.names import MATCH_BUDGETS

_EPS = 1e-9  # floor(0.29 × 100) must be 29, not 28 (float rounding)
SINK_TOKENS = 4  # StreamingLLM's attention sinks (its default `start_size`)
# the one count the rules cannot give: which generated tokens a learned predictor keeps
LEARNED_NEEDS_WEIGHTS = ("learned text decisions depend on the weights and cannot be counted without running the "
                         "model (the meta device computes shapes only); use --text-policy budget on the meta device")


@dataclass(frozen=True)
class DropConfig:
    """Keep ratios and text policy for one point (ignored by `--method llava`)."""

    # the defaults are the spec fields' (`fields.py`)
    vision_keep: float = FIELD["vision_keep"].default
    text_keep: float | None = FIELD["text_keep"].default
    text_policy: str = FIELD["text_policy"].default  # "learned" | "budget"
    # baselines (`baselines.py`); Dynamic-LLaVA ignores them
    fastv_k: int = FIELD["fastv_k"].default  # FastV: first pruned layer (scores come from layer K - 1)
    fastv_r: float = FIELD["fastv_r"].default  # FastV: fraction of image tokens dropped
    kv_budget: float = FIELD["kv_budget"].default  # H2O / StreamingLLM: KV cache budget, fraction of the prompt P
    seed: int = 0  # random pruning: seed of the chosen image tokens
    # a plug-in method's options (`method_api`): ((name, value), …), hashable
    options: tuple[tuple[str, object], ...] = ()


# ---- keep counts --------------------------------------------------------------------------------
def keep_count(ratio: float, n: int) -> int:
    """floor(ratio × n), as the official `int(N_img * keep_rate)`: 576 × 0.2 → 115."""
    return int(math.floor(ratio * n + _EPS))


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + _EPS))

def budget_keeps(kept_so_far: int, decided: int, text_keep: float) -> bool:
    """The kv-cache budget rule: keep token t iff kept_so_far < round_half_up(text_keep × t), t =
    tokens decided so far including this one (halves round up: 0.5 keeps tokens 1, 3, 5, …)."""
    return kept_so_far < round_half_up(text_keep * decided)


def fastv_kept(r: float, n_image: int) -> int:
    """Image tokens FastV keeps: `round(N × (1 − R))`, as the official code (576, 0.5 → 288)."""
    return round(n_image * (1 - r))


def kv_budget_split(kv_budget: float, prompt_tokens: int) -> tuple[int, int]:
    """(heavy, recent) of h2o: floor(kv_budget / 2 × P) each — "10 % + 10 %" at kv_budget 0.2."""
    half = keep_count(kv_budget / 2, prompt_tokens)
    return half, half


def kv_budget_tokens(kv_budget: float, prompt_tokens: int) -> int:
    """Cached entries per layer (and head) that h2o and streaming-llm keep at most."""
    return sum(kv_budget_split(kv_budget, prompt_tokens))


def check_kv_budget(budget: int, method: str) -> None:
    if budget < SINK_TOKENS + 1:
        raise DynbenchError(
            f"{method}: a KV budget of {budget} tokens is too small (StreamingLLM needs {SINK_TOKENS} "
            "sinks + 1, H2O one recent token); raise kv_budget or the prompt length"
        )




def streaming_prompt_kept(n_prompt: int, n: int, window: int) -> int:
    """Prompt entries left when a layer holding `n` entries (the first `n_prompt` of them prompt)
    keeps its first SINK_TOKENS and its newest `window` ones."""
    return min(n_prompt, SINK_TOKENS) + max(0, n_prompt - (n - window))




def check_fastv(k: int, r: float, num_layers: int) -> None:
    if not 1 <= k < num_layers:
        raise DynbenchError(f"fastv_k must be in [1, {num_layers - 1}] (scores come from layer K - 1), got {k}")
    if not 0 <= r <= 1:
        raise DynbenchError(f"fastv_r must be in [0, 1], got {r}")






def match_fastv_keep(preset, vision_keep: float, fastv_k: int, by: str) -> int:
    """Image tokens FastV (first pruned layer K) must keep so that its prefill cost equals
    `dynamic-llava`'s at `vision_keep`: paper-convention TFLOPs (`by="flops"`) or equivalent
    tokens (`by="tokens"`), both over image tokens. The integer count closest to the target;
    refused when even that misses it by more than one token's worth."""
    if by not in MATCH_BUDGETS:
        raise DynbenchError(f"unknown match-budget {by!r}; choose one of: {', '.join(MATCH_BUDGETS)}")
    check_fastv(fastv_k, 0.0, preset.layers)
    L, s, N = preset.layers, preset.sparse_layer, preset.image_tokens
    cost: Callable[[list[int]], float] = (
        (lambda lens: tflops_paper(lens, preset.hidden)) if by == "flops" else (lambda lens: sum(lens) / L)
    )
    target = cost(paper_prefill_layer_tokens(L, s, N, keep_count(vision_keep, N)))
    costs = [cost(paper_prefill_layer_tokens(L, fastv_k, N, n)) for n in range(N + 1)]
    best = min(range(N + 1), key=lambda n: abs(costs[n] - target))
    one_token = costs[best + 1] - costs[best] if best < N else costs[best] - costs[best - 1]
    if abs(costs[best] - target) > one_token:
        raise DynbenchError(
            f"fastv with K={fastv_k} cannot match dynamic-llava at vision keep {vision_keep} by {by}: its "
            f"first {fastv_k} layers alone cost more; lower fastv_k"
        )
    return best


def equivalent_tokens(layer_image_tokens: Sequence[int]) -> float:
    """Image tokens averaged over decoder layers (the FastV / SparseVLM "equivalent tokens")."""
    return sum(layer_image_tokens) / len(layer_image_tokens)


def fastv_ratio(kept: int, n_image: int) -> float:
    """The R that keeps exactly `kept` image tokens (inverse of `fastv_kept`)."""
    r = 1 - kept / n_image
    assert fastv_kept(r, n_image) == kept, (kept, r)
    return r


# ---- analytic cost conventions ------------------------------------------------------------------
def paper_layer_flops(n: int, c: int) -> float:
    """FLOPs (= 2 x MACs) of one decoder layer over `n` tokens of width `c`: 32nc^2 + 4n^2c.

    Dynamic-LLaVA paper convention: q/k/v/o projections 8nc^2, QK^T and AV 4n^2c, and the FFN
    approximated as 24nc^2 (a 4c-wide two-matrix FFN, not LLaMA's 3-matrix SwiGLU of width m).
    """
    return 32 * n * c**2 + 4 * n**2 * c


def tflops_paper(layer_tokens: Sequence[int], hidden_size: int) -> float:
    """Paper-convention TFLOPs (FLOPs = 2 x MACs) over layers; layer_tokens[i] = N of layer i."""
    return sum(paper_layer_flops(n, hidden_size) for n in layer_tokens) / 1e12


def fastv_layer_macs(n: int, d: int, m: int) -> float:
    """MACs of one LLaMA layer over `n` tokens, width `d`, FFN width `m`: 4nd^2 + 2n^2d + 3ndm.

    FastV / PyramidDrop / SparseVLM convention: these are MACs, which those papers call FLOPs.
    Equals `analytic_layer_macs(n, n, d, m, h, h, d // h)` for full multi-head attention.
    """
    return 4 * n * d**2 + 2 * n**2 * d + 3 * n * d * m


def tmacs_fastv(layer_tokens: Sequence[int], hidden_size: int, intermediate_size: int) -> float:
    """FastV-convention tera-MACs summed over layers; `layer_tokens[i]` = n of layer i."""
    return sum(fastv_layer_macs(n, hidden_size, intermediate_size) for n in layer_tokens) / 1e12


def _two_stage(num_layers: int, sparse_layer: int, before: int, after: int) -> list[int]:
    assert 0 <= sparse_layer <= num_layers, (sparse_layer, num_layers)
    return [before] * sparse_layer + [after] * (num_layers - sparse_layer)


def paper_prefill_layer_tokens(
    num_layers: int, sparse_layer: int, image_tokens: int, image_kept: int
) -> list[int]:
    """Per-layer N for prefill as the paper counts it: image tokens only, all of them below
    `sparse_layer` and the kept ones from it on (for `llava` pass image_kept=image_tokens)."""
    return _two_stage(num_layers, sparse_layer, image_tokens, image_kept)


def paper_decode_layer_tokens(
    num_layers: int, sparse_layer: int, text_fed: int, text_kept: int
) -> list[int]:
    """Per-layer N for no-cache decoding as the paper counts it: output-text tokens in that layer
    at the final length, all of them below `sparse_layer` and the kept ones from it on."""
    return _two_stage(num_layers, sparse_layer, text_fed, text_kept)


def analytic_layer_macs(
    q_len: int,
    kv_len: int,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    *,
    batch: int = 1,
) -> int:
    """Exact MACs of one LLaMA decoder layer's matmuls, as fvcore counts them with our handles.

    `q_len` query tokens attend to `kv_len` keys (kv_len - q_len of them already cached).
    Attention runs over the query heads (GQA repeats k/v), full q_len x kv_len, no causal halving.
    """
    projections = q_len * hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o: heads; k, v: kv
    attention = 2 * heads * q_len * kv_len * head_dim  # QK^T and AV
    mlp = 3 * q_len * hidden * intermediate  # gate, up, down
    return batch * (projections + attention + mlp)


def kv_bytes(cached_lens: Sequence[int], kv_heads: int, head_dim: int, element_bytes: int, batch: int) -> int:
    """Logical KV-cache bytes: Σ_layers 2 (K and V) × len × kv_heads × head_dim × bytes × batch.

    `cached_lens` holds one cached length per layer. Counts what the cache holds, not what the
    allocator reserved for it.
    """
    per_token = 2 * kv_heads * head_dim * element_bytes * batch
    return sum(int(n) for n in cached_lens) * per_token
