"""Model inputs: synthetic prompts, a real image + prompt, or exact tensors from an .npz file.

Synthetic layout, fixed and documented (docs/inputs.md): `prompt_len` counts text tokens only;
the first min(prompt_len, SYSTEM_TOKENS) of them come before the image (BOS + LLaVA-1.5's system
prompt and "USER:" are about 35 Vicuna tokens), the rest after it (the instruction). Every batch
row is the same prompt and image, as in the paper's Table 4 (one prompt replicated).

Real inputs follow the official LLaVA-1.5 code (`llava/mm_utils.py`, `llava/conversation.py`):
  * text — the `vicuna_v1` conversation template, one `<image>` in the first user turn, split at
    the image and tokenised piece by piece as `tokenizer_image_token` does (BOS from the first
    piece only); the image becomes `image_tokens` (576) placeholder ids `preset.image_token_index`
    in the expanded `input_ids` — the placeholder ids are never embedded.
  * image — `pad` (official, `image_aspect_ratio=pad`): pad to a square with the processor's mean
    colour, then the CLIP processor (resize + center crop, a no-op crop on a square); `crop`
    (llava-hf's processor): resize the short side and center-crop, cutting the long side.
    `ModelInputs.preprocessing` records which one ran.
  * `.npz` — exact `input_ids` / `pixel_values`, for bit-exact comparisons with other code.
  * a dataset sample (`datasets.py`, `dataset_inputs`) — round 0 as above; each later round as
    the official multi-round evaluation feeds it (notes/official_multiround.md §1.1-1.2): the text
    `USER:{q}ASSISTANT:` (no spaces, no `</s>`), tokenized alone with its BOS dropped, appended to
    the running cache. Answers are tokenized as the official PPL script does (`tokenizer(a)`, BOS
    dropped); teacher-forced, a round feeds every answer token and produces one more (the
    official `</s>`, never fed): `min(gen_len, answer tokens + 1)` tokens.
Padding (ragged batches) is not supported: every row has the same length and image position.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from dynbench.errors import DynbenchError
from dynbench.models.layout import PromptLayout
from dynbench.models.presets import Preset

SYSTEM_TOKENS = 35
BOS_ID = 1
IMAGE_PLACEHOLDER_ID = -200  # official IMAGE_TOKEN_INDEX: one id standing for the whole image
IMAGE_MARK = "<image>"

# LLaVA-1.5 conversation templates (official `conversation.py`, SeparatorStyle.TWO, sep " ").
# vicuna_v1 is what LLaVA-1.5 was trained with (`--version v1`) and what its eval scripts use;
# llava_v1 ("human") is what the Dynamic-LLaVA bench scripts auto-select for "v1" model names.
TEMPLATES = {
    "vicuna_v1": "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
}
DEFAULT_TEMPLATE = "vicuna_v1"
PREPROCESSING = {"official": "pad", "hf": "crop"}  # checkpoint layout → image preprocessing


@dataclass(frozen=True)
class Round:
    """One round of a conversation: what it feeds and how many tokens it produces."""

    prompt_ids: torch.Tensor | None  # (B, m) the turn's tokens appended to the cache; None for round 0
    answer_ids: torch.Tensor | None  # (B, n ≥ gen_len − 1) teacher-forced answer, or None (the model's own)
    gen_len: int  # tokens the round produces (its last is never fed)


@dataclass
class ModelInputs:
    input_ids: torch.Tensor  # (B, P) with `image_token_index` placeholders at the image span
    pixel_values: torch.Tensor  # (B, 3, H, W)
    layout: PromptLayout
    answer_ids: torch.Tensor | None = None  # (B, n ≥ gen_len − 1) teacher-forced tokens, if any
    source: str = "synthetic"  # "synthetic" | "image-prompt" | "npz"
    preprocessing: str | None = None  # image-prompt only: "pad" | "crop"
    # a dataset sample: every round, round 0 first (its prompt is `input_ids`, its answer
    # `answer_ids`); empty: one round of the point's gen_len (the drivers' default)
    rounds: tuple[Round, ...] = ()

    @property
    def batch(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> ModelInputs:
        """The tensors on `device`, moved once per point before warm-up: a copy from pageable
        host memory synchronizes, so it must not happen inside a timed step."""
        return self.map(lambda t: t.to(device))

    def map(self, fn) -> ModelInputs:
        """The same inputs with `fn` applied to every tensor (rounds' too)."""
        move = lambda t: None if t is None else fn(t)  # noqa: E731
        rounds = tuple(replace(r, prompt_ids=move(r.prompt_ids), answer_ids=move(r.answer_ids)) for r in self.rounds)
        return replace(self, input_ids=move(self.input_ids), pixel_values=move(self.pixel_values),
                       answer_ids=move(self.answer_ids), rounds=rounds)

    def rows_identical(self) -> bool:
        """True when every row repeats row 0 (one prompt replicated)."""
        same = lambda t: t is None or bool((t == t[:1]).all())
        tensors = [self.input_ids, self.pixel_values, self.answer_ids,
                   *(t for r in self.rounds for t in (r.prompt_ids, r.answer_ids))]
        return all(same(t) for t in tensors)


def synthetic_inputs(preset: Preset, prompt_len: int, batch: int = 1, seed: int = 0) -> ModelInputs:
    g = torch.Generator().manual_seed(seed)
    n_before = min(prompt_len, SYSTEM_TOKENS)
    text = torch.randint(3, preset.image_token_index, (prompt_len,), generator=g)
    if prompt_len:
        text[0] = BOS_ID
    image = torch.full((preset.image_tokens,), preset.image_token_index)
    ids = torch.cat([text[:n_before], image, text[n_before:]])
    pixels = torch.randn(3, preset.image_size, preset.image_size, generator=g)
    layout = PromptLayout(n_before, preset.image_tokens, prompt_len + preset.image_tokens)
    return ModelInputs(ids.expand(batch, -1).clone(), pixels.expand(batch, -1, -1, -1).clone(), layout)


# ---- a real image and prompt -------------------------------------------------------------------
def conversation_prompt(prompt: str, template: str = DEFAULT_TEMPLATE) -> str:
    """`{system} USER: <image>\\n{prompt} ASSISTANT:` — one user turn, the answer to come."""
    if template not in TEMPLATES:
        raise DynbenchError(f"unknown conversation template {template!r}; choose one of: {', '.join(TEMPLATES)}")
    if IMAGE_MARK in prompt:
        raise DynbenchError(f"the prompt must not contain {IMAGE_MARK}: the image goes before it, once")
    return f"{TEMPLATES[template]} USER: {IMAGE_MARK}\n{prompt} ASSISTANT:"


def image_prompt_inputs(
    image_path: str | Path,
    prompt: str,
    tokenizer_dir: str | Path,
    image_processor_dir: str | Path,
    preset: Preset,
    *,
    layout: str,
    batch: int = 1,
    preprocessing: str | None = None,
    template: str = DEFAULT_TEMPLATE,
) -> ModelInputs:
    """Official LLaVA-1.5 inputs for one image and one question, replicated `batch` times.

    `layout` ("official" | "hf") picks the image preprocessing ("pad" | "crop") unless
    `preprocessing` is given (an official checkpoint without `image_aspect_ratio=pad` crops).
    """
    mode = preprocessing or PREPROCESSING.get(layout)
    if mode not in ("pad", "crop"):
        raise DynbenchError(f"unknown checkpoint layout {layout!r} / preprocessing {preprocessing!r}")
    if batch < 1:
        raise DynbenchError(f"the batch size must be at least 1, got {batch}")
    before, after = tokenize_around_image(conversation_prompt(prompt, template), load_tokenizer(tokenizer_dir))
    pixels = preprocess_image(image_path, load_image_processor(image_processor_dir), preset, mode)
    image = [preset.image_token_index] * preset.image_tokens
    ids = torch.tensor(before + image + after, dtype=torch.long)
    spans = PromptLayout(len(before), preset.image_tokens, ids.shape[0])
    return ModelInputs(
        ids.expand(batch, -1).clone(), pixels.expand(batch, -1, -1, -1).clone(), spans,
        source="image-prompt", preprocessing=mode,
    )


def tokenize_around_image(text: str, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids before and after the single `<image>`, as the official `tokenizer_image_token`:
    each piece tokenised alone, the BOS the tokenizer puts on the second piece dropped."""
    first, second = text.split(IMAGE_MARK)
    before = list(tokenizer(first).input_ids)
    after = list(tokenizer(second).input_ids)
    if after and tokenizer.bos_token_id is not None and after[0] == tokenizer.bos_token_id:
        after = after[1:]
    return before, after


def load_tokenizer(folder: str | Path):
    """The checkpoint's own tokenizer, from local files only (no remote code)."""
    from transformers import AutoTokenizer

    folder = _existing(folder, "tokenizer folder")
    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, ImportError, KeyError, TypeError) as exc:
        raise DynbenchError(
            f"cannot load a tokenizer from {folder} ({_one_line(exc)}); a checkpoint with only "
            "tokenizer.model needs `pip install sentencepiece`, or give exact ids with --inputs FILE.npz"
        ) from None


def load_image_processor(folder: str | Path):
    """The CLIP image processor of `folder` (preprocessor_config.json), PIL backend.

    PIL is what the official code used (transformers 4.37); transformers 5 picks a torchvision
    backend when installed, whose resize differs slightly — so the PIL class is asked for by name.
    """
    import transformers

    folder = _existing(folder, "image processor folder")
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    if not (folder / "preprocessor_config.json").is_file():
        raise DynbenchError(
            f"{folder} has no preprocessor_config.json (the CLIP image processor); use the checkpoint's "
            "or the CLIP folder, or give exact pixels with --inputs FILE.npz"
        )
    try:
        with _quiet_transformers():
            return cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise DynbenchError(f"cannot load the image processor in {folder} ({_one_line(exc)})") from None


def expand_to_square(image, fill: tuple[int, ...]):
    """Pad a PIL image to a square with `fill`, the original centred (official `expand2square`)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def preprocess_image(image_path: str | Path, processor, preset: Preset, mode: str) -> torch.Tensor:
    """(3, H, W) float32 pixels: `pad` (official) or `crop` (llava-hf), see the module doc."""
    image = _open_rgb(image_path)
    if mode == "pad":
        image = expand_to_square(image, tuple(int(m * 255) for m in processor.image_mean))
    pixels = processor(images=image, return_tensors="pt")["pixel_values"][0]
    want = (3, preset.image_size, preset.image_size)
    if tuple(pixels.shape) != want:
        raise DynbenchError(f"the image processor gives pixels of shape {list(pixels.shape)}, the model "
                            f"needs {list(want)}; use the CLIP ViT-L/14-336 processor")
    return pixels


def _open_rgb(path: str | Path):
    from dynbench.images import decode_rgb

    return decode_rgb(path)


# ---- a dataset sample ---------------------------------------------------------------------------
TURN_TEXT = "USER:{q}ASSISTANT:"  # official multi-round eval, rounds ≥ 1 (not the training template)


def dataset_inputs(sample, preset: Preset, gen_len: int | None, *, free_run: bool, tokenizer=None,
                   processor=None, preprocessing: str | None = None,
                   template: str = DEFAULT_TEMPLATE) -> ModelInputs:
    """The `ModelInputs` of one `datasets.Sample` (batch 1), with every round (module doc).

    `gen_len` caps the tokens each round produces (None: prefill, one); teacher-forced rounds
    (answers in the dataset, not `free_run`) end with their answer. Image samples need the
    checkpoint's `tokenizer` and image `processor`.
    """
    cap = gen_len or 1
    if sample.inputs is not None:
        inputs = npz_inputs(sample.inputs, preset, batch=1)
        answer = None if free_run or sample.teacher_force is None else load_answer_ids(sample.teacher_force)
        inputs = replace(inputs, rounds=(_round(None, answer, cap, preset),))
        return replace(inputs, answer_ids=inputs.rounds[0].answer_ids)
    if tokenizer is None or processor is None:
        raise DynbenchError(f"{sample.where}: an image sample needs --checkpoint (its tokenizer and image processor)")
    first = sample.turns[0]
    before, after = tokenize_around_image(conversation_prompt(first.question, template), tokenizer)
    pixels = preprocess_image(sample.image, processor, preset, preprocessing or "pad")
    ids = torch.tensor(before + [preset.image_token_index] * preset.image_tokens + after, dtype=torch.long)
    rounds = []
    for k, turn in enumerate(sample.turns):
        prompt = None if k == 0 else _tokens(tokenizer, TURN_TEXT.format(q=turn.question), preset, sample.where)
        answer = None if free_run or turn.answer is None else _tokens(tokenizer, turn.answer, preset, sample.where)
        rounds.append(_round(prompt, answer, cap, preset))
    layout = PromptLayout(len(before), preset.image_tokens, ids.shape[0])
    return ModelInputs(ids[None], pixels[None], layout, answer_ids=rounds[0].answer_ids, source="dataset",
                       preprocessing=preprocessing or "pad", rounds=tuple(rounds))


def _tokens(tokenizer, text: str, preset: Preset, where: str) -> torch.Tensor:
    """(1, n) ids of `text` alone, its BOS dropped (the official `tokenizer(text).input_ids[1:]`)."""
    ids = list(tokenizer(text).input_ids)
    if ids and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id:
        ids = ids[1:]
    if ids and max(ids) >= preset.vocab:
        raise DynbenchError(f"{where}: the tokenizer gives id {max(ids)}, beyond the model's vocabulary "
                            f"({preset.vocab}); use the checkpoint's own tokenizer")
    return torch.tensor(ids, dtype=torch.long)[None]


def _round(prompt: torch.Tensor | None, answer: torch.Tensor | None, cap: int, preset: Preset) -> Round:
    """A round producing `cap` tokens, or — teacher-forced — its answer's tokens + 1 (at most `cap`)."""
    if prompt is not None and prompt.shape[1] == 0:
        raise DynbenchError("a later round's turn gives no tokens")
    if answer is None:
        return Round(prompt, None, cap)
    answer = answer if answer.ndim == 2 else answer[None]
    if answer.shape[0] != 1:
        raise DynbenchError(f"a dataset sample's teacher_force holds {answer.shape[0]} rows; give one answer")
    if answer.numel() and (int(answer.min()) < 0 or int(answer.max()) >= preset.vocab):
        raise DynbenchError(f"answer ids must be in [0, {preset.vocab})")
    n = min(cap, answer.shape[1] + 1)
    return Round(prompt, answer[:, : n - 1], n)


def replicate(inputs: ModelInputs, batch: int) -> ModelInputs:
    """One-row `inputs` replicated to `batch` rows (every tensor, rounds' too)."""
    if inputs.batch == batch:
        return inputs
    if inputs.batch != 1:
        raise DynbenchError(f"the inputs hold {inputs.batch} rows but --batch is {batch}")
    return inputs.map(lambda t: t.expand(batch, *t.shape[1:]).clone())


# ---- exact tensors from .npz -------------------------------------------------------------------
def npz_inputs(path: str | Path, preset: Preset, batch: int | None = None) -> ModelInputs:
    """Exact `input_ids` (1-D or 2-D; one -200 image placeholder, or already expanded to
    `image_tokens` consecutive `image_token_index`) and `pixel_values` (3-D or 4-D) from an .npz.

    A single row is replicated to `batch`; several rows must number `batch` (or set it, when
    `batch` is None). An `attention_mask`, if present, must be all ones.
    """
    arrays = _read_npz(path, required=("input_ids", "pixel_values"))
    ids = _int_rows(arrays["input_ids"], "input_ids", path)
    if "attention_mask" in arrays:
        _check_mask(arrays["attention_mask"], ids.shape, path)
    ids, spans = _expand_image(ids, preset, path)
    pixels = _pixel_rows(arrays["pixel_values"], preset, path)
    rows = _batch_rows({"input_ids": ids.shape[0], "pixel_values": pixels.shape[0]}, batch, path)
    return ModelInputs(_rows(ids, rows), _rows(pixels, rows), spans, source="npz")


def load_answer_ids(path: str | Path) -> torch.Tensor:
    """`answer_ids` (1-D or 2-D integers) from a teacher-forcing .npz → (rows, n) int64."""
    return _int_rows(_read_npz(path, required=("answer_ids",))["answer_ids"], "answer_ids", path)


def with_answer_ids(inputs: ModelInputs, answer_ids: torch.Tensor, vocab: int | None = None) -> ModelInputs:
    """`inputs` that feed `answer_ids` in both decode modes instead of the model's own tokens.

    One row is replicated to the batch. The drivers need at least gen_len − 1 tokens (the last
    produced token is never fed) and say so otherwise.
    """
    if answer_ids.ndim == 1:
        answer_ids = answer_ids[None]
    if answer_ids.shape[1] == 0:
        raise DynbenchError("answer_ids is empty; teacher forcing needs gen_len − 1 tokens")
    low, high = int(answer_ids.min()), int(answer_ids.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise DynbenchError(f"answer_ids must be token ids in [0, {vocab or 'vocab'}), got {low} … {high}")
    rows = _batch_rows({"answer_ids": answer_ids.shape[0]}, inputs.batch, "the teacher-forcing file")
    return replace(inputs, answer_ids=_rows(answer_ids.long(), rows))


def _read_npz(path: str | Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DynbenchError(f"{path} not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as exc:  # pickled object arrays land here too
        raise DynbenchError(f"{path} is not a readable .npz of numeric arrays ({_one_line(exc)})") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise DynbenchError(f"{path} has no {', '.join(missing)} (it has: {', '.join(arrays) or 'nothing'})")
    return arrays


def _int_rows(array: np.ndarray, name: str, path) -> torch.Tensor:
    if array.dtype.kind not in "iu" or array.ndim not in (1, 2) or array.size == 0:
        raise DynbenchError(f"{path}: {name} must be a non-empty 1-D or 2-D integer array, "
                            f"got {array.dtype} of shape {list(array.shape)}")
    ids = torch.from_numpy(array.astype(np.int64))
    return ids[None] if ids.ndim == 1 else ids


def _expand_image(ids: torch.Tensor, preset: Preset, path) -> tuple[torch.Tensor, PromptLayout]:
    """Replace the one -200 placeholder by `image_tokens` placeholder ids, or check the expanded form."""
    n_img, token = preset.image_tokens, preset.image_token_index
    official, expanded = (ids == IMAGE_PLACEHOLDER_ID).sum(1), (ids == token).sum(1)
    if bool((official == 1).all()) and not bool(expanded.any()):
        start = _same_column((ids == IMAGE_PLACEHOLDER_ID).int().argmax(1), path)
        image = torch.full((ids.shape[0], n_img), token, dtype=ids.dtype)
        ids = torch.cat([ids[:, :start], image, ids[:, start + 1 :]], dim=1)
    elif bool((expanded == n_img).all()) and not bool(official.any()):
        start = _same_column((ids == token).int().argmax(1), path)
        if not bool((ids[:, start : start + n_img] == token).all()):
            raise DynbenchError(f"{path}: the {n_img} image tokens ({token}) in input_ids are not consecutive")
    else:
        raise DynbenchError(
            f"{path}: every input_ids row needs exactly one image: one {IMAGE_PLACEHOLDER_ID} (official "
            f"form) or {n_img} consecutive {token} (expanded form); found {official.tolist()} × "
            f"{IMAGE_PLACEHOLDER_ID} and {expanded.tolist()} × {token} per row"
        )
    spans = PromptLayout(start, n_img, ids.shape[1])
    text = torch.cat([ids[:, :start], ids[:, spans.image_end :]], dim=1)
    if text.numel() and (int(text.min()) < 0 or int(text.max()) >= preset.vocab):
        raise DynbenchError(f"{path}: input_ids has token ids outside [0, {preset.vocab}) besides the image")
    return ids, spans


def _same_column(columns: torch.Tensor, path) -> int:
    if not bool((columns == columns[0]).all()):
        raise DynbenchError(f"{path}: the image must sit at the same position in every row "
                            "(padding / ragged batches are not supported)")
    return int(columns[0])


def _check_mask(mask: np.ndarray, ids_shape: torch.Size, path) -> None:
    """Only the trivial mask is accepted: padded batches are not supported (pitfall 3)."""
    if mask.ndim not in (1, 2) or mask.shape[-1] != ids_shape[-1] or not bool((mask == 1).all()):
        raise DynbenchError(f"{path}: attention_mask must be all ones over input_ids — padding is not "
                            "supported; give one unpadded prompt (it is replicated over the batch)")


def _pixel_rows(array: np.ndarray, preset: Preset, path) -> torch.Tensor:
    size = preset.image_size
    if array.dtype.kind != "f" or array.ndim not in (3, 4) or tuple(array.shape[-3:]) != (3, size, size):
        raise DynbenchError(f"{path}: pixel_values must be a float array of shape (3, {size}, {size}) or "
                            f"(B, 3, {size}, {size}), got {array.dtype} {list(array.shape)}")
    pixels = torch.from_numpy(array)
    return pixels[None] if pixels.ndim == 3 else pixels


def _batch_rows(counts: dict[str, int], batch: int | None, path) -> int:
    """The batch size: `batch`, or the rows the file gives; each tensor has 1 row or that many."""
    rows = batch if batch is not None else max(counts.values())
    if rows < 1:
        raise DynbenchError(f"the batch size must be at least 1, got {rows}")
    bad = {name: n for name, n in counts.items() if n not in (1, rows)}
    if bad:
        raise DynbenchError(f"{path}: {', '.join(f'{k} has {n} rows' for k, n in bad.items())} but the batch "
                            f"is {rows}; give one row (replicated) or one per batch row")
    return rows


def _rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return t.expand(rows, *t.shape[1:]).clone() if t.shape[0] != rows else t


def _existing(folder: str | Path, what: str) -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DynbenchError(f"{what} {folder} does not exist")
    return folder


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


class _quiet_transformers:
    """Silence transformers' logger while loading (it warns that `llava_llama` is unknown)."""

    def __enter__(self):
        from transformers.utils import logging

        self._level = logging.get_verbosity()
        logging.set_verbosity_error()

    def __exit__(self, *exc_info):
        from transformers.utils import logging

        logging.set_verbosity(self._level)
