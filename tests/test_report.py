"""Report tables: every number shown comes from a record, Δ% is recomputed here independently.

The records are synthetic but follow docs/records.md exactly: one summary row per point
(`step` null) after its step rows, the full spec on every row, null for what was not measured.
`synthetic_point` is shared with test_plots.py.
"""

from __future__ import annotations

import io
import json
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from dynbench.errors import DynbenchError
from dynbench.report import build as B
from dynbench.report import compare as C
from dynbench.report import format as F
from dynbench.report import paper as P
from dynbench.report import tables as T
from dynbench.results import RECORDS_FILE, append_record, load, load_many

LAYERS, SPARSE, IMG, HIDDEN = 4, 2, 576, 128
KV_TOKEN_LAYER = 2 * 4 * 32 * 4  # K and V × kv heads × head dim × float32 bytes
WEIGHTS = 36_000_000
ENV_A, ENV_B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


def _kv_budget_kept(text_keep: float, fed: int) -> int:
    """kv-cache budget rule: keep token t iff kept_so_far < round_half_up(text_keep × t)."""
    kept = 0
    for t in range(1, fed + 1):
        kept += kept < math.floor(text_keep * t + 0.5)
    return kept


def _paper_tflops(lens: list[int]) -> float:
    return sum(32 * n * HIDDEN**2 + 4 * n * n * HIDDEN for n in lens) / 1e12


