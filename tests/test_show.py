"""`dynbench show`: the kept image patches are the predictor's top-k computed directly, each fed token's
cache decision is the output predictor's rule computed on another path (a no-cache forward), and the
PNG / HTML / JSON are written as described (the HTML rendered in headless Chromium when present)."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from assets import QUESTIONS

from dynbench.cli import main
from dynbench.inputs import npz_inputs
from dynbench.kept import KeptView, ShownToken
from dynbench.models.checkpoints import dense_view, load_checkpoint
from dynbench.report.show import DIM, DIM_TO, OUTLINE, overlay, page_html

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def files(shared_assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("show")
    rng = np.random.default_rng(3)
    ids = np.concatenate([[1], rng.integers(3, 300, 12), [-200], rng.integers(3, 300, 6)])
    np.savez(root / "prompt.npz", input_ids=ids, pixel_values=rng.standard_normal((3, 336, 336)).astype("f4"))
    np.savez(root / "answer.npz", answer_ids=rng.integers(3, 300, 16))
    return {**shared_assets, "npz": root / "prompt.npz", "answer": root / "answer.npz"}


def _show(argv, capsys):
    assert main(["show", *argv]) == 0, capsys.readouterr().err
    return [Path(p) for p in capsys.readouterr().out.split()]


@torch.inference_mode()
def test_kept_indices_and_decisions_equal_the_predictors_computed_directly(files, tmp_path, capsys):
    paths = _show(["--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--inputs",
                   str(files["npz"]), "--teacher-force", str(files["answer"]), "--gen-len", "12", "--out",
                   str(tmp_path)], capsys)
    assert [p.name for p in paths] == ["prompt.png", "prompt.html", "prompt.json"]
    doc = json.loads(paths[2].read_text())
    view = doc["methods"]["dynamic-llava"]
    net = load_checkpoint(files["official"], vision_tower_dir=files["clip"]).net
    inputs = npz_inputs(files["npz"], net.preset)
    a, b = inputs.layout.image_start, inputs.layout.image_end
    # the image predictor on the hidden states at the input of layer 2, from a dense forward
    seen = {}
    dense = dense_view(net)
    hook = dense.layers[2].register_forward_pre_hook(lambda m, args: seen.setdefault("h", args[0]))
    dense.forward_sequence(dense.embed_prompt(inputs.input_ids, dense.encode_image(inputs.pixel_values),
                                              inputs.layout), inputs.layout)
    hook.remove()
    score = torch.log_softmax(net.model.image_score_predictor(seen["h"][:, a:b]).float(), -1)[0, :, 0]
    assert view["kept_image_indices"] == sorted(score.topk(115).indices.tolist())
    # each fed token's decision: keep iff keep-logit > drop-logit of the output predictor, here read
    # in a no-cache forward over the prompt and every fed token (+ one more, so all are candidates)
    gen = view["generated"]
    assert len(gen) == 12 and gen[-1]["kept"] is None and all(g["kept"] is not None for g in gen[:-1])
    assert [g["id"] for g in gen[:-1]] == np.load(files["answer"])["answer_ids"][:11].tolist()  # forced
    fed = torch.tensor([[g["id"] for g in gen]])
    logits = []
    hook = net.model.output_text_score_predictor.register_forward_hook(lambda m, i, o: logits.append(o))
    hidden = torch.cat([net.embed_prompt(inputs.input_ids, net.encode_image(inputs.pixel_values), inputs.layout),
                        net.embed_tokens(fed)], dim=1)
    from dynbench.models.llava import DropConfig

    net.forward_sequence(hidden, inputs.layout, DropConfig(0.2, None, "learned"))
    hook.remove()
    direct = (logits[0][0, :, 0] > logits[0][0, :, 1]).tolist()
    assert [g["kept"] for g in gen[:-1]] == direct[: len(gen) - 1]
    assert 0 < sum(direct[:11]) < 11  # real decisions, some each way (a random-weights predictor)
    assert view["text_tokens_kept"] == sum(direct[:11]) and all("text" in g for g in gen)  # the tokenizer's text


def test_random_weights_and_several_methods_side_by_side(files, tmp_path, capsys):
    paths = _show(["--inputs", str(files["npz"]), "--method", "dynamic-llava,fastv,random,llava", "--gen-len", "4",
                   "--out", str(tmp_path), "--name", "four"], capsys)
    doc = json.loads(paths[2].read_text())
    counts = {m: len(v["kept_image_indices"]) for m, v in doc["methods"].items()}
    assert counts == {"dynamic-llava": 115, "fastv": 288, "random": 115, "llava": 576}
    assert all("text" not in g for v in doc["methods"].values() for g in v["generated"])  # no tokenizer
    assert doc["image_grid"] == 24 and doc["patch_pixels"] == 14
    from PIL import Image

    width, height = Image.open(paths[0]).size
    assert width > 3.5 * height  # four panels side by side


@pytest.mark.slow
def test_three_turn_conversation_per_round(files, tmp_path, capsys):
    paths = _show(["--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--dataset",
                   str(files["conversation"]), "--image-folder", str(files["images"]), "--sample", "0",
                   "--method", "dynamic-llava,fastv", "--gen-len", "8", "--out", str(tmp_path)], capsys)
    assert paths[0].name == "conv-1.png"
    doc = json.loads(paths[2].read_text())
    assert doc["sample_id"] == "conv-1" and set(doc["methods"]) == {"dynamic-llava", "fastv"}
    view = doc["methods"]["dynamic-llava"]
    assert view["rounds"] == 3 and view["questions"] == list(QUESTIONS) and view["teacher_forced"]
    for r in range(3):  # each round: its fed tokens with a decision, then its last token (never fed)
        tokens = [g for g in view["generated"] if g["round"] == r]
        assert tokens[-1]["kept"] is None and all(g["kept"] is not None for g in tokens[:-1])
    page = paths[1].read_text()
    assert page.count('<section class="method">') == 2 and "Round 2" in page and "data:image/png;base64," in page
    if CHROMIUM.exists():
        _screenshot(paths[1], tmp_path / "page.png")


def test_html_escapes_the_prompt(files, tmp_path, capsys):
    prompt = '<script>alert("x")</script> & more'
    paths = _show(["--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--image",
                   str(files["images"] / "wide.png"), "--prompt", prompt, "--gen-len", "3", "--out", str(tmp_path)],
                  capsys)
    page = paths[1].read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in page
    assert json.loads(paths[2].read_text())["prompt"] == prompt


def test_show_refusals(files, capsys):
    for argv, message in ((["--sample", "2"], "--sample picks a sample of --dataset"),
                          (["--method", "h2o", "--mode", "kv-cache"], "no one kept set"),
                          (["--mode", "no-cache"], "prefill or kv-cache"),
                          (["--device", "meta"], "nothing was kept")):
        assert main(["show", "--inputs", str(files["npz"]), "--gen-len", "2", "--out", "/tmp/x", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_overlay_pixels():
    rgb = np.full((336, 336, 3), 0.5)
    pic = overlay(rgb, [0, 25], 576, scale=2).astype(float) / 255  # patch 0 and patch 25 (row 1, column 1)
    yellow = OUTLINE
    assert np.allclose(pic[0, 10], yellow, atol=1 / 255) and np.allclose(pic[28 + 5, 28], yellow, atol=1 / 255)
    assert np.allclose(pic[14, 14], 0.5, atol=1 / 255)  # inside a kept patch: untouched
    dimmed = DIM * 0.5 + (1 - DIM) * DIM_TO
    assert np.allclose(pic[100, 100], dimmed, atol=1 / 255)  # inside a dropped patch
    assert pic.shape == (672, 672, 3)


def test_page_marks_tokens_apart():
    tokens = [ShownToken(5, True, 0, "A"), ShownToken(6, False, 0, " <b>"), ShownToken(7, None, 0, ".")]
    view = KeptView("dynamic-llava", "kv-cache", 576, [0], tokens, ["Q & A?"])
    page = page_html("t", "m", [view], [np.zeros((28, 28, 3), np.uint8)])
    assert 'class="tok kept"' in page and 'class="tok dropped"' in page and 'class="tok last"' in page
    assert "&lt;b&gt;" in page and "Q &amp; A?" in page and "1 / 1 generated tokens" not in page
    assert "1 / 576 image tokens kept · 1 / 2 generated tokens kept" in page


def _screenshot(page: Path, png: Path) -> np.ndarray:
    """Render `page` in headless Chromium and return the screenshot's pixels."""
    from PIL import Image

    profile = png.parent / "chromium-profile"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1400,1100", f"--screenshot={png}",
           page.as_uri()]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB"))


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium): apt-get install "
                    "-y chromium, or .ci/run installs it")
def test_page_renders_in_headless_chromium(files, tmp_path, capsys):
    paths = _show(["--checkpoint", str(files["official"]), "--vision-tower", str(files["clip"]), "--dataset",
                   str(files["jsonl"]), "--sample", "2", "--method", "dynamic-llava,llava", "--gen-len", "12",
                   "--out", str(tmp_path)], capsys)
    shot = _screenshot(paths[1], tmp_path / "page.png")
    shutil.copy(tmp_path / "page.png", Path("/tmp") / "dynbench-show-page.png")  # for a human to look at
    colours = {tuple(c) for c in shot.reshape(-1, 3)[:: 7].tolist()}
    assert (211, 240, 211) in colours  # kept tokens' green
    assert (248, 208, 208) in colours  # dropped tokens' red
    assert any(r > 200 and g > 170 and b < 60 for r, g, b in colours)  # the kept patches' yellow outline
