"""The regression gate: statistical power on synthetic samples, exact checks, verdicts, outputs."""

import io
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from dynbench import regress
from dynbench.errors import DynbenchError
from dynbench.regress import (
    EXACT_METRICS,
    Baseline,
    ExactCheck,
    LatencyCheck,
    check,
    check_results,
    read_baseline,
    write_baseline,
)
from dynbench.report import check as render_check
from dynbench.results import RECORDS_FILE, append_record, load
from dynbench.stats import ratio_of_medians_ci

N, SEEDS, CV = 30, range(20), 0.05
GPU_ENV = {
    "env_id": "aaaaaaaaaaaa", "gpu_name": "NVIDIA H100 80GB HBM3", "driver_version": "550.54.15",
    "cuda_version": "12.4", "torch_version": "2.11.0", "transformers_version": "5.17.0",
    "fvcore_version": "0.1.5.post20221221",
}


def lognormal(rng, median, cv=CV, n=N):
    """Lognormal samples with the given median and coefficient of variation."""
    sigma = math.sqrt(math.log1p(cv**2))
    return (median * np.exp(rng.normal(0.0, sigma, n))).tolist()


def row(**over):
    """A synthetic kv-cache summary row of `dynamic-llava` on the tiny preset (GPU timings)."""
    r = {
        "model": "tiny", "method": "dynamic-llava", "mode": "kv-cache", "prompt_len": 64,
        "gen_len": 32, "vision_keep": 0.2, "text_keep": 0.5, "text_policy": "budget",
        "reuse_vision": None, "batch": 1, "seed": 0, "device": "cuda", "dtype": "float16",
        "attn": "sdpa", "step": None, "status": "ok", **GPU_ENV, "timer": "cuda_event",
        "throttled": False, "image_tokens_kept": 115, "text_tokens_fed": 31,
        "text_tokens_kept": 16, "layer_seq_lens": [1, 1, 1, 1],
        "layer_cache_lens": [671, 671, 211, 211], "kv_bytes": 1_810_432,
        "kv_bytes_prompt": 1_638_400, "kv_bytes_generated": 172_032, "params": 9_262_181,
        "tmacs": 0.01234567891, "flops_source": "fvcore", "tflops_paper": None,
        "tmacs_fastv": None, "peak_alloc_bytes": 52_428_800, "peak_reserved_bytes": 62_914_560,
        "latency_ms_samples": [10.0] * N,
    }
    r.update(over)
    return r


def base_of(*rows, environments=None):
    return Baseline(header={"dynbench_baseline": 1, "environments": environments or {}},
                    rows=tuple(rows), path="ci-gpu.jsonl")


def only(report, metric):
    found = [r for r in report.results if r.metric == metric]
    assert len(found) == 1, found
    return found[0]


def latency_verdicts(slowdown, cv=CV, **kw):
    verdicts = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        b = row(latency_ms_samples=lognormal(rng, 10.0, cv))
        c = row(latency_ms_samples=lognormal(rng, 10.0 * (1 + slowdown), cv))
        verdicts.append(only(check([c], base_of(b), **kw), regress.LATENCY_METRIC).verdict)
    return verdicts


# ----------------------------------------------------------------------- statistical power


def test_aa_no_false_alarms():
    verdicts = latency_verdicts(0.0)
    assert verdicts.count("regression") == 0 and verdicts.count("improvement") == 0


def test_ten_percent_slowdown_detected():
    assert latency_verdicts(0.10).count("regression") >= 19


def test_two_percent_slowdown_rarely_flagged():
    assert latency_verdicts(0.02).count("regression") <= 1


def test_ten_percent_speedup_is_an_improvement_and_can_fail():
    verdicts = latency_verdicts(-1 / 11)  # current median = baseline / 1.1
    assert verdicts.count("improvement") >= 19 and verdicts.count("regression") == 0
    rng = np.random.default_rng(0)
    b = row(latency_ms_samples=lognormal(rng, 11.0))
    c = row(latency_ms_samples=lognormal(rng, 10.0))
    assert check([c], base_of(b)).exit_code == 0
    assert check([c], base_of(b), fail_on_improvement=True).exit_code == 1


