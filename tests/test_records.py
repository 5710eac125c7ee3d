"""The record schema: real sweeps write exactly the declared columns, and docs/records.md lists them."""

from pathlib import Path

import pytest

from dynbench import records
from dynbench.cli import main
from dynbench.records import BY_NAME, COLUMNS, POINT_KEY, SPEC_COLUMNS, STEP, SUMMARY, is_summary, validate
from dynbench.report.columns import readme_block
from dynbench.results import iter_records
from dynbench.spec import RunSpec

RECORDS_DOC = Path(__file__).parent.parent / "docs" / "records.md"  # the column list (`make docs`)


@pytest.fixture(scope="module")
def sweep_rows(every_method_sweep, tmp_path_factory):
    """Every mode and method on the CPU (the session's shared sweep: one run with FLOPs, three runs
    without), plus a meta-device (counts only) sweep."""
    meta = tmp_path_factory.mktemp("meta")
    assert main(["run", "--device", "meta", "--method", "llava,dynamic-llava,fastv", "--mode", "prefill,kv-cache",
                 "--prompt-len", "8", "--gen-len", "3", "--out", str(meta)]) == 0
    return [r for folder in (*every_method_sweep.values(), meta) for r in iter_records(folder)]


def test_every_record_validates(sweep_rows):
    problems = {(r["method"], r["mode"], r["step"]): validate(r) for r in sweep_rows}
    assert not {k: v for k, v in problems.items() if v}


def test_rows_carry_every_column_of_their_kind(sweep_rows):
    summary_cols = {c.name for c in COLUMNS if c.rows != STEP}
    step_cols = {c.name for c in COLUMNS if c.rows != SUMMARY}
    for r in sweep_rows:
        expected = summary_cols if is_summary(r) else step_cols
        assert set(r) == expected, (r["method"], r["mode"], r["step"], set(r) ^ expected)


def test_columns_a_mode_does_not_fill_are_null(sweep_rows):
    for r in sweep_rows:
        for name, value in r.items():
            col = BY_NAME[name]
            if r["mode"] not in col.modes:
                assert value is None, (name, r["mode"])


def test_validate_catches_bad_rows():
    assert validate({"step": None, "tmacs": 1.0}) == []
    assert "not a declared column" in validate({"tmac": 1.0})[0]
    assert "expected int" in validate({"prompt_len": "64"})[0]
    assert "expected int" in validate({"prompt_len": True})[0]  # a bool is not a count
    assert "expected list[int]" in validate({"layer_seq_lens": [1, "2"]})[0]
    assert "step-row column on a summary row" in validate({"step": None, "step_ms": 1.0})[0]
    assert "summary-row column on a step row" in validate({"step": 3, "ttft_ms": 1.0})[0]


def test_spec_columns_are_the_runspec_fields():
    assert list(SPEC_COLUMNS) == list(RunSpec.__dataclass_fields__)
    assert set(POINT_KEY) < set(SPEC_COLUMNS)


def test_point_key_separates_seed_and_weights():
    a = {"model": "tiny", "method": "llava", "mode": "prefill", "seed": 0}
    assert records.key_of(a) != records.key_of({**a, "seed": 1})
    assert records.key_of(a) != records.key_of({**a, "checkpoint": "/w"})
    latest = records.latest_summaries([{**a, "step": None, "status": "error: x"}, {**a, "step": 0},
                                       {**a, "step": None, "status": "ok"}, {**a, "seed": 1, "step": None}])
    assert [r.get("status") for r in latest.values()] == ["ok", None]  # last summary per point, step rows ignored


def test_readme_lists_the_schema():
    assert readme_block() in RECORDS_DOC.read_text(encoding="utf-8"), "docs/records.md is stale: run `make docs`"