def synthetic_point(method: str, mode: str, *, prompt_len: int = 64, gen_len: int | None = None,
                    vision_keep: float | None = None, text_keep: float | None = None,
                    env_id: str = ENV_A, model: str = "tiny", device: str = "cpu",
                    dtype: str = "float32", status: str = "ok", slow: float = 1.0,
                    batch: int = 1) -> list[dict]:
    """Step rows then the summary row of one point, numbers derived from the token arithmetic."""
    dyn = method != "llava"
    decoding = mode != "prefill"
    gen_len = gen_len if decoding else None
    vision_keep = (vision_keep or 0.2) if dyn else None
    text_keep = (text_keep or 0.5) if dyn and decoding else None
    img_kept = int(IMG * vision_keep + 1e-9) if dyn else IMG
    P = prompt_len + IMG
    deep = P - IMG + img_kept  # prompt length from the sparse layer on
    meta = device == "meta"
    spec = dict(
        model=model, method=method, mode=mode, prompt_len=prompt_len, gen_len=gen_len,
        vision_keep=vision_keep, text_keep=text_keep,
        text_policy="budget" if dyn and decoding else None,
        reuse_vision=False if mode == "no-cache" else None, batch=batch, seed=0, device=device,
        dtype=dtype, attn="sdpa", warmup=1, repeats=1, checkpoint=None,
    )
    ident = dict(env_id=env_id, git_sha="0" * 40, time_utc="2026-01-01T00:00:00Z",
                 text_keep_imposed=dyn and decoding)
    steps = []
    n_steps = 1 if mode == "prefill" else gen_len
    for i in range(n_steps):
        fed = i if mode == "no-cache" else (0 if mode == "prefill" else i)
        if not dyn:
            kept = fed
        elif mode == "no-cache":  # floor(text_keep × candidates) + the newest
            kept = math.floor(text_keep * (fed - 1) + 1e-9) + 1 if fed else 0
        else:
            kept = _kv_budget_kept(text_keep, fed) if fed else 0
        seq = cache = None
        if mode == "no-cache" or i == 0:
            full = P + (fed if mode == "no-cache" else 0)
            seq = [full] * SPARSE + [(deep if dyn else P) + kept] * (LAYERS - SPARSE)
        if mode != "no-cache":
            cache = [P + fed] * SPARSE + [(deep if dyn else P) + kept] * (LAYERS - SPARSE)
        work = sum(seq) if seq else sum(cache)
        kv_p = None if cache is None else (SPARSE * P + (LAYERS - SPARSE) * (deep if dyn else P)) * KV_TOKEN_LAYER
        kv_g = None if cache is None else (SPARSE * fed + (LAYERS - SPARSE) * kept) * KV_TOKEN_LAYER
        steps.append({
            **spec, **ident, "step": i, "status": status, "image_tokens": IMG, "seq_len": P,
            "image_tokens_kept": img_kept, "text_tokens_fed": fed, "text_tokens_kept": kept,
            "layer_seq_lens": seq, "layer_cache_lens": cache, "tmacs": work * 2.5e-5,
            "kv_bytes": None if cache is None else kv_p + kv_g, "kv_bytes_prompt": kv_p,
            "kv_bytes_generated": kv_g, "timer": None if meta else "cpu",
            "step_ms": None if meta else slow * (0.5 + work * (1e-3 if seq else 1e-4)),
        })
    ms = [s["step_ms"] for s in steps]
    last = steps[-1]
    fed, kept = last["text_tokens_fed"], last["text_tokens_kept"]
    gen_ids = list(range(100, 100 + (gen_len or 1)))
    if dyn:  # every 4th token differs from llava's
        gen_ids = [t + (i % 4 == 3) for i, t in enumerate(gen_ids)]
    summary = {
        **spec, **ident, "step": None, "status": status, "image_tokens": IMG, "seq_len": P,
        "image_tokens_kept": img_kept, "text_tokens_fed": fed, "text_tokens_kept": kept,
        "vision_keep_realized": img_kept / IMG, "text_keep_realized": kept / fed if fed else None,
        "layer_seq_lens": steps[0]["layer_seq_lens"] if mode != "no-cache" else last["layer_seq_lens"],
        "layer_cache_lens": last["layer_cache_lens"], "generated_ids": gen_ids,
        "params": 9_260_000 if dyn else 9_170_000,
        "tmacs": sum(s["tmacs"] for s in steps), "tmacs_vision": 0.001 * n_steps,
        "tmacs_llm": None, "tmacs_predictors": None, "tmacs_lm_head": None,
        "tflops_paper": None if mode == "kv-cache" else _paper_tflops(
            [IMG] * SPARSE + [img_kept] * (LAYERS - SPARSE)),
        "equivalent_tokens": (SPARSE * IMG + (LAYERS - SPARSE) * img_kept) / LAYERS,
        "tmacs_fastv": None, "flops_source": "fvcore",
        "weights_bytes": WEIGHTS, "kv_bytes": last["kv_bytes"], "kv_bytes_prompt": last["kv_bytes_prompt"],
        "kv_bytes_generated": last["kv_bytes_generated"],
        "peak_alloc_bytes": None, "peak_reserved_bytes": None, "nvml_process_bytes": None,
        "nvml_source": None, "peak_rss_bytes": None if meta else WEIGHTS + 1000 * sum(steps[-1][
            "layer_cache_lens"] or steps[-1]["layer_seq_lens"]),
        "mem_source": None if meta else "rss_sampled_approx",
        "timer": None if meta else "cpu", "ttft_ms": None, "vision_ms": None, "llm_prefill_ms": None,
        "tpot_ms_median": None, "tpot_ms_p90": None, "tpot_ms_p99": None,
        "step_ms_median": None, "step_ms_p90": None, "total_ms": None if meta else sum(ms),
        "latency_ms_samples": None if meta else ms, "latency_cv": None, "throttled": None,
        "sm_clock_mhz": None,
    }
    summary["peak_mem_bytes"] = summary["peak_rss_bytes"]
    if not meta:
        decode = ms[1:] if mode == "kv-cache" else ms
        if mode in ("prefill", "kv-cache"):
            summary["ttft_ms"] = ms[0]
        if mode == "kv-cache" and decode:
            q = statistics.quantiles(decode, n=10, method="inclusive") if len(decode) > 1 else decode * 9
            summary.update(tpot_ms_median=statistics.median(decode), tpot_ms_p90=q[8])
        if mode == "no-cache":
            q = statistics.quantiles(decode, n=10, method="inclusive") if len(decode) > 1 else decode * 9
            summary.update(step_ms_median=statistics.median(decode), step_ms_p90=q[8])
    if status != "ok":  # an oom / error point: measurements null
        for k in ("tmacs", "tflops_paper", "peak_mem_bytes", "peak_rss_bytes", "kv_bytes", "kv_bytes_prompt",
                  "kv_bytes_generated", "ttft_ms", "tpot_ms_median", "tpot_ms_p90", "step_ms_median",
                  "step_ms_p90", "total_ms", "generated_ids", "latency_ms_samples"):
            summary[k] = None
        steps = []
    return [*steps, summary]


