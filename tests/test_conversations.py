"""Multi-round conversations in kv-cache mode, as the official multi-round evaluation feeds them: every
produced token against a dense forward over the whole conversation so far (no cache), the cache
after each round by hand, and each later turn cached whole."""

from dataclasses import replace

import pytest
import torch

from dynbench.errors import DynbenchError
from dynbench.inputs import Round, synthetic_inputs
from dynbench.models.build import build_model
from dynbench.models.llava import DropConfig
from dynbench.modes import run_mode

BUDGET = DropConfig(vision_keep=0.2, text_keep=0.5, text_policy="budget")
KEEP_ALL = DropConfig(vision_keep=1.0, text_keep=1.0, text_policy="budget")


def conversation(preset, free_last=True):
    """Round 0 teacher-forced (4 answer tokens, 5 produced), round 1 a 6-token turn + 3 answer tokens
    (4 produced), round 2 a 5-token turn, free-running (3 produced)."""
    g = torch.Generator().manual_seed(7)
    ids = lambda n: torch.randint(3, 30000, (1, n), generator=g)  # noqa: E731
    base = synthetic_inputs(preset, 20, seed=4)
    a0 = ids(4)
    rounds = (Round(None, a0, 5), Round(ids(6), ids(3), 4), Round(ids(5), None if free_last else ids(2), 3))
    return replace(base, answer_ids=a0, rounds=rounds)


def fed_sequence(result, inputs):
    """What the conversation fed, in order: per round its turn, then the tokens it fed back."""
    out, steps = [], result.steps
    for r, rnd in enumerate(inputs.rounds):
        if rnd.prompt_ids is not None:
            out += rnd.prompt_ids[0].tolist()
        produced = [s.token_ids[0] for s in steps if s.round == r]
        out += rnd.answer_ids[0].tolist() if rnd.answer_ids is not None else produced[:-1]
    return out


@torch.inference_mode()
@pytest.mark.parametrize("attn", ["sdpa", pytest.param("eager", marks=pytest.mark.slow)])
def test_every_token_equals_a_dense_forward_over_the_conversation(attn):
    llava = build_model("tiny", "llava", attn=attn, seed=0)
    inputs = conversation(llava.preset)
    result = run_mode("kv-cache", llava, inputs, gen_len=99)
    assert [s.round for s in result.steps] == [0] * 5 + [1] * 4 + [2] * 3
    # each round opens with a prefill (the image prompt, then each turn over the cache), then decodes
    assert [s.phase for s in result.steps] == (["prefill"] + ["decode"] * 4 + ["prefill"] + ["decode"] * 3
                                               + ["prefill"] + ["decode"] * 2)
    fed = torch.tensor(fed_sequence(result, inputs))
    feats = llava.encode_image(inputs.pixel_values)
    prompt = llava.embed_prompt(inputs.input_ids, feats, inputs.layout)
    # the token a step produced = argmax after the prompt and everything fed before it
    boundaries, n = [], 0
    for rnd in inputs.rounds:
        n += 0 if rnd.prompt_ids is None else rnd.prompt_ids.shape[1]
        boundaries.append(n)  # the round's opening forward produces after its turn
        for _ in range(rnd.gen_len - 1):
            n += 1
            boundaries.append(n)
    assert len(boundaries) == len(result.steps) and n == len(fed)
    for step, upto in zip(result.steps, boundaries, strict=True):
        hidden = torch.cat([prompt, llava.embed_tokens(fed[None, :upto])], dim=1)
        out = llava.forward_sequence(hidden, inputs.layout)
        logits = llava.logits(out.hidden[:, -1])
        assert step.token_ids[0] == int(logits.argmax(-1)), (step.step, step.round)


@torch.inference_mode()
def test_cache_after_each_round_by_hand():
    dyn = build_model("tiny", "dynamic-llava", seed=1)
    p = dyn.preset
    inputs = conversation(p)
    result = run_mode("kv-cache", dyn, inputs, BUDGET, gen_len=99)
    L, s = p.layers, p.sparse_layer
    per_token = 2 * p.kv_heads * p.head_dim * 4  # float32, batch 1
    P, kept_image = inputs.layout.seq_len, 115  # int(576 × 0.2)
    ends = {r: [st for st in result.steps if st.round == r][-1] for r in range(3)}
    # fed so far after each round: 4, 7, 9; the budget rule keeps round_half_up(0.5 × fed): 2, 4, 5
    turns = {0: 0, 1: 6, 2: 11}
    for r, (fed, kept) in {0: (4, 2), 1: (7, 4), 2: (9, 5)}.items():
        end = ends[r]
        assert (end.text_tokens_fed, end.text_tokens_kept) == (fed, kept)
        dense, sparse = P + turns[r] + fed, P - 576 + kept_image + turns[r] + kept
        assert end.layer_cache_lens == [dense] * s + [sparse] * (L - s)
        prompt = s * (P + turns[r]) + (L - s) * (P - 576 + kept_image + turns[r])  # later turns are prompt
        assert end.kv_bytes_prompt == prompt * per_token
        assert end.kv_bytes_generated == (s * fed + (L - s) * kept) * per_token
    opening = result.steps[5]  # round 1's turn: 6 tokens into every layer, no text decision
    assert opening.round == 1 and opening.text_scored == 0
    assert [a - b for a, b in zip(opening.layer_cache_lens, result.steps[4].layer_cache_lens, strict=True)] == [6] * L
    assert opening.layer_shapes == [(6, n + 6) for n in result.steps[4].layer_cache_lens]


@torch.inference_mode()
def test_dynamic_llava_keeping_everything_is_llava(pair):
    llava, dyn = pair
    inputs = conversation(llava.preset)
    a = run_mode("kv-cache", llava, inputs, gen_len=99).generated_ids
    b = run_mode("kv-cache", dyn, inputs, KEEP_ALL, gen_len=99).generated_ids
    assert a == b and len(a[0]) == 12


def test_prefill_and_no_cache_run_the_first_round(pair):
    llava, _ = pair
    inputs = conversation(llava.preset)
    assert len(run_mode("no-cache", llava, inputs, gen_len=99).steps) == 5  # round 0 produces 5
    assert len(run_mode("prefill", llava, inputs).steps) == 1


def test_kv_eviction_refuses_conversations():
    h2o = build_model("tiny", "h2o", seed=0)
    with pytest.raises(DynbenchError, match="conversations of several rounds"):
        run_mode("kv-cache", h2o, conversation(h2o.preset), DropConfig(kv_budget=0.5), gen_len=4)
