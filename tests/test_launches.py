"""Kernel launches per step (`measure/launches.py`) against counts made by hand from the model's
structure, and the host-bound rule (`measure/host.py`) on hand-made timings."""

import collections

import pytest
import torch

from dynbench.measure.host import HOST_BOUND_TOL, dominates, host_bound, host_columns
from dynbench.measure.launches import LaunchCounter, count_launches, launch_columns, launches_kernel
from dynbench.models.llava import DropConfig
from dynbench.modes import run_mode

BUDGET = DropConfig(vision_keep=0.2, text_keep=0.5, text_policy="budget")

# One LlamaDecoderLayer on one new token, by hand from transformers' modeling_llama (sdpa, fp32):
RMS_NORM = ["pow", "mean", "add", "rsqrt", "mul", "mul"]  # x²; mean; + eps; rsqrt; x · r; weight · x
ROPE = ["mul", "neg", "cat", "mul", "add"]  # x·cos + rotate_half(x)·sin; rotate_half = cat(−x2, x1)
LAYER = (
    RMS_NORM
    + ["linear"] * 3  # q, k, v projections
    + ROPE + ROPE  # q and k
    + ["cat", "cat"]  # K and V appended to the layer's cache (HF DynamicCache-style torch.cat)
    + ["scaled_dot_product_attention", "linear", "add"]  # attention, o_proj, residual
    + RMS_NORM
    + ["linear", "silu", "linear", "mul", "linear", "add"]  # gate, act, up, gate·up, down, residual
)
PER_STEP = (
    ["embedding", "full"]  # the token's embedding; its position id (torch.full)
    + ["mul", "cat", "cos", "mul", "sin", "mul"]  # rotary: inv_freq × pos, cat(f, f), cos·s, sin·s
    + RMS_NORM + ["linear", "argmax"]  # final norm, LM head, greedy pick
)
# Dynamic-LLaVA's output-text predictor on the new token (models/dynamic_llava.TextPredictor)
TEXT_PREDICTOR = ["layer_norm"] + ["linear", "gelu"] * 3 + ["linear"]


@pytest.fixture(scope="module")
def decode_ops(pair, prompt):
    """Per method: the kernel-launching op names of each step of a kv-cache run."""
    out = {}
    for net in pair:
        counter = LaunchCounter()
        run_mode("kv-cache", net, prompt, BUDGET, 4, step_timer=counter)
        out[net.method] = counter
    return out


def test_a_decode_step_is_the_hand_count_per_layer_times_layers_plus_the_step_constant(pair, decode_ops):
    layers = pair[0].preset.layers
    llava = decode_ops["llava"]
    expected = collections.Counter(LAYER * layers + PER_STEP)
    for names, n in zip(llava.names[1:], llava.per_step[1:], strict=True):
        # rotary's inv_freq (1, d/2, 1) @ position (1, 1, 1): one op, `matmul` on torch 2.11, its
        # broadcast `mul` from torch 2.13 on
        assert names.count("matmul") <= 1
        assert collections.Counter("mul" if op == "matmul" else op for op in names) == expected
        assert n == len(LAYER) * layers + len(PER_STEP) == 36 * layers + 16
    assert len(llava.per_step) == 4  # prefill + 3 decode steps; the exhausted call is not a step


def test_dynamic_llava_adds_exactly_its_predictor(pair, decode_ops):
    """dynamic-llava − llava per decode step = the output-text predictor's own ops, counted by
    hand and by running the predictor alone on one token (budget policy: no decision read)."""
    dyn = pair[1]
    alone, token = LaunchCounter(), torch.zeros(1, 1, dyn.preset.hidden)
    with torch.inference_mode(), alone.track("step"):
        dyn.model.output_text_score_predictor(token)
    assert alone.names == [TEXT_PREDICTOR]
    for d, lv in zip(decode_ops["dynamic-llava"].per_step[1:], decode_ops["llava"].per_step[1:], strict=True):
        assert d - lv == len(TEXT_PREDICTOR) == alone.per_step[0]


def test_counts_are_deterministic_and_views_do_not_count(pair, prompt, decode_ops):
    again = count_launches("kv-cache", pair[0], prompt, BUDGET, 4)
    assert again == decode_ops["llava"].per_step
    aten = torch.ops.aten
    assert not launches_kernel(aten.view.default) and not launches_kernel(aten.transpose.int)
    assert not launches_kernel(aten.empty.memory_format) and not launches_kernel(aten._unsafe_view.default)
    assert launches_kernel(aten.mm.default) and launches_kernel(aten._to_copy.default)


