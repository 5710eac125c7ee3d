"""Dataset points' rows as pure functions: the aggregate over samples and the per-round rows, against
hand-computed numbers; and readers that never take a sample or round row for a point's summary."""

import math
from types import SimpleNamespace

import pytest

from dynbench.measure.latency import latency_columns
from dynbench.records import is_point_summary, latest_summaries, row_kind, validate
from dynbench.results import append_record, recorded_keys
from dynbench.samples import aggregate, percentile, round_rows


def _sample(i, kept, fed, tmacs, kv, tpot, peak, status="ok", **extra):
    return {"sample": i, "sample_id": f"s{i}", "step": None, "status": status, "text_tokens_kept": kept,
            "text_tokens_fed": fed, "text_keep_realized": kept / fed, "image_tokens_kept": 115,
            "vision_keep_realized": 115 / 576, "tmacs": tmacs, "kv_bytes": kv, "tpot_ms_median": tpot,
            "peak_mem_bytes": peak, "latency_ms_samples": [tpot, tpot + 1], "timer": "cpu", "throttled": None,
            "generated_ids": [i, i], "seq_len": 600 + i, "mem_source": "cpu_tensors", **extra}


def test_aggregate_by_hand():
    rows = [_sample(0, 1, 4, 1.0, 1000, 10.0, 500, preprocessing="pad"),
            _sample(1, 3, 6, 2.0, 2001, 20.0, 900, preprocessing="pad"),
            _sample(2, 8, 8, 6.0, 3000, 30.0, 700, preprocessing="crop"),
            _sample(3, 0, 1, 99.0, 9, 99.0, 10**9, status="oom")]
    agg = aggregate(rows, skipped=2)
    assert agg["samples"] == 3 and agg["samples_skipped"] == 2 and agg["status"] == "oom"  # the oom is left out
    # means: keeps 1/4, 3/6, 8/8 → (0.25 + 0.5 + 1) / 3; counts and bytes rounded
    assert agg["text_keep_realized"] == pytest.approx(1.75 / 3)
    assert (agg["text_tokens_kept"], agg["text_tokens_fed"], agg["kv_bytes"]) == (4, 6, 2000)  # 4, 6, 2000.33
    assert agg["tmacs"] == pytest.approx(3.0) and agg["tpot_ms_median"] == pytest.approx(20.0)
    assert agg["text_keep_pooled"] == pytest.approx(12 / 18)  # Σ kept / Σ fed
    # percentiles, linear between ranks: ratios sorted 0.25, 0.5, 1.0
    assert agg["text_keep_realized_p10"] == pytest.approx(0.25 + 0.2 * 0.25)  # rank 0.2
    assert agg["text_keep_realized_p50"] == pytest.approx(0.5)
    assert agg["text_keep_realized_p90"] == pytest.approx(0.5 + 0.8 * 0.5)  # rank 1.8
    assert agg["tmacs_p90"] == pytest.approx(2.0 + 0.8 * 4.0) and agg["kv_bytes_p10"] == pytest.approx(1200.2)
    assert agg["peak_mem_bytes"] == 900  # a peak: the max
    assert agg["latency_ms_samples"] == [10.0, 11.0, 20.0, 21.0, 30.0, 31.0]  # concatenated
    assert agg["generated_ids"] is None and agg["seq_len"] is None  # per sample only
    assert agg["timer"] == "cpu" and agg["preprocessing"] is None  # kept when the samples agree
    assert agg["vision_keep_realized_p50"] == pytest.approx(115 / 576) and agg["ttft_ms_p10"] is None
    assert validate({**agg, "step": None}) == []


def test_aggregate_status():
    ok = _sample(0, 1, 2, 1.0, 10, 1.0, 1)
    assert aggregate([ok])["status"] == "ok"
    bad = {"sample": 1, "step": None, "status": "error: RuntimeError: boom"}
    assert aggregate([ok, bad])["status"] == "error: 1 of 2 samples failed: error: RuntimeError: boom"
    assert aggregate([bad])["samples"] == 0 and aggregate([bad])["text_keep_realized_p50"] is None