def test_bootstrap_is_deterministic_and_brackets_the_ratio():
    rng = np.random.default_rng(7)
    x, y = lognormal(rng, 10.0), lognormal(rng, 11.0)
    a = ratio_of_medians_ci(y, x, seed=0)
    assert a == ratio_of_medians_ci(y, x, seed=0)
    assert a[1] < a[0] < a[2]
    assert a[0] == pytest.approx(np.median(y) / np.median(x))


def _bootstrap_by_hand(y, x, seed=0, resamples=2000):
    """The documented rule, written out: rows of indices drawn in one call per side — all the
    baseline's first, then all the current's — a median per row, the ratios' 2.5 / 97.5 %
    quantiles (numpy's linear interpolation)."""
    rng = np.random.default_rng(seed)
    xi = rng.integers(0, len(x), (resamples, len(x)))
    yi = rng.integers(0, len(y), (resamples, len(y)))
    ratios = sorted(statistics.median(y[j] for j in yrow) / statistics.median(x[j] for j in xrow)
                    for xrow, yrow in zip(xi.tolist(), yi.tolist(), strict=True))
    def quantile(q):
        pos = (resamples - 1) * q
        lo = math.floor(pos)
        return ratios[lo] + (ratios[min(lo + 1, resamples - 1)] - ratios[lo]) * (pos - lo)
    return statistics.median(y) / statistics.median(x), quantile(0.025), quantile(0.975)


def test_bootstrap_is_the_documented_rule_exactly():
    rng = np.random.default_rng(3)
    x, y = lognormal(rng, 10.0, n=9), lognormal(rng, 12.0, n=11)  # odd and even sizes, a real shift
    got = ratio_of_medians_ci(y, x)
    assert got == pytest.approx(_bootstrap_by_hand(y, x), rel=1e-12)
    assert got[2] - got[1] > 0.01  # a real interval, not a point
    assert ratio_of_medians_ci(y, x, seed=1) != got  # the seed matters; 0 is the default
    ints = [10, 11, 12, 13, 14, 15]  # integer samples are read as floats (ratios, not floor division)
    assert ratio_of_medians_ci([2 * v for v in ints], ints)[0] == 2.0


def test_tolerance_alone_does_not_flag_noise():
    # an 8 % shift of the median on very noisy samples (CV 60 %): beyond the tolerance, but the
    # CI includes 1, so it passes; the rule needs both
    rng = np.random.default_rng(3)
    x, y = np.array(lognormal(rng, 10.0, cv=0.6)), np.array(lognormal(rng, 10.0, cv=0.6))
    y *= 1.08 * np.median(x) / np.median(y)
    ratio, lo, hi = ratio_of_medians_ci(y, x)
    assert ratio == pytest.approx(1.08) and lo < 1 < hi
    assert regress.classify_ratio(ratio, (lo, hi), 0.05) == "pass"
    assert regress.classify_ratio(1.03, (1.01, 1.05), 0.05) == "pass"  # real but within tol
    assert regress.classify_ratio(1.08, (1.01, 1.15), 0.05) == "regression"
    assert regress.classify_ratio(0.92, (0.85, 0.99), 0.05) == "improvement"


# -------------------------------------------------------------------------------- exact


CHANGED = {
    "layer_seq_lens": [1, 1, 2, 1], "layer_cache_lens": [671, 671, 212, 211],
    "image_tokens_kept": 116, "text_tokens_fed": 30, "text_tokens_kept": 15,
    "kv_bytes": 1_810_433, "kv_bytes_prompt": 1_638_401, "kv_bytes_generated": 172_033,
    "params": 9_262_182, "tmacs": 0.01234567891 * (1 + 1e-8), "tflops_paper": 1.53,
    "tmacs_fastv": 3.817,
}


