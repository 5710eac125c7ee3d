"""Datasets: the samples a point runs over, read from one file (`--dataset FILE`).

A record is one line of a JSON Lines file, or one item of a JSON list (a file whose first
non-blank character is `[`). Each record is one of:
  * image + prompt — `{"image": path, "prompt": text, "answer": text (optional), "id": (optional)}`;
    `prompt` / `answer` may be lists, one entry per round (a conversation). The LVIS-VQA items of
    the official multi-round scripts (`{"id", "image", "question": [q0, q1, …], "answer": [a0, …]}`,
    `question` / `answer` strings in the single-round ones) are read the same way;
  * exact tensors — `{"inputs": npz, "teacher_force": npz (optional), "id": (optional)}`, one round
    (`inputs.npz_inputs`, `inputs.load_answer_ids`);
  * a LLaVA conversation (LLaVA-Instruct, ShareGPT4V, LVIS-Instruct4V) — `{"id", "image",
    "conversations": [{"from": "human", "value": "<image>\\n…"}, {"from": "gpt", "value": …}, …]}`:
    human and gpt turns alternate, one round per human turn, the gpt turn after it its answer.
As the official evaluation (notes/official_multiround.md §1.1): the `<image>` mark is stripped
from the first question (the image goes before it, once); later questions are used raw, and an
`<image>` in them is refused (one image per conversation).

Paths: images relative to `--image-folder` when given, else to the dataset file's folder; npz
files relative to the dataset file's folder. Every problem is one `DynbenchError` naming the
record (`data.jsonl line 3`, `data.json item 2`); with `skip_bad` the record is skipped and
counted instead (`Dataset.skipped`). `limit` keeps the first N good samples, or — with
`sample_seed` — N drawn at random without replacement; either way in file order.

What it does not do: tokenize or read pixels (`inputs.dataset_inputs` does, one sample at a time,
when the sample runs).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynbench.errors import DynbenchError

IMAGE_MARK = "<image>"
HUMAN, GPT = ("human", "user"), ("gpt", "assistant")


@dataclass(frozen=True)
class Turn:
    """One round: the human's question and, if the dataset has it, the answer."""

    question: str
    answer: str | None = None


@dataclass(frozen=True)
class Sample:
    index: int  # position among the samples run (0-based)
    id: str  # the record's id, else "line N" / "item N"
    where: str  # "data.jsonl line 3": for messages
    image: Path | None = None  # image + text records
    turns: tuple[Turn, ...] = ()
    inputs: Path | None = None  # npz records
    teacher_force: Path | None = None

    @property
    def rounds(self) -> int:
        return max(len(self.turns), 1)

    @property
    def has_answers(self) -> bool:
        return self.teacher_force is not None or any(t.answer is not None for t in self.turns)


@dataclass(frozen=True)
class Dataset:
    path: Path
    format: str  # "jsonl" | "json"
    samples: tuple[Sample, ...]
    skipped: tuple[str, ...] = ()  # "<where>: <why>" of each record skipped (skip_bad)

    @property
    def needs_tokenizer(self) -> bool:
        return any(s.image is not None for s in self.samples)

    def sample(self, i: int) -> Sample:
        if not 0 <= i < len(self.samples):
            raise DynbenchError(f"--sample {i}: {self.path} has {len(self.samples)} sample(s) here "
                                f"(0 … {len(self.samples) - 1}, after --limit / --sample-seed)")
        return self.samples[i]


class BadRecord(Exception):
    """One record is unusable; the message says why (the caller adds where)."""


