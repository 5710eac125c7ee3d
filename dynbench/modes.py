"""The three inference modes, as plain generators of per-step results.

Definitions (DESIGN "The three modes"), P = prompt text tokens + image tokens:
  * prefill  — one forward over P tokens → the first token. The K/V it produces are cached (as in
    the first step of generation), so `layer_cache_lens` and KV bytes are reported.
  * no-cache — `gen_len` forwards, the i-th over P + i − 1 tokens, no cache; the vision tower runs
    every step (as the official benchmark) unless `reuse_vision`.
  * kv-cache — prefill + `gen_len − 1` decode steps; each new token at its absolute position.
Greedy decoding, EOS ignored. The last produced token is never fed back, so a full generation
feeds `gen_len − 1` text tokens. With `answer_ids` (teacher forcing) the given tokens are fed
instead of the model's own, so contexts are identical across methods; `token_ids` stay the
model's greedy predictions.

Conversations (`ModelInputs.rounds`, a dataset sample with several human turns) run in kv-cache
mode as the official multi-round evaluation does (notes/official_multiround.md): round 0 is the
prefill with the image; each later round appends its turn's tokens to the running cache in one
multi-token forward (`forward_chunk`: every token cached in every layer, the output-text
predictor does not run on them) that produces the round's first token, then decodes. A round's
last produced token is never fed (the official `</s>`); earlier answers stay in the cache as they
were decided when fed; the image is pruned once, in round 0. Prefill and no-cache run round 0.
Steps carry their `round` and `phase` (a later round's turn is a prefill over the cache);
`text_tokens_fed` / `_kept` count over the whole conversation. `HEADLINE_PHASE` says which steps
make TTFT, TPOT and the totals.

Each step yields a `Step`. Drivers never synchronize the device themselves (token ids stay on
it until the run ends), so a caller can time each step with CUDA events (`run_mode(step_timer=…)`)
or set `model.regions` for finer regions (vision_tower, projector, llm_prefill, llm_forward,
decode_step, predictor_vision, predictor_text, token_drop, lm_head). The only host syncs inside a
step are the ones the method needs: the learned text policy reads its decision (`.item()`).

`plan_mode` computes the same steps from the rules alone (budget policy), without running the
model: what `--device meta` reports for 7B / 13B in seconds. Tests check plan == run.

Baselines (`models/baselines.py`): `random` and `fastv` prune image tokens in every full-sequence
forward (their decode steps are dense); `h2o` and `streaming-llm` bound the KV cache after the
prefill and every decode step, and have no no-cache mode (refused). Their steps report no
`text_tokens_kept` (what stays cached is per layer and, for h2o, per head: see the KV bytes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from dynbench.errors import DynbenchError
from dynbench.inputs import ModelInputs, Round
from dynbench.models.dynamic_llava import TextDecider
from dynbench.models.llava import DropConfig, LlavaForBench, PromptLayout, SequenceOut
from dynbench.models.presets import Preset
from dynbench.models.rules import (
    LEARNED_NEEDS_WEIGHTS,
    check_kv_budget,
    keep_count,
    kv_budget_tokens,
    kv_bytes,
)
from dynbench.names import DECODE_PHASE, FORWARD_PHASE, MODES, PREFILL_PHASE
from dynbench.quality import token_nll
from dynbench.registry import get as get_method

# Which steps make a mode's latency and roofline columns, by phase (`Step.phase`): TTFT = a run's first
# step when it is a prefill; TPOT = its decode steps; the no-cache step statistics = its forwards;
# totals = every step. The headline samples (`latency_ms_samples`) are the steps of the mode's headline
# phase: the TTFT of each run (prefill), every decode step (kv-cache), every forward (no-cache).
HEADLINE_PHASE = {"prefill": PREFILL_PHASE, "no-cache": FORWARD_PHASE, "kv-cache": DECODE_PHASE}
assert tuple(HEADLINE_PHASE) == MODES


@dataclass(kw_only=True)
class Step:
    step: int  # 0 = prefill / first forward; i = the i-th decode step after it
    tokens: torch.Tensor | None  # (B,) the token this step produced, on the device
    layer_seq_lens: list[int] | None  # input length of each decoder layer (full-sequence forwards)
    layer_cache_lens: list[int] | None  # KV length of each layer after the step (cache modes)
    image_tokens_kept: int  # per row, from the layer that drops image tokens on
    text_tokens_fed: int  # generated tokens fed so far
    text_tokens_kept: int | None  # of those, kept from the sparse layer on (cached, or not dropped)
    # KV bytes; h2o's split is data-dependent: deferred (`baselines.DeferredSplit`) until `to_host`,
    # None in a plan
    kv_bytes_prompt: int | None
    kv_bytes_generated: int | None
    # what ran, for cost accounting (FLOPs): per decoder layer (queries, keys attended), whether
    # the vision tower ran, and how many tokens (per row) each predictor scored
    layer_shapes: list[tuple[int, int]] = field(default_factory=list)
    vision_ran: bool = False
    image_scored: int = 0
    text_scored: int = 0
    # full-sequence forwards: image tokens into each decoder layer (equivalent tokens, paper FLOPs)
    layer_image_tokens: list[int] | None = None
    layer_attn: list[str] | None = None  # attention implementation of each decoder layer
    token_ids: list[int] | None = None  # `tokens` on the host, filled in when the run ends
    round: int = 0  # conversations: the round the step belongs to
    phase: str  # PREFILL_PHASE, FORWARD_PHASE or DECODE_PHASE (names.PHASES): what the step ran
    # teacher forcing (quality.py): cross-entropy of the answer token this step predicts, (B,) on the
    # device until `to_host` (then batch row 0's, a float); None where the step predicts no answer token
    nll: object = None
    # full-sequence forwards: index of each token reaching the top layer in the input sequence (B, n),
    # on the device — a reference the forward made anyway (`SequenceOut.kept_index`), read by `show`.
    # A plain attribute, not a field: no copy, and equality / asdict of steps stay about counts.
    kept_index = None

    def to_host(self) -> None:
        if self.tokens is not None and self.tokens.device.type != "meta":
            self.token_ids = self.tokens.tolist()
        self.tokens = None
        if self.nll is not None and not isinstance(self.nll, float):
            self.nll = float(self.nll[0])
        for name in ("kv_bytes_prompt", "kv_bytes_generated"):
            value = getattr(self, name)
            if hasattr(value, "resolve"):  # h2o's per-head split, read after the run
                setattr(self, name, value.resolve())


def to_host(steps: list[Step]) -> None:
    """Every step's produced tokens (and deferred KV splits) to the host, after the run, with one
    device→host copy for all the tokens rather than one per step."""
    live = [s for s in steps if s.tokens is not None and s.tokens.device.type != "meta"]
    if live:
        for s, ids in zip(live, torch.stack([s.tokens for s in live]).tolist(), strict=True):
            s.token_ids = ids
    scored = [s for s in steps if s.nll is not None and not isinstance(s.nll, float)]
    if scored:
        for s, nll in zip(scored, torch.stack([s.nll[0] for s in scored]).tolist(), strict=True):
            s.nll = nll
    for s in steps:
        s.tokens = None
        s.to_host()


@dataclass
class ModeResult:
    mode: str
    method: str
    steps: list[Step] = field(default_factory=list)

    @property
    def last(self) -> Step:
        return self.steps[-1]

    @property
    def generated_ids(self) -> list[list[int]]:
        """(B, gen_len) produced token ids ([] on the meta device, where nothing is computed)."""
        if any(s.token_ids is None for s in self.steps):
            return []
        return [list(row) for row in zip(*(s.token_ids for s in self.steps), strict=True)]


def _rounds(inputs: ModelInputs, gen_len: int) -> tuple[Round, ...]:
    """The rounds a decode mode runs: the sample's, or one round of `gen_len` tokens."""
    return inputs.rounds or (Round(None, inputs.answer_ids, gen_len),)