@pytest.mark.parametrize("metric", EXACT_METRICS)
def test_any_exact_change_is_caught_and_named(metric):
    b = row(tflops_paper=1.52, tmacs_fastv=3.816)
    c = {**b, metric: CHANGED[metric]}
    report = check([c], base_of(b))
    assert [r.metric for r in report.regressions] == [metric]
    assert report.exit_code == 1
    assert metric in ExactCheck(metric).fails(c, b)
    assert ExactCheck(metric).fails(b, b) is None


def test_exact_tolerance_and_list_message():
    b = row()
    same = row(tmacs=0.01234567891 * (1 + 1e-11))  # within 1e-9
    assert check([same], base_of(b)).exit_code == 0
    changed = row(layer_cache_lens=[671, 671, 212, 212])
    note = only(check([changed], base_of(b)), "layer_cache_lens").note
    assert "layer 2: 211 → 212" in note and "layer 3: 211 → 212" in note
    shorter = row(layer_seq_lens=[1, 1, 1])
    assert "4 → 3 entries" in only(check([shorter], base_of(b)), "layer_seq_lens").note


def test_version_mismatch_makes_tmacs_not_comparable_but_checks_counts():
    b = row()
    c = row(env_id="bbbbbbbbbbbb", torch_version="2.12.0", tmacs=0.02, image_tokens_kept=116)
    report = check([c], base_of(b))
    tm = only(report, "tmacs")
    assert tm.verdict == "not comparable" and "torch_version 2.11.0 → 2.12.0" in tm.note
    assert only(report, "image_tokens_kept").verdict == "regression"
    assert only(report, "kv_bytes").verdict == "pass"
    assert only(report, "peak_alloc_bytes").verdict == "not comparable"  # allocator: torch differs
    assert only(report, regress.LATENCY_METRIC).verdict == "pass"  # same GPU and driver
    assert report.exit_code == 1


def test_flops_source_change_makes_tmacs_not_comparable():
    report = check([row(flops_source="analytic", tmacs=0.05)], base_of(row()))
    assert only(report, "tmacs").verdict == "not comparable" and report.exit_code == 0


def test_env_id_only_rows_use_header_environments():
    strip = lambda r: {k: v for k, v in r.items() if k not in GPU_ENV or k == "env_id"}
    b, c = strip(row()), strip(row(env_id="bbbbbbbbbbbb"))
    # env ids differ and nothing says why: every environment-dependent check is not comparable
    report = check([c], base_of(b))
    for metric in ("tmacs", "peak_alloc_bytes", regress.LATENCY_METRIC):
        assert only(report, metric).verdict == "not comparable", metric
    assert only(report, "image_tokens_kept").verdict == "pass"
    # same env id: everything compares
    assert all(r.verdict == "pass" for r in check([strip(row())], base_of(b)).results)
    # header + current environments say only fvcore changed: latency and memory compare again
    envs = {"aaaaaaaaaaaa": GPU_ENV, "bbbbbbbbbbbb": {**GPU_ENV, "fvcore_version": "0.1.6"}}
    report = check([c], base_of(b, environments={"aaaaaaaaaaaa": GPU_ENV}),
                   current_environments={"bbbbbbbbbbbb": envs["bbbbbbbbbbbb"]})
    assert only(report, "tmacs").verdict == "not comparable"
    assert "fvcore_version" in only(report, "tmacs").note
    assert only(report, "peak_alloc_bytes").verdict == "pass"
    assert only(report, regress.LATENCY_METRIC).verdict == "pass"


# ------------------------------------------------------------------ comparability, missing


def test_other_preset_is_an_input_error():
    with pytest.raises(DynbenchError, match="model preset llava-1.5-7b"):
        check([row(model="tiny")], base_of(row(model="llava-1.5-7b")))