def load_dataset(path: str | Path, *, image_folder: str | Path | None = None, limit: int | None = None,
                 sample_seed: int | None = None, skip_bad: bool = False) -> Dataset:
    """The samples of `path` (see the module doc), checked: every selected sample's files exist."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DynbenchError(f"--dataset {path}: no such file")
    folder = Path(image_folder).expanduser() if image_folder is not None else path.parent
    if image_folder is not None and not folder.is_dir():
        raise DynbenchError(f"--image-folder {image_folder}: no such folder")
    if limit is not None and limit < 1:
        raise DynbenchError(f"--limit must be ≥ 1, got {limit}")
    fmt, raw = _read_records(path)
    skipped: list[str] = []
    parsed: list[tuple[str, Sample]] = []
    for where, record in raw:
        try:
            if isinstance(record, BadRecord):
                raise record
            parsed.append((where, _parse(record, where, folder, path.parent)))
        except BadRecord as why:
            _bad(f"{where}: {why}", skip_bad, skipped)
    order = list(range(len(parsed)))
    if sample_seed is not None:
        random.Random(sample_seed).shuffle(order)
    chosen: list[int] = []
    for i in order:
        if limit is not None and len(chosen) == limit:
            break
        where, sample = parsed[i]
        try:
            _check_files(sample)
        except BadRecord as why:
            _bad(f"{where}: {why}", skip_bad, skipped)
            continue
        chosen.append(i)
    samples = tuple(_with_index(parsed[i][1], n) for n, i in enumerate(sorted(chosen)))
    if not samples:
        raise DynbenchError(f"--dataset {path} holds no usable sample" + (f" ({len(skipped)} skipped)" if skipped
                                                                          else ""))
    return Dataset(path, fmt, samples, tuple(skipped))


def _bad(message: str, skip_bad: bool, skipped: list[str]) -> None:
    if not skip_bad:
        raise DynbenchError(f"{message} (fix the record, or add --skip-bad to skip such records)")
    skipped.append(message)


def _with_index(sample: Sample, index: int) -> Sample:
    from dataclasses import replace

    return replace(sample, index=index)


# ---- reading ----------------------------------------------------------------------------------
def _read_records(path: Path) -> tuple[str, list[tuple[str, Any]]]:
    """("json" | "jsonl", [(where, record or BadRecord)])."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DynbenchError(f"cannot read --dataset {path} ({exc})") from None
    name = path.name
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DynbenchError(f"{name} line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        return "json", [(f"{name} item {i}", item) for i, item in enumerate(items)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"{name} line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            records.append((f"{name} line {number}", BadRecord(f"not valid JSON ({exc.msg}, column {exc.colno})")))
    return "jsonl", records


def _parse(record: Any, where: str, image_folder: Path, file_folder: Path) -> Sample:
    if not isinstance(record, dict):
        raise BadRecord(f"a record must be a JSON object, got {type(record).__name__}")
    sample_id = str(record["id"]) if record.get("id") is not None else where.split(" ", 1)[1]
    if "conversations" in record:
        turns = _conversation(record["conversations"])
        return Sample(0, sample_id, where, image=_image_path(record, image_folder), turns=turns)
    if "inputs" in record:
        extra = sorted(set(record) & {"image", "prompt", "question", "answer", "conversations"})
        if extra:
            raise BadRecord(f"an `inputs` record holds exact tensors; drop {', '.join(extra)}")
        inputs = _path(record["inputs"], "inputs", file_folder)
        forced = record.get("teacher_force")
        return Sample(0, sample_id, where, inputs=inputs,
                      teacher_force=None if forced is None else _path(forced, "teacher_force", file_folder))
    question = record.get("prompt", record.get("question"))
    if "image" in record and question is not None:
        return Sample(0, sample_id, where, image=_image_path(record, image_folder),
                      turns=_prompt_turns(question, record.get("answer")))
    keys = ", ".join(repr(k)[1:-1] for k in sorted(record))[:200] or "nothing"  # escaped: one line
    raise BadRecord(f"a record needs `image` + `prompt`, `inputs`, or `conversations` (it has: {keys})")


def _conversation(turns: Any) -> tuple[Turn, ...]:
    if not isinstance(turns, list) or not turns:
        raise BadRecord("`conversations` must be a non-empty list of {\"from\", \"value\"} turns")
    rounds: list[list[str | None]] = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise BadRecord(f"conversation turn {k} must be {{\"from\": …, \"value\": text}}")
        who = str(turn.get("from", "")).lower()
        if who in HUMAN:
            if rounds and rounds[-1][1] is None:
                raise BadRecord(f"conversation turn {k}: two human turns in a row (a gpt turn must answer the first)")
            rounds.append([turn["value"], None])
        elif who in GPT:
            if not rounds or rounds[-1][1] is not None:
                raise BadRecord(f"conversation turn {k}: a gpt turn must follow a human turn")
            rounds[-1][1] = turn["value"]
        else:
            raise BadRecord(f"conversation turn {k}: `from` must be human or gpt, got {turn.get('from')!r}")
    return _turns([q for q, _ in rounds], [a for _, a in rounds])


def _prompt_turns(question: Any, answer: Any) -> tuple[Turn, ...]:
    questions = question if isinstance(question, list) else [question]
    if answer is None:
        answers = [None] * len(questions)
    else:
        answers = answer if isinstance(answer, list) else [answer]
    if not questions or len(answers) != len(questions):
        raise BadRecord(f"`prompt` and `answer` must have one entry per round ({len(questions)} prompt(s), "
                        f"{len(answers)} answer(s))")
    if not all(isinstance(q, str) for q in questions) or not all(a is None or isinstance(a, str) for a in answers):
        raise BadRecord("`prompt` and `answer` must be text (or lists of text)")
    return _turns(questions, answers)


def _turns(questions: list[str], answers: list[str | None]) -> tuple[Turn, ...]:
    """The first question without its `<image>` mark (stripped, as the official eval); later ones raw."""
    for k, q in enumerate(questions[1:], start=1):
        if IMAGE_MARK in q:
            raise BadRecord(f"round {k} holds {IMAGE_MARK}: a conversation has one image, in its first turn")
    if questions[0].count(IMAGE_MARK) > 1:
        raise BadRecord(f"the first question holds {IMAGE_MARK} more than once: a conversation has one image")
    first = questions[0].replace(IMAGE_MARK, "").strip()
    return tuple(Turn(q, a) for q, a in zip([first, *questions[1:]], answers, strict=True))


def _image_path(record: dict, folder: Path) -> Path:
    image = record.get("image")
    if image is None:
        raise BadRecord("no `image`: dynbench measures image conversations (LLaVA-1.5 with one image)")
    if isinstance(image, list):
        if len(image) != 1:
            raise BadRecord(f"`image` lists {len(image)} images; LLaVA-1.5 takes one")
        image = image[0]
    return _path(image, "image", folder)


def _path(value: Any, key: str, folder: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise BadRecord(f"`{key}` must be a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def _check_files(sample: Sample) -> None:
    """The sample's files exist; an image must decode in full (`images.decode_rgb`: a truncated
    file or a decompression bomb is this record's error, before anything runs)."""
    for key, path in (("image", sample.image), ("inputs", sample.inputs), ("teacher_force", sample.teacher_force)):
        if path is not None and not path.is_file():
            raise BadRecord(f"{key} {path} not found")
    if sample.image is not None:
        from dynbench.images import BadImage, decode_rgb

        try:
            decode_rgb(sample.image)
        except BadImage as exc:
            raise BadRecord(str(exc)) from None