def _check(model: LlavaForBench, inputs: ModelInputs, drop: DropConfig, gen_len: int, decoding: bool):
    if decoding and gen_len < 1:
        raise DynbenchError(f"gen_len must be at least 1 for decoding, got {gen_len}")
    for rnd in _rounds(inputs, gen_len) if decoding else ():
        if rnd.answer_ids is not None and rnd.answer_ids.shape[1] < rnd.gen_len - 1:
            raise DynbenchError(
                f"teacher forcing needs {rnd.gen_len - 1} answer tokens for gen_len {rnd.gen_len}, "
                f"got {rnd.answer_ids.shape[1]}"
            )
    learned = get_method(model.method).text_policy and drop.text_policy == "learned"
    if learned and decoding and model.device.type == "meta":
        raise DynbenchError(LEARNED_NEEDS_WEIGHTS)
    if decoding and learned and inputs.batch > 1 and not inputs.rows_identical():
        # learned text decisions differ per row → ragged caches; the official code pads them
        # without masking (reference pitfall 3c). Refuse rather than measure a wrong model.
        raise DynbenchError(
            "distinct prompts in one batch are not supported with --text-policy learned "
            "(per-row decisions give ragged caches); replicate one prompt or use --text-policy budget"
        )


def _feed(answer_ids: torch.Tensor | None, produced: torch.Tensor, i: int) -> torch.Tensor:
    """Token fed at decode position i (0-based) of a round: the forced answer token or the model's
    own. The answers are on the device already (`ModelInputs.to`, once per point)."""
    return answer_ids[:, i] if answer_ids is not None else produced