def test_other_device_everywhere_is_an_input_error():
    with pytest.raises(DynbenchError, match="shares no point.*device cuda vs cpu"):
        check([row(device="cpu")], base_of(row()))


def test_nothing_comparable_is_an_input_error():
    blank = {m: None for m in (*EXACT_METRICS, *regress.MEMORY_METRICS)}
    b = row(**blank)
    c = row(**blank, gpu_name="NVIDIA A100-SXM4-80GB", env_id="cccccccccccc")
    with pytest.raises(DynbenchError, match="nothing could be compared"):
        check([c], base_of(b))


def test_throttled_and_other_gpu_are_not_comparable():
    rng = np.random.default_rng(0)
    b = row(latency_ms_samples=lognormal(rng, 10.0))
    slow = lognormal(rng, 13.0)
    for c, reason in (
        (row(latency_ms_samples=slow, throttled=True), "run throttled"),
        (row(latency_ms_samples=slow, gpu_name="NVIDIA A100-SXM4-80GB", env_id="c" * 12), "gpu_name"),
        (row(latency_ms_samples=slow, driver_version="560.1", env_id="c" * 12), "driver_version"),
    ):
        report = check([c], base_of(b))
        lat = only(report, regress.LATENCY_METRIC)
        assert lat.verdict == "not comparable" and reason in lat.note
        assert report.exit_code == 0
    thr = check([row(latency_ms_samples=slow)], base_of({**b, "throttled": True}))
    assert "baseline throttled" in only(thr, regress.LATENCY_METRIC).note


def test_cpu_timings_are_reported_not_gated_unless_asked():
    rng = np.random.default_rng(0)
    cpu = dict(device="cpu", dtype="float32", timer="cpu", gpu_name=None, driver_version=None,
               peak_alloc_bytes=None, peak_reserved_bytes=None)
    b = row(**cpu, latency_ms_samples=lognormal(rng, 10.0))
    c = row(**cpu, latency_ms_samples=lognormal(rng, 12.0))
    report = check([c], base_of(b))
    lat = only(report, regress.LATENCY_METRIC)
    assert lat.verdict == "info" and "would be regression" in lat.note and lat.ci is not None
    assert report.exit_code == 0
    assert not [r for r in report.results if r.metric in regress.MEMORY_METRICS]  # null: skipped
    gated = check([c], base_of(b), gate_cpu_latency=True)
    assert only(gated, regress.LATENCY_METRIC).verdict == "regression" and gated.exit_code == 1


def test_missing_points_are_reported_both_ways():
    llava = row(method="llava", vision_keep=None, text_keep=None, image_tokens_kept=576)
    prefill = row(mode="prefill", gen_len=None)
    report = check([row(), prefill], base_of(row(), llava))
    missing = {(r.point["method"], r.point["mode"]): r.note for r in report.results
               if r.verdict == "missing"}
    assert missing == {("llava", "kv-cache"): "in the baseline, not in this run",
                       ("dynamic-llava", "prefill"): "new point, not in the baseline"}
    assert report.exit_code == 1  # the baseline's llava point did not run
    assert "1 baseline point(s) missing from the run: llava kv-cache" in render_check.missing_line(report)
    assert check([row(), prefill], base_of(row(), llava), allow_missing=True).exit_code == 0
    grown = check([row(), prefill], base_of(row()))  # a new point alone never fails
    assert grown.exit_code == 0 and render_check.missing_line(grown) is None


def test_metric_measured_on_one_side_is_missing():
    report = check([row(tmacs=None)], base_of(row()))
    assert only(report, "tmacs").verdict == "missing"
    assert report.exit_code == 1 and "tmacs" in render_check.missing_line(report)  # the exact FLOP gate did not run
    assert check([row(tmacs=None)], base_of(row()), allow_missing=True).exit_code == 0
    new_metric = check([row()], base_of(row(tmacs=None)))
    assert only(new_metric, "tmacs").verdict == "missing" and new_metric.exit_code == 0