def test_launch_columns_by_hand():
    assert launch_columns(["prefill", "decode", "decode", "decode"], [191, 160, 162, 160],
                          headline="decode") == {"ops_per_step": 160, "ops_total": 673}
    assert launch_columns(["forward"] * 3, [193, 194, 195],
                          headline="forward") == {"ops_per_step": 194, "ops_total": 582}
    assert launch_columns(["prefill"], [191], headline="prefill") == {"ops_per_step": 191, "ops_total": 191}
    assert launch_columns(["prefill"], None, headline="decode") == {"ops_per_step": None, "ops_total": None}


def test_host_bound_rule_by_hand():
    # GPU-bound: the queue ran ahead, device time ≫ host time. Host-bound: the GPU waited.
    assert host_bound(6.0, 1.0) is False and host_bound(5.1, 5.0) is True
    assert host_bound(5.0 * (1 + HOST_BOUND_TOL), 5.0) is True
    assert host_bound(5.0 * (1 + 2 * HOST_BOUND_TOL), 5.0) is False
    assert host_bound(None, 5.0) is None and host_bound(5.0, None) is None
    # kv-cache: step 0 (prefill) is left out; 2 of the 4 decode steps host-bound
    cols = host_columns(["prefill", "decode", "decode"], [[30.0, 5.0, 9.0], [31.0, 5.1, 9.5]],
                        [[2.0, 5.0, 3.0], [2.0, 5.0, 3.0]], headline="decode")
    assert cols == {"host_ms_median": 4.0, "host_bound_frac": 0.5}
    assert dominates(cols) and not dominates({"host_bound_frac": 0.25}) and not dominates({"host_bound_frac": None})
    assert host_columns(["prefill", "decode"], [[1.0, 2.0]], None,
                        headline="decode") == {"host_ms_median": None, "host_bound_frac": None}


def test_a_cpu_sweep_records_ops_and_null_host_columns(tmp_path):
    from dynbench.results import RECORDS_FILE, iter_records
    from dynbench.spec import points_from
    from dynbench.sweep import Sweep, order_points

    point = {"mode": "kv-cache", "method": "llava", "prompt_len": 8, "gen_len": 4, "warmup": 0, "repeats": 2,
             "device": "cpu"}
    list(Sweep(tmp_path, flops=False, warn=lambda m: None).run(order_points(points_from(point))))
    rows = list(iter_records(tmp_path / RECORDS_FILE))
    summary = next(r for r in rows if r["step"] is None)
    steps = [r for r in rows if r["step"] is not None]
    run0 = [r["ops_per_step"] for r in steps if r["repeat"] == 0]
    assert summary["ops_total"] == sum(run0) and summary["ops_per_step"] == sorted(run0[1:])[1]
    assert all(r["host_ms"] is None and r["host_bound"] is None for r in steps)
    assert summary["host_bound_frac"] is None and summary["nvml_unavailable"] is None


def test_cuda_step_rows_carry_host_time_flag_and_ops():
    """Rows from a (planned) kv-cache run with CUDA timings: each step row its host_ms, host_bound
    and ops; the summary the share over decode steps — 2 of 3 here, by hand — and valid columns."""
    from dynbench.measure.point import PointMeasurement
    from dynbench.models.build import build_model
    from dynbench.modes import plan_mode
    from dynbench.records import validate
    from dynbench.rows import ModelFacts, point_rows
    from dynbench.spec import RunSpec

    spec = RunSpec(model="tiny", method="llava", mode="kv-cache", gen_len=4, prompt_len=8, device="cuda")
    net = build_model("tiny", "llava", device="meta")
    planned = plan_mode(net.preset, "llava", "kv-cache", 8, 4)
    measured = PointMeasurement([planned], step_ms=[[30.0, 5.0, 6.0, 5.1]], timer="cuda_event",
                                host_ms=[[2.0, 5.0, 1.0, 5.0]], ops_per_step=[191, 160, 160, 160])
    rows = point_rows(spec, ModelFacts(net.preset, 0, 0), measured)
    assert [r["host_bound"] for r in rows.steps] == [False, True, False, True]
    assert [r["host_ms"] for r in rows.steps] == [2.0, 5.0, 1.0, 5.0]
    assert rows.summary["host_bound_frac"] == pytest.approx(2 / 3) and rows.summary["host_ms_median"] == 5.0
    assert rows.summary["ops_per_step"] == 160 and rows.summary["ops_total"] == 671
    assert rows.summary["nvml_poll_ms"] == 50.0
    assert all(validate(r) == [] for r in [*rows.steps, rows.summary])
