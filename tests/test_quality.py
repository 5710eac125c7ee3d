"""Quality measures against independent references: HF's loss with labels for PPL, the paper's
definitions by hand for pooling, and the METEOR formula for nltk's score."""

import math

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from dynbench.inputs import synthetic_inputs, with_answer_ids
from dynbench.models.llava import DropConfig
from dynbench.modes import run_mode
from dynbench.quality import (
    answer_columns,
    cut_at_eos,
    pooled_ppl,
    step_answer_columns,
    top1_agree,
    wordnet_available,
)

KEEP_ALL = DropConfig(vision_keep=1.0, text_keep=1.0, text_policy="budget")
N_ANSWER = 12


@pytest.fixture(scope="module")
def forced(pair):
    """A synthetic prompt with a 12-token answer (ids of the test tokenizer's range) to teacher-force."""
    llava, _ = pair
    prompt = synthetic_inputs(llava.preset, prompt_len=40, seed=4)
    answer = torch.randint(3, 300, (1, N_ANSWER), generator=torch.Generator().manual_seed(9))
    return with_answer_ids(prompt, answer), answer


@pytest.fixture(scope="module")
def hf_loss(pair, forced):
    """HF LlavaForConditionalGeneration's mean cross-entropy over the answer positions (labels
    -100 on the prompt): the independent reference for `nll_mean`."""
    llava, _ = pair
    inputs, answer = forced
    hf = LlavaForConditionalGeneration(llava.preset.llava_config("sdpa")).eval()
    hf.load_state_dict(llava.state_dict())
    ids = torch.cat([inputs.input_ids, answer], dim=1)
    labels = torch.cat([torch.full_like(inputs.input_ids, -100), answer], dim=1)
    with torch.inference_mode():
        return float(hf(input_ids=ids, pixel_values=inputs.pixel_values, labels=labels).loss)


def quality(model, mode, inputs, drop=None):
    return step_answer_columns(run_mode(mode, model, inputs, drop, gen_len=N_ANSWER + 1).steps)


@pytest.mark.parametrize("mode", ["kv-cache", "no-cache"])
def test_llava_ppl_equals_hf_loss_on_the_answer(pair, forced, hf_loss, mode):
    llava, _ = pair
    cols = quality(llava, mode, forced[0])
    assert cols["answer_tokens"] == N_ANSWER  # every answer token scored once, the first by the prefill
    assert cols["nll_mean"] == pytest.approx(hf_loss, rel=1e-5)
    assert cols["ppl"] == pytest.approx(math.exp(hf_loss), rel=1e-5)


@pytest.mark.parametrize("mode", ["kv-cache", "no-cache"])
def test_dynamic_llava_keeping_everything_has_llava_ppl(pair, forced, mode):
    llava, dyn = pair
    dense, kept = quality(llava, mode, forced[0]), quality(dyn, mode, forced[0], KEEP_ALL)
    assert kept["answer_argmax"] == dense["answer_argmax"]
    assert kept["ppl"] == pytest.approx(dense["ppl"], rel=1e-6)


def test_dropping_tokens_changes_ppl(pair, forced):
    """The NLL is computed with the method's sparsification in effect (not a dense side pass)."""
    llava, dyn = pair
    dense = quality(llava, "kv-cache", forced[0])
    pruned = quality(dyn, "kv-cache", forced[0], DropConfig(vision_keep=0.2, text_keep=0.5, text_policy="budget"))
    assert pruned["answer_tokens"] == dense["answer_tokens"]
    assert pruned["nll_mean"] != pytest.approx(dense["nll_mean"], rel=1e-4)


def test_ppl_without_teacher_forcing_is_null(pair):
    llava, _ = pair
    steps = run_mode("kv-cache", llava, synthetic_inputs(llava.preset, prompt_len=16, seed=1), gen_len=4).steps
    assert all(s.nll is None for s in steps)
    assert step_answer_columns(steps) == dict.fromkeys(("answer_tokens", "nll_mean", "ppl", "answer_argmax"))


def test_answer_columns_by_hand():
    cols = answer_columns([1.0, None, 2.0, 0.0], [5, 6, 7, 8])
    assert cols == {"answer_tokens": 3, "nll_mean": 1.0, "ppl": math.e, "answer_argmax": [5, 7, 8]}


def test_mean_of_sample_ppl_and_pooled_ppl_by_hand():
    # sample a: 2 tokens, NLL 1 and 3 (mean 2); sample b: 6 tokens of NLL 0.5 each
    rows = [{"answer_tokens": 2, "nll_mean": 2.0}, {"answer_tokens": 6, "nll_mean": 0.5}]
    assert pooled_ppl(rows) == pytest.approx(math.exp((1 + 3 + 6 * 0.5) / 8))
    assert pooled_ppl([{"answer_tokens": None, "nll_mean": None}]) is None


