"""Checkpoint loading: both layouts round-trip exactly, bf16 loads without a float32 copy, and every
bad checkpoint is refused with one clear line (and no model)."""

import json
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from dynbench.errors import DynbenchError
from dynbench.inputs import synthetic_inputs
from dynbench.models.build import build_model
from dynbench.models.checkpoints import dense_view, load_checkpoint
from dynbench.models.dynamic_llava import DynamicLlava
from dynbench.models.llava import DropConfig, LlavaForBench
from dynbench.models.presets import PRESETS, Preset
from dynbench.modes import run_mode

LEARNED = DropConfig(vision_keep=0.2, text_keep=None, text_policy="learned")
SPARSE_CONFIG = {  # as the official run scripts save it (train_sparse.py SparseArguments)
    "use_vision_predictor": True, "vision_keep_rate": 0.2, "use_text_predictor": True,
    "use_output_text_predictor": True, "output_text_keep_rate": 0.5, "use_instruct_predictor": False,
    "sparse_layer": 2, "d_model": 64, "nhead": 4, "dim_feedforward": 128, "num_layers": 2,
    "mask_loss_weight": 100.0, "maskclip": False,
}


HUB_CLIP = "openai/clip-vit-large-patch14-336"  # what released configs name: not a local folder


# ---- writing checkpoints as the two ecosystems do -----------------------------------------------
def _rename(sd, pairs):
    out = {}
    for key, value in sd.items():
        new = next((n + key[len(o) :] for o, n in pairs if key.startswith(o)), key)
        out[new] = value.contiguous()
    return out


