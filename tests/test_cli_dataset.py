"""`dynbench run --dataset` end to end on local assets (PIL-drawn images, a locally built tokenizer, tiny
checkpoints in both layouts): one row per sample and an aggregate with the spread, per-round rows
for a three-turn conversation, teacher forcing with the dataset's answers, and the errors."""

import json
import statistics

import numpy as np
import pytest
from assets import ANSWERS, QUESTIONS, SHAPE_ANSWERS

from dynbench.cli import main
from dynbench.inputs import load_tokenizer
from dynbench.records import COLUMNS, STEP, SUMMARY, is_summary, row_kind, validate
from dynbench.results import iter_records, load

FAST = ["--warmup", "0", "--repeats", "1"]


@pytest.fixture(scope="module")
def files(shared_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    files = dict(shared_assets)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):  # exact tensors, for random weights (no tokenizer needed)
        ids = np.concatenate([[1], rng.integers(3, 32000, 6 + 4 * i), [-200], rng.integers(3, 32000, 5)])
        np.savez(root / f"p{i}.npz", input_ids=ids, pixel_values=rng.standard_normal((3, 336, 336)).astype("f4"))
        np.savez(root / f"a{i}.npz", answer_ids=rng.integers(3, 32000, 3 + i))
        lines.append(json.dumps({"inputs": f"p{i}.npz", "teacher_force": f"a{i}.npz"}))
    (root / "npz.jsonl").write_text("\n".join(lines) + "\n")
    return {**files, "npz_data": root / "npz.jsonl", "root": root}


def _run(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr()


def _official(files):
    return ["--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"])]


def _answer_tokens(files, text):
    tok = load_tokenizer(files["official"])
    ids = tok(text).input_ids
    return ids[1:] if ids[0] == tok.bos_token_id else ids


