"""Datasets: every format read into samples, paths resolved, selection by --limit / --sample-seed,
and one clear error naming the record for each kind of bad input (or a counted skip)."""

import json

import numpy as np
import pytest
from assets import ANSWERS, QUESTIONS, SHAPE_ANSWERS, draw

from dynbench.datasets import load_dataset
from dynbench.errors import DynbenchError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    for name in ("circle", "square", "triangle"):
        draw(root / "images" / f"{name}.png", name)
    return root


def _jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_jsonl_image_prompt_relative_to_the_file(folder):
    data = load_dataset(_jsonl(folder / "a.jsonl", [
        {"id": "c", "image": "images/circle.png", "prompt": "<image>\nWhat?", "answer": "A circle."},
        "",  # a blank line is no record
        {"image": "images/square.png", "prompt": ["What?", "Where?"], "answer": ["A square.", "Top left."]},
    ]))
    first, second = data.samples
    assert data.format == "jsonl" and len(data.samples) == 2
    assert (first.index, first.id, first.image) == (0, "c", folder / "images" / "circle.png")
    assert [(t.question, t.answer) for t in first.turns] == [("What?", "A circle.")]  # <image> stripped
    assert (second.index, second.id, second.rounds) == (1, "line 3", 2)  # no id: its line
    assert [t.answer for t in second.turns] == ["A square.", "Top left."] and second.has_answers


def test_llava_conversation_json_with_image_folder(folder):
    turns = []
    for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS, strict=True)):
        turns += [{"from": "human", "value": ("<image>\n" if i == 0 else " ") + q}, {"from": "gpt", "value": a}]
    path = folder / "conv.json"
    path.write_text(json.dumps([{"id": "000000033471", "image": "circle.png", "conversations": turns},
                                {"id": "open", "image": "square.png", "conversations": turns[:3]}]))
    data = load_dataset(path, image_folder=folder / "images")
    conv, open_ended = data.samples
    assert data.format == "json" and conv.image == folder / "images" / "circle.png"
    assert [t.question for t in conv.turns] == [QUESTIONS[0], " " + QUESTIONS[1], " " + QUESTIONS[2]]  # later: raw
    assert [t.answer for t in conv.turns] == list(ANSWERS)
    assert [t.answer for t in open_ended.turns] == [ANSWERS[0], None]  # ends with a human turn: generated


def test_lvis_question_lists_and_npz_records(folder):
    (folder / "lvis.json").write_text(json.dumps([{"id": 7, "image": "images/square.png",
                                                   "question": ["<image>What?", "Why?"], "answer": ["A", "B"]}]))
    (s,) = load_dataset(folder / "lvis.json").samples
    assert (s.id, [t.question for t in s.turns], s.rounds) == ("7", ["What?", "Why?"], 2)
    np.savez(folder / "p.npz", input_ids=np.array([1, -200, 5]), pixel_values=np.zeros((3, 336, 336), "f4"))
    np.savez(folder / "t.npz", answer_ids=np.array([5, 6]))
    (n,) = load_dataset(_jsonl(folder / "n.jsonl", [{"inputs": "p.npz", "teacher_force": "t.npz"}])).samples
    assert (n.inputs, n.teacher_force, n.rounds, n.has_answers) == (folder / "p.npz", folder / "t.npz", 1, True)


def test_limit_and_sample_seed_pick_samples_in_file_order(folder):
    path = _jsonl(folder / "many.jsonl", [{"id": str(i), "image": "images/circle.png", "prompt": "q"}
                                          for i in range(10)])
    assert [s.id for s in load_dataset(path, limit=3).samples] == ["0", "1", "2"]
    drawn = [s.id for s in load_dataset(path, limit=4, sample_seed=1).samples]
    assert drawn == [s.id for s in load_dataset(path, limit=4, sample_seed=1).samples]  # reproducible
    assert drawn == sorted(drawn, key=int) and drawn != ["0", "1", "2", "3"] and len(set(drawn)) == 4
    assert [s.index for s in load_dataset(path, limit=4, sample_seed=1).samples] == [0, 1, 2, 3]


@pytest.mark.parametrize("record, match", [
    ('{"image": "images/circle.png", "prompt": "q"', r"bad\.jsonl line 2: not valid JSON"),
    ({"image": "images/nowhere.png", "prompt": "q"}, r"bad\.jsonl line 2: image .*nowhere\.png not found"),
    ({"prompt": "q"}, r"line 2: a record needs `image` \+ `prompt`, `inputs`, or `conversations` \(it has: prompt\)"),
    ({"image": "images/circle.png", "prompt": ["a", "b"], "answer": ["x"]}, "one entry per round"),
    ({"image": "images/circle.png", "conversations": [{"from": "human", "value": "a"},
                                                       {"from": "human", "value": "b"}]}, "two human turns in a row"),
    ({"image": "images/circle.png", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                                                       {"from": "human", "value": "<image> c"}]},
     "round 1 holds <image>"),
    ({"conversations": [{"from": "human", "value": "a"}]}, "no `image`"),
    ({"inputs": "missing.npz"}, r"inputs .*missing\.npz not found"),
    ({"image": "bad.txt", "prompt": "q"}, "cannot read image"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_records_name_their_line(folder, record, match):
    (folder / "bad.txt").write_text("not a picture")
    path = _jsonl(folder / "bad.jsonl", [{"image": "images/circle.png", "prompt": "fine"}, record])
    with pytest.raises(DynbenchError, match=match) as info:
        load_dataset(path)
    assert "\n" not in str(info.value) and "--skip-bad" in str(info.value)
    data = load_dataset(path, skip_bad=True)  # the same record skipped and counted
    assert len(data.samples) == 1 and len(data.skipped) == 1 and "line 2" in data.skipped[0]


def test_skip_bad_refills_the_limit_and_refuses_an_empty_dataset(folder):
    path = _jsonl(folder / "gaps.jsonl", [{"image": "images/circle.png", "prompt": "q"},
                                          {"image": "images/gone.png", "prompt": "q"},
                                          {"image": "images/square.png", "prompt": "q"}])
    data = load_dataset(path, limit=2, skip_bad=True)
    assert [s.id for s in data.samples] == ["line 1", "line 3"] and len(data.skipped) == 1
    with pytest.raises(DynbenchError, match="no usable sample"):
        load_dataset(_jsonl(folder / "none.jsonl", [{"image": "gone.png", "prompt": "q"}]), skip_bad=True)
    with pytest.raises(DynbenchError, match=r"conv\.json line 1: not valid JSON"):
        (folder / "conv.json").write_text("[{")
        load_dataset(folder / "conv.json")


def test_shape_answers_are_distinct():  # the e2e dataset's answers differ, so the text decisions can
    assert len(set(SHAPE_ANSWERS.values())) == len(SHAPE_ANSWERS)