HF_DISK = (  # transformers 4.x on-disk names, as llava-hf/llava-1.5-7b-hf ships them
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
OFFICIAL = (
    ("model.language_model.", "model."),
    ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
)


def save_hf(net, folder, names="disk", shards=1):
    folder.mkdir(parents=True, exist_ok=True)
    net.preset.llava_config().save_pretrained(folder)
    sd = net.state_dict() if names == "memory" else _rename(net.state_dict(), HF_DISK)
    _save_weights({k: v.contiguous() for k, v in sd.items()}, folder, shards)
    return folder


def save_official(net, folder, clip=None, *, sparse_config=SPARSE_CONFIG, vision_tower=HUB_CLIP):
    """An official-layout folder (flat LLaMA config + mm_* + sparse_config), and a CLIP folder
    holding the vision tower as a full CLIPModel would (`vision_model.*` plus text keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    p = net.preset
    config = {
        "architectures": ["DynamicLlavaLlamaForCausalLM"], "model_type": "llava_llama",
        "hidden_size": p.hidden, "intermediate_size": p.intermediate, "num_hidden_layers": p.layers,
        "num_attention_heads": p.heads, "num_key_value_heads": p.kv_heads, "vocab_size": p.vocab,
        "max_position_embeddings": p.max_position_embeddings, "rms_norm_eps": p.rms_norm_eps,
        "rope_theta": p.rope_theta, "rope_scaling": None, "hidden_act": "silu",
        "tie_word_embeddings": False, "torch_dtype": "float16", "image_aspect_ratio": "pad",
        "mm_vision_tower": str(vision_tower), "mm_hidden_size": p.vision_hidden,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_use_im_start_end": False,
        "mm_patch_merge_type": "flat",
    }
    if sparse_config is not None:
        config["sparse_config"] = sparse_config
    (folder / "config.json").write_text(json.dumps(config))
    sd = net.state_dict()
    _save_weights(_rename({k: v for k, v in sd.items() if "vision_tower" not in k}, OFFICIAL), folder, 2)
    if clip is not None:
        clip.mkdir(parents=True, exist_ok=True)
        net.preset.llava_config().vision_config.save_pretrained(clip)
        tower = {"vision_model." + k[len("model.vision_tower.") :]: v.contiguous()
                 for k, v in sd.items() if k.startswith("model.vision_tower.")}
        tower["text_model.embeddings.token_embedding.weight"] = torch.zeros(10, 4)
        tower["logit_scale"] = torch.tensor(4.6)
        save_file(tower, clip / "model.safetensors")
    return folder


def _save_weights(sd, folder, shards):
    keys = list(sd)
    if shards == 1:
        save_file(sd, folder / "model.safetensors")
        return
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[i::shards]
        save_file({k: sd[k] for k in part}, folder / name)
        weight_map |= dict.fromkeys(part, name)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.fixture(scope="module")
def dyn():
    return build_model("tiny", "dynamic-llava", seed=1)


@pytest.fixture(scope="module")
def official(dyn, tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    return save_official(dyn, root / "dynamic-llava-tiny", root / "clip"), root / "clip"


@pytest.fixture(scope="module")
def prompt():
    return synthetic_inputs(PRESETS["tiny"], prompt_len=40, seed=5)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a.named_buffers(), b.named_buffers(), strict=True))


@torch.inference_mode()
def _prefill_logits(net, inputs, drop=None):
    feats = net.encode_image(inputs.pixel_values)
    out = net.forward_sequence(net.embed_prompt(inputs.input_ids, feats, inputs.layout), inputs.layout, drop)
    return net.lm_head(out.hidden)


def _same_runs(a, b, inputs, drop=None, modes=("no-cache", "kv-cache"), gen_len=3):
    """Same generated ids, per-layer lengths and keep counts at every step (prefill included)."""
    for mode in modes:
        ra, rb = (run_mode(mode, n, inputs, drop, gen_len=gen_len) for n in (a, b))
        assert ra.generated_ids == rb.generated_ids
        for x, y in zip(ra.steps, rb.steps, strict=True):
            assert (x.layer_seq_lens, x.layer_cache_lens) == (y.layer_seq_lens, y.layer_cache_lens)
            assert (x.image_tokens_kept, x.text_tokens_kept) == (y.image_tokens_kept, y.text_tokens_kept)


# ---- round trips --------------------------------------------------------------------------------
def test_hf_layout_round_trip(tmp_path, prompt):
    llava = build_model("tiny", "llava", seed=0)
    loaded = load_checkpoint(save_hf(llava, tmp_path / "llava-hf-tiny"))
    assert (loaded.layout, loaded.method, loaded.preset_name) == ("hf", "llava", "tiny")
    assert loaded.preset == llava.preset and loaded.sparse_config is None
    assert loaded.image_processor_dir == loaded.tokenizer_dir == (tmp_path / "llava-hf-tiny").resolve()
    assert loaded.preprocessing == "crop"
    _same_weights(llava, loaded.net)
    assert torch.equal(_prefill_logits(llava, prompt), _prefill_logits(loaded.net, prompt))
    _same_runs(llava, loaded.net, prompt, modes=("kv-cache",))


@pytest.mark.parametrize("names,shards", [("disk", 2), ("memory", 1)])
def test_hf_key_variants(tmp_path, names, shards):
    """Sharded files with an index, and transformers 5.x in-memory names, load the same weights."""
    llava = build_model("tiny", "llava", seed=0)
    _same_weights(llava, load_checkpoint(save_hf(llava, tmp_path / "c", names, shards)).net)


@pytest.fixture(scope="module")
def loaded_official(official):
    folder, clip = official
    return load_checkpoint(folder, vision_tower_dir=clip)


@pytest.mark.slow
def test_official_layout_round_trip(dyn, official, loaded_official, prompt):
    folder, clip = official
    loaded = loaded_official
    assert isinstance(loaded.net, DynamicLlava)
    assert (loaded.layout, loaded.method, loaded.preset_name) == ("official", "dynamic-llava", "tiny")
    assert loaded.sparse_config == SPARSE_CONFIG and loaded.vision_keep_default == 0.2
    assert loaded.text_policy_default == "learned" and loaded.preprocessing == "pad"
    assert loaded.image_processor_dir == clip.resolve() and loaded.tokenizer_dir == folder.resolve()
    _same_weights(dyn, loaded.net)
    # identical logits and identical learned keep decisions in every mode
    assert torch.equal(_prefill_logits(dyn, prompt, LEARNED), _prefill_logits(loaded.net, prompt, LEARNED))
    _same_runs(dyn, loaded.net, prompt, LEARNED)


def test_dense_view_shares_weights_and_equals_llava(official, loaded_official, prompt):
    folder, clip = official
    dense = dense_view(loaded_official.net)
    as_llava = load_checkpoint(folder, vision_tower_dir=clip, method="llava")
    assert type(dense) is LlavaForBench and type(as_llava.net) is LlavaForBench
    assert dense.lm_head.weight is loaded_official.net.lm_head.weight  # no second copy
    assert as_llava.notes == ["Dynamic-LLaVA predictor weights present but not used (--method llava)"]
    assert torch.equal(_prefill_logits(dense, prompt), _prefill_logits(as_llava.net, prompt))


def test_official_vision_tower_from_config_path_and_meta(dyn, tmp_path):
    clip = tmp_path / "clip-vit"
    folder = save_official(dyn, tmp_path / "ckpt", clip, vision_tower=clip)
    loaded = load_checkpoint(folder, device="meta")  # names and shapes only, nothing read
    assert loaded.vision_tower_dir == clip.resolve()
    assert all(t.is_meta for t in loaded.net.state_dict().values())


def test_sparse_config_overrides_preset(tmp_path, prompt):
    preset = replace(PRESETS["tiny"], sparse_layer=1, predictor_d_model=32, predictor_nhead=2,
                     predictor_dim_feedforward=48, predictor_num_layers=1)
    torch.manual_seed(0)
    net = DynamicLlava(preset).eval()
    sparse = SPARSE_CONFIG | {"sparse_layer": 1, "d_model": 32, "nhead": 2, "dim_feedforward": 48, "num_layers": 1}
    loaded = load_checkpoint(save_official(net, tmp_path / "c", tmp_path / "clip", sparse_config=sparse),
                             vision_tower_dir=tmp_path / "clip")
    assert loaded.preset == preset and loaded.net.sparse_layer == 1
    res = run_mode("prefill", loaded.net, prompt, LEARNED)
    assert res.last.layer_seq_lens[1] == prompt.layout.seq_len - (576 - 115)


def test_bin_weights_load_safely(tmp_path, prompt):
    llava = build_model("tiny", "llava", seed=0)
    folder = tmp_path / "bin"
    folder.mkdir()
    llava.preset.llava_config().save_pretrained(folder)
    torch.save(_rename(llava.state_dict(), HF_DISK), folder / "pytorch_model.bin")
    _same_weights(llava, load_checkpoint(folder).net)


@pytest.mark.processes
@pytest.mark.slow
def test_bfloat16_load_makes_no_float32_copy(tmp_path):
    """Peak RSS while loading (and touching every weight) stays within 1.3 × the checkpoint bytes
    above the baseline, and at least 0.8 × (the weights really are resident): a float32 copy
    would need 3 × (measured: 1.04 × as is, 3.0 × loading the same file as float32).
    Measured in a fresh process (this one's allocator holds freed memory), after a dry run on
    `meta` has imported and exercised every code path but the tensor reads."""
    # ~43 M parameters, 87 MB in bf16
    mid = Preset(name="mid", vision_hidden=64, vision_layers=1, vision_heads=2, vision_intermediate=128,
                 hidden=1024, layers=2, heads=8, kv_heads=8, intermediate=2816, vocab=8000,
                 max_position_embeddings=2048)
    folder = tmp_path / "mid-ckpt"
    folder.mkdir()
    mid.llava_config().save_pretrained(folder)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in LlavaForBench(mid).state_dict().items()}
    save_file({k: torch.full(s, 0.01, dtype=torch.bfloat16) for k, s in shapes.items()}, folder / "model.safetensors")
    ckpt_bytes = (folder / "model.safetensors").stat().st_size
    script = textwrap.dedent(f"""
        import gc, json, torch
        from dynbench.measure.memory import MemoryTracker, rss_bytes
        from dynbench.models.checkpoints import load_checkpoint
        load_checkpoint({str(folder)!r}, dtype=torch.bfloat16, device="meta")
        gc.collect()
        base = rss_bytes()
        mem = MemoryTracker("cpu")
        with mem.track():
            loaded = load_checkpoint({str(folder)!r}, dtype=torch.bfloat16)
            total = sum(float(p.sum()) for p in loaded.net.parameters())  # every page touched
        print(json.dumps(dict(base=base, peak=mem.result().peak_rss_bytes, name=loaded.preset_name,
                              dtypes=sorted({{str(p.dtype) for p in loaded.net.parameters()}}))))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["name"] == "mid-ckpt" and r["dtypes"] == ["torch.bfloat16"]
    grown = r["peak"] - r["base"]
    assert 0.8 * ckpt_bytes <= grown <= 1.3 * ckpt_bytes, (grown / ckpt_bytes, ckpt_bytes)


# ---- refusals: one line each, no model --------------------------------------------------------
def _refused(match, *args, **kwargs) -> str:
    with pytest.raises(DynbenchError, match=match) as info:
        load_checkpoint(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_hf(build_model("tiny", "llava", seed=0), tmp_path_factory.mktemp("hf") / "ckpt")


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_refuses_missing_folder_and_config(tmp_path):
    _refused("does not exist or is not a folder; check --checkpoint", tmp_path / "nope")
    _refused("config.json not found", tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_refuses_corrupt_safetensors(hf_dir, tmp_path, damage):
    folder = _copy(hf_dir, tmp_path / "c")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x13" * 4096 if damage == "garbage" else data[: len(data) // 2])
    _refused(r"model.safetensors is not a readable safetensors file .*; re-download it", folder)


def test_refuses_missing_keys_listing_the_first_few(tmp_path):
    llava = build_model("tiny", "llava", seed=0)
    folder = save_hf(llava, tmp_path / "c")
    sd = _rename(llava.state_dict(), HF_DISK)
    dropped = [k for k in sd if k.startswith("language_model.model.layers.3.")]  # 9 tensors
    save_file({k: v for k, v in sd.items() if k not in dropped}, folder / "model.safetensors")
    msg = _refused(r"^9 weight\(s\) of the tiny llava model missing from the hf checkpoint: ", folder)
    assert "model.language_model.layers.3.self_attn.q_proj.weight" in msg and "… (4 more)" in msg


def test_refuses_unexpected_keys(tmp_path):
    llava = build_model("tiny", "llava", seed=0)
    folder = save_hf(llava, tmp_path / "c")
    sd = _rename(llava.state_dict(), HF_DISK) | {"language_model.model.extra.weight": torch.zeros(2)}
    save_file(sd, folder / "model.safetensors")
    _refused(r"^1 checkpoint tensor\(s\) not in the tiny llava model: c/language_model.model.extra.weight", folder)


def test_refuses_wrong_shape_naming_the_tensor(tmp_path):
    llava = build_model("tiny", "llava", seed=0)
    folder = save_hf(llava, tmp_path / "c")
    sd = _rename(llava.state_dict(), HF_DISK)
    sd["multi_modal_projector.linear_2.bias"] = torch.zeros(7)
    save_file(sd, folder / "model.safetensors")
    _refused(r"tensor multi_modal_projector.linear_2.bias has shape \[7\], the tiny llava model expects "
             r"\[128\]", folder)


def test_refuses_checkpoint_contradicting_model_at_first_tensor(hf_dir):
    _refused(r"tensor vision_tower.vision_model.embeddings.class_embedding has shape \[64\], the "
             r"llava-1.5-7b llava model expects \[1024\]", hf_dir, model="llava-1.5-7b")


def test_model_must_agree_with_config_where_tensors_cannot_tell(hf_dir, tmp_path):
    """Two heads instead of four: every tensor keeps its shape, only config.json tells."""
    folder = _copy(hf_dir, tmp_path / "two-heads")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"] |= {"num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 64}
    (folder / "config.json").write_text(json.dumps(config))
    _refused(r"config.json has heads = 2, --model tiny has 4; drop --model", folder, model="tiny")
    inferred = load_checkpoint(folder, device="meta").preset
    assert (inferred.name, inferred.heads, inferred.hidden) == ("two-heads", 2, 128)


def test_refuses_missing_vision_tower(dyn, tmp_path):
    folder = save_official(dyn, tmp_path / "c")  # mm_vision_tower names a hub model, not a folder
    _refused(r"carry no vision-tower weights .* pass --vision-tower DIR$", folder)
    _refused("vision tower folder .* does not exist", folder, vision_tower_dir=tmp_path / "nope")


def test_refuses_unsafe_bin(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    PRESETS["tiny"].llava_config().save_pretrained(folder)
    torch.save({"w": torch.zeros(2), "args": _Pickled()}, folder / "pytorch_model.bin")
    _refused("pytorch_model.bin needs unsafe unpickling .* never does", folder)


class _Pickled:  # any Python object: the safe unpickler refuses it
    pass


def test_refuses_dynamic_llava_on_dense_checkpoints(hf_dir, tmp_path):
    _refused("has no Dynamic-LLaVA predictor weights .* use --method llava", hf_dir, method="dynamic-llava")
    _refused("--vision-tower is for official-layout checkpoints only", hf_dir, vision_tower_dir=tmp_path)