def _layer_image_tokens(model: LlavaForBench, out: SequenceOut, layout: PromptLayout) -> list[int]:
    """Image tokens into each decoder layer of a full-sequence forward."""
    if out.layer_image_tokens is not None:
        return out.layer_image_tokens
    L, N = len(model.layers), layout.image_tokens
    if out.image_kept is None:
        return [N] * L
    return [N] * model.sparse_layer + [out.image_kept] * (L - model.sparse_layer)  # dynamic-llava


def _layer_attn(model: LlavaForBench, drop: DropConfig, phase: str) -> list[str]:
    method = get_method(model.method)
    return method.layer_attn(model.preset, method.values_of(drop), model.attn, phase)


def _label(answer_ids: torch.Tensor | None, i: int) -> torch.Tensor | None:
    """The answer token a step predicts (position i of a round's answer), or None past its end:
    the round's last step (the official `</s>`) predicts no answer token."""
    return answer_ids[:, i] if answer_ids is not None and i < answer_ids.shape[1] else None


def _predict(model, hidden: torch.Tensor, label: torch.Tensor | None):
    """(greedy token, NLL of `label` or None) from the last position's hidden state (B, D)."""
    logits = model.logits(hidden)
    return logits.argmax(-1), None if label is None else token_nll(logits, label)


def _prefill(model, inputs: ModelInputs, drop: DropConfig, label: torch.Tensor | None = None):
    """One forward over the prompt with a cache → (Step 0, the cache, the produced token)."""
    ids, px, layout = inputs.input_ids.to(model.device), inputs.pixel_values.to(model.device), inputs.layout
    cache = model.new_cache()
    feats = model.encode_image(px)
    with model.region("llm_prefill"):
        out = model.forward_sequence(model.embed_prompt(ids, feats, layout), layout, drop, cache)
    token, nll = _predict(model, out.hidden[:, -1], label)  # (B,)
    cache.mark_prompt()
    image_kept = out.image_kept if out.image_kept is not None else layout.image_tokens
    kv_prompt, kv_generated = cache.kv_bytes()
    step = Step(
        step=0, tokens=token, layer_seq_lens=out.layer_seq_lens, layer_cache_lens=cache.lengths(),
        image_tokens_kept=image_kept, text_tokens_fed=0, text_tokens_kept=0, kv_bytes_prompt=kv_prompt,
        kv_bytes_generated=kv_generated, layer_shapes=[(n, n) for n in out.layer_seq_lens], vision_ran=True,
        image_scored=out.image_scored, layer_image_tokens=_layer_image_tokens(model, out, layout),
        layer_attn=_layer_attn(model, drop, PREFILL_PHASE), phase=PREFILL_PHASE, nll=nll,
    )
    step.kept_index = out.kept_index
    return step, cache, token


def run_prefill(model, inputs: ModelInputs, drop: DropConfig, gen_len=None, reuse_vision=False):
    yield _prefill(model, inputs, drop)[0]