@pytest.mark.slow
def test_one_row_per_sample_and_an_aggregate_with_the_spread(files, tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["run", *_official(files), "--dataset", str(files["jsonl"]), "--mode", "kv-cache", "--gen-len", "16",
            "--out", str(out), "--json", *FAST]
    printed = [json.loads(line) for line in _run(argv, capsys).out.splitlines()]
    assert [(r["method"], r["sample"], r["samples"]) for r in printed] == [("llava", None, 3),
                                                                           ("dynamic-llava", None, 3)]
    rows = list(iter_records(out))
    for r in rows:  # declared columns only, every column of its kind
        assert validate(r) == [], r
        kind = {c.name for c in COLUMNS if c.rows != (STEP if is_summary(r) else SUMMARY)}
        assert set(r) == kind
    for method in ("llava", "dynamic-llava"):
        mine = [r for r in rows if r["method"] == method]
        samples = [r for r in mine if row_kind(r) == "sample"]
        (agg,) = [r for r in mine if row_kind(r) == "point"]
        assert [(s["sample"], s["sample_id"]) for s in samples] == [(0, "circle"), (1, "square"), (2, "triangle")]
        assert {r["point_id"] for r in mine} == {agg["point_id"]}
        # teacher-forced with the dataset's answers: every answer token is fed (gen 16 is enough)
        want = [len(_answer_tokens(files, a)) for a in SHAPE_ANSWERS.values()]
        assert [s["text_tokens_fed"] for s in samples] == want and not agg["free_run"]
        assert [s["gen_len"] for s in samples] == [n + 1 for n in want] and agg["gen_len"] == 16
        assert all(s["prompt_len"] + 576 == s["seq_len"] for s in samples) and agg["prompt_len"] is None
        ratios = [s["text_keep_realized"] for s in samples]
        assert agg["text_keep_realized"] == pytest.approx(statistics.fmean(ratios))
        assert agg["text_keep_realized_p50"] == pytest.approx(statistics.median(ratios))
        lo, hi = sorted(ratios)[0], sorted(ratios)[1]
        assert agg["text_keep_realized_p10"] == pytest.approx(lo + 0.2 * (hi - lo))
        assert agg["text_keep_pooled"] == pytest.approx(sum(s["text_tokens_kept"] for s in samples) / sum(want))
        assert agg["kv_bytes_p90"] >= agg["kv_bytes_p10"] and agg["tpot_ms_median_p50"] is not None
        steps = [r for r in mine if row_kind(r) == "step"]
        assert {(r["sample"], r["round"]) for r in steps} == {(0, 0), (1, 0), (2, 0)}
        assert len(steps) == sum(want) + 3  # prefill + one decode step per fed token
    dyn = [r for r in rows if r["method"] == "dynamic-llava" and row_kind(r) == "point"][0]
    assert dyn["text_policy"] == "learned" and dyn["vision_keep_realized"] == pytest.approx(115 / 576)
    report = _run(["report", str(out), "--format", "md"], capsys).out
    assert "samples" in report and "text keep p10/p50/p90" in report and f"dataset {files['jsonl']}" in report
    figs = _run(["plot", str(out), "--out", str(tmp_path / "figs")], capsys).out
    assert "text_keep_samples.png" in figs


@pytest.mark.slow
def test_three_turn_conversation_gives_round_rows(files, tmp_path, capsys):
    out = tmp_path / "conv"
    _run(["run", *_official(files), "--dataset", str(files["conversation"]), "--image-folder", str(files["images"]),
          "--mode", "kv-cache", "--gen-len", "12", "--out", str(out), *FAST], capsys)
    rows = list(iter_records(out))
    tok = load_tokenizer(files["official"])
    turn = [len(tok(f"USER:{q}ASSISTANT:").input_ids) - 1 for q in QUESTIONS[1:]]  # BOS dropped
    fed = [min(len(_answer_tokens(files, a)), 11) for a in ANSWERS]
    by = {}
    for method in ("llava", "dynamic-llava"):
        rounds = sorted((r for r in rows if r["method"] == method and row_kind(r) == "round"), key=lambda r: r["round"])
        (sample,) = [r for r in rows if r["method"] == method and row_kind(r) == "sample"]
        assert [r["round"] for r in rounds] == [0, 1, 2] and sample["rounds"] == 3
        assert [r["round_prompt_tokens"] for r in rounds] == [sample["seq_len"], *turn]
        assert [r["text_tokens_fed"] for r in rounds] == fed and sample["text_tokens_fed"] == sum(fed)
        assert sample["gen_len"] == sum(fed) + 3  # each round produces one more than it feeds
        kv = [r["kv_bytes"] for r in rounds]
        assert kv == sorted(kv) and kv[-1] == sample["kv_bytes"]  # the cache grows round by round
        by[method] = rounds
    from dynbench.models.presets import PRESETS

    tiny = PRESETS["tiny"]
    per_token = 2 * tiny.kv_heads * tiny.head_dim * 4  # K and V × kv heads × head dim × float32, batch 1
    P = by["llava"][0]["round_prompt_tokens"]
    for r, row in enumerate(by["llava"]):  # dense: every layer holds the prompt, the turns and all fed tokens
        assert row["kv_bytes"] == 4 * (P + sum(turn[:r]) + sum(fed[: r + 1])) * per_token
    for r, row in enumerate(by["dynamic-llava"]):  # layers ≥ 2: 115 image tokens, the kept answers
        kept = sum(x["text_tokens_kept"] for x in by["dynamic-llava"][: r + 1])
        dense = P + sum(turn[:r]) + sum(fed[: r + 1])
        sparse = P - 576 + 115 + sum(turn[:r]) + kept
        assert row["kv_bytes"] == (2 * dense + 2 * sparse) * per_token
        assert row["layer_cache_lens"] == [dense, dense, sparse, sparse]


@pytest.mark.slow
def test_npz_dataset_on_random_weights_every_mode(files, tmp_path, capsys):
    out = tmp_path / "npz"
    _run(["run", "--dataset", str(files["npz_data"]), "--gen-len", "4", "--method", "dynamic-llava", "--limit", "2",
          "--out", str(out), "--no-flops", *FAST], capsys)
    df = load(out)
    aggregates = df[df["sample"].isna() & df["step"].isna()]
    assert sorted(aggregates["mode"]) == ["kv-cache", "no-cache", "prefill"] and (aggregates["samples"] == 2).all()
    samples = df[df["sample"].notna() & df["step"].isna()]
    decode = samples[samples["mode"] == "kv-cache"]
    assert sorted(decode["text_tokens_fed"]) == [3, 3]  # answers of 3 and 4 tokens, capped at gen_len − 1 = 3


def test_dataset_as_a_suite_key(files, tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"defaults: {{mode: prefill, method: llava, warmup: 0, repeats: 1}}\n"
                     f"sweeps:\n  - {{dataset: {files['npz_data']}, limit: 2}}\n  - {{prompt_len: 8}}\n")
    printed = _run(["run", "--suite", str(suite), "--json", "--no-flops"], capsys).out
    rows = [json.loads(line) for line in printed.splitlines()]
    assert [(r["dataset"], r["samples"], r["prompt_len"]) for r in rows] == [(str(files["npz_data"]), 2, None),
                                                                             (None, None, 8)]


def test_hf_checkpoint_with_its_tokenizer_runs_lvis_rounds(files, tmp_path, capsys):
    out = tmp_path / "hf"
    _run(["run", "--checkpoint", str(files["hf"]), "--dataset", str(files["lvis"]), "--mode", "kv-cache",
          "--method", "llava,random", "--gen-len", "6", "--free-run", "--out", str(out), "--no-flops", *FAST],
         capsys)
    rows = list(iter_records(out))
    rounds = [r for r in rows if row_kind(r) == "round"]
    assert len(rounds) == 4 and all(r["text_tokens_fed"] == 5 for r in rounds)  # free run: gen_len − 1 each
    assert all(r["free_run"] for r in rows if row_kind(r) == "point")
    assert {r["checkpoint_layout"] for r in rows} == {"hf"}


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "BADLINE"], "bad.jsonl line 2: image"),
    (["--dataset", "JSONL", "--inputs", "NPZ"], "--dataset gives the inputs"),
    (["--dataset", "JSONL", "--prompt-len", "8"], "--prompt-len is set by each sample"),
    (["--dataset", "JSONL", "--no-ckpt"], "image samples: they need --checkpoint"),
    (["--dataset", "CONV", "--image-folder", "IMAGES", "--method", "h2o", "--mode", "kv-cache"],
     "conversations of several rounds"),
    (["--dataset", "NPZDATA", "--device", "meta", "--no-ckpt"], "real device"),
    (["--dataset", "NPZDATA", "--limit", "0", "--no-ckpt"], "--limit must be ≥ 1"),
    (["--dataset", "nowhere.jsonl"], "no such file"),
])
def test_dataset_errors_are_one_line(files, tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": str(files["images"] / "circle.png"), "prompt": "q"}) + "\n"
                   + json.dumps({"image": "gone.png", "prompt": "q"}) + "\n")
    names = {"BADLINE": bad, "JSONL": files["jsonl"], "NPZ": files["root"] / "p0.npz", "CONV": files["conversation"],
             "NPZDATA": files["npz_data"], "IMAGES": files["images"]}
    ckpt = [] if "--no-ckpt" in extra else _official(files)
    argv = ["run", *ckpt, *[str(names.get(a, a)) for a in extra if a != "--no-ckpt"], *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err


def test_skip_bad_counts_the_skipped(files, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in [{"inputs": str(files["root"] / "p0.npz")},
                                                          {"inputs": "gone.npz"}, "not a record"]))
    printed = _run(["run", "--dataset", str(bad), "--skip-bad", "--mode", "prefill", "--method", "llava", "--json",
                    "--no-flops", *FAST], capsys).out
    (row,) = [json.loads(line) for line in printed.splitlines()]
    assert (row["samples"], row["samples_skipped"], row["status"]) == (1, 2, "ok")
