"""What a point runs on: the weights (a preset's random weights or a local checkpoint) and the inputs
(a synthetic prompt, an .npz of exact tensors, an image + prompt, or a dataset's samples), plus
teacher-forced answers.

One `Source` holds the run's flags; it reads a checkpoint's config once (names and shapes, no
data) to fill defaults (`cli` uses `defaults_for`), and builds each point's `ModelInputs` — for a
dataset point (`RunSpec.dataset`), one per sample (`dataset`, `sample_inputs`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from dynbench.errors import DynbenchError
from dynbench.fields import FIELD
from dynbench.models.presets import Preset, get_preset, register_preset
from dynbench.names import BASELINE


@dataclass
class Source:
    """Where weights and inputs come from, for every point of a run (the run's flags).

    Nothing set: random weights of a named preset and a synthetic prompt. `checkpoint`: local
    weights (`models/checkpoints.py`), loaded once per (dtype, device, attention) and shared by
    both methods (`llava` is a view of a Dynamic-LLaVA checkpoint without its predictors).
    `inputs` (.npz) or `image` + `prompt`: one real prompt, replicated over the batch;
    `teacher_force`: answer tokens fed instead of the model's own.
    """

    checkpoint: str | None = None
    vision_tower: str | None = None
    inputs: str | None = None
    image: str | None = None
    prompt: str | None = None
    teacher_force: str | None = None
    skip_bad: bool | None = False  # datasets: skip (and count) bad records instead of stopping
    max_image_pixels: int | None = None  # images: the largest decoded (`images.set_max_pixels`)
    _meta: object | None = field(default=None, repr=False)  # models.checkpoints.LoadedModel, no data
    _inputs: object | None = field(default=None, repr=False)  # inputs.ModelInputs
    _datasets: dict = field(default_factory=dict, repr=False)  # (file, folder, limit, seed) → datasets.Dataset
    _tokenizer: object | None = field(default=None, repr=False)  # the checkpoint's, loaded once
    _processor: object | None = field(default=None, repr=False)  # the checkpoint's image processor
    _weights: tuple | None = field(default=None, repr=False)  # ((dtype, device, attn), checkpoints.LoadedModel)

    def __post_init__(self):
        from dynbench.images import set_max_pixels

        set_max_pixels(self.max_image_pixels)
        if (self.image is None) != (self.prompt is None):
            raise DynbenchError("--image and --prompt go together")
        if self.image is not None and self.inputs is not None:
            raise DynbenchError("give either --image/--prompt or --inputs, not both")
        if self.image is not None and self.checkpoint is None:
            raise DynbenchError("--image/--prompt need --checkpoint (its tokenizer and image processor)")
        if self.vision_tower is not None and self.checkpoint is None:
            raise DynbenchError("--vision-tower is used with --checkpoint")

    @property
    def labels(self) -> dict:
        """The RunSpec fields that name this source."""
        return {"checkpoint": self.checkpoint, "inputs": self.inputs or self.image,
                "teacher_force": self.teacher_force}

    def checkpoint_info(self, model: str | None = None):
        """Read the checkpoint's config and check every tensor's name and shape (no data); None
        without a checkpoint. Returns a `models.checkpoints.LoadedModel` on `meta`."""
        if self.checkpoint is not None and self._meta is None:
            from dynbench.models.checkpoints import load_checkpoint  # torch: only with a checkpoint

            self._meta = load_checkpoint(self.checkpoint, vision_tower_dir=self.vision_tower, model=model,
                                         device="meta")
            register_preset(self._meta.preset)
            for note in self._meta.notes:
                warnings.warn(note, stacklevel=2)
        return self._meta

    def build_net(self, spec):
        """The model of a point: random weights of its preset, or this checkpoint's weights, read once
        per (dtype, device, attention) and shared by the methods that use them (`llava` is a view of
        a Dynamic-LLaVA checkpoint without its predictors)."""
        from dynbench.models.build import DTYPES, build_model, model_class
        from dynbench.models.checkpoints import dense_view, load_checkpoint
        from dynbench.registry import get as get_method

        if self.checkpoint is None:
            return build_model(spec.model, spec.method, attn=spec.attn, dtype=DTYPES[spec.dtype],
                               device=spec.device, seed=spec.seed)
        key = (spec.dtype, spec.device, spec.attn)
        if self._weights is None or self._weights[0] != key:
            self._weights = None  # the old weights go before the new ones are read
            self._weights = (key, load_checkpoint(self.checkpoint, vision_tower_dir=self.vision_tower,
                                                  dtype=DTYPES[spec.dtype], device=spec.device, attn=spec.attn))
        loaded = self._weights[1]
        if spec.method == loaded.method:
            return loaded.net
        if get_method(spec.method).llava_weights:  # the LLaVA weights, no predictor
            return dense_view(loaded.net, model_class(spec.method))
        raise DynbenchError(f"--checkpoint {self.checkpoint} holds {loaded.method} weights, not {spec.method}")

    def columns(self) -> dict:
        """What a row records about the weights and inputs."""
        info, real = self.checkpoint_info(), self._inputs
        return {
            "checkpoint_layout": info.layout if info else None,
            "vision_tower": str(info.vision_tower_dir) if info and info.vision_tower_dir else None,
            "sparse_config": info.sparse_config if info else None,
            "inputs_source": real.source if real is not None else "synthetic",
            "preprocessing": real.preprocessing if real is not None else None,
        }

    def real_inputs(self, preset: Preset):
        """The real prompt (batch 1) as `ModelInputs`, built once; None for synthetic prompts."""
        if self._inputs is None:
            from dynbench.inputs import image_prompt_inputs, npz_inputs

            if self.inputs is not None:
                self._inputs = npz_inputs(self.inputs, preset)
            elif self.image is not None:
                info = self.checkpoint_info()
                self._inputs = image_prompt_inputs(self.image, self.prompt, info.tokenizer_dir,
                                                   info.image_processor_dir, preset, layout=info.layout,
                                                   preprocessing=info.preprocessing)
        return self._inputs

    def point_inputs(self, spec, preset: Preset):
        """The `ModelInputs` of one point (a `RunSpec`): its batch, its synthetic prompt or the
        real one replicated, with the teacher-forced answers."""
        from dynbench.inputs import load_answer_ids, synthetic_inputs, with_answer_ids

        if spec.dataset is not None:
            raise DynbenchError("a --dataset point runs one input per sample: pick one with --sample I (dynbench "
                                "show) or run the whole dataset with dynbench run")
        real = self.real_inputs(preset)
        if real is None:
            inputs = synthetic_inputs(preset, spec.prompt_len, spec.batch, spec.seed)
        else:
            inputs = _replicate(real, spec.batch)
        if self.teacher_force is not None:
            inputs = with_answer_ids(inputs, load_answer_ids(self.teacher_force), vocab=preset.vocab)
        return inputs


    # ---- datasets ---------------------------------------------------------------------------------
    def dataset(self, spec):
        """The `datasets.Dataset` of a dataset point, read and checked once per (file, image
        folder, limit, sample seed)."""
        from dynbench.datasets import load_dataset

        key = (spec.dataset, spec.image_folder, spec.limit, spec.sample_seed)
        if key not in self._datasets:
            self._refuse_other_inputs()
            data = load_dataset(spec.dataset, image_folder=spec.image_folder, limit=spec.limit,
                                sample_seed=spec.sample_seed, skip_bad=self.skip_bad)
            if data.needs_tokenizer and self.checkpoint is None:
                raise DynbenchError(f"--dataset {spec.dataset} has image samples: they need --checkpoint (its "
                                    "tokenizer and image processor); npz samples run on random weights")
            self._datasets[key] = data
        return self._datasets[key]

    def check_datasets(self, points) -> None:
        """Read every dataset the points name, so a bad record stops the run before it measures."""
        from dynbench.registry import get as get_method

        for spec in points:
            if spec.dataset is None:
                continue
            if spec.device == "meta":
                raise DynbenchError("--dataset runs every sample on a real device (its prompts are tokenized and "
                                    "run); use --device cpu or cuda, or plan one prompt with --prompt-len on meta")
            data = self.dataset(spec)
            rounds = any(s.rounds > 1 for s in data.samples)
            if get_method(spec.method).evicts_kv and spec.mode == "kv-cache" and rounds:
                raise DynbenchError(f"{spec.method} evicts KV entries by attention over one prompt: {spec.dataset} "
                                    "holds conversations of several rounds; run it with a method that keeps the "
                                    "KV cache (llava, dynamic-llava, random, fastv)")

    def sample_inputs(self, spec, sample, preset: Preset):
        """The `ModelInputs` of one sample of a dataset point, replicated to the point's batch."""
        from dynbench.inputs import dataset_inputs, replicate

        tokenizer = processor = preprocessing = None
        if sample.image is not None:
            tokenizer, processor = self._load_tokenizer(), self._load_processor()
            preprocessing = self.checkpoint_info().preprocessing
        inputs = dataset_inputs(sample, preset, spec.gen_len, free_run=bool(spec.free_run), tokenizer=tokenizer,
                                processor=processor, preprocessing=preprocessing)
        return replicate(inputs, spec.batch)

    def tokenizer(self):
        """The checkpoint's tokenizer, or None (no checkpoint, or one without tokenizer files)."""
        info = self.checkpoint_info()
        if info is None or not any((info.tokenizer_dir / f).is_file() for f in TOKENIZER_FILES):
            return None
        return self._load_tokenizer()

    def image_norm(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """(mean, std) of the checkpoint's image processor; None without one (then CLIP's)."""
        info = self.checkpoint_info()
        if info is None or not (info.image_processor_dir / "preprocessor_config.json").is_file():
            return None
        proc = self._load_processor()
        return tuple(proc.image_mean), tuple(proc.image_std)

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from dynbench.inputs import load_tokenizer

            self._tokenizer = load_tokenizer(self.checkpoint_info().tokenizer_dir)
        return self._tokenizer

    def _load_processor(self):
        if self._processor is None:
            from dynbench.inputs import load_image_processor

            self._processor = load_image_processor(self.checkpoint_info().image_processor_dir)
        return self._processor

    def _refuse_other_inputs(self) -> None:
        given = [flag for flag, value in (("--inputs", self.inputs), ("--image/--prompt", self.image),
                                          ("--teacher-force", self.teacher_force)) if value is not None]
        if given:
            raise DynbenchError(f"--dataset gives the inputs and answers of every sample; drop {', '.join(given)}")

    def defaults_for(self, values: dict) -> dict:
        """Point flag values with the defaults a checkpoint or real inputs imply (flags win)."""
        if values.get("dataset") is not None:
            self._refuse_other_inputs()
        info = self.checkpoint_info(values.get("model"))
        if info is not None:
            values["model"] = info.preset_name
            if values["method"] is None:
                values["method"] = list(dict.fromkeys([BASELINE, info.method]))  # the dense model, and the checkpoint's
            if values["text_policy"] is None and values["text_keep"] is None:
                values["text_policy"] = info.text_policy_default
            if values["vision_keep"] is None and info.vision_keep_default is not None:
                values["vision_keep"] = [info.vision_keep_default]
        real = self.real_inputs(get_preset(values["model"] or FIELD["model"].default))
        if real is not None:
            if values.get("prompt_len") is not None:
                raise DynbenchError("--prompt-len is set by --inputs / --image --prompt; drop it")
            values["prompt_len"] = [real.layout.prompt_len]
        return values


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def _replicate(inputs, batch: int):
    from dynbench.inputs import replicate

    return replicate(inputs, batch)
