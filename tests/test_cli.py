"""CLI contract: bad input → one line on stderr and exit 2; good input → a table on stdout."""

import pytest
import torch

from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.spec import RunSpec, expand

BAD = [
    (["run", "--mode", "decode"], "unknown mode"),
    (["run", "--method", "fastest"], "unknown method"),
    (["run", "--model", "llava-70b"], "unknown model preset"),
    (["run", "--vision-keep", "0"], "--vision-keep must be in (0, 1]"),
    (["run", "--vision-keep", "1.5"], "--vision-keep must be in (0, 1]"),
    (["run", "--text-keep", "-0.1"], "--text-keep must be in (0, 1]"),
    (["run", "--prompt-len", "-3"], "--prompt-len must be ≥ 0"),
    (["run", "--gen-len", "-1"], "--gen-len must be ≥ 1"),
    (["run", "--prompt-len", "1048000", "--gen-len", "577"], "over the limit of 1,048,576"),
    (["run", "--text-policy", "learned", "--text-keep", "0.3"], "--text-keep cannot be used"),
    (["run", "--text-policy", "oracle"], "unknown text-policy"),
    (["run", "--prompt-len", "ten"], "--prompt-len: cannot read"),
    (["run", "--batch", "x"], "--batch: cannot read 'x' as int"),
    (["run", "--no-such-flag"], "No such option"),
    (["run", "--dtype", "float8"], "unknown dtype"),
    (["run", "--attn", "flash"], "unknown attn"),
    (["run", "--batch", "0"], "--batch must be ≥ 1"),
    (["profile", "--out", "/tmp/x", "--method", "llava", "--mode", "prefill,kv-cache"], "profile takes one point"),
    (["profile", "--out", "/tmp/x", "--method", "llava", "--device", "meta"], "nothing to profile"),
    (["profile", "--out", "/tmp/x"], "profile needs --method"),
    (["check", "no/such/dir", "--baseline", "no/such.jsonl"], "no baseline at no/such.jsonl"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[1:]) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_gpu_is_refused(capsys):
    assert main(["run", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_run_prints_counts(capsys):
    argv = ["run", "--mode", "kv-cache,prefill", "--gen-len", "4", "--prompt-len", "8", "--warmup", "0",
            "--repeats", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "dynamic-llava" in text and "llava" in text
    assert "584×4" in text  # dense prefill: 8 + 576 tokens in all 4 layers
    assert "584×2 123×2" in text  # dynamic: 576 - 115 = 461 fewer from layer 2 on


def test_long_lengths_warn_but_run(capsys):
    argv = ["run", "--mode", "prefill", "--method", "llava", "--prompt-len", "1500", "--warmup", "0", "--repeats", "1",
            "--no-flops"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "max_position_embeddings" in captured.err and "2076×4" in captured.out


def test_models_lists_presets(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "7.063 B" in text and "13.351 B" in text and "576" in text


def test_expand_collapses_unused_axes():
    axes = {"mode": ["prefill", "kv-cache"], "method": ["llava", "dynamic-llava"], "gen_len": [8, 16],
            "vision_keep": [0.2, 0.5], "text_keep": [0.5]}
    points = expand(axes, {"model": "tiny", "device": "cpu"})
    # llava: prefill 1 + kv-cache 2 (gen lens); dynamic: prefill 2 (keeps) + kv-cache 2 × 2
    assert len(points) == 3 + 6 == len(set(points))
    llava_prefill = [p for p in points if p.method == "llava" and p.mode == "prefill"]
    assert llava_prefill == [RunSpec(method="llava", mode="prefill", device="cpu", warmup=3, repeats=5)]
    unused = ("gen_len", "vision_keep", "text_keep", "text_policy", "fastv_k", "kv_budget", "reuse_vision", "free_run")
    assert all(getattr(llava_prefill[0], name) is None for name in unused)


def test_expand_refuses_text_keep_with_learned():
    with pytest.raises(DynbenchError, match="--text-keep cannot be used"):
        expand({"text_keep": [0.4]}, {"text_policy": "learned"})