def test_top1_agree_pools_positions():
    assert top1_agree([([1, 2, 3], [1, 2, 4]), ([7], [7])]) == pytest.approx(3 / 4)
    assert top1_agree([]) is None


def test_cut_at_eos():
    assert cut_at_eos([5, 6, 2, 7, 2], 2) == [5, 6]
    assert cut_at_eos([5, 6], 2) == [5, 6]
    assert cut_at_eos([5, 6], None) == [5, 6]


# ---- METEOR --------------------------------------------------------------------------------------
@pytest.fixture
def wordnet():
    """Checked when a METEOR test starts, not when the file is collected: loading WordNet takes
    seconds, which every pytest-xdist worker would pay."""
    if not wordnet_available():
        pytest.skip("WordNet for nltk is absent (scripts/ci-wordnet.sh installs it)")


needs_wordnet = pytest.mark.usefixtures("wordnet")


def meteor_by_definition(matches, hyp_len, ref_len, chunks, alpha=0.9, beta=3.0, gamma=0.5):
    """METEOR (Banerjee & Lavie; nltk's defaults) from its counts, written from the definition."""
    p, r = matches / hyp_len, matches / ref_len
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    return fmean * (1 - gamma * (chunks / matches) ** beta)


@needs_wordnet
def test_meteor_of_identical_sentences():
    from dynbench.quality import meteor

    sentence = "a red circle in the middle"
    assert meteor(sentence, sentence) == pytest.approx(1 - 0.5 * (1 / 6) ** 3, rel=1e-9)


@needs_wordnet
@pytest.mark.parametrize(("reference", "answer", "counts"), [
    ("A red circle in the middle", "in the middle a red circle", (6, 6, 6, 2)),  # two chunks, reordered
    ("A red circle in the middle", "a blue circle", (2, 3, 6, 2)),  # "a", "circle": P 2/3, R 1/3
])
def test_meteor_against_its_definition(reference, answer, counts):
    from dynbench.quality import meteor

    assert meteor(reference, answer) == pytest.approx(meteor_by_definition(*counts), rel=1e-9)


def test_missing_wordnet_is_one_line_naming_both_fixes(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HOME": str(tmp_path), "NLTK_DATA": str(tmp_path / "none")}
    code = "from dynbench.quality import meteor\nmeteor('a cat', 'a cat')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert "QualityError" in last and "nltk.downloader wordnet" in last and "wordnet-sense-index" in last


# ---- the gate ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("metric", "base", "cur", "verdict"), [
    ("ppl", 4.59, 4.59 * 1.05, "regression"),  # 5 % worse perplexity
    ("ppl", 4.59, 4.59 / 1.05, "improvement"),
    ("ppl", 4.59, 4.59 * (1 + 1e-8), "pass"),  # rounding
    ("ppl_pooled", 4.0, 4.1, "regression"),
    ("meteor", 0.3103, 0.300, "regression"),  # METEOR: lower is worse
    ("meteor", 0.300, 0.3103, "improvement"),
    ("meteor", 0.0, 0.0, "pass"),
])
def test_quality_checks_direction_and_tolerance(metric, base, cur, verdict):
    from dynbench.regress.checks import default_checks

    (chk,) = [c for c in default_checks() if c.metric == metric]
    assert chk.evaluate({metric: cur}, {metric: base}).verdict == verdict


def test_quality_tol_widens_the_gate():
    from dynbench.regress.checks import default_checks

    (chk,) = [c for c in default_checks(quality_tol=0.06) if c.metric == "ppl"]
    assert chk.evaluate({"ppl": 4.59 * 1.05}, {"ppl": 4.59}).verdict == "pass"
    assert chk.evaluate({"ppl": 4.59 * 1.07}, {"ppl": 4.59}).verdict == "regression"


# ---- the cost–quality chart ----------------------------------------------------------------------
def test_quality_pareto_front_by_hand():
    """PPL: lower-left is better; METEOR: upper-left (the front flips its y)."""
    from dynbench.report.plot_panels import quality_pareto_panels

    def row(method, keep, kv, ppl, meteor):
        return {"method": method, "mode": "kv-cache", "status": "ok", "text_keep": keep, "dataset": "d.jsonl",
                "kv_bytes_generated": kv, "ppl": ppl, "meteor": meteor, "ppl_p10": ppl, "ppl_p90": ppl}

    rows = [row("llava", None, 4096, 5.0, 0.30), row("dynamic-llava", 0.5, 2048, 5.2, 0.31),
            row("dynamic-llava", 0.25, 1024, 6.0, 0.20), row("dynamic-llava", 0.75, 3072, 5.3, 0.29)]
    ppl, meteor = quality_pareto_panels(rows)
    assert [(round(x), y) for x, y in ppl.front] == [(1, 6.0), (2, 5.2), (4, 5.0)]  # KiB; 0.75 is dominated
    assert [(round(x), y) for x, y in meteor.front] == [(1, 0.20), (2, 0.31)]  # llava beaten by 0.5 on both axes
