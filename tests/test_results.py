import json
import math

import numpy as np
import pytest

from dynbench.errors import DynbenchError
from dynbench.records import key_of
from dynbench.results import (
    RECORDS_FILE,
    append_record,
    iter_records,
    load,
    recorded_keys,
    write_atomic,
)

SPEC = {"model": "tiny", "method": "llava", "mode": "prefill", "prompt_len": 64, "gen_len": None}


def test_append_load_round_trip(tmp_path):
    path = tmp_path / "run" / RECORDS_FILE  # parent folder is created
    append_record(path, {**SPEC, "step": 0, "status": "ok", "layer_seq_lens": [640, 640, 179]})
    append_record(path, {**SPEC, "step": None, "status": "ok", "ttft_ms": 12.5,
                         "latency_ms_samples": (1.0, 2.0), "generated_ids": [1, 2, 3]})
    df = load(tmp_path / "run")  # folder or file both work
    assert len(df) == 2
    assert df["layer_seq_lens"][0] == [640, 640, 179]
    assert df["latency_ms_samples"][1] == [1.0, 2.0]
    assert df["ttft_ms"][1] == 12.5
    assert len(load(path)) == 2
    assert path.read_text().count("\n") == 2


def test_non_finite_and_numpy_become_plain_json(tmp_path):
    path = tmp_path / RECORDS_FILE
    append_record(path, {"a": math.nan, "b": [math.inf, 1.0], "c": np.float32(2.5),
                         "d": np.int64(3), "e": np.float64("nan")})
    line = path.read_text()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"a": None, "b": [None, 1.0], "c": 2.5, "d": 3, "e": None}


def test_truncated_last_line_is_skipped_with_warning(tmp_path):
    path = tmp_path / RECORDS_FILE
    append_record(path, {"step": None, "status": "ok"})
    with open(path, "a") as f:
        f.write('{"step": null, "sta')  # crash mid-write
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert list(iter_records(path)) == [{"step": None, "status": "ok"}]
    # the next append cuts the partial line off instead of gluing onto it
    with pytest.warns(RuntimeWarning, match="truncated"):
        append_record(path, {"step": None, "status": "oom"})
    assert [r["status"] for r in iter_records(path)] == ["ok", "oom"]


def test_corrupt_middle_line_raises_with_line_number(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(DynbenchError, match=rf"{RECORDS_FILE}:2"):
        load(path)


def test_missing_and_empty_files_are_usage_errors(tmp_path):
    with pytest.raises(DynbenchError, match="no results"):
        load(tmp_path / "nowhere")
    with pytest.raises(DynbenchError, match="no results"):
        load(tmp_path)  # folder without records.jsonl
    (tmp_path / RECORDS_FILE).write_text("")
    with pytest.raises(DynbenchError, match="no records"):
        load(tmp_path)


def test_write_atomic_leaves_no_temp_file(tmp_path):
    target = tmp_path / "baselines" / "b.jsonl"
    write_atomic(target, "one\n")
    write_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert [p.name for p in target.parent.iterdir()] == ["b.jsonl"]


def test_key_of_and_recorded_keys(tmp_path):
    fields = ("model", "method", "mode", "prompt_len", "gen_len", "vision_keep")
    path = tmp_path / RECORDS_FILE
    assert recorded_keys(path, fields) == set()  # nothing recorded yet
    append_record(path, {**SPEC, "step": 0, "status": "ok"})  # step rows never count
    append_record(path, {**SPEC, "mode": "no-cache", "gen_len": 8, "step": None, "status": "ok"})
    append_record(path, {**SPEC, "mode": "kv-cache", "gen_len": 8, "step": None, "status": "oom"})
    append_record(path, {**SPEC, "method": "dynamic-llava", "step": None,
                         "status": "error: boom"})
    keys = recorded_keys(tmp_path, fields)
    assert keys == {("tiny", "llava", "no-cache", 64, 8, None),
                    ("tiny", "llava", "kv-cache", 64, 8, None)}
    assert key_of({**SPEC, "mode": "no-cache", "gen_len": 8}, fields) in keys
    # lists and dicts become tuples (usable as dict keys), NaN the null it is stored as
    assert key_of({"ids": [1, 2], "m": {"a": [3]}, "x": math.nan}, ("ids", "m", "x", "absent")) == (
        (1, 2), (("a", (3,)),), None, None)
