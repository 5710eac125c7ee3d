"""Per-part fvcore MACs assembled per step equal one fvcore trace of the whole real forward."""

import copy
import random

import pytest
import torch
from torch import nn

from dynbench.measure.flops import count_macs, decoder_layer_macs
from dynbench.measure.model_cost import ModelCost
from dynbench.models.build import build_model
from dynbench.models.dynamic_llava import TextDecider
from dynbench.models.llava import DropConfig
from dynbench.models.rules import analytic_layer_macs
from dynbench.modes import plan_mode, run_mode

DROP = DropConfig(0.2, 0.5, "budget")


class WholeForward(nn.Module):
    """A full-sequence forward (prefill, or a no-cache step with fed tokens) as one module."""

    def __init__(self, net, layout, drop):
        super().__init__()
        self.net, self.layout, self.drop = net, layout, drop

    def forward(self, input_ids, pixel_values, fed):
        tower = self.net.model.vision_tower(pixel_values, output_hidden_states=True)
        feats = self.net.model.multi_modal_projector(tower.hidden_states[-2][:, 1:])
        h = torch.cat([self.net.embed_prompt(input_ids, feats, self.layout), self.net.embed_tokens(fed)], 1)
        out = self.net.forward_sequence(h, self.layout, self.drop)
        return self.net.logits(out.hidden[:, -1]), tower.last_hidden_state  # every CLIP layer live


class WholeDecodeStep(nn.Module):
    def __init__(self, net, cache, position, decider):
        super().__init__()
        self.net, self.cache, self.position, self.decider = net, cache, position, decider

    def forward(self, token):
        h, _ = self.net.forward_token(self.net.embed_tokens(token), self.position, self.cache, self.decider)
        return self.net.logits(h[:, -1])


@pytest.mark.parametrize("method", ["llava", "dynamic-llava"])
@pytest.mark.parametrize("n_fed", [0, 5])
def test_full_sequence_step_equals_whole_trace(pair, prompt, method, n_fed):
    net = pair[0] if method == "llava" else pair[1]
    batch = 2
    ids, px = prompt.input_ids.expand(batch, -1), prompt.pixel_values.expand(batch, -1, -1, -1)
    fed = torch.arange(10, 10 + n_fed)[None].expand(batch, -1)
    whole = count_macs(WholeForward(net, prompt.layout, DROP), (ids, px, fed), by_module=False)
    assert not whole.unsupported
    mode = "no-cache" if n_fed else "prefill"
    step = plan_mode(net.preset, method, mode, prompt.layout.prompt_len, n_fed + 1, DROP, batch=batch).last
    assert step.text_tokens_fed == n_fed
    assert ModelCost(net).step(step, batch).total == whole.total


def test_kv_cache_decode_step_equals_whole_trace(pair, prompt):
    _, dyn = pair
    res = run_mode("kv-cache", dyn, prompt, DROP, gen_len=4)
    # rebuild the cache state before the last step, then trace that step alone
    cache, decider = dyn.new_cache(), TextDecider("budget", 0.5)
    with torch.inference_mode():
        h = dyn.embed_prompt(prompt.input_ids, dyn.encode_image(prompt.pixel_values), prompt.layout)
        dyn.forward_sequence(h, prompt.layout, DROP, cache)
        cache.mark_prompt()
        for j, tok in enumerate(res.generated_ids[0][:2], start=1):
            h = dyn.embed_tokens(torch.tensor([[tok]]))
            dyn.forward_token(h, prompt.layout.seq_len + j - 1, cache, decider)
    assert cache.lengths() == res.steps[2].layer_cache_lens
    step = WholeDecodeStep(dyn, copy.deepcopy(cache), prompt.layout.seq_len + 2, copy.deepcopy(decider))
    whole = count_macs(step, (torch.tensor([[res.generated_ids[0][2]]]),), by_module=False)
    cost = ModelCost(dyn).step(res.steps[3], 1)
    # the budget policy ignores the text score, so the JIT graph drops the predictor as dead code;
    # the model still runs it, and the cost counts it from a trace of the predictor alone
    assert cost.llm + cost.lm_head == whole.total
    x = torch.zeros(1, 1, dyn.preset.hidden)
    assert cost.predictors == count_macs(dyn.model.output_text_score_predictor, (x,)).total > 0


def test_layer_fit_equals_fresh_traces(pair):
    _, dyn = pair
    cost = ModelCost(dyn)
    rng = random.Random(0)
    shapes = [(1, 700), (640, 640), (179, 179), (1, 1), (3, 9)] + [
        (q, q + rng.randrange(0, 50)) for q in (rng.randrange(1, 300) for _ in range(3))
    ]
    p = dyn.preset
    for q, kv in shapes:
        traced = decoder_layer_macs(dyn.layers[3], q, kv, batch=3)
        assert 3 * cost.layer(q, kv) == traced
        assert traced == analytic_layer_macs(q, kv, p.hidden, p.intermediate, p.heads, p.kv_heads,
                                             p.hidden // p.heads, batch=3)


@pytest.mark.slow
def test_meta_7b_prefill_counts_in_seconds():
    costs = {}
    for method in ("llava", "dynamic-llava"):
        net = build_model("llava-1.5-7b", method, device="meta", dtype=torch.float16)
        step = plan_mode(net.preset, method, "prefill", 40, 1, DROP).last
        cost = ModelCost(net)
        costs[method] = cost.step(step, 1)
    dense, sparse = costs["llava"], costs["dynamic-llava"]
    # RoPE tables: an outer product, a matmul to fvcore in transformers 5.17, elementwise in 5.24
    rope = cost.rotary(616)
    assert rope in (0, 64 * 616)
    # LLM: 32 layers × 616 tokens vs 2 × 616 + 30 × 155 tokens, exact hand counts
    hand = lambda n: analytic_layer_macs(n, n, 4096, 11008, 32, 32, 128)  # noqa: E731
    assert dense.llm == 32 * hand(616) + rope
    assert sparse.llm == 2 * hand(616) + 30 * hand(155) + rope
    assert dense.vision == sparse.vision > 0  # CLIP-L + projector, traced on a CPU stand-in
    assert dense.lm_head == 4096 * 32000
    assert 0 < sparse.predictors < 0.01 * sparse.total  # the predictors are cheap (paper: ≈0.01 T)