def run_no_cache(model, inputs: ModelInputs, drop: DropConfig, gen_len: int, reuse_vision=False):
    get_method(model.method).check_mode("no-cache")
    first = _rounds(inputs, gen_len)[0]  # a conversation's first round (module doc)
    gen_len, answers = first.gen_len, first.answer_ids
    ids, px, layout = inputs.input_ids.to(model.device), inputs.pixel_values.to(model.device), inputs.layout
    fed = ids.new_empty((ids.shape[0], 0))  # (B, i) generated tokens fed so far
    feats = token = None
    for i in range(gen_len):
        if token is not None:  # the previous step's token is fed: this step's work, not the last one's
            fed = torch.cat([fed, _feed(answers, token, i - 1)[:, None]], dim=1)
        ran_vision = feats is None or not reuse_vision
        if ran_vision:
            feats = model.encode_image(px)
        with model.region("llm_forward"):
            hidden = torch.cat([model.embed_prompt(ids, feats, layout), model.embed_tokens(fed)], dim=1)
            out = model.forward_sequence(hidden, layout, drop)
        token, nll = _predict(model, out.hidden[:, -1], _label(answers, i))
        n_fed = fed.shape[1]
        step = Step(
            step=i, tokens=token, layer_seq_lens=out.layer_seq_lens, layer_cache_lens=None,
            image_tokens_kept=out.image_kept if out.image_kept is not None else layout.image_tokens,
            text_tokens_fed=n_fed, text_tokens_kept=out.text_kept if out.text_kept is not None else n_fed,
            kv_bytes_prompt=None, kv_bytes_generated=None, layer_shapes=[(n, n) for n in out.layer_seq_lens],
            vision_ran=ran_vision, image_scored=out.image_scored, text_scored=out.text_scored,
            layer_image_tokens=_layer_image_tokens(model, out, layout),
            layer_attn=_layer_attn(model, drop, FORWARD_PHASE), phase=FORWARD_PHASE, nll=nll,
        )
        step.kept_index = out.kept_index
        yield step


def run_kv_cache(model, inputs: ModelInputs, drop: DropConfig, gen_len: int, reuse_vision=False):
    rounds = _rounds(inputs, gen_len)
    if len(rounds) > 1 and get_method(model.method).evicts_kv:
        raise DynbenchError(f"{model.method} evicts KV entries by attention over one prompt; conversations of "
                            "several rounds run with llava, dynamic-llava, random or fastv")
    step, cache, token = _prefill(model, inputs, drop, _label(rounds[0].answer_ids, 0))
    yield step
    decider = TextDecider(drop.text_policy, drop.text_keep) if get_method(model.method).text_policy else None
    image_kept = step.image_tokens_kept
    position, j, fed_total = inputs.layout.seq_len, 0, 0  # next absolute position, step, tokens fed
    attn = _layer_attn(model, drop, DECODE_PHASE)
    for r, rnd in enumerate(rounds):
        if r > 0:  # the next turn after the cache: one multi-token forward, every token cached
            turn = rnd.prompt_ids
            before = cache.lengths()
            with model.region("decode_step"):
                hidden = model.forward_chunk(model.embed_tokens(turn), position, cache)
                token, nll = _predict(model, hidden[:, -1], _label(rnd.answer_ids, 0))
            cache.add_prompt(turn.shape[1])
            position, j = position + turn.shape[1], j + 1
            yield _cached_step(  # a prefill of the turn over the cache: the round's first token
                cache, step=j, tokens=token, image_tokens_kept=image_kept, text_tokens_fed=fed_total,
                text_tokens_kept=_text_kept(model, decider, fed_total),
                layer_shapes=[(turn.shape[1], n + turn.shape[1]) for n in before], layer_attn=attn, round=r,
                phase=PREFILL_PHASE, nll=nll,
            )
        for i in range(rnd.gen_len - 1):
            fed = _feed(rnd.answer_ids, token, i)  # (B,)
            before = cache.lengths()
            with model.region("decode_step"):
                hidden, _ = model.forward_token(model.embed_tokens(fed[:, None]), position, cache, decider)
                token, nll = _predict(model, hidden[:, -1], _label(rnd.answer_ids, i + 1))
            position, j, fed_total = position + 1, j + 1, fed_total + 1
            yield _cached_step(
                cache, step=j, tokens=token, image_tokens_kept=image_kept, text_tokens_fed=fed_total,
                text_tokens_kept=_text_kept(model, decider, fed_total),
                layer_shapes=[(1, n + 1) for n in before],  # the token attends to itself too
                text_scored=1 if decider is not None else 0, layer_attn=attn, round=r, phase=DECODE_PHASE, nll=nll,
            )