def test_keeps_and_methods_sharing_a_key_are_separate_points():
    b = [row(vision_keep=v, image_tokens_kept=int(576 * v)) for v in (0.1, 0.2, 0.5)]
    report = check(list(reversed(b)), base_of(*b))
    assert report.exit_code == 0 and not [r for r in report.results if r.verdict == "missing"]


def test_last_summary_row_of_a_point_wins_and_step_rows_are_ignored():
    b = row()
    rerun = [row(status="error: boom", image_tokens_kept=None), row(step=0, kv_bytes=1), row()]
    assert check(rerun, base_of(b)).exit_code == 0


# ------------------------------------------------------------------------- memory, status


def test_allocator_peaks_use_the_memory_tolerance():
    b = row()
    up = check([row(peak_alloc_bytes=int(52_428_800 * 1.02))], base_of(b))
    assert only(up, "peak_alloc_bytes").verdict == "regression" and up.exit_code == 1
    small = check([row(peak_alloc_bytes=int(52_428_800 * 1.005))], base_of(b))
    assert only(small, "peak_alloc_bytes").verdict == "pass" and small.exit_code == 0
    assert check([row(peak_alloc_bytes=int(52_428_800 * 1.02))], base_of(b),
                 mem_tol=0.05).exit_code == 0
    down = check([row(peak_reserved_bytes=50_000_000)], base_of(b))
    assert only(down, "peak_reserved_bytes").verdict == "improvement"


def test_status_change_is_a_regression():
    report = check([row(status="oom", image_tokens_kept=None)], base_of(row()))
    assert [(r.metric, r.verdict) for r in report.results] == [("status", "regression")]
    assert report.exit_code == 1
    both = check([row(status="oom"), row(mode="prefill", gen_len=None)],
                 base_of(row(status="oom"), row(mode="prefill", gen_len=None)))
    assert only(both, "status").verdict == "info" and both.exit_code == 0


def test_bad_tolerance_is_an_input_error():
    with pytest.raises(DynbenchError, match="--latency-tol"):
        check([row()], base_of(row()), latency_tol=5)


# --------------------------------------------------------------------------------- output


def _md_cells(line):
    cells, cur, i = [], "", 0
    while i < len(line):
        if line[i] == "\\":
            cur += line[i:i + 2]
            i += 2
            continue
        if line[i] == "|":
            cells.append(cur)
            cur = ""
        else:
            cur += line[i]
        i += 1
    return cells[1:]  # the text before the first pipe


def test_markdown_summary_is_a_table():
    rng = np.random.default_rng(0)
    b = row(latency_ms_samples=lognormal(rng, 10.0))
    c = row(latency_ms_samples=lognormal(rng, 12.0), image_tokens_kept=116,
            status="ok", text_policy="budget")
    md = render_check.to_markdown(check([c, row(method="llava", vision_keep=None, text_keep=None)],
               base_of(b)))
    lines = md.strip().splitlines()
    assert lines[0].startswith("### ❌")
    table = [ln for ln in lines if ln.startswith("|")]
    assert table[1].replace("|", "").replace("-", "").strip() == ""
    widths = {len(_md_cells(ln)) for ln in table}
    assert widths == {7}
    assert len(table) >= 5  # header, separator, token regression, latency, missing point
    assert any("image_tokens_kept" in ln and "regression" in ln for ln in table)
    # all passing: still a table, one line saying so
    ok = render_check.to_markdown(check([row()], base_of(row()))).strip().splitlines()
    assert ok[0].startswith("### ✅") and len({len(_md_cells(ln)) for ln in ok[2:]}) == 1


def test_markdown_escapes_pipes():
    report = check([row(status="error: a|b")], base_of(row()))
    line = [ln for ln in render_check.to_markdown(report).splitlines() if "error: a" in ln][0]
    assert "a\\|b" in line and len(_md_cells(line)) == 7


