"""The CPU half of the regression gate: the smoke suite against the committed baseline.

Exact metrics (per-layer lengths, keep counts, KV bytes, parameter and FLOP counts) must equal
`results/baselines/smoke-cpu.jsonl`; CPU latency is reported, not gated. Refresh the baseline
(docs/ci.md) when a change to those numbers is intended.
"""

import json
from pathlib import Path

import pytest

from dynbench.cli import main
from dynbench.regress import check_results
from dynbench.results import RECORDS_FILE

BASELINE = Path(__file__).parent.parent / "results" / "baselines" / "smoke-cpu.jsonl"


@pytest.mark.slow
def test_smoke_suite_matches_committed_baseline(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["run", "--suite", "suites/smoke.yaml", "--out", str(out)]) == 0
    report = check_results(out, BASELINE)
    verdicts = [(r.kind, r.verdict, r.metric, r.note) for r in report.results]
    assert report.exit_code == 0, [v for v in verdicts if v[1] == "regression"]
    exact = [v for v in verdicts if v[0] == "exact" and v[1] == "pass"]
    assert len(exact) >= 7 * 8  # every point, every exact metric actually compared
    assert not [v for v in verdicts if v[1] == "missing"]

    # a changed vision keep, relabelled as the baseline's, is caught and named
    rows = [json.loads(line) for line in (out / RECORDS_FILE).read_text().splitlines()]
    changed = tmp_path / "changed"
    changed.mkdir()
    point = next(r for r in rows if r["step"] is None and r["method"] == "dynamic-llava" and r["mode"] == "prefill")
    point["layer_seq_lens"] = point["layer_seq_lens"][:2] + [n + 1 for n in point["layer_seq_lens"][2:]]
    point["image_tokens_kept"] += 1
    (changed / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = check_results(changed, BASELINE)
    assert bad.exit_code == 1
    names = {r.metric for r in bad.results if r.verdict == "regression"}
    assert {"layer_seq_lens", "image_tokens_kept"} <= names


def test_gate_fails_on_missing_points_and_on_a_truncated_file(tmp_path, capsys):
    """Done-when of the trust issue: 2 of 7 baseline points → exit 1 (0 with --allow-missing);
    a results file or baseline cut mid-line → exit 2, one line."""
    points = [json.loads(line) for line in BASELINE.read_text().splitlines()][1:]  # line 1: the header
    assert len(points) == 7
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in points[:2]))
    assert main(["check", str(partial), "--baseline", str(BASELINE)]) == 1
    err = capsys.readouterr().err
    assert "5 baseline point(s) missing from the run" in err
    assert main(["check", str(partial), "--baseline", str(BASELINE), "--allow-missing"]) == 0
    capsys.readouterr()

    whole = (partial / RECORDS_FILE).read_text()
    (partial / RECORDS_FILE).write_text(whole[: len(whole) - 40])  # the last record cut short
    assert main(["check", str(partial), "--baseline", str(BASELINE), "--allow-missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and "truncated" in err[0]

    cut = tmp_path / "cut.jsonl"
    text = BASELINE.read_text()
    cut.write_text(text[: len(text) - 40])
    (partial / RECORDS_FILE).write_text(whole)
    assert main(["check", str(partial), "--baseline", str(cut), "--allow-missing"]) == 2
    assert "truncated" in capsys.readouterr().err


QUALITY_BASELINE = BASELINE.parent / "quality-cpu.jsonl"


@pytest.mark.slow
def test_quality_suite_matches_committed_baseline(tmp_path):
    """suites/quality-cpu.yaml: PPL of teacher-forced answers is gated like the counts (exact up
    to rounding on CPU), so the CPU baseline covers generation ability too."""
    out = tmp_path / "quality"
    assert main(["run", "--suite", "suites/quality-cpu.yaml", "--no-flops", "--out", str(out)]) == 0
    report = check_results(out, QUALITY_BASELINE)
    verdicts = [(r.metric, r.verdict, r.note) for r in report.results]
    assert report.exit_code == 0, [v for v in verdicts if v[1] == "regression"]
    passed = {(json.dumps(r.point, sort_keys=True), r.metric) for r in report.results if r.verdict == "pass"}
    assert len({p for p, m in passed if m == "ppl"}) == 4 and len({p for p, m in passed if m == "ppl_pooled"}) == 4
