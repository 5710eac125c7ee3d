"""Quality beside cost: perplexity of teacher-forced answers and METEOR of free-run answers, as
the official Dynamic-LLaVA evaluation computes them (`model_lvis_for_ppl.py`,
`model_lvis_for_meteor.py`; /work/shared/reference/quality.md).

PPL: the answer's tokens are fed one by one with the method's sparsification in effect; the
first answer token is predicted by the prompt's last logits, token j by the forward that fed
token j − 1 (the drivers in `modes.py` attach each step's label NLL: `token_nll`). Per sample or
round: `answer_tokens`, `nll_mean` (mean cross-entropy in nats), `ppl = exp(nll_mean)`; the
aggregate `ppl` is the mean of per-sample PPL (the paper's) and `ppl_pooled = exp(Σ NLL / Σ tokens)`.

METEOR: greedy output cut at the first EOS, decoded with the checkpoint's tokenizer, scored with
nltk's `single_meteor_score(word_tokenize(reference.lower()), word_tokenize(answer))` — the
official script lower-cases only the reference before tokenizing (nltk lower-cases both token
lists afterwards anyway). nltk and WordNet are imported only when a METEOR is computed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dynbench.errors import DynbenchError
from dynbench.stats import mean_or_none

WORDNET_FIX = ("METEOR needs WordNet for nltk: run `python -m nltk.downloader wordnet`, or offline install "
               "Debian's wordnet-base and wordnet-sense-index and run scripts/ci-wordnet.sh")
NLTK_FIX = "METEOR needs nltk: pip install 'dynbench[quality]'"


class QualityError(DynbenchError):
    """A quality measure cannot be computed here (nltk or WordNet missing)."""


# ---- perplexity --------------------------------------------------------------------------------
def token_nll(logits, labels):
    """Cross-entropy (nats) of `labels` (B,) under `logits` (B, V), per row, in float32, on the
    device: no host sync, so a driver may call it inside a timed step."""
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), labels.to(logits.device), reduction="none")


def answer_columns(nll: Sequence[float | None], argmax: Sequence[int | None]) -> dict[str, Any]:
    """`answer_tokens`, `nll_mean`, `ppl`, `answer_argmax` of one sample or round from its steps'
    label NLLs (None: a step that predicted no answer token) and argmax ids (batch row 0)."""
    scored = [(x, a) for x, a in zip(nll, argmax, strict=True) if x is not None]
    if not scored:
        return dict.fromkeys(("answer_tokens", "nll_mean", "ppl", "answer_argmax"))
    mean = mean_or_none([x for x, _ in scored])
    return {"answer_tokens": len(scored), "nll_mean": mean, "ppl": math.exp(mean),
            "answer_argmax": [a for _, a in scored]}


def step_answer_columns(steps: Sequence[Any]) -> dict[str, Any]:
    """`answer_columns` of a run's (or a round's) `modes.Step`s, on the host."""
    return answer_columns([s.nll for s in steps], [s.token_ids[0] if s.token_ids else None for s in steps])


def conversation_ppl(rounds: Sequence[Mapping[str, Any]]) -> float | None:
    """A conversation's PPL: the mean of its rounds' PPL (the official multi-round script's
    `mean_round_ppl`); its `nll_mean` stays pooled over the tokens of every round."""
    ppl = [r["ppl"] for r in rounds if r.get("ppl") is not None]
    return mean_or_none(ppl)


def pooled_ppl(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """exp(Σ NLL / Σ tokens) over rows carrying `nll_mean` and `answer_tokens` (token-weighted,
    beside the mean of per-sample PPL)."""
    pairs = [(r["nll_mean"], r["answer_tokens"]) for r in rows
             if r.get("nll_mean") is not None and r.get("answer_tokens")]
    tokens = sum(n for _, n in pairs)
    return math.exp(math.fsum(x * n for x, n in pairs) / tokens) if tokens else None


def top1_agree(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> float | None:
    """Share of answer positions where two argmax sequences agree, pooled over (method, llava)
    pairs of the same samples; None without a common position."""
    same = total = 0
    for mine, dense in pairs:
        n = min(len(mine), len(dense))
        same += sum(a == b for a, b in zip(mine[:n], dense[:n], strict=True))
        total += n
    return same / total if total else None


# ---- METEOR ------------------------------------------------------------------------------------
def cut_at_eos(ids: Sequence[int], eos: int | None) -> list[int]:
    """Greedy output up to (without) the first EOS: what a generation that stops at EOS returns
    (later tokens never change earlier ones under greedy decoding)."""
    ids = list(ids)
    return ids[: ids.index(eos)] if eos is not None and eos in ids else ids


def meteor(reference: str, answer: str) -> float:
    """nltk's `single_meteor_score`, the official way round (module doc)."""
    scorer, tokenize = _nltk()
    return float(scorer(tokenize(reference.lower()), tokenize(answer)))


def meteor_columns(generated: Sequence[int], reference: str | None, tokenizer) -> dict[str, Any]:
    """`meteor` and `output_tokens` of one free-run answer (nulls without a reference or tokenizer)."""
    if reference is None or tokenizer is None:
        return {"meteor": None, "output_tokens": None}
    ids = cut_at_eos(generated, tokenizer.eos_token_id)
    answer = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return {"meteor": meteor(reference, answer), "output_tokens": len(ids)}


def combine_meteor(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A conversation's sample row from its rounds' `meteor_columns`: the mean METEOR over the
    rounds scored, the output tokens summed."""
    scored = [r for r in rounds if r.get("meteor") is not None]
    if not scored:
        return {"meteor": None, "output_tokens": None}
    return {"meteor": mean_or_none([r["meteor"] for r in scored]),
            "output_tokens": sum(r["output_tokens"] for r in scored)}


@functools.cache
def _nltk():
    """(single_meteor_score, word_tokenize) with WordNet checked, or one line naming the fixes."""
    try:
        from nltk import word_tokenize
        from nltk.corpus import wordnet
        from nltk.translate.meteor_score import single_meteor_score
    except ImportError:
        raise QualityError(NLTK_FIX) from None
    try:
        wordnet.ensure_loaded()
    except LookupError:
        raise QualityError(WORDNET_FIX) from None
    # preserve_line: no punkt sentence model needed (one answer is one "line")
    return single_meteor_score, lambda text: word_tokenize(text, preserve_line=True)


def require_meteor() -> None:
    """Raise `QualityError` (one line naming the fixes) where METEOR cannot be computed: a run
    checks this before its first sample, so nothing is half-written."""
    _nltk()


def wordnet_available() -> bool:
    try:
        _nltk()
    except QualityError:
        return False
    return True