def _cached_step(cache, **fields) -> Step:
    """A step over the cache: its lengths and KV bytes after the step."""
    kv_prompt, kv_generated = cache.kv_bytes()
    return Step(layer_seq_lens=None, layer_cache_lens=cache.lengths(), kv_bytes_prompt=kv_prompt,
                kv_bytes_generated=kv_generated, **fields)


def _text_kept(model: LlavaForBench, decider: TextDecider | None, fed: int) -> int | None:
    """Generated tokens kept in kv-cache decoding: the decider's count (dynamic-llava), all of them
    (dense decode steps), or None for the KV-eviction methods (per layer and head)."""
    if decider is not None:
        return decider.kept
    return None if get_method(model.method).evicts_kv else fed


DRIVERS: dict[str, Callable[..., Iterator[Step]]] = {
    "prefill": run_prefill,
    "no-cache": run_no_cache,
    "kv-cache": run_kv_cache,
}
assert tuple(DRIVERS) == MODES


def run_mode(
    mode: str,
    model: LlavaForBench,
    inputs: ModelInputs,
    drop: DropConfig | None = None,
    gen_len: int = 1,
    reuse_vision: bool = False,
    step_timer=None,
    decode_delay_s: float = 0.0,
) -> ModeResult:
    """Run one mode to the end and collect its steps (no gradients).

    `step_timer.track("step")` (e.g. a `LatencyTracker`) wraps the work of each step. The call
    that finds the generator exhausted is not a step: its sample is discarded, so a run has
    exactly as many samples as steps. `decode_delay_s` (a debugging aid, `--debug-decode-delay-ms`:
    proves the regression gate fires) sleeps inside every timed step after the first.
    """
    if mode not in DRIVERS:
        raise DynbenchError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    result = ModeResult(mode, model.method)
    drop = drop or DropConfig()
    # validated before the first step is timed (checking that batch rows are identical reads the device)
    _check(model, inputs, drop, gen_len, decoding=mode != "prefill")
    with torch.inference_mode():
        steps = DRIVERS[mode](model, inputs, drop, gen_len, reuse_vision)
        while True:
            with step_timer.track("step") if step_timer is not None else nullcontext() as region:
                step = next(steps, None)
                if step is None and region is not None:
                    region.discard()
                elif step is not None and decode_delay_s and step.step > 0:
                    time.sleep(decode_delay_s)
            if step is None:
                break
            result.steps.append(step)
    to_host(result.steps)  # device→host copies after the timed work, batched

    return result