def test_percentile_matches_numpy():
    np = pytest.importorskip("numpy")
    xs = [3.0, 1.0, 7.5, 2.0, 9.0]
    for q in (0, 10, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def _step(r, fed, kept, lens, prompt_kv, gen_kv, token, nll=None):
    return SimpleNamespace(round=r, text_tokens_fed=fed, text_tokens_kept=kept, image_tokens_kept=115,
                           layer_cache_lens=lens, kv_bytes_prompt=prompt_kv, kv_bytes_generated=gen_kv,
                           token_ids=[token], nll=nll)


def test_round_rows_by_hand():
    # round 0: prefill + 2 decode steps (fed 2, kept 1); round 1: its turn (7 tokens) + 1 decode step (kept)
    # teacher-forced: 2 answer tokens per round, scored by all steps but each round's last
    steps = [_step(0, 0, 0, [600, 139], 100, 0, 11, 1.0), _step(0, 1, 1, [601, 140], 100, 10, 12, 3.0),
             _step(0, 2, 1, [602, 140], 100, 15, 13), _step(1, 2, 1, [609, 147], 170, 15, 14, 0.5),
             _step(1, 3, 2, [610, 148], 170, 25, 15)]
    ms = [[50.0, 2.0, 3.0, 9.0, 4.0], [60.0, 2.0, 3.0, 7.0, 6.0]]
    rows = round_rows(steps, ms, [5.0, 1.0, 1.0, 3.0, 1.0], 576, [600, 7])
    r0, r1 = rows
    assert (r0["round"], r0["round_prompt_tokens"], r0["text_tokens_fed"], r0["text_tokens_kept"]) == (0, 600, 2, 1)
    assert (r1["round"], r1["round_prompt_tokens"], r1["text_tokens_fed"], r1["text_tokens_kept"]) == (1, 7, 1, 1)
    assert (r0["text_keep_realized"], r1["text_keep_realized"]) == (0.5, 1.0)
    assert (r0["kv_bytes"], r1["kv_bytes"], r1["kv_bytes_prompt"]) == (115, 195, 170)  # the cache at the round's end
    assert r0["layer_cache_lens"] == [602, 140] and r1["generated_ids"] == [14, 15]
    assert (r0["tmacs"], r1["tmacs"]) == (7.0, 4.0)
    assert (r0["ttft_ms"], r1["ttft_ms"]) == (55.0, 8.0)  # the round's opening forward, median over runs
    assert (r0["total_ms"], r1["total_ms"]) == (60.0, 13.0)  # runs: (55, 65) and (13, 13) → medians
    assert (r0["answer_tokens"], r0["nll_mean"], r0["answer_argmax"]) == (2, 2.0, [11, 12])
    assert (r1["answer_tokens"], r1["ppl"], r1["answer_argmax"]) == (1, math.exp(0.5), [14])
    phases = ["prefill", "decode", "decode", "prefill", "decode"]  # round 1 opens with a prefill of its turn
    lat = latency_columns(phases, ms, headline="decode")  # TPOT over one-token steps only: 2, 3, 4, 2, 3, 6
    assert lat["latency_ms_samples"] == [2.0, 3.0, 4.0, 2.0, 3.0, 6.0] and lat["tpot_ms_median"] == 3.0
    assert lat["ttft_ms"] == 55.0 and lat["total_ms_samples"] == [68.0, 78.0]


def test_readers_take_the_aggregate_only(tmp_path):
    point = {"model": "tiny", "method": "llava", "mode": "kv-cache", "dataset": "d.jsonl", "status": "ok"}
    rows = [{**point, "step": 0, "sample": 0}, {**point, "step": None, "sample": 0, "round": 1},
            {**point, "step": None, "sample": 0}, {**point, "step": None, "sample": None, "samples": 1}]
    assert [row_kind(r) for r in rows] == ["step", "round", "sample", "point"]
    assert [is_point_summary(r) for r in rows] == [False, False, False, True]
    (latest,) = latest_summaries(rows).values()
    assert latest["samples"] == 1
    for r in rows[:3]:  # a point cut short after its samples: --resume runs it again
        append_record(tmp_path / "records.jsonl", r)
    assert recorded_keys(tmp_path, ("model", "method")) == set()
    append_record(tmp_path / "records.jsonl", rows[3])
    assert recorded_keys(tmp_path, ("model", "method")) == {("tiny", "llava")}


def _dataset_rows():
    rows = []
    for method, ratios in (("dynamic-llava", [0.25, 0.5, 1.0]), ("llava", [1.0, 1.0, 1.0])):
        point = {"model": "tiny", "method": method, "mode": "kv-cache", "batch": 1, "gen_len": 8, "dtype": "float32",
                 "device": "cpu", "attn": "sdpa", "dataset": "d.jsonl", "free_run": False, "status": "ok",
                 "point_id": method, "env_id": "e"}
        for i, r in enumerate(ratios):
            rows.append({**point, "step": None, "sample": i, "prompt_len": 10 + i, "text_keep_realized": r,
                         "tmacs": 1.0 + i})
        rows.append({**point, "step": None, "sample": None, "samples": 3, "tmacs": 2.0,
                     **aggregate(rows[-3:])})
    return rows


def test_report_and_charts_read_aggregates_and_samples_apart():
    import pandas as pd

    from dynbench.report import compare as C
    from dynbench.report import plot_panels as PP
    from dynbench.report.tables import mode_tables

    df = pd.DataFrame.from_records(_dataset_rows())
    cmp = C.compare(df)
    assert sorted(cmp["method"]) == ["dynamic-llava", "llava"] and (cmp["samples"] == 3).all()
    dyn = cmp[cmp["method"] == "dynamic-llava"].iloc[0]
    assert dyn["tmacs_delta_pct"] == 0.0 and dyn["text_keep_realized_p50"] == 0.5
    (table,) = mode_tables(cmp)
    assert "text keep p10/p50/p90" in table.headers and "samples" in table.headers
    assert "0.30 / 0.50 / 0.90" in [c for row in table.rows for c in row]  # 0.25 + 0.2·0.25, 0.5, 0.5 + 0.8·0.5
    (panel,) = PP.keep_distribution_panels(C.sample_rows(df))
    assert [s.method for s in panel.series] == ["llava", "dynamic-llava"]  # llava first
    assert [s.y for s in panel.series] == [[1.0, 1.0, 1.0], [0.25, 0.5, 1.0]]  # per sample, in order
    assert panel.series[1].label == "dynamic-llava" and "d.jsonl" in panel.title