def test_render_and_json():
    rng = np.random.default_rng(0)
    b = row(latency_ms_samples=lognormal(rng, 10.0))
    report = check([row(latency_ms_samples=lognormal(rng, 12.0))], base_of(b))
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_check.render(report))
    text = console.export_text()
    assert "regression" in text and "latency" in text and "kv-cache" in text
    rows = [r.as_dict() for r in report.results]
    assert len(rows) == len(report.results)
    for r in rows:
        assert json.loads(json.dumps(r, allow_nan=False)) == r
        assert {"model", "method", "metric", "verdict", "baseline", "current"} <= r.keys()
    lat = [r for r in rows if r["metric"] == "latency_ms_samples"][0]
    assert lat["verdict"] == "regression" and lat["ci_low"] > 1 and lat["ratio"] > 1.05
    assert render_check.summary_line(report).startswith("FAIL")


# ------------------------------------------------------------------------ baseline files


def _write_run(folder, rng, slowdown=0.0, **over):
    path = Path(folder) / RECORDS_FILE
    for method, vk, tk in (("llava", None, None), ("dynamic-llava", 0.2, 0.5)):
        spec = dict(method=method, vision_keep=vk, text_keep=tk,
                    image_tokens_kept=576 if vk is None else 115, **over)
        for step in range(3):
            append_record(path, row(step=step, **spec, latency_ms_samples=None))
        append_record(path, row(**spec, latency_ms_samples=lognormal(rng, 10.0 * (1 + slowdown))))
    return path


def test_baseline_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    _write_run(tmp_path / "a", rng)
    append_record(tmp_path / "a" / RECORDS_FILE, row(method="llava", vision_keep=None,
                  text_keep=None, image_tokens_kept=576, latency_ms_samples=[10.0] * N))  # rerun
    out = tmp_path / "baselines" / "ci-gpu.jsonl"
    written = write_baseline(tmp_path / "a", out)
    lines = out.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["dynbench_baseline"] == 1 and header["models"] == ["tiny"]
    assert header["points"] == 2 == len(lines) - 1
    env = header["environments"]["aaaaaaaaaaaa"]
    assert env["gpu_name"] == GPU_ENV["gpu_name"] and env["torch_version"] == "2.11.0"
    assert env["dtype"] == "float16"
    read = read_baseline(out)
    assert list(read.rows) == list(written.rows)
    assert all(r["step"] is None for r in read.rows)
    assert [r["latency_ms_samples"] for r in read.rows if r["method"] == "llava"] == [[10.0] * N]
    assert "2 points of tiny" in read.describe()
    # A/A against itself: everything passes, through both entry points
    report = check_results(tmp_path / "a", out)
    assert report.exit_code == 0 and {r.verdict for r in report.results} == {"pass"}
    assert check(load(tmp_path / "a"), read).exit_code == 0  # DataFrame input (NaN → None)
    # a slower run of the same points fails
    _write_run(tmp_path / "b", np.random.default_rng(1), slowdown=0.10)
    slow = check_results(tmp_path / "b", out)
    assert slow.exit_code == 1
    assert {r.metric for r in slow.regressions} == {"latency_ms_samples"}


def test_baseline_refuses_errors_and_foreign_files(tmp_path):
    path = tmp_path / "run" / RECORDS_FILE
    append_record(path, row(status="error: CUDA error"))
    with pytest.raises(DynbenchError, match="ended in an error"):
        write_baseline(path, tmp_path / "b.jsonl")
    with pytest.raises(DynbenchError, match="not a dynbench baseline"):
        read_baseline(path)
    with pytest.raises(DynbenchError, match="no baseline at"):
        read_baseline(tmp_path / "nope.jsonl")
    steps_only = tmp_path / "steps" / RECORDS_FILE
    append_record(steps_only, row(step=0))
    with pytest.raises(DynbenchError, match="no finished point"):
        write_baseline(steps_only, tmp_path / "b.jsonl")


