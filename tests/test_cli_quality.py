"""Quality end to end on the tests' tiny checkpoint and dataset: PPL of the dataset's answers in
both decode modes, METEOR of free-run answers, both against references computed here (sample
rows vs their step rows, nltk on the decoded output), the aggregate vs its samples by hand."""

import json
import math
import statistics

import pytest

from dynbench.cli import main
from dynbench.inputs import load_tokenizer
from dynbench.quality import wordnet_available
from dynbench.records import row_kind, validate
from dynbench.results import iter_records

FAST = ["--warmup", "0", "--repeats", "1"]


@pytest.fixture(scope="module")
def files(shared_assets):
    return shared_assets


def _run(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr()


@pytest.fixture(scope="module")
def forced(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("forced") / "res"
    assert main(["run", "--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--dataset",
                 str(files["jsonl"]), "--mode", "kv-cache,no-cache", "--method", "llava,dynamic-llava",
                 "--gen-len", "16", "--limit", "2", "--no-flops", "--out", str(out), *FAST]) == 0
    return out, list(iter_records(out))


@pytest.mark.slow
def test_teacher_forced_ppl_per_sample_from_its_steps_and_aggregated(forced):
    _, rows = forced
    points = [r for r in rows if row_kind(r) == "point"]
    assert len(points) == 4
    for point in points:
        assert validate(point) == []
        mine = [r for r in rows if r["point_id"] == point["point_id"]]
        samples = [r for r in mine if row_kind(r) == "sample"]
        for s in samples:
            steps = [r for r in mine if row_kind(r) == "step" and r["sample"] == s["sample"]]
            nll = [r["nll"] for r in steps if r["nll"] is not None]
            # every fed answer token is predicted once: by the prefill, then by the step that fed the one before
            assert s["answer_tokens"] == len(nll) == s["text_tokens_fed"] == len(steps) - 1
            assert steps[-1]["nll"] is None  # the last step predicts the official </s>: not scored
            assert s["nll_mean"] == pytest.approx(statistics.fmean(nll))
            assert s["ppl"] == pytest.approx(math.exp(statistics.fmean(nll)))
            assert s["answer_argmax"] == [r["token_ids"][0] for r in steps[:-1]]
        assert point["ppl"] == pytest.approx(statistics.fmean(s["ppl"] for s in samples))  # the paper's mean
        pooled = math.exp(sum(s["nll_mean"] * s["answer_tokens"] for s in samples)
                          / sum(s["answer_tokens"] for s in samples))
        assert point["ppl_pooled"] == pytest.approx(pooled)
        assert point["ppl_p50"] == pytest.approx(statistics.median(s["ppl"] for s in samples))
        assert point["meteor"] is None  # teacher-forced outputs are not the model's own answers
    by = {(p["method"], p["mode"]): p for p in points}
    # the dense model's PPL does not depend on the decode mode (same tokens, same logits up to rounding)
    assert by["llava", "kv-cache"]["ppl"] == pytest.approx(by["llava", "no-cache"]["ppl"], rel=1e-5)


@pytest.fixture(scope="module")
def free(files, tmp_path_factory):
    if not wordnet_available():
        pytest.skip("WordNet for nltk is absent (scripts/ci-wordnet.sh installs it)")
    out = tmp_path_factory.mktemp("free") / "res"
    assert main(["run", "--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--dataset",
                 str(files["jsonl"]), "--mode", "kv-cache,no-cache", "--method", "llava,dynamic-llava",
                 "--gen-len", "16", "--limit", "2", "--no-flops", "--free-run", "--out", str(out), *FAST]) == 0
    return out, list(iter_records(out))


@pytest.mark.slow
def test_free_run_meteor_of_the_decoded_output(files, free):
    from nltk import word_tokenize
    from nltk.translate.meteor_score import single_meteor_score

    _, rows = free
    tok = load_tokenizer(files["official"])
    references = {r["id"]: r["answer"] for r in map(json.loads, files["jsonl"].read_text().splitlines())}
    points = [r for r in rows if row_kind(r) == "point"]
    assert len(points) == 4
    for point in points:
        samples = [r for r in rows if r["point_id"] == point["point_id"] and row_kind(r) == "sample"]
        for s in samples:
            ids = s["generated_ids"]
            ids = ids[: ids.index(2)] if 2 in ids else ids  # the official generation stops at </s> (id 2)
            answer = tok.decode(ids, skip_special_tokens=True).strip()
            ref = references[s["sample_id"]]
            want = single_meteor_score(word_tokenize(ref.lower(), preserve_line=True),
                                       word_tokenize(answer, preserve_line=True))
            assert s["meteor"] == pytest.approx(want) and s["output_tokens"] == len(ids)
            assert s["ppl"] is None  # nothing teacher-forced
        assert point["meteor"] == pytest.approx(statistics.fmean(s["meteor"] for s in samples))


@pytest.mark.slow
def test_paper_view_puts_ppl_and_meteor_beside_the_costs(forced, free, capsys):
    printed = _run(["report", str(forced[0]), str(free[0]), "--paper", "--format", "md"], capsys).out
    assert "paper Table 3 view" in printed and "PPL" in printed and "METEOR" in printed
    csv = _run(["report", str(forced[0]), str(free[0]), "--paper", "--format", "csv"], capsys).out
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(csv))
    assert len(table) == 4  # (kv-cache, no-cache) × (llava, dynamic-llava): forced and free points merged
    points = {(r["method"], r["mode"], bool(r["free_run"])): r for r in forced[1] + free[1] if row_kind(r) == "point"}
    for _, row in table.iterrows():
        mine, theirs = points[row["method"], row["mode"], False], points[row["method"], row["mode"], True]
        assert row["ppl"] == pytest.approx(mine["ppl"]) and row["meteor"] == pytest.approx(theirs["meteor"])
        if row["method"] == "dynamic-llava":
            base = points["llava", row["mode"], False]
            assert row["ppl_delta_pct"] == pytest.approx((mine["ppl"] / base["ppl"] - 1) * 100)
            mine_s = [r for r in forced[1] if r["point_id"] == mine["point_id"] and row_kind(r) == "sample"]
            base_s = {r["sample"]: r["answer_argmax"] for r in forced[1]
                      if r["point_id"] == base["point_id"] and row_kind(r) == "sample"}
            same = sum(a == b for s in mine_s for a, b in zip(s["answer_argmax"], base_s[s["sample"]], strict=True))
            assert row["top1_agree"] == pytest.approx(same / sum(len(s["answer_argmax"]) for s in mine_s))
        if row["mode"] == "no-cache":
            assert row["tflops_paper"] == pytest.approx(mine["tflops_paper"])


@pytest.mark.slow
def test_check_fails_when_the_baseline_ppl_is_five_percent_better(forced, tmp_path, capsys):
    out, _ = forced
    base = tmp_path / "base.jsonl"
    _run(["baseline", str(out), "--out", str(base)], capsys)
    _run(["check", str(out), "--baseline", str(base)], capsys)  # the run against itself passes
    lines = base.read_text().splitlines()
    edited = [lines[0]]
    for line in lines[1:]:
        row = json.loads(line)
        if row.get("method") == "dynamic-llava" and row.get("ppl") is not None:
            row["ppl"] /= 1.05  # the baseline answered better
        edited.append(json.dumps(row))
    base.write_text("\n".join(edited) + "\n")
    assert main(["check", str(out), "--baseline", str(base)]) == 1
    assert "ppl" in capsys.readouterr().err
    assert main(["check", str(out), "--baseline", str(base), "--quality-tol", "0.06"]) == 0


@pytest.mark.slow
def test_free_run_without_wordnet_is_one_line_and_writes_no_row(files, tmp_path, capsys, monkeypatch):
    import dynbench.quality as q

    def missing():
        raise q.QualityError(q.WORDNET_FIX)

    monkeypatch.setattr(q, "_nltk", missing)
    out = tmp_path / "none"
    argv = ["run", "--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--dataset",
            str(files["jsonl"]), "--mode", "kv-cache", "--method", "llava", "--gen-len", "4", "--free-run",
            "--out", str(out), *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nltk.downloader wordnet" in err[0] and "wordnet-sense-index" in err[0]
    assert not (out / "records.jsonl").exists() or not list(iter_records(out))


@pytest.mark.slow
def test_conversation_rounds_each_have_their_ppl_and_the_sample_pools_them(files, tmp_path, capsys):
    out = tmp_path / "conv"
    _run(["run", "--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--dataset",
          str(files["conversation"]), "--image-folder", str(files["images"]), "--mode", "kv-cache", "--method",
          "llava", "--gen-len", "12", "--no-flops", "--out", str(out), *FAST], capsys)
    rows = list(iter_records(out))
    rounds = sorted((r for r in rows if row_kind(r) == "round"), key=lambda r: r["round"])
    (sample,) = [r for r in rows if row_kind(r) == "sample"]
    steps = [r for r in rows if row_kind(r) == "step"]
    assert len(rounds) == 3
    for r in rounds:
        nll = [s["nll"] for s in steps if s["round"] == r["round"] and s["nll"] is not None]
        assert r["answer_tokens"] == len(nll) == r["text_tokens_fed"]  # the round's opening forward predicts its first
        assert r["ppl"] == pytest.approx(math.exp(statistics.fmean(nll)))
    assert sample["answer_tokens"] == sum(r["answer_tokens"] for r in rounds)
    pooled = sum(r["nll_mean"] * r["answer_tokens"] for r in rounds) / sample["answer_tokens"]
    assert sample["nll_mean"] == pytest.approx(pooled)
    # the official multi-round script: a sample's PPL is the mean of its rounds' PPL
    assert sample["ppl"] == pytest.approx(statistics.fmean(r["ppl"] for r in rounds))
