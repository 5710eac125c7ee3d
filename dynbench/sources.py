"""What a point runs on: the weights (a preset's random weights or a local checkpoint) and the inputs
(a synthetic prompt, an .npz of exact tensors, or an image + prompt), plus teacher-forced answers.

One `Source` holds the run's flags; it reads a checkpoint's config once (names and shapes, no
data) to fill defaults (`cli` uses `defaults_for`), and builds each point's `ModelInputs`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

from dynbench.errors import DynbenchError
from dynbench.models.presets import Preset, get_preset, register_preset


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
    _meta: object | None = field(default=None, repr=False)  # models.checkpoints.LoadedModel, no data
    _inputs: object | None = field(default=None, repr=False)  # inputs.ModelInputs

    def __post_init__(self):
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
                "teacher_force": self.teacher_force}  # fmt: skip

    def checkpoint_info(self, model: str | None = None):
        """Read the checkpoint's config and check every tensor's name and shape (no data); None
        without a checkpoint. Returns a `models.checkpoints.LoadedModel` on `meta`."""
        if self.checkpoint is not None and self._meta is None:
            from dynbench.models.checkpoints import load_checkpoint  # torch: only with a checkpoint

            self._meta = load_checkpoint(self.checkpoint, vision_tower_dir=self.vision_tower, model=model,
                                         device="meta")  # fmt: skip
            register_preset(self._meta.preset)
            for note in self._meta.notes:
                warnings.warn(note, stacklevel=2)
        return self._meta

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
                                                   preprocessing=info.preprocessing)  # fmt: skip
        return self._inputs

    def point_inputs(self, spec, preset: Preset):
        """The `ModelInputs` of one point (a `RunSpec`): its batch, its synthetic prompt or the
        real one replicated, with the teacher-forced answers."""
        from dynbench.inputs import load_answer_ids, synthetic_inputs, with_answer_ids

        real = self.real_inputs(preset)
        if real is None:
            inputs = synthetic_inputs(preset, spec.prompt_len, spec.batch, spec.seed)
        else:
            inputs = _replicate(real, spec.batch)
        if self.teacher_force is not None:
            inputs = with_answer_ids(inputs, load_answer_ids(self.teacher_force), vocab=preset.vocab)
        return inputs


    def defaults_for(self, values: dict) -> dict:
        """Point flag values with the defaults a checkpoint or real inputs imply (flags win)."""
        info = self.checkpoint_info(values.get("model"))
        if info is not None:
            values["model"] = info.preset_name
            if values["method"] is None:
                values["method"] = ["llava", "dynamic-llava"] if info.method == "dynamic-llava" else ["llava"]
            if values["text_policy"] is None and values["text_keep"] is None:
                values["text_policy"] = info.text_policy_default
            if values["vision_keep"] is None and info.vision_keep_default is not None:
                values["vision_keep"] = [info.vision_keep_default]
        real = self.real_inputs(get_preset(values["model"] or "tiny"))
        if real is not None:
            if values.get("prompt_len") is not None:
                raise DynbenchError("--prompt-len is set by --inputs / --image --prompt; drop it")
            values["prompt_len"] = [real.layout.prompt_len]
        return values


def _replicate(inputs, batch: int):
    if inputs.batch == batch:
        return inputs
    if inputs.batch != 1:
        raise DynbenchError(f"the inputs hold {inputs.batch} rows but --batch is {batch}")
    grow = lambda t: None if t is None else t.expand(batch, *t.shape[1:]).clone()  # noqa: E731
    return replace(inputs, input_ids=grow(inputs.input_ids), pixel_values=grow(inputs.pixel_values),
                   answer_ids=grow(inputs.answer_ids))  # fmt: skip
