"""Real inputs: the LLaVA-1.5 prompt layout around one image, the two image preprocessings, exact
tensors from .npz, and teacher forcing (same fed tokens for both methods)."""

import numpy as np
import pytest
import torch

from dynbench.errors import DynbenchError
from dynbench.inputs import (
    BOS_ID,
    TEMPLATES,
    image_prompt_inputs,
    load_answer_ids,
    load_tokenizer,
    npz_inputs,
    synthetic_inputs,
    with_answer_ids,
)
from dynbench.models.presets import PRESETS
from dynbench.modes import run_mode

TINY = PRESETS["tiny"]
QUESTION = "What is in the image?"
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A checkpoint-like folder with a tiny BPE tokenizer (BOS added, as LLaMA's), a CLIP folder
    with a 336-px CLIP image processor, and a wide red image."""
    from PIL import Image
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPImageProcessorPil, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("assets")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    text = [f"{TEMPLATES['vicuna_v1']} USER: \n{QUESTION} ASSISTANT:"]
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(root / "ckpt")
    (root / "ckpt" / "config.json").write_text('{"model_type": "llava_llama", "mm_vision_tower": "x"}')
    CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}).save_pretrained(
        root / "clip"
    )
    Image.new("RGB", (200, 100), (255, 0, 0)).save(root / "wide.png")
    return root


def test_image_prompt_layout(assets):
    inputs = image_prompt_inputs(assets / "wide.png", QUESTION, assets / "ckpt", assets / "clip", TINY,
                                 layout="official", batch=2)
    tok = load_tokenizer(assets / "ckpt")
    ids, lay = inputs.input_ids, inputs.layout
    a, b = lay.image_start, lay.image_end
    assert ids.shape == (2, lay.seq_len) and bool((ids[1] == ids[0]).all())
    assert (lay.image_tokens, lay.seq_len - lay.prompt_len) == (576, 576)
    assert ids[0, 0] == BOS_ID and BOS_ID not in ids[0, 1:].tolist()  # one BOS, at the start
    assert tok.decode(ids[0, 1:a]).strip() == f"{TEMPLATES['vicuna_v1']} USER:"  # system + role
    assert bool((ids[0, a:b] == TINY.image_token_index).all())  # 576 image placeholders
    assert tok.decode(ids[0, b:]).strip() == f"{QUESTION} ASSISTANT:"  # the instruction
    assert (inputs.source, inputs.preprocessing) == ("image-prompt", "pad")


def _normalised(rgb):
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, MEAN, STD, strict=True)])


def test_official_pads_with_mean_colour_and_hf_crops(assets):
    args = (assets / "wide.png", QUESTION, assets / "ckpt", assets / "clip", TINY)
    pad = image_prompt_inputs(*args, layout="official").pixel_values[0]  # (3, 336, 336)
    crop = image_prompt_inputs(*args, layout="hf").pixel_values[0]
    red = _normalised((255, 0, 0))
    mean_fill = _normalised(tuple(int(m * 255) for m in MEAN))  # expand2square's fill colour
    # 200×100 padded to 200×200: the top and bottom quarters are fill, the middle is the image
    torch.testing.assert_close(pad[:, 10, 168], mean_fill, atol=0.02, rtol=0)
    torch.testing.assert_close(pad[:, 168, 168], red, atol=0.02, rtol=0)
    # resized to 336 high and center-cropped: red everywhere, the image's sides are cut
    torch.testing.assert_close(crop[:, 10, 168], red, atol=0.02, rtol=0)
    torch.testing.assert_close(crop[:, 10, 0], red, atol=0.02, rtol=0)


def test_image_prompt_refusals(assets, tmp_path):
    args = (QUESTION, assets / "ckpt", assets / "clip", TINY)
    with pytest.raises(DynbenchError, match="cannot read image"):
        image_prompt_inputs(tmp_path / "missing.png", *args, layout="official")
    with pytest.raises(DynbenchError, match="has no preprocessor_config.json"):
        image_prompt_inputs(assets / "wide.png", QUESTION, assets / "ckpt", tmp_path, TINY, layout="hf")
    with pytest.raises(DynbenchError, match="must not contain <image>"):
        image_prompt_inputs(assets / "wide.png", "<image> twice", *args[1:], layout="hf")


# ---- .npz ---------------------------------------------------------------------------------------
def _official_ids():
    return np.array([1, 319, 13563, 1546, 3148, -200, 13, 5618, 338, 445, 29973, 319, 1799], dtype=np.int64)


def test_npz_official_form_expanded_exactly(tmp_path):
    ids, px = _official_ids(), np.random.default_rng(0).standard_normal((3, 336, 336)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input_ids=ids, pixel_values=px, attention_mask=np.ones_like(ids))
    inputs = npz_inputs(tmp_path / "in.npz", TINY, batch=3)
    lay = inputs.layout
    assert (lay.image_start, lay.image_tokens, lay.seq_len) == (5, 576, 12 + 576)
    assert inputs.input_ids.shape == (3, 588) and inputs.pixel_values.shape == (3, 3, 336, 336)
    for row in range(3):
        assert torch.equal(inputs.input_ids[row, :5], torch.from_numpy(ids[:5]))
        assert bool((inputs.input_ids[row, 5:581] == TINY.image_token_index).all())
        assert torch.equal(inputs.input_ids[row, 581:], torch.from_numpy(ids[6:]))
        assert torch.equal(inputs.pixel_values[row], torch.from_numpy(px))
    assert inputs.source == "npz"


def test_npz_expanded_form_reproduced_exactly(tmp_path):
    ids = np.concatenate([[1, 5, 6], np.full(576, TINY.image_token_index), [7, 8]])[None].repeat(2, 0)
    px = np.random.default_rng(1).standard_normal((2, 3, 336, 336)).astype(np.float16)
    np.savez(tmp_path / "in.npz", input_ids=ids, pixel_values=px)
    inputs = npz_inputs(tmp_path / "in.npz", TINY)
    assert inputs.batch == 2 and inputs.layout.image_start == 3 and inputs.layout.prompt_len == 5
    assert torch.equal(inputs.input_ids, torch.from_numpy(ids))
    assert torch.equal(inputs.pixel_values, torch.from_numpy(px))


def _bad_npz(kind):
    ids, px = _official_ids(), np.zeros((3, 336, 336), np.float32)
    cases = {
        "no image": dict(input_ids=ids[ids != -200], pixel_values=px),
        "two images": dict(input_ids=np.concatenate([ids, [-200]]), pixel_values=px),
        "image split": dict(input_ids=np.concatenate([np.full(300, 32000), [5], np.full(276, 32000)]),
                            pixel_values=px),
        "both forms": dict(input_ids=np.concatenate([ids, np.full(576, 32000)]), pixel_values=px),
        "float ids": dict(input_ids=ids.astype(np.float32), pixel_values=px),
        "id ≥ vocab": dict(input_ids=np.concatenate([ids, [40000]]), pixel_values=px),
        "pixels 224": dict(input_ids=ids, pixel_values=np.zeros((3, 224, 224), np.float32)),
        "int pixels": dict(input_ids=ids, pixel_values=px.astype(np.uint8)),
        "padding": dict(input_ids=ids, pixel_values=px, attention_mask=np.r_[np.zeros(2), np.ones(11)]),
        "no pixels": dict(input_ids=ids),
        "rows": dict(input_ids=np.stack([ids, ids]), pixel_values=np.zeros((3, 3, 336, 336), np.float32)),
        "pickled": dict(input_ids=np.array([ids, "x"], dtype=object), pixel_values=px),
    }
    return cases[kind]


@pytest.mark.parametrize(
    "kind,match",
    [
        ("no image", "exactly one image"), ("two images", "exactly one image"),
        ("image split", "exactly one image|not consecutive"), ("both forms", "exactly one image"),
        ("float ids", "integer array"), ("id ≥ vocab", r"outside \[0, 32064\)"),
        ("pixels 224", r"shape \(3, 336, 336\)"), ("int pixels", "must be a float array"),
        ("padding", "padding is not supported"), ("no pixels", "has no pixel_values"),
        ("rows", "input_ids has 2 rows but the batch is 3"), ("pickled", "not a readable .npz"),
    ],
)
def test_npz_refusals(tmp_path, kind, match):
    np.savez(tmp_path / "bad.npz", **_bad_npz(kind))
    with pytest.raises(DynbenchError, match=match) as info:
        npz_inputs(tmp_path / "bad.npz", TINY)
    assert "\n" not in str(info.value)


# ---- teacher forcing ----------------------------------------------------------------------------
def test_answer_ids_load_and_attach(tmp_path):
    np.savez(tmp_path / "a.npz", answer_ids=np.array([5, 6, 7], dtype=np.int32))
    answer = load_answer_ids(tmp_path / "a.npz")
    assert answer.dtype == torch.int64 and answer.tolist() == [[5, 6, 7]]
    inputs = with_answer_ids(synthetic_inputs(TINY, 8, batch=2), answer, vocab=TINY.vocab)
    assert inputs.answer_ids.tolist() == [[5, 6, 7]] * 2 and inputs.rows_identical()
    with pytest.raises(DynbenchError, match="answer_ids has 3 rows but the batch is 2"):
        with_answer_ids(inputs, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(DynbenchError, match="token ids in"):
        with_answer_ids(inputs, torch.tensor([[1, 99999]]), vocab=TINY.vocab)
    np.savez(tmp_path / "b.npz", answer_ids=np.array([0.5]))
    with pytest.raises(DynbenchError, match="integer array"):
        load_answer_ids(tmp_path / "b.npz")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["no-cache", "kv-cache"])
def test_teacher_forcing_feeds_identical_contexts(pair, prompt, mode, monkeypatch):
    """Both methods are fed exactly the given answer tokens, never their own predictions."""
    gen_len = 3
    answer = torch.tensor([[11, 22, 33, 44]])
    forced = with_answer_ids(prompt, answer)
    fed = {}
    for net in pair:
        calls = fed[net.method] = []
        original = net.embed_tokens
        monkeypatch.setattr(net, "embed_tokens", lambda ids, f=original, c=calls: c.append(ids.tolist()) or f(ids))
        result = run_mode(mode, net, forced, gen_len=gen_len)
        monkeypatch.undo()
        assert result.last.text_tokens_fed == gen_len - 1
    assert fed["llava"] == fed["dynamic-llava"]
    generated = [c for c in fed["llava"] if c and len(c[0]) <= gen_len - 1]  # the non-prompt calls
    if mode == "kv-cache":
        assert generated == [[[11]], [[22]]]
    else:
        assert generated[-1] == [[11, 22]]
    with pytest.raises(DynbenchError, match="teacher forcing needs 5 answer tokens"):
        run_mode(mode, pair[0], forced, gen_len=6)
