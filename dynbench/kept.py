"""What each method kept on one input, read from a real run: for `dynbench show`.

`kept_view(result, inputs)` turns one `modes.run_mode` result (prefill or kv-cache) into a
`KeptView`: which of the image's tokens survived the prefill's drop (`Step.kept_index` of step
0: the very indices the forward gathered; 0-based within the image's tokens), and, for every
token fed back while decoding, whether its K/V entered the cache of the layers from the sparse
layer on — read off the steps' running `text_tokens_kept` (the decider's count: +1 = kept), so
the measurement path records nothing extra. A round's last produced token is never fed: its
decision is None. Teacher-forced rounds feed the answer's tokens (those are the tokens shown,
the round's last entry is the model's own final prediction); free-running rounds feed the model's
own. `show_views` runs each method once on the input (no timing) and collects the views.

What it does not do: render (`report/show.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dynbench.errors import DynbenchError
from dynbench.registry import get as get_method


@dataclass(frozen=True)
class ShownToken:
    id: int
    kept: bool | None  # cached from the sparse layer on; None: never fed (a round's last token)
    round: int = 0
    text: str | None = None  # with a tokenizer


@dataclass
class KeptView:
    method: str
    mode: str
    image_tokens: int
    kept_image_indices: list[int]
    tokens: list[ShownToken] = field(default_factory=list)
    questions: list[str | None] = field(default_factory=list)  # the human turn of each round, if known
    teacher_forced: bool = False

    @property
    def rounds(self) -> int:
        return max((t.round for t in self.tokens), default=0) + 1

    def as_dict(self) -> dict:
        """The JSON sidecar's entry for this method."""
        fed = [t for t in self.tokens if t.kept is not None]
        return {
            "method": self.method, "mode": self.mode, "image_tokens": self.image_tokens,
            "kept_image_indices": self.kept_image_indices, "teacher_forced": self.teacher_forced,
            "rounds": self.rounds, "questions": self.questions,
            "text_tokens_fed": len(fed), "text_tokens_kept": sum(bool(t.kept) for t in fed),
            "generated": [{"id": t.id, **({"text": t.text} if t.text is not None else {}), "kept": t.kept,
                           "round": t.round} for t in self.tokens],
        }


def kept_view(result, inputs, tokenizer=None, questions: list[str | None] | None = None) -> KeptView:
    """The `KeptView` of one run (`modes.ModeResult` of prefill or kv-cache, after `run_mode`)."""
    if result.mode not in ("prefill", "kv-cache"):
        raise DynbenchError("dynbench show reads prefill or kv-cache runs (no-cache redoes every decision at "
                            "every step); use --mode kv-cache")
    steps, layout = result.steps, inputs.layout
    a, b = layout.image_start, layout.image_end
    index = steps[0].kept_index
    if index is None:  # the dense prefill keeps every token
        kept_image = list(range(layout.image_tokens))
    else:
        kept_image = [i - a for i in index[0].tolist() if a <= i < b]
    tokens: list[ShownToken] = []
    rounds = inputs.rounds
    forced = any(r.answer_ids is not None for r in rounds) or (not rounds and inputs.answer_ids is not None)
    if result.mode == "prefill":
        tokens.append(ShownToken(steps[0].token_ids[0], None))
    else:
        tokens = _decisions(steps, inputs)
    if tokenizer is not None:
        tokens = _with_text(tokens, tokenizer)
    return KeptView(result.method, result.mode, layout.image_tokens, kept_image, tokens,
                    list(questions or [None] * (max((t.round for t in tokens), default=0) + 1)), forced)


def _decisions(steps, inputs) -> list[ShownToken]:
    """Each fed token with its cache decision, then each round's last produced token (None)."""
    out: list[ShownToken] = []
    answers = {r: rnd.answer_ids for r, rnd in enumerate(inputs.rounds)} or {0: inputs.answer_ids}
    kept_before, i_round, previous = 0, 0, None
    for k, step in enumerate(steps):
        last_of_round = k + 1 == len(steps) or steps[k + 1].round != step.round
        if step.text_tokens_fed and previous is not None and step.text_tokens_fed > previous.text_tokens_fed:
            forced = answers.get(step.round)
            fed = int(forced[0, i_round]) if forced is not None else previous.token_ids[0]
            kept = None if step.text_tokens_kept is None else step.text_tokens_kept > kept_before
            out.append(ShownToken(fed, kept, step.round))
            i_round += 1
        if step.text_tokens_kept is not None:
            kept_before = step.text_tokens_kept
        if last_of_round:
            out.append(ShownToken(step.token_ids[0], None, step.round))
            i_round = 0
        previous = step
    return out


def _with_text(tokens: list[ShownToken], tokenizer) -> list[ShownToken]:
    """Each token's text as it reads in its round's decoded text (incremental decoding, so
    sentencepiece's leading spaces survive)."""
    from dataclasses import replace

    out, ids, text, current = [], [], "", None
    for t in tokens:
        if t.round != current:
            ids, text, current = [], "", t.round
        ids.append(t.id)
        full = tokenizer.decode(ids, skip_special_tokens=False)
        out.append(replace(t, text=full[len(text):] if full.startswith(text) else tokenizer.decode([t.id])))
        text = full
    return out


def show_views(points, source, preset, sample=None) -> tuple[object, list[KeptView]]:
    """Run every point (one per method, otherwise equal) once on the input — a dataset `sample`,
    or the source's input — and collect its `KeptView` (questions: the sample's turns, or
    `--prompt`). Returns (the inputs, the views)."""
    from dynbench.modes import run_mode

    views, inputs = [], None
    tokenizer = source.tokenizer()
    questions = [t.question for t in sample.turns] if sample is not None and sample.turns else \
        ([source.prompt] if source.prompt is not None else None)
    for spec in points:
        if get_method(spec.method).evicts_kv:
            raise DynbenchError(f"{spec.method} evicts KV entries per layer and head: there is no one kept set to "
                                "draw; show a method that drops tokens")
        net = source.build_net(spec)
        if inputs is None:
            inputs = source.sample_inputs(spec, sample, preset) if sample is not None else \
                source.point_inputs(spec, preset)
        result = run_mode(spec.mode, net, inputs.to(net.device), spec.drop, spec.gen_len or 1)
        views.append(kept_view(result, inputs, tokenizer, questions))
    return inputs, views
