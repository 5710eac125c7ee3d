"""Load local LLaVA-1.5 / Dynamic-LLaVA weights into the benchmark's models (`--checkpoint DIR`).

Two layouts, local files only (no hub, no `trust_remote_code`, no `from_pretrained` of weights):

* `hf` — `llava-hf/llava-1.5-*-hf`: config.json with `text_config` + `vision_config`
  (`model_type: llava`), vision tower included, tokenizer and preprocessor_config.json beside it.
* `official` — haotian-liu LLaVA-1.5 and Dynamic-LLaVA (`Osilly/Dynamic-LLaVA-*`): a flat LLaMA
  config with `mm_vision_tower`, `mm_projector_type: mlp2x_gelu`, `mm_vision_select_layer` and,
  for Dynamic-LLaVA, `sparse_config` (`model_type` is `llava_llama`, or `llava` on the older
  LLaVA-1.5 releases, so the layout is recognised by its keys, not its model type). These
  checkpoints carry no CLIP weights: the official loader builds CLIP from `mm_vision_tower`, and so
  do we — from `vision_tower_dir` (`--vision-tower DIR`), or from `mm_vision_tower` when that names
  an existing local folder.

Key mapping (checkpoint name → our module name = transformers ≥ 5.17's in-memory name; `L.` below
is `model.language_model.`, `V.` is `model.vision_tower.`, `P.` is `model.multi_modal_projector.`):

| layout    | checkpoint key                                          | dynbench key                    |
|-----------|---------------------------------------------------------|---------------------------------|
| hf, 4.x   | `language_model.model.{embed_tokens,layers.N,norm}.*`   | `L.{embed_tokens,layers.N,norm}.*` |
| hf, 4.x   | `language_model.lm_head.weight`                         | `lm_head.weight`                |
| hf, 4.x   | `vision_tower.vision_model.*`                           | `V.*`                           |
| hf, 5.x   | `vision_tower.*` (transformers 5 saves CLIP flattened)  | `V.*`                           |
| hf        | `multi_modal_projector.linear_{1,2}.*`                  | `P.linear_{1,2}.*`              |
| hf, mem   | `model.vision_tower.vision_model.*`                     | `V.*`                           |
| hf, mem   | `model.language_model.*`, `V.*`, `P.*`, `lm_head.*`     | unchanged                       |
| official  | `model.embed_tokens.*`, `model.layers.N.*`, `model.norm.*` | `L.…`                        |
| official  | `lm_head.weight`                                        | `lm_head.weight`                |
| official  | `model.mm_projector.0.*` / `model.mm_projector.2.*`     | `P.linear_1.*` / `P.linear_2.*` |
| official  | `model.image_score_predictor.*`                         | unchanged (Dynamic-LLaVA)       |
| official  | `model.output_text_score_predictor.*`                   | unchanged (Dynamic-LLaVA)       |
| CLIP dir  | `vision_model.*` (CLIPModel or CLIPVisionModel, 4.x)    | `V.*`                           |
| CLIP dir  | `embeddings.*`, `pre_layrnorm.*`, `encoder.*`, `post_layernorm.*` (5.x) | `V.*`           |

Ignored, never read: `*.rotary_emb.inv_freq` and `*.embeddings.position_ids` (buffers some old
checkpoints stored; recomputed here), a full CLIPModel's `text_model.*`, `text_projection.*`,
`visual_projection.*`, `logit_scale`; in the official layout `model.vision_tower.*` (the official
loader ignores them too) and `model.instruct_score_predictor.*` (the instruction predictor is not
in the released recipe and out of scope), and the predictors when `method="llava"` (noted).

Memory: the model is built on the `meta` device in the target dtype, then every tensor is read on
its own (`safe_open(...).get_tensor`, or `torch.load(weights_only=True, mmap=True)` for `.bin`)
and moved to the target device and dtype before the next one, and assigned with
`load_state_dict(assign=True)`. No float32 (or any second) copy of the model exists at any time:
on CPU with a matching dtype the parameters are the file's memory-mapped pages themselves (they
become resident as they are first used: ~1.0 × the file in RSS). A dtype conversion allocates the
converted tensors, and the file pages it read stay mapped until the files are closed at the end of
loading (clean page cache the kernel can drop, but RSS shows them: fp16 → bf16 peaks near 2 × the
file in RSS, then falls to 1 ×). Loading to CUDA: one copy on the GPU, the mapped file on the host.
Buffers that are not weights (rotary `inv_freq`, CLIP `position_ids`) are computed on the device.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import CLIPVisionConfig, LlamaConfig

from dynbench.errors import DynbenchError
from dynbench.models.build import MODEL_CLASSES, default_dtype
from dynbench.models.llava import LlavaForBench
from dynbench.models.presets import PRESETS, Preset, get_preset
from dynbench.names import ATTN_IMPLEMENTATIONS
from dynbench.registry import get as get_method

LAYOUTS = ("hf", "official")

# fields that must equal a named preset's for the checkpoint to carry its name (vocab may differ:
# llava-hf pads it to 32064; predictor sizes come from `sparse_config`)
SHAPE_FIELDS = (
    "vision_hidden", "vision_layers", "vision_heads", "vision_intermediate", "image_size",
    "patch_size", "vision_feature_layer", "hidden", "layers", "heads", "kv_heads", "intermediate",
    "max_position_embeddings",
)

# official `sparse_config` key → Preset field
SPARSE_FIELDS = {
    "sparse_layer": "sparse_layer",
    "d_model": "predictor_d_model",
    "nhead": "predictor_nhead",
    "dim_feedforward": "predictor_dim_feedforward",
    "num_layers": "predictor_num_layers",
}

HF_RENAMES = (  # (checkpoint prefix, our prefix); first match wins, anything else is kept as is
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("model.vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)
OFFICIAL_RENAMES = (
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
)
CLIP_RENAMES = (
    ("vision_model.", "model.vision_tower."),
    ("embeddings.", "model.vision_tower.embeddings."),
    ("pre_layrnorm.", "model.vision_tower.pre_layrnorm."),
    ("encoder.", "model.vision_tower.encoder."),
    ("post_layernorm.", "model.vision_tower.post_layernorm."),
)
IGNORED_SUFFIXES = (".rotary_emb.inv_freq", ".embeddings.position_ids")
OFFICIAL_IGNORED = ("model.vision_tower.", "model.instruct_score_predictor.")
CLIP_IGNORED = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
PREDICTOR_PREFIXES = ("model.image_score_predictor.", "model.output_text_score_predictor.")

_SHOW = 5  # how many key names an error lists


@dataclass
class LoadedModel:
    """A model with checkpoint weights, and what the CLI needs to record and to build inputs."""

    net: LlavaForBench
    preset: Preset  # a named preset (vocab etc. from the checkpoint) or one inferred from config
    layout: str  # "hf" | "official"
    method: str  # "llava" | "dynamic-llava"
    checkpoint_dir: Path
    vision_tower_dir: Path | None  # official layout: the CLIP folder used
    sparse_config: dict | None  # the official `sparse_config`, verbatim (None for llava-hf)
    tokenizer_dir: Path  # the checkpoint folder (both layouts ship their tokenizer)
    image_processor_dir: Path  # llava-hf: the checkpoint folder; official: the CLIP folder
    preprocessing: str  # "pad" (official image_aspect_ratio=pad) | "crop" (llava-hf processor)
    text_policy_default: str  # "learned" when the output-text predictor was loaded, else "budget"
    vision_keep_default: float | None  # `sparse_config.vision_keep_rate`, if any
    notes: list[str] = field(default_factory=list)  # weights present but deliberately not used

    @property
    def preset_name(self) -> str:
        return self.preset.name


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    vision_tower_dir: str | Path | None = None,
    model: str | None = None,
    method: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn: str = "sdpa",
) -> LoadedModel:
    """Build the model a local checkpoint describes and load its weights (see the module doc).

    `model` names a preset the checkpoint must match (else its shape is inferred from config);
    `method` defaults to `dynamic-llava` for official checkpoints with predictor weights, else
    `llava`. Returns a complete model or raises `DynbenchError`; nothing is half-loaded.
    `device="meta"` checks names and shapes without reading any tensor data.
    """
    if attn not in ATTN_IMPLEMENTATIONS:
        raise DynbenchError(f"unknown attention implementation {attn!r}; choose one of: "
                            f"{', '.join(ATTN_IMPLEMENTATIONS)}")
    root = _existing_dir(checkpoint_dir, "checkpoint folder", "--checkpoint")
    config = _read_json(root / "config.json", "the checkpoint's config")
    layout = _detect_layout(config, root)
    device = torch.device(device)
    with ExitStack() as stack:  # the weight files stay open (mapped) until every tensor is placed
        sources, clip_dir, vision, sparse = _sources(layout, config, root, vision_tower_dir, stack)
        method = _choose_method(layout, _predictors_present(sources[0][0]), method, root)
        preset, shape = _preset(layout, config, vision, sparse, model, root)
        net = _build_on_meta(preset, method, attn, dtype)
        plan, notes = _plan(net, sources, method, layout)
        _agrees(preset, shape, root)
        if device.type != "meta":
            _assign(net, plan, device, dtype)
    _init_buffers(net, device, dtype)
    _check_materialised(net, device)
    return LoadedModel(
        net=net.eval().requires_grad_(False), preset=preset, layout=layout, method=method,
        checkpoint_dir=root, vision_tower_dir=clip_dir, sparse_config=sparse, tokenizer_dir=root,
        image_processor_dir=root if layout == "hf" else clip_dir,
        preprocessing="pad" if layout == "official" and config.get("image_aspect_ratio") == "pad" else "crop",
        text_policy_default="learned" if get_method(method).text_policy else "budget",  # its own predictors
        vision_keep_default=(sparse or {}).get("vision_keep_rate"), notes=notes,
    )


def dense_view(net: LlavaForBench, cls: type[LlavaForBench] = LlavaForBench) -> LlavaForBench:
    """The dense `llava` model (or a baseline `cls` built on it) sharing every LLaVA module (and
    so every weight) of `net`.

    Lets one loaded Dynamic-LLaVA checkpoint serve every method without a second copy: the
    predictors are simply not part of the view.
    """
    if type(net) is cls:
        return net
    with torch.device("meta"):
        dense = cls(net.preset, net.attn)
    for name in ("vision_tower", "multi_modal_projector", "language_model"):
        setattr(dense.model, name, getattr(net.model, name))
    dense.lm_head = net.lm_head
    return dense.eval().requires_grad_(False)


# ---- files -------------------------------------------------------------------------------------
def _existing_dir(path: str | Path, what: str, flag: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DynbenchError(f"{what} {folder} does not exist or is not a folder; check {flag}")
    return folder.resolve()


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DynbenchError(f"{path} not found: {what} is needed (a local model folder has config.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DynbenchError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DynbenchError(f"{path} must hold a JSON object")
    return data


def _weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder: an index's shards, one file, or `*.safetensors` shards."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            weight_map = _read_json(index, "the shard index").get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise DynbenchError(f"{index} has no weight_map; re-download the checkpoint")
            files = [folder / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise DynbenchError(f"{index} lists {len(missing)} missing shard(s): "
                                    f"{', '.join(missing[:_SHOW])}; re-download the checkpoint")
            return files
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return [folder / name]
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    raise DynbenchError(f"no weights in {folder}: expected model.safetensors, sharded "
                        "model-*.safetensors (+ model.safetensors.index.json) or pytorch_model.bin")


class _Weights:
    """Names and shapes of one folder's weights (headers only), and their tensors on demand."""

    def __init__(self, folder: Path, stack: ExitStack):
        self.folder = folder
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._readers: dict[str, Callable[[], torch.Tensor]] = {}
        for path in _weight_files(folder):
            if path.suffix == ".safetensors":
                self._add_safetensors(path, stack)
            else:
                self._add_bin(path)

    def tensor(self, name: str) -> torch.Tensor:
        return self._readers[name]()

    def _add_safetensors(self, path: Path, stack: ExitStack) -> None:
        try:
            handle = stack.enter_context(safe_open(str(path), framework="pt"))
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise DynbenchError(f"{path} is not a readable safetensors file ({exc}); re-download it") from None

        def read(name: str) -> torch.Tensor:
            try:
                return handle.get_tensor(name)
            except (SafetensorError, OSError, ValueError) as exc:
                raise DynbenchError(f"{path}: cannot read tensor {name} ({exc}); re-download it") from None

        for name, shape in shapes.items():
            self.shapes[name] = shape
            self._readers[name] = lambda name=name: read(name)

    def _add_bin(self, path: Path) -> None:
        state = _torch_load(path)
        for name, tensor in state.items():
            self.shapes[name] = tuple(tensor.shape)
            self._readers[name] = lambda tensor=tensor: tensor


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict through the safe unpickler only (`weights_only=True`)."""
    try:
        try:  # mmap: tensors stay in the file until used (zip format, torch ≥ 1.6 saves)
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise DynbenchError(
                f"{path} needs unsafe unpickling (it holds Python objects, not only tensors), which "
                "dynbench never does; convert it to safetensors with a trusted tool first"
            ) from None
        raise DynbenchError(f"{path} is not a readable PyTorch weights file ({exc})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DynbenchError(f"{path} is not a readable PyTorch weights file ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DynbenchError(f"{path} is not a state dict of tensors")
    return state


# ---- layout, method, preset ----------------------------------------------------------------------
def _detect_layout(config: dict, root: Path) -> str:
    if "text_config" in config or "vision_config" in config:
        return "hf"
    if "mm_vision_tower" in config or config.get("model_type") == "llava_llama":
        return "official"
    raise DynbenchError(
        f"{root}/config.json is neither a llava-hf config (text_config + vision_config) nor an "
        f"official LLaVA / Dynamic-LLaVA config (mm_vision_tower); model_type is "
        f"{config.get('model_type')!r}"
    )


def _vision_tower_dir(config: dict, root: Path, given: str | Path | None) -> Path:
    """The CLIP folder for an official checkpoint: `given`, else `mm_vision_tower` if local."""
    if given is not None:
        return _existing_dir(given, "vision tower folder", "--vision-tower")
    name = config.get("mm_vision_tower") or config.get("vision_tower")
    if not name:
        raise DynbenchError(f"{root}/config.json names no vision tower (mm_vision_tower); "
                            "pass --vision-tower DIR (a local CLIP ViT-L/14-336 folder)")
    for candidate in (Path(name).expanduser(), root / name):
        if candidate.is_dir():
            return candidate.resolve()
    raise DynbenchError(
        f"official checkpoints carry no vision-tower weights and {name!r} (mm_vision_tower) is not "
        f"a local folder; download it (e.g. `hf download {name} --local-dir DIR`) and pass --vision-tower DIR"
    )


def _sources(layout: str, config: dict, root: Path, vision_tower_dir, stack: ExitStack):
    """[(weights, key mapping)], the CLIP folder, the vision config dict and the sparse_config."""
    if layout == "hf":
        if vision_tower_dir is not None:
            raise DynbenchError("--vision-tower is for official-layout checkpoints only; "
                                f"{root} is a llava-hf checkpoint that includes its vision tower")
        return [(_Weights(root, stack), _hf_key)], None, config.get("vision_config") or {}, None
    clip_dir = _vision_tower_dir(config, root, vision_tower_dir)
    vision = _clip_vision_dict(clip_dir)
    sources = [(_Weights(root, stack), _official_key), (_Weights(clip_dir, stack), _clip_key)]
    return sources, clip_dir, vision, config.get("sparse_config")


def _clip_vision_dict(clip_dir: Path) -> dict:
    config = _read_json(clip_dir / "config.json", "the vision tower's config")
    vision = config.get("vision_config") if config.get("model_type") == "clip" else config
    if not isinstance(vision, dict) or vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise DynbenchError(f"{clip_dir}/config.json is not a CLIP config (model_type clip or "
                            "clip_vision_model); pass the CLIP ViT-L/14-336 folder as --vision-tower")
    return vision


def _predictors_present(weights: _Weights) -> dict[str, bool]:
    return {prefix: any(name.startswith(prefix) for name in weights.shapes) for prefix in PREDICTOR_PREFIXES}


def _choose_method(layout: str, has: dict[str, bool], method: str | None, root: Path) -> str:
    if method is None:
        return "dynamic-llava" if layout == "official" and all(has.values()) else "llava"
    if method not in MODEL_CLASSES:
        raise DynbenchError(f"unknown method {method!r}; choose one of: {', '.join(MODEL_CLASSES)}")
    if method == "dynamic-llava" and (layout == "hf" or not all(has.values())):
        absent = [p + "*" for p, present in has.items() if not present]
        raise DynbenchError(
            f"{root} has no Dynamic-LLaVA predictor weights ({', '.join(absent)}); it is a dense "
            "LLaVA checkpoint: use --method llava, or an official Dynamic-LLaVA checkpoint"
        )
    return method


def _preset(layout, config, vision, sparse, model, root) -> tuple[Preset, dict]:
    """The named preset (`model`, or the one whose shape matches) or one inferred from config,
    with the checkpoint's vocab, norms, RoPE base and `sparse_config` predictor sizes; and the
    shape read from config (checked against `model` once its tensors are, see `_agrees`)."""
    text = (config.get("text_config") or {}) if layout == "hf" else config
    _check_supported(layout, config, text, vision, root)
    shape = _text_fields(text) | _vision_fields(vision)
    shape["vision_feature_layer"] = config.get(
        "vision_feature_layer" if layout == "hf" else "mm_vision_select_layer", -2
    )
    extra = {k: shape.pop(k) for k in ("vocab", "rms_norm_eps", "rope_theta")}
    token = config.get("image_token_index", config.get("image_token_id"))
    if layout == "hf" and token is not None:
        extra["image_token_index"] = token
    extra |= {SPARSE_FIELDS[k]: v for k, v in (sparse or {}).items() if k in SPARSE_FIELDS}
    if model is not None:
        base = get_preset(model)
    else:
        named = [p for p in PRESETS.values() if all(getattr(p, f) == shape[f] for f in SHAPE_FIELDS)]
        name = root.name if root.name not in PRESETS else f"{root.name}-custom"
        base = named[0] if named else Preset(
            name=name, **shape, vocab=extra["vocab"], description=f"inferred from {root}/config.json"
        )
    return replace(base, **extra), shape


def _agrees(preset: Preset, shape: dict, root: Path) -> None:
    """`--model` against what config.json says, for what tensor shapes cannot show (head count,
    max positions, the CLIP layer LLaVA reads)."""
    for f in SHAPE_FIELDS:
        if getattr(preset, f) != shape[f]:
            raise DynbenchError(f"{root}/config.json has {f} = {shape[f]}, --model {preset.name} has "
                                f"{getattr(preset, f)}; drop --model to use the checkpoint's own shape")


def _text_fields(text: dict) -> dict:
    """LLaMA shape from a config dict; keys it leaves out take transformers' LlamaConfig defaults
    (llava-hf's text_config omits hidden_size, layers, heads … for the 7B)."""
    default = LlamaConfig()
    get = lambda key: text.get(key, getattr(default, key))
    heads = get("num_attention_heads")
    rope = text.get("rope_parameters") or {}
    return dict(
        hidden=get("hidden_size"), layers=get("num_hidden_layers"), heads=heads,
        kv_heads=text.get("num_key_value_heads") or heads, intermediate=get("intermediate_size"),
        vocab=get("vocab_size"), max_position_embeddings=get("max_position_embeddings"),
        rms_norm_eps=get("rms_norm_eps"),
        rope_theta=float(text.get("rope_theta") or rope.get("rope_theta") or 10000.0),
    )


def _vision_fields(vision: dict) -> dict:
    default = CLIPVisionConfig()
    get = lambda key: vision.get(key, getattr(default, key))
    return dict(
        vision_hidden=get("hidden_size"), vision_layers=get("num_hidden_layers"),
        vision_heads=get("num_attention_heads"), vision_intermediate=get("intermediate_size"),
        image_size=get("image_size"), patch_size=get("patch_size"),
    )


def _check_supported(layout: str, config: dict, text: dict, vision: dict, root: Path) -> None:
    """Refuse configs our LLaVA-1.5 modules would silently get wrong (one line naming the key)."""
    rope = text.get("rope_parameters") or {}
    checks = [  # (key, found, what we build)
        ("hidden_act", text.get("hidden_act", "silu"), ("silu",)),
        ("tie_word_embeddings", bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings"))),
         (False,)),
        ("attention_bias", bool(text.get("attention_bias")), (False,)),
        ("mlp_bias", bool(text.get("mlp_bias")), (False,)),
        ("rope_scaling", text.get("rope_scaling") or rope.get("rope_type", "default"), ("default",)),
        ("vision hidden_act", vision.get("hidden_act", "quick_gelu"), ("quick_gelu",)),
        ("vision layer_norm_eps", vision.get("layer_norm_eps", 1e-5), (1e-5,)),
    ]
    if "head_dim" in text and text["head_dim"] is not None:
        heads = text.get("num_attention_heads", LlamaConfig().num_attention_heads)
        hidden = text.get("hidden_size", LlamaConfig().hidden_size)
        checks.append(("head_dim", text["head_dim"], (hidden // heads,)))
    if layout == "hf":
        checks += [
            ("text_config.model_type", text.get("model_type", "llama"), ("llama",)),
            ("vision_feature_select_strategy", config.get("vision_feature_select_strategy", "default"),
             ("default",)),
            ("projector_hidden_act", config.get("projector_hidden_act", "gelu"), ("gelu",)),
            ("multimodal_projector_bias", config.get("multimodal_projector_bias", True), (True,)),
        ]
    else:
        checks += [
            ("mm_projector_type", config.get("mm_projector_type", "linear"), ("mlp2x_gelu",)),
            ("mm_vision_select_feature", config.get("mm_vision_select_feature", "patch"), ("patch",)),
            ("mm_use_im_start_end", bool(config.get("mm_use_im_start_end")), (False,)),
            ("mm_patch_merge_type", config.get("mm_patch_merge_type", "flat"), ("flat",)),
            ("image_aspect_ratio", config.get("image_aspect_ratio"), ("pad", "square", None)),
        ]
    layer = config.get("vision_feature_layer" if layout == "hf" else "mm_vision_select_layer", -2)
    checks.append(("vision feature layer", type(layer), (int,)))
    for key, found, allowed in checks:
        if found not in allowed:
            raise DynbenchError(f"{root}: {key} = {found!r} is not LLaVA-1.5 (dynbench builds "
                                f"{allowed[0]!r}); this checkpoint is not supported")


def _build_on_meta(preset: Preset, method: str, attn: str, dtype: torch.dtype) -> LlavaForBench:
    """The module tree with no storage: parameters get their tensors by assignment."""
    with torch.device("meta"), default_dtype(dtype):
        return MODEL_CLASSES[method](preset, attn=attn)


# ---- names and shapes ----------------------------------------------------------------------------
def _rename(name: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def _hf_key(name: str) -> str | None:
    return None if name.endswith(IGNORED_SUFFIXES) else _rename(name, HF_RENAMES)


def _official_key(name: str) -> str | None:
    if name.endswith(IGNORED_SUFFIXES) or name.startswith(OFFICIAL_IGNORED):
        return None
    return _rename(name, OFFICIAL_RENAMES)


def _clip_key(name: str) -> str | None:
    if name.endswith(IGNORED_SUFFIXES) or name.startswith(CLIP_IGNORED):
        return None
    return _rename(name, CLIP_RENAMES)


def _plan(net: LlavaForBench, sources, method: str, layout: str):
    """Map every checkpoint tensor to a model key; refuse wrong shapes, missing and unexpected keys.

    Returns ({model key: (weights, checkpoint key)}, notes). Shapes are checked first, in the
    model's own order, so a checkpoint that contradicts `--model` names its first tensor.
    """
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    plan, unexpected, notes = {}, [], []
    skipped = dict.fromkeys(PREDICTOR_PREFIXES + ("model.instruct_score_predictor.",), 0)
    for weights, to_model in sources:
        for name in weights.shapes:
            for prefix in skipped:
                skipped[prefix] += name.startswith(prefix)
            target = to_model(name)
            if target is None or (method == "llava" and target.startswith(PREDICTOR_PREFIXES)):
                continue
            if target in expected:
                plan[target] = (weights, name)
            else:
                unexpected.append(f"{weights.folder.name}/{name}")
    where = f"the {net.preset.name} {method} model"
    for target, shape in expected.items():
        if target in plan and plan[target][0].shapes[plan[target][1]] != shape:
            weights, name = plan[target]
            raise DynbenchError(
                f"{weights.folder}: tensor {name} has shape {list(weights.shapes[name])}, "
                f"{where} expects {list(shape)} ({target}); check --model or the checkpoint"
            )
    missing = [k for k in expected if k not in plan]
    if missing:
        raise DynbenchError(f"{len(missing)} weight(s) of {where} missing from the {layout} checkpoint: "
                            f"{_first(missing)}; the checkpoint is incomplete or of another layout")
    if unexpected:
        raise DynbenchError(f"{len(unexpected)} checkpoint tensor(s) not in {where}: "
                            f"{_first(unexpected)}; check --model / --method or the checkpoint")
    if method == "llava" and any(skipped[p] for p in PREDICTOR_PREFIXES):
        notes.append("Dynamic-LLaVA predictor weights present but not used (--method llava)")
    if skipped["model.instruct_score_predictor."]:
        notes.append("instruction-token predictor weights present but not used (out of scope)")
    return plan, notes


def _first(names: list[str]) -> str:
    more = f", … ({len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


# ---- tensors onto the device ---------------------------------------------------------------------
def _assign(net: LlavaForBench, plan: dict, device: torch.device, dtype: torch.dtype) -> None:
    """Read each tensor once, straight to device and dtype, and make it the parameter."""
    state = {}
    for target, (weights, name) in plan.items():
        tensor = weights.tensor(name)
        state[target] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
        del tensor  # the source view goes now, not at the end (its pages can be released)
    net.load_state_dict(state, strict=True, assign=True)


def _init_buffers(net: LlavaForBench, device: torch.device, dtype: torch.dtype) -> None:
    """Buffers that are computed, not stored: rotary inverse frequencies, CLIP position ids.
    Made exactly as a build on `device` makes them, so logits equal the in-memory model's."""
    lm = net.model.language_model
    with torch.device(device), default_dtype(dtype):
        lm.rotary_emb = type(lm.rotary_emb)(config=lm.config)
    embeddings = net.model.vision_tower.embeddings
    positions = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
    embeddings.register_buffer("position_ids", positions, persistent=False)


def _check_materialised(net: LlavaForBench, device: torch.device) -> None:
    """Invariant: every parameter and buffer lives on `device` (none left on meta)."""
    wrong = [
        f"{name} on {t.device}"
        for name, t in (*net.named_parameters(), *net.named_buffers())
        if t.device.type != device.type or (device.index is not None and t.device.index != device.index)
    ]
    assert not wrong, f"tensors not materialised on {device}: {wrong[:_SHOW]}"