def sweep(modes=("prefill", "no-cache", "kv-cache"), gen_lens=(8, 16), keeps=(0.2, 0.5),
          **kw) -> list[dict]:
    """llava + dynamic-llava at several vision keeps, every mode and generated length."""
    rows = []
    for mode in modes:
        for g in gen_lens if mode != "prefill" else (None,):
            rows += synthetic_point("llava", mode, gen_len=g, **kw)
            for vk in keeps:
                rows += synthetic_point("dynamic-llava", mode, gen_len=g, vision_keep=vk, slow=0.7, **kw)
    return rows


def write(path, rows) -> str:
    """A results folder as `dynbench run --out` leaves it (one JSON object per line)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / RECORDS_FILE, "a") as f:  # append_record's format, without an fsync per row
        f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in rows)
    return str(path)


def summaries_of(rows):
    return [r for r in rows if r["step"] is None]


def base_of(row, rows):
    """The llava summary row at the same comparison key (independent of dynbench's lookup)."""
    match = [r for r in summaries_of(rows) if r["method"] == "llava"
             and all(r[k] == row[k] for k in ("model", "mode", "batch", "prompt_len", "gen_len",
                                               "dtype", "device", "attn"))]
    return match[-1] if match else None


def _plain(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as dicts, missing values as None."""
    return [{k: None if not isinstance(v, list) and pd.isna(v) else v for k, v in r.items()}
            for r in df.to_dict("records")]


def pct(a, b):
    return (a - b) / b * 100


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    rows = sweep()
    return rows, load_many([write(tmp_path_factory.mktemp("run"), rows)])


def test_write_matches_the_store(tmp_path):
    rows = synthetic_point("dynamic-llava", "kv-cache", gen_len=3)
    for r in rows:
        append_record(tmp_path / "store" / RECORDS_FILE, r)
    write(tmp_path / "direct", rows)
    assert (tmp_path / "store" / RECORDS_FILE).read_text() == (tmp_path / "direct" / RECORDS_FILE).read_text()
    assert load(tmp_path / "direct")["step"].isna().sum() == 1


def test_compare_numbers_equal_records_and_delta_recomputed(full):
    rows, df = full
    cmp = C.compare(df)
    assert len(cmp) == len(summaries_of(rows))
    assert list(cmp["mode"].unique()) == ["prefill", "no-cache", "kv-cache"]
    checked = 0
    for rec in summaries_of(rows):
        got = [r for r in _plain(cmp) if all(r[k] == rec[k] for k in ("mode", "method", "gen_len",
                                                                      "vision_keep"))]
        assert len(got) == 1, rec
        got = got[0]
        base = base_of(rec, rows)
        for m in C.DELTA_METRICS:
            assert got[m] == rec.get(m) or got[m] == pytest.approx(rec.get(m)), (m, rec)
            d = got[f"{m}_delta_pct"]
            if rec["method"] == "llava" or rec.get(m) is None:
                assert d is None
            elif base[m] == 0:  # prefill generates no KV: 0 vs 0 is no change
                assert d == (0.0 if rec[m] == 0 else None)
            else:
                assert d == pytest.approx(pct(rec[m], base[m]))
                checked += 1
        assert got["vision_keep_realized"] == pytest.approx(rec["image_tokens_kept"] / IMG)
        if rec["method"] == "dynamic-llava":
            a, b = rec["generated_ids"], base["generated_ids"]
            n = min(len(a), len(b))
            assert got["token_agreement"] == pytest.approx(sum(x == y for x, y in zip(a[:n], b[:n], strict=True)) / n)
            assert got["note"] == ("text keep imposed" if rec["mode"] != "prefill" else "")
    assert checked > 50
    # llava rows come first at each key, keep ratios in order
    kv16 = cmp[(cmp["mode"] == "kv-cache") & (cmp["gen_len"] == 16)]
    assert list(kv16["method"]) == ["llava", "dynamic-llava", "dynamic-llava"]
    assert list(kv16["vision_keep"].fillna(0)) == [0, 0.2, 0.5]


def test_paper_numbers_have_the_expected_sign(full):
    """Sanity of the synthetic data and of Δ% direction: dropping tokens saves compute and KV."""
    cmp = C.compare(full[1])
    dyn = cmp[cmp["method"] == "dynamic-llava"]
    assert (dyn["tmacs_delta_pct"] < 0).all()
    kv = dyn[dyn["mode"] == "kv-cache"]
    assert (kv["kv_bytes_generated_delta_pct"] < 0).all() and (kv["kv_bytes_prompt_delta_pct"] < 0).all()
    pre = dyn[(dyn["mode"] == "prefill") & (dyn["vision_keep"] == 0.2)].iloc[0]
    expect = _paper_tflops([IMG] * 2 + [115] * 2) / _paper_tflops([IMG] * 4)
    assert pre["tflops_paper_delta_pct"] == pytest.approx((expect - 1) * 100)


def test_last_summary_row_of_a_point_wins(tmp_path):
    rows = synthetic_point("llava", "prefill") + synthetic_point("dynamic-llava", "prefill")
    rerun = synthetic_point("dynamic-llava", "prefill")
    rerun[-1]["tmacs"] = 123.0
    path = write(tmp_path, rows + rerun)
    cmp = C.compare(load_many([path]))
    assert len(cmp) == 2
    dyn = cmp[cmp["method"] == "dynamic-llava"].iloc[0]
    assert dyn["tmacs"] == 123.0
    assert dyn["tmacs_delta_pct"] == pytest.approx(pct(123.0, rows[1]["tmacs"]))


def test_missing_baseline_is_a_dash_not_a_crash(tmp_path):
    rows = synthetic_point("llava", "prefill") + synthetic_point("dynamic-llava", "prefill")
    rows += synthetic_point("dynamic-llava", "kv-cache", gen_len=8)  # no llava kv-cache row
    cmp = C.compare(load_many([write(tmp_path, rows)]))
    kv = cmp[cmp["mode"] == "kv-cache"].iloc[0]
    assert all(pd.isna(kv[f"{m}_delta_pct"]) for m in C.DELTA_METRICS)
    assert pd.isna(kv["token_agreement"])
    md = T.to_markdown(cmp)
    kv_table = md[md.index("### kv-cache"):]
    row = next(line for line in kv_table.splitlines() if line.startswith("| dynamic-llava"))
    assert "(—)" in row and "no llava row at the same point" in kv_table
    text = _text(T.render_table(cmp))
    assert "(—)" in text


def test_several_keeps_each_compared_to_the_one_llava_row(full):
    rows, df = full
    cmp = C.compare(df)
    pre = cmp[cmp["mode"] == "prefill"]
    llava = next(r for r in summaries_of(rows) if r["mode"] == "prefill" and r["method"] == "llava")
    for vk in (0.2, 0.5):
        dyn = pre[pre["vision_keep"] == vk].iloc[0]
        assert dyn["ttft_ms_delta_pct"] == pytest.approx(pct(dyn["ttft_ms"], llava["ttft_ms"]))


def test_different_environments_are_flagged(tmp_path):
    a = write(tmp_path / "a", synthetic_point("llava", "prefill", env_id=ENV_A))
    b = write(tmp_path / "b", synthetic_point("dynamic-llava", "prefill", env_id=ENV_B))
    cmp = C.compare(load_many([a, b]))
    dyn = cmp[cmp["method"] == "dynamic-llava"].iloc[0]
    assert dyn["env_mismatch"] and dyn["env_mixed"] and dyn["baseline_env_id"] == ENV_A
    assert set(cmp["env"]) == {"A", "B"}
    md = T.to_markdown(cmp)
    assert ENV_A in md and ENV_B in md and "different environments" in md and "†" in md
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "| env |" in header
    # one environment: no env column, no flag
    one = T.to_markdown(C.compare(load_many([a])))
    assert "env" not in one.splitlines()[2] and "different environments" not in one


def test_same_point_from_two_environments_is_not_merged(tmp_path):
    a = write(tmp_path / "a", synthetic_point("llava", "prefill", env_id=ENV_A)
              + synthetic_point("dynamic-llava", "prefill", env_id=ENV_A))
    b = write(tmp_path / "b", synthetic_point("llava", "prefill", env_id=ENV_B, slow=2.0)
              + synthetic_point("dynamic-llava", "prefill", env_id=ENV_B, slow=2.0))
    cmp = C.compare(load_many([a, b]))
    assert len(cmp) == 4
    dyn = cmp[cmp["method"] == "dynamic-llava"]
    assert not dyn["env_mismatch"].any()  # each compared with llava from its own environment
    assert dyn["baseline_env_id"].tolist() == dyn["env_id"].tolist()


def _md_tables(md: str) -> list[list[str]]:
    tables, cur = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            cur.append(line)
        elif cur:
            tables.append(cur)
            cur = []
    return tables + ([cur] if cur else [])


def _cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]


def test_markdown_parses_as_tables(full):
    rows, df = full
    cmp = C.compare(df)
    md = T.to_markdown(cmp)
    tables = _md_tables(md)
    assert len(tables) == 3
    assert [line for line in md.splitlines() if line.startswith("### ")][0].startswith("### prefill")
    for table in tables:
        n = len(_cells(table[0]))
        assert n >= 8
        assert re.fullmatch(r"\|(:?-{3,}:?\|)+", table[1]) and len(_cells(table[1])) == n
        assert all(len(_cells(line)) == n for line in table[2:])
    prefill = tables[0]
    assert len(prefill) == 2 + 3  # header, separator, llava + 2 keeps
    header = _cells(prefill[0])
    dyn = dict(zip(header, _cells(prefill[3]), strict=True))
    rec = next(r for r in summaries_of(rows) if r["mode"] == "prefill" and r["vision_keep"] == 0.2)
    base = base_of(rec, rows)
    assert dyn["MACs (fvcore)"] == f"{rec['tmacs'] * 1000:.3g} G ({pct(rec['tmacs'], base['tmacs']):+.1f}%)"
    # one TTFT sample a side: no CI can be had, so the Δ% is marked as noise
    assert dyn["TTFT"] == f"{rec['ttft_ms']:.3g} ms (~{pct(rec['ttft_ms'], base['ttft_ms']):+.1f}%)"
    assert dyn["image kept"] == "115 (0.20)"  # of the 576 image tokens
    # blank line between a table and what follows (GitHub needs it)
    assert "|\n\n" in md


def test_csv_parses_back(full):
    rows, df = full
    cmp = C.compare(df)
    back = pd.read_csv(io.StringIO(T.to_csv(cmp)))
    assert len(back) == len(cmp) and list(back.columns) == list(cmp.columns)
    assert back["tmacs"].tolist() == pytest.approx(cmp["tmacs"].astype(float).tolist())
    assert back.loc[back["method"] == "llava", "tmacs_delta_pct"].isna().all()
    assert back["kv_bytes_generated"].dropna().map(float.is_integer).all()
    assert back["gen_len"].dropna().tolist() == [g for g in cmp["gen_len"] if not pd.isna(g)]


def test_paper_table_view(tmp_path):
    rows = sweep(gen_lens=(8, 16), keeps=(0.2,))
    rows += synthetic_point("llava", "kv-cache", gen_len=32, status="oom")
    rows += synthetic_point("dynamic-llava", "kv-cache", gen_len=32)
    df = load_many([write(tmp_path, rows)])
    ptab = P.paper_table(df)
    assert set(ptab["measure"]) == {"prefill_ms", "no_cache_total_ms", "kv_cache_peak_mem_bytes"}
    for rec in summaries_of(rows):
        col = {"prefill": "ttft_ms", "no-cache": "total_ms", "kv-cache": "peak_mem_bytes"}[rec["mode"]]
        got = ptab[(ptab["method"] == rec["method"]) & (ptab["gen_len"].fillna(0) == (rec["gen_len"] or 0))
                   & (ptab["measure"].str.startswith(rec["mode"].replace("-", "_")[:4]))]
        got = got.iloc[0]
        assert (pd.isna(got["value"]) and rec[col] is None) or got["value"] == pytest.approx(rec[col])
        base = base_of(rec, rows)
        if rec["method"] != "llava" and base[col] is not None:
            assert got["delta_pct"] == pytest.approx(pct(rec[col], base[col]))
    md = P.paper_to_markdown(ptab)
    (table,) = _md_tables(md)
    header = _cells(table[0])
    assert header[:3] == ["method", "keep v/t", "prefill time"]
    assert "w/o cache total, gen 16" in header and "w/ cache peak mem, gen 32" in header
    llava = dict(zip(header, _cells(table[2]), strict=True))
    assert llava["w/ cache peak mem, gen 32"] == "OOM"
    dyn = dict(zip(header, _cells(table[3]), strict=True))
    assert dyn["keep v/t"] == "0.2/0.5"
    assert dyn["w/ cache peak mem, gen 32"].endswith("(—)")  # llava OOM: nothing to compare with
    assert len(P.render_paper_table(ptab)) == 1
    back = pd.read_csv(io.StringIO(B.build_report(df, "csv", paper=True)))
    assert len(back) == len(ptab)


def _text(renderables) -> str:
    console = Console(record=True, width=400, file=io.StringIO())
    for r in renderables:
        console.print(r)
    return console.export_text()


def test_rich_tables_one_per_mode_with_units(full):
    tables = T.render_table(C.compare(full[1]))
    assert [t.title.split(" · ")[0] for t in tables] == ["prefill", "no-cache", "kv-cache"]
    text = _text(tables)
    assert "tiny · cpu · float32 · sdpa · batch 1" in text
    assert " MiB" in text and " ms" in text and " T" in text and " G" in text
    assert "text keep imposed" in text and "CPU timings" in text


def test_run_tables_compact_and_resumed(full, tmp_path):
    rows, _ = full
    rows = rows + synthetic_point("dynamic-llava", "kv-cache", gen_len=64, status="oom")
    text = _text(T.run_tables(rows))
    rec = next(r for r in summaries_of(rows) if r["mode"] == "kv-cache" and r["gen_len"] == 16
               and r["vision_keep"] == 0.5)
    base = base_of(rec, rows)
    assert f"{rec['tmacs']:.3g} T ({pct(rec['tmacs'], base['tmacs']):+.1f}%)" in text
    # 15 TPOT samples a side: the Δ% carries its bootstrap CI
    assert f"{rec['tpot_ms_median']:.3g} ms ({pct(rec['tpot_ms_median'], base['tpot_ms_median']):+.1f}% [" in text
    assert "0.5/0.5*" in text and "text keep imposed" in text
    assert "oom" in text  # a status column appears when a point did not end ok
    # a resumed sweep: only this run's dynamic-llava rows, Δ% against the llava recorded earlier
    mine = [r for r in rows if r.get("method") == "dynamic-llava"]
    alone = _text(T.run_tables(mine))
    assert "(-" not in alone  # no llava among them: no Δ%
    resumed = _text(T.run_tables(mine, folder_rows=rows))
    assert f"({pct(rec['tmacs'], base['tmacs']):+.1f}%)" in resumed
    assert not [ln for ln in resumed.splitlines() if ln.startswith("llava ")]  # the earlier llava row: not shown again


def test_compact_tables_fit_120_columns(full):
    from rich.console import Console

    console = Console(width=120, record=True)
    for table in T.render_table(C.compare(full[1])):
        console.print(table)
    lines = console.export_text().splitlines()
    body = [ln for ln in lines if "llava" in ln]  # table rows
    assert body and all(len(ln.rstrip()) <= 120 for ln in lines)
    n_rows = len(C.summary_rows(full[1]))
    assert len(body) == n_rows  # no row wrapped onto a second line


def test_build_report_formats(full):
    df = full[1]
    assert isinstance(B.build_report(df, "md"), str)
    assert len(B.build_report(df, "table")) == 3
    assert B.build_report(df, "csv").startswith("model,mode,")
    with pytest.raises(DynbenchError, match="--format must be one of"):
        B.build_report(df, "html")


def test_units_only_when_rendering():
    assert F.fmt_bytes(3 * 2**30) == "3.00 GiB" and F.fmt_bytes(5 * 2**20) == "5.00 MiB"
    assert F.fmt_ms(12.345) == "12.3 ms" and F.fmt_ms(838_000) == "838.0 s" and F.fmt_ms(None) == "—"
    assert F.fmt_t(2.4891) == "2.49 T" and F.fmt_t(0.0123) == "12.3 G"
    assert F.fmt_bytes(12 * 1024) == "12.0 KiB" and F.fmt_bytes(0) == "0 B"
    assert F.fmt_pct(-75.25) == "-75.2%" and F.fmt_pct(None) == "—"
    assert F.run_length([640, 640, 179, 179]) == "640×2 179×2" and F.run_length([5]) == "5"
    assert F.run_length(None) == "—"
    assert C.token_agreement([1, 2, 3, 4], [1, 2, 0]) == pytest.approx(2 / 3)
    assert C.token_agreement([[1, 2]], [1, 2]) == 1.0
    assert C.token_agreement(None, [1]) is None and C.token_agreement([], [1]) is None
    assert F.delta_pct(1.0, 0) is None and F.delta_pct(None, 1.0) is None and F.delta_pct(0, 0) == 0.0


@pytest.mark.parametrize("content, message", [
    ("", "holds no records"),
    ("\n\n", "holds no records"),
    ("this is not json\n", "corrupt record"),
    ('{"a": 1}\n{"a": \n{"a": 3}\n', "corrupt record"),
    ('{"a": 1}\n', "not dynbench records"),
])
def test_empty_or_corrupt_records_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / RECORDS_FILE
    path.write_text(content)
    with pytest.raises(DynbenchError, match=message) as exc:
        load_many([str(path)])
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)


def test_missing_results_path(tmp_path):
    with pytest.raises(DynbenchError, match="no results at"):
        load_many([str(tmp_path / "nowhere")])
    with pytest.raises(DynbenchError, match="no results given"):
        load_many([])


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    path = write(tmp_path, synthetic_point("llava", "prefill"))
    with open(tmp_path / RECORDS_FILE, "a") as f:
        f.write('{"step": null, "mo')
    with pytest.warns(RuntimeWarning, match="truncated"):
        df = load_many([path])
    assert len(C.compare(df)) == 1


def test_only_step_rows_is_a_clear_error(tmp_path):
    rows = synthetic_point("llava", "kv-cache", gen_len=4)[:-1]  # interrupted before its summary
    df = load_many([write(tmp_path, rows)])
    with pytest.raises(DynbenchError, match="no summary rows"):
        B.build_report(df)


def test_latency_delta_carries_its_noise():
    """A clear slowdown carries a CI that excludes 0 %; the same samples again, or two samples
    a side, are marked as noise; the CI brackets the Δ% of the medians."""
    rng = np.random.default_rng(1)
    base = (10 * np.exp(rng.normal(0, 0.05, 20))).tolist()
    slow = (15 * np.exp(rng.normal(0, 0.05, 20))).tolist()
    rows = []
    for method, samples in (("llava", base), ("dynamic-llava", slow)):
        point = synthetic_point(method, "kv-cache", gen_len=21)
        point[-1].update(latency_ms_samples=samples, tpot_ms_median=float(np.median(samples)),
                         ttft_ms_samples=samples[:2], total_ms_samples=samples)
        rows += point
    cmp = C.records(C.compare(pd.DataFrame.from_records(rows)))
    dyn = next(r for r in cmp if r["method"] == "dynamic-llava")
    d = dyn["tpot_ms_median_delta_pct"]
    assert d == pytest.approx((np.median(slow) / np.median(base) - 1) * 100)
    assert 0 < dyn["tpot_ms_median_delta_ci_low"] < d < dyn["tpot_ms_median_delta_ci_high"]
    assert dyn["tpot_ms_median_delta_noise"] is False
    assert dyn["ttft_ms_delta_noise"] is True and dyn["ttft_ms_delta_ci_low"] is None  # 2 samples a side
    same = C.delta_ci(base, base)
    assert same[0] < 0 < same[1]  # A/A: the CI straddles 0 %


def test_report_help_lists_every_column_key(capsys):
    from dynbench.cli import main

    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    missing = [k for k in T.BY_KEY if k not in text]
    assert not missing, f"`report --columns` help does not name: {missing}"


def test_host_bound_tpot_and_its_roofline_ratio_are_labelled(tmp_path):
    """A CUDA TPOT measured mostly on host-bound steps says so, beside its roofline ratio; one measured
    mostly on GPU-bound steps does not; ops per step is shown with its Δ% vs llava."""
    rows = []
    for method, frac, ops in (("llava", 0.9, 160), ("dynamic-llava", 0.25, 168)):
        point = synthetic_point(method, "kv-cache", gen_len=8, device="cuda")
        point[-1].update(host_bound_frac=frac, ops_per_step=ops, tpot_roofline_ms=1.0, tpot_roofline_ratio=2.5,
                         roofline_projected=False, roofline_gpu="h200", roofline_tflops=989.4, roofline_gbps=4800.0)
        rows += point
    cmp = C.compare(load_many([write(tmp_path / "run", rows)]))
    (table,) = [t for t in T.mode_tables(cmp, ["method", "tpot", "tpot_roof", "ops", "host"]) if "kv-cache" in t.title]
    cells = {r[0]: r for r in table.rows}
    assert cells["llava"][1].endswith(T.HOST_BOUND) and "×2.50 host-bound" in cells["llava"][2]
    assert "host-bound" not in cells["dynamic-llava"][1] and "host-bound" not in cells["dynamic-llava"][2]
    assert cells["llava"][3] == "160" and cells["dynamic-llava"][3] == "168 (+5.0%)"
    assert cells["llava"][4] == "90%" and cells["dynamic-llava"][4] == "25%"