def test_write_markdown_appends(tmp_path):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    render_check.append_markdown(check([row()], base_of(row())), summary)
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "| verdict |" in text


def test_latency_check_needs_enough_samples():
    out = LatencyCheck().evaluate(row(latency_ms_samples=[10.0, 11.0, 12.0]), row())
    assert out.verdict == "info" and "too few" in out.note


# ------------------------------------------------------------------------------- workflow


def test_workflow_is_valid_and_runs_the_gate():
    wf = yaml.safe_load((Path(__file__).parents[1] / ".github/workflows/dynbench-gpu.yml").read_text())
    assert wf.get("on", wf.get(True))  # YAML 1.1 reads the bare key `on` as True
    shard, gpu, cpu = wf["jobs"]["shard"], wf["jobs"]["gpu"], wf["jobs"]["cpu"]
    assert shard["runs-on"] == gpu["runs-on"] == ["self-hosted", "gpu"] and cpu["runs-on"] == "ubuntu-latest"
    # one group for the GPU runners whatever the branch; nothing in progress (a manual refresh) is cancelled
    assert "${{" not in wf["concurrency"]["group"] and wf["concurrency"]["cancel-in-progress"] is False

    def commands(job):
        return [" ".join(str(s.get("run", "")).split()) for s in job["steps"]]

    s, g, c = commands(shard), commands(gpu), commands(cpu)
    for job in (shard, gpu):
        assert job["steps"][0]["uses"].startswith("actions/checkout@")
        cache = next(st for st in job["steps"] if str(st.get("uses", "")).startswith("actions/cache@"))
        assert cache["with"]["path"] == ".venv" and "hashFiles('pyproject.toml')" in cache["with"]["key"]
        assert any('pip install -e ".[dev]"' in cmd for cmd in commands(job))
    # the matrix: every shard of the suite once, each uploaded; the merge job waits for all of them
    matrix = shard["strategy"]["matrix"]["shard"]
    assert shard["strategy"]["fail-fast"] is False and matrix == list(range(1, len(matrix) + 1))
    n = len(matrix)
    assert (f"dynbench run --suite suites/ci-gpu.yaml --shard ${{{{ matrix.shard }}}}/{n} "
            "--out results/ci-gpu/shards/${{ matrix.shard }}") in s
    assert any("nvidia-smi" in cmd and "torch.version.cuda" in cmd for cmd in s)
    up = next(st for st in shard["steps"] if str(st.get("uses", "")).startswith("actions/upload-artifact@"))
    assert up["if"] == "always()" and "results/ci-gpu/shards/${{ matrix.shard }}" in up["with"]["path"]
    assert "${{ matrix.shard }}" in up["with"]["name"]
    assert gpu["needs"] == "shard" and "!cancelled()" in gpu["if"]
    down = next(st for st in gpu["steps"] if str(st.get("uses", "")).startswith("actions/download-artifact@"))
    assert down["with"]["path"] == "results/ci-gpu/shards" and up["with"]["name"].startswith(
        down["with"]["pattern"].split("*")[0])
    order = [next(i for i, cmd in enumerate(g) if prefix in cmd) for prefix in (
        "dynbench merge results/ci-gpu/shards/* --out results/ci-gpu",
        "dynbench check results/ci-gpu --baseline results/baselines/ci-gpu.jsonl \\ "
        '--summary-md "$GITHUB_STEP_SUMMARY"',
        "dynbench plot results/ci-gpu --out results/ci-gpu/figures",
    )]
    assert order == sorted(order)
    gate = next(cmd for cmd in g if "dynbench check" in cmd)
    assert "::error::" in gate and "refs/heads/main" in gate and "::warning::" in gate  # no baseline: visible
    uploads = [st for st in gpu["steps"] if str(st.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["if"] == "always()" and "results/ci-gpu" in uploads[0]["with"]["path"]
    assert "!cancelled()" in next(st for st in gpu["steps"] if "dynbench plot" in str(st.get("run")))["if"]
    assert "dynbench run --suite suites/smoke.yaml --out results/smoke" in c
    assert ("dynbench check results/smoke --baseline results/baselines/smoke-cpu.jsonl "
            '--summary-md "$GITHUB_STEP_SUMMARY"') in c


@pytest.mark.filterwarnings("ignore:.*max_position_embeddings")
def test_gpu_suites_expand_and_build_each_model_once(tmp_path):
    """The GPU suites expand (on meta here: no GPU needed), and `order_points` builds each model once
    although ci-gpu.yaml alternates methods."""
    from dynbench.records import MODEL_KEY, key_of
    from dynbench.spec import load_suite
    from dynbench.sweep import order_points

    def builds(points):
        keys = [key_of(p.as_dict(), MODEL_KEY) for p in points]
        return sum(1 for i, k in enumerate(keys) if i == 0 or k != keys[i - 1])

    for name in ("ci-gpu", "paper", "baselines-gpu"):
        suite = yaml.safe_load((Path(__file__).parents[1] / "suites" / f"{name}.yaml").read_text())
        for part in (suite.get("defaults") or {}, *suite["sweeps"]):
            if part.get("device") == "cuda":
                part["device"] = "meta"
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(suite))
        points = load_suite(path)
        assert builds(order_points(points)) == len({key_of(p.as_dict(), MODEL_KEY) for p in points})
        if name == "ci-gpu":
            assert len(points) == 9 and builds(points) > builds(order_points(points)) == 2


def test_write_markdown_to_a_bad_path_is_an_input_error(tmp_path):
    with pytest.raises(DynbenchError, match="--summary-md"):
        render_check.append_markdown(check([row()], base_of(row())), tmp_path)  # a folder


def test_env_snapshots_beside_the_records_fill_the_header(tmp_path):
    rng = np.random.default_rng(0)
    strip = {k: None for k in GPU_ENV if k != "env_id"}
    path = _write_run(tmp_path / "a", rng)
    rows = [{k: v for k, v in json.loads(ln).items() if k not in strip}
            for ln in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # rows carry env_id only
    (tmp_path / "a" / "env").mkdir()
    (tmp_path / "a" / "env" / "aaaaaaaaaaaa.json").write_text(
        json.dumps({**GPU_ENV, "python_version": "3.11.9"}))
    header = write_baseline(tmp_path / "a", tmp_path / "b.jsonl").header
    env = header["environments"]["aaaaaaaaaaaa"]
    assert env["gpu_name"] == GPU_ENV["gpu_name"] and env["python_version"] == "3.11.9"
    assert check_results(tmp_path / "a", tmp_path / "b.jsonl").exit_code == 0


# -------------------------------------------------------------------------------- kernel launches


def test_one_more_op_per_step_fails_the_gate_exactly():
    """ops_per_step / ops_total: any change is a regression (no tolerance), named; an older
    baseline without them is `missing`, never a failure; another torch makes them not comparable."""
    b = row(ops_per_step=160, ops_total=671)
    assert check([b], base_of(b)).exit_code == 0
    more = row(ops_per_step=161, ops_total=675)
    report = check([more], base_of(b))
    assert {r.metric for r in report.regressions} == {"ops_per_step", "ops_total"} and report.exit_code == 1
    assert "160 → 161" in only(report, "ops_per_step").note
    assert only(check([b], base_of(row())), "ops_per_step").verdict == "missing"
    other = row(env_id="bbbbbbbbbbbb", torch_version="2.13.0", ops_per_step=150, ops_total=600)
    assert only(check([other], base_of(b)), "ops_per_step").verdict == "not comparable"
