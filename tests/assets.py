"""Local test assets, nothing downloaded: PIL-drawn images, a tiny BPE tokenizer built with the
`tokenizers` library, tiny checkpoints in both layouts that ship it (and a CLIP image processor),
and dataset files in every supported format."""

from __future__ import annotations

import json
from pathlib import Path

from test_checkpoints import save_hf, save_official

from dynbench.inputs import TEMPLATES
from dynbench.names import KV_METHODS, PRUNE_METHODS

QUESTIONS = ("What shape is in the image?", "What colour is it?", "Where is it?")
ANSWERS = ("A red circle in the middle.", "It is red.", "It sits in the centre of a white picture.")
SHAPE_ANSWERS = {"circle": "A red circle in the middle.", "square": "A blue square at the top left.",
                 "triangle": "A green triangle pointing up, near the bottom."}
SHAPES = {  # name → (shape, colour, box in a 336-px picture)
    "circle": ("ellipse", (220, 30, 30), (100, 100, 236, 236)),
    "square": ("rectangle", (30, 60, 220), (20, 20, 150, 150)),
    "triangle": ("polygon", (40, 170, 60), (60, 300, 280, 300, 170, 80)),
    "wide": ("rectangle", (240, 200, 40), (40, 30, 360, 130)),
}


def draw(path: Path, name: str) -> Path:
    """A white picture with one coloured shape (`SHAPES`); "wide" is 400×160 (padded to a square)."""
    from PIL import Image, ImageDraw

    kind, colour, box = SHAPES[name]
    image = Image.new("RGB", (400, 160) if name == "wide" else (336, 336), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    if kind == "polygon":
        pen.polygon(list(zip(box[::2], box[1::2], strict=True)), fill=colour)
    else:
        getattr(pen, kind)(box, fill=colour)
    image.save(path)
    return path


def save_tokenizer(folder: Path) -> Path:
    """A tiny BPE tokenizer (BOS added, as LLaMA's; `</s>` = 2) that knows the template and the
    test questions and answers, saved as a checkpoint ships it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    text = [f"{TEMPLATES['vicuna_v1']} USER: \n ASSISTANT:", *QUESTIONS, *ANSWERS, *SHAPE_ANSWERS.values(),
            "USER:ASSISTANT:"]
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(folder)
    return folder


def save_processor(folder: Path) -> Path:
    from transformers import CLIPImageProcessorPil

    CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(folder)
    return folder


def centre_text_predictor(net, scale: float = 10.0) -> None:
    """Random weights keep every generated token (the last layer's bias outweighs the rest): scale
    the output-text predictor's last layer and centre its keep − drop bias on the median over
    tokens fed after a synthetic prompt (ids of the test tokenizer's range), so that about half the
    tokens are kept. The decisions stay real ones of a random-weights predictor — meaningless,
    but data-dependent."""
    import torch

    from dynbench.inputs import synthetic_inputs, with_answer_ids
    from dynbench.models.llava import DropConfig
    from dynbench.modes import run_mode

    predictor = net.model.output_text_score_predictor
    last, seen = predictor.output_mlp[-1], []
    hook = predictor.register_forward_hook(lambda m, i, o: seen.append(o[..., 0] - o[..., 1]))
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.mul_(scale)
        fed = torch.randint(3, 300, (1, 48), generator=torch.Generator().manual_seed(5))
        inputs = with_answer_ids(synthetic_inputs(net.preset, 24, seed=5), fed)
        run_mode("kv-cache", net, inputs, DropConfig(0.2, None, "learned"), 49)
        hook.remove()
        last.bias[0] -= torch.cat([d.flatten() for d in seen]).median()


def checkpoints(root: Path) -> dict[str, Path]:
    """`official`: a tiny Dynamic-LLaVA checkpoint (random weights, seed 1, its text predictor
    centred: `centre_text_predictor`) with the tokenizer, and `clip` its CLIP folder with a 336-px
    image processor; `hf`: a tiny llava-hf checkpoint (seed 2) with the tokenizer and processor."""
    from dynbench.models.build import build_model

    dyn = build_model("tiny", "dynamic-llava", seed=1)
    centre_text_predictor(dyn)
    official = save_official(dyn, root / "official", root / "clip")
    save_tokenizer(official)
    save_processor(root / "clip")
    hf = save_hf(build_model("tiny", "llava", seed=2), root / "hf")
    save_tokenizer(hf)
    save_processor(hf)
    return {"official": official, "clip": root / "clip", "hf": hf}


def datasets(root: Path) -> dict[str, Path]:
    """Images under root/images and a dataset of each format: `jsonl` (image + prompt + answer,
    paths relative to the file), `conversation` (LLaVA JSON, one three-turn conversation, images
    relative to --image-folder root/images), `lvis` (a JSON list of question/answer lists)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in SHAPES:
        draw(images / f"{name}.png", name)
    (root / "data.jsonl").write_text("".join(
        json.dumps({"id": name, "image": f"images/{name}.png", "prompt": QUESTIONS[0], "answer": answer}) + "\n"
        for name, answer in SHAPE_ANSWERS.items()))
    turns = []
    for q, a in zip(QUESTIONS, ANSWERS, strict=True):
        turns += [{"from": "human", "value": ("<image>\n" if not turns else "") + q}, {"from": "gpt", "value": a}]
    (root / "conversation.json").write_text(json.dumps([{"id": "conv-1", "image": "circle.png",
                                                         "conversations": turns}]))
    (root / "lvis.json").write_text(json.dumps([{"id": 7, "image": "images/square.png",
                                                 "question": list(QUESTIONS[:2]), "answer": list(ANSWERS[:2])}]))
    return {"jsonl": root / "data.jsonl", "conversation": root / "conversation.json", "images": images,
            "lvis": root / "lvis.json"}


# The CPU sweep of every mode × method that tests/test_latency_columns.py and tests/test_records.py
# read (`conftest.every_method_sweep`): 3 fed tokens, so the budget rule at 0.5 keeps tokens 1 and 3
# (kv-cache), 1 of 2 candidates + the newest (no-cache).
SWEEP_METHODS = ("llava", "dynamic-llava", *PRUNE_METHODS, *KV_METHODS)
SWEEP_GEN = 4


def every_method_sweep(root: Path) -> dict[int, Path]:
    """Every mode × method of the tiny preset on the CPU, with one measured run (and FLOPs) and with
    three (timing only: the counts do not depend on the repeat, and fvcore tracing is the slow part):
    {repeats: results folder}."""
    from dynbench.cli import main

    folders = {}
    for repeats in (1, 3):
        folder = folders[repeats] = root / f"r{repeats}"
        argv = ["run", "--mode", "prefill,no-cache,kv-cache", "--method", ",".join(SWEEP_METHODS), "--prompt-len",
                "8", "--gen-len", str(SWEEP_GEN), "--warmup", "0", "--repeats", str(repeats), "--out", str(folder)]
        assert main(argv if repeats == 1 else [*argv, "--no-flops"]) == 0
    return folders
