"""`dynbench run` on local weights and real inputs, end to end (both checkpoint layouts)."""

import json

import numpy as np
import pytest
from test_checkpoints import save_hf, save_official

from dynbench.cli import main
from dynbench.models.build import build_model
from dynbench.results import load

FAST = ["--warmup", "0", "--repeats", "1", "--no-flops"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    dyn = build_model("tiny", "dynamic-llava", seed=1)
    official = save_official(dyn, root / "official", root / "clip")
    hf = save_hf(build_model("tiny", "llava", seed=2), root / "hf")
    rng = np.random.default_rng(0)
    ids = np.concatenate([[1], rng.integers(3, 32000, 20), [-200], rng.integers(3, 32000, 9)])
    np.savez(root / "prompt.npz", input_ids=ids, pixel_values=rng.standard_normal((3, 336, 336)).astype("float32"))
    np.savez(root / "answer.npz", answer_ids=rng.integers(3, 32000, 12))
    return {"official": official, "clip": root / "clip", "hf": hf, "npz": root / "prompt.npz",
            "answer": root / "answer.npz"}


def run_json(argv, capsys):
    assert main(argv) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_official_checkpoint_with_npz_and_teacher_forcing(files, tmp_path, capsys):
    argv = ["run", "--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]),
            "--inputs", str(files["npz"]), "--teacher-force", str(files["answer"]), "--mode", "kv-cache,no-cache",
            "--gen-len", "6", "--out", str(tmp_path / "res"), "--json", *FAST]
    rows = run_json(argv, capsys)
    assert {(r["method"], r["mode"]) for r in rows} == {
        (m, k) for m in ("llava", "dynamic-llava") for k in ("kv-cache", "no-cache")
    }  # a Dynamic-LLaVA checkpoint serves both methods
    for r in rows:
        assert r["status"] == "ok" and r["prompt_len"] == 30 and r["seq_len"] == 30 + 576
        assert r["checkpoint_layout"] == "official" and r["inputs_source"] == "npz"
        assert r["teacher_force"] == str(files["answer"])
    dyn = [r for r in rows if r["method"] == "dynamic-llava"]
    assert all(r["text_policy"] == "learned" and r["text_keep"] is None for r in dyn)  # checkpoint default
    assert all(r["vision_keep"] == 0.2 and r["image_tokens_kept"] == 115 for r in dyn)  # from sparse_config
    df = load(tmp_path / "res")
    assert df["sparse_config"].dropna().iloc[0]["d_model"] == 64


def test_hf_checkpoint_defaults_to_llava(files, capsys):
    rows = run_json(["run", "--checkpoint", str(files["hf"]), "--inputs", str(files["npz"]), "--mode", "prefill",
                     "--json", *FAST], capsys)
    assert [r["method"] for r in rows] == ["llava"] and rows[0]["checkpoint_layout"] == "hf"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--checkpoint", "HF", "--method", "dynamic-llava"], "dynamic-llava"),
        (["--checkpoint", "OFFICIAL"], "--vision-tower"),
        (["--inputs", "NPZ", "--prompt-len", "8"], "--prompt-len is set by"),
        (["--image", "x.png"], "--image and --prompt go together"),
        (["--checkpoint", "nowhere"], "nowhere"),
    ],
)
def test_bad_checkpoint_flags(files, capsys, extra, message):
    names = {"HF": files["hf"], "OFFICIAL": files["official"], "NPZ": files["npz"]}
    argv = ["run", *[str(names.get(a, a)) for a in extra], *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and message in err[0], err