def plan_mode(preset: Preset, method: str, mode: str, prompt_len: int, gen_len: int = 1,
              drop: DropConfig | None = None, reuse_vision: bool = False, batch: int = 1, element_bytes: int = 4,
              attn: str = "sdpa") -> ModeResult:
    """The steps `run_mode` would produce, from the counting rules alone (no model is run).

    Exact for `llava`, the baselines and `dynamic-llava` under the budget policy; learned
    decisions depend on the weights and cannot be planned. h2o's prompt/generated KV split
    depends on the attention weights once decoding evicts: None from then on (the total is exact).
    """
    drop = drop or DropConfig()
    info = get_method(method)
    options = info.values_of(drop)
    dynamic = info.text_policy  # decides which generated tokens are cached (and scores image tokens)
    if dynamic and drop.text_policy == "learned" and mode != "prefill":
        raise DynbenchError(LEARNED_NEEDS_WEIGHTS)
    info.check_mode(mode)
    info.check(preset, options)
    s, N = preset.sparse_layer, preset.image_tokens
    P = prompt_len + N
    image_lens = info.layer_image_tokens(preset, options)
    k = image_lens[-1]  # image tokens kept by the end of the forward
    kv = lambda lens: kv_bytes(lens, preset.kv_heads, preset.head_dim, element_bytes, batch)  # noqa: E731
    attn_of = lambda phase: info.layer_attn(preset, options, attn, phase)  # noqa: E731
    result = ModeResult(mode, method)
    seq_lens = [P - N + n for n in image_lens]
    budget = kv_budget_tokens(drop.kv_budget, P) if info.evicts_kv else None
    if budget is not None:
        check_kv_budget(budget, method)
    prompt_lens = [min(n, budget) for n in seq_lens] if budget is not None else seq_lens
    if mode in ("prefill", "kv-cache"):
        result.steps.append(Step(
            step=0, tokens=None, layer_seq_lens=seq_lens, layer_cache_lens=list(prompt_lens), image_tokens_kept=k,
            text_tokens_fed=0, text_tokens_kept=0, kv_bytes_prompt=kv(prompt_lens), kv_bytes_generated=0,
            layer_shapes=[(n, n) for n in seq_lens], vision_ran=True, image_scored=N if dynamic else 0,
            layer_image_tokens=image_lens, layer_attn=attn_of(PREFILL_PHASE), phase=PREFILL_PHASE,
        ))
    if mode == "kv-cache":
        result.steps += _plan_decode(info, drop, gen_len, cache=list(prompt_lens), sparse_layer=s, image_kept=k,
                                     budget=budget, kv=kv, attn=attn_of(DECODE_PHASE))
    if mode == "no-cache":
        for i in range(gen_len):  # i generated tokens fed; i - 1 of them are candidates
            kept = i if not dynamic else (keep_count(drop.text_keep, i - 1) + 1 if i else 0)
            lens = [n + (i if layer < s else kept) for layer, n in enumerate(seq_lens)]
            result.steps.append(Step(
                step=i, tokens=None, layer_seq_lens=lens, layer_cache_lens=None, image_tokens_kept=k,
                text_tokens_fed=i, text_tokens_kept=kept, kv_bytes_prompt=None, kv_bytes_generated=None,
                layer_shapes=[(n, n) for n in lens], vision_ran=i == 0 or not reuse_vision,
                image_scored=N if dynamic else 0, text_scored=max(i - 1, 0) if dynamic else 0,
                layer_image_tokens=image_lens, layer_attn=attn_of(FORWARD_PHASE), phase=FORWARD_PHASE,
            ))
    return result


def _plan_decode(info, drop: DropConfig, gen_len: int, *, cache: list[int], sparse_layer: int,
                 image_kept: int, budget: int | None, kv: Callable, attn: list[str]) -> list[Step]:
    """The planned decode steps 1 … gen_len − 1 of method `info` (`registry.get`) after a prefill
    that left `cache` entries per layer (`budget`: a KV-eviction method's entries per layer at most)."""
    dynamic, evicts = info.text_policy, budget is not None
    decider = TextDecider(drop.text_policy, drop.text_keep) if dynamic else None
    n_prompt = list(cache)  # prompt entries per layer
    split_known = True  # h2o's split stays known until decoding evicts
    steps = []
    for j in range(1, gen_len):
        keep = decider.decide(None) if dynamic else True
        shapes = [(1, n + 1) for n in cache]
        grown = [n + 1 if (i < sparse_layer or keep) else n for i, n in enumerate(cache)]
        if evicts:
            kept = [info.kv_prompt_kept(p, n, budget) if n > budget else p
                    for p, n in zip(n_prompt, grown, strict=True)]
            split_known = split_known and None not in kept  # h2o's split: the weights decide
            n_prompt = [p if k is None else k for p, k in zip(n_prompt, kept, strict=True)]
            grown = [min(n, budget) for n in grown]
        cache = grown
        kv_prompt = kv(n_prompt) if split_known else None
        steps.append(Step(
            step=j, tokens=None, layer_seq_lens=None, layer_cache_lens=list(cache), image_tokens_kept=image_kept,
            text_tokens_fed=j, text_tokens_kept=decider.kept if dynamic else (None if evicts else j),
            kv_bytes_prompt=kv_prompt, kv_bytes_generated=kv(cache) - kv_prompt if split_known else None,
            layer_shapes=shapes, text_scored=1 if dynamic else 0, layer_attn=attn, phase=DECODE_PHASE,
        ))
    return steps
