"""The method API: plug-ins from the `dynbench.methods` entry-point group (PyramidDrop installed
from examples/dynbench-pdrop), `module:Name` methods, option flags, mode refusals, broken plug-ins."""

import json

import pytest
import torch
from method_plugins import PrefillOnly, broken_site, dynbench, env_with, install_pdrop

from dynbench import registry
from dynbench.errors import DynbenchError
from dynbench.inputs import synthetic_inputs
from dynbench.models import build
from dynbench.models.presets import get_preset
from dynbench.models.rules import DropConfig
from dynbench.modes import plan_mode, run_mode
from dynbench.records import POINT_KEY, key_of
from dynbench.spec import RunSpec, load_suite, points_from

PDROP_TINY = (("layers", (1, 2, 3)), ("ratio", 0.5))


def _clear():
    registry.listing.cache_clear()
    registry._from_module.cache_clear()
    build.model_class.cache_clear()


@pytest.fixture(scope="session")
def pdrop_site(tmp_path_factory):
    return install_pdrop(tmp_path_factory.mktemp("pdrop-site"))


@pytest.fixture
def pdrop(pdrop_site, monkeypatch):
    monkeypatch.syspath_prepend(str(pdrop_site))
    _clear()
    yield registry.get("pdrop")
    monkeypatch.undo()
    _clear()


def _main(capsys, *argv: str):
    """`dynbench ARGV` in this process: (exit code, stdout, stderr)."""
    from dynbench.cli import main

    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def fastv_macs(layer_tokens, d, m):
    """FastV / PDrop convention, written out here: per layer 4nd² + 2n²d + 3ndm, in tera."""
    return sum(4 * n * d * d + 2 * n * n * d + 3 * n * d * m for n in layer_tokens) / 1e12


@pytest.mark.processes
def test_installed_pdrop_is_listed_and_gives_the_papers_7b_figures(pdrop_site):
    env = env_with(pdrop_site)
    listed = dynbench("methods", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    entry = {m["name"]: m for m in json.loads(listed.stdout)}["pdrop"]
    assert entry["error"] is None
    assert entry["origin"] == "entry point pdrop = dynbench_pdrop:PDrop (dynbench-pdrop 0.1.0)"
    assert [(o["flag"], o["default"]) for o in entry["options"]] == [("--pdrop-layers", [8, 16, 24]),
                                                                      ("--pdrop-ratio", 0.5)]
    out = dynbench("run", "--method", "llava,dynamic-llava,pdrop", "--device", "meta", "--model", "llava-1.5-7b",
                   "--mode", "prefill", "--no-flops", "--json", env=env)  # fvcore's CLIP-L trace: not asserted here
    assert out.returncode == 0, out.stderr
    rows = {r["method"]: r for r in map(json.loads, out.stdout.splitlines())}
    d, m = 4096, 11008
    assert rows["llava"]["tmacs_fastv"] == pytest.approx(fastv_macs([576] * 32, d, m))
    assert round(rows["llava"]["tmacs_fastv"], 3) == 3.817
    pdrop_tokens = [576] * 8 + [288] * 8 + [144] * 8 + [72] * 8
    assert rows["pdrop"]["tmacs_fastv"] == pytest.approx(fastv_macs(pdrop_tokens, d, m))
    assert round(rows["pdrop"]["tmacs_fastv"], 3) == 1.777
    assert rows["pdrop"]["method_options"] == {"layers": [8, 16, 24], "ratio": 0.5}
    assert rows["pdrop"]["image_tokens_kept"] == 72 and rows["pdrop"]["equivalent_tokens"] == sum(pdrop_tokens) / 32
    assert rows["pdrop"]["layer_seq_lens"] == [n + 64 for n in pdrop_tokens]  # + the 64 text tokens


@pytest.mark.parametrize("mode", ["prefill", "no-cache", "kv-cache"])
def test_pdrop_runs_every_mode_and_its_plan_is_the_run(pdrop, mode):
    net = build.build_model("tiny", "pdrop", seed=0)
    inputs = synthetic_inputs(net.preset, prompt_len=24, seed=1)
    drop = DropConfig(options=PDROP_TINY)
    run = run_mode(mode, net, inputs, drop, gen_len=4)
    plan = plan_mode(net.preset, "pdrop", mode, 24, gen_len=4, drop=drop)
    P = 24 + 576
    assert run.steps[0].layer_seq_lens[:4] == [P + 0, P - 288, P - 432, P - 504]  # 576 → 288 → 144 → 72
    assert run.steps[0].layer_attn == ["eager", "eager", "eager", "sdpa"]  # the layer before each cut reads weights
    assert len(run.steps) == len(plan.steps) == (1 if mode == "prefill" else 4)
    fields = ("layer_seq_lens", "layer_cache_lens", "image_tokens_kept", "text_tokens_fed", "text_tokens_kept",
              "kv_bytes_prompt", "kv_bytes_generated", "layer_shapes", "layer_image_tokens", "layer_attn")
    for got, want in zip(run.steps, plan.steps, strict=True):
        assert {f: getattr(got, f) for f in fields} == {f: getattr(want, f) for f in fields}


def test_pdrop_keeps_the_image_tokens_the_last_instruction_token_attends_to_most(pdrop):
    """One cut at layer 1: the 288 kept tokens are the top of layer 0's eager attention, read here
    from HF's attention module directly (head mean of the last prompt token's row)."""
    net = build.build_model("tiny", "pdrop", seed=0)
    inputs = synthetic_inputs(net.preset, prompt_len=24, seed=2)
    layout = inputs.layout
    run = run_mode("prefill", net, inputs, DropConfig(options=(("layers", (1,)), ("ratio", 0.5))))
    a, b = layout.image_start, layout.image_end
    kept = run.steps[0].kept_index[0]
    kept_image = kept[(kept >= a) & (kept < b)] - a
    with torch.inference_mode():
        hidden = net.embed_prompt(inputs.input_ids, net.encode_image(inputs.pixel_values), layout)
        n = hidden.shape[1]
        pos = torch.arange(n)[None]
        cos_sin = net.model.language_model.rotary_emb(hidden, pos)
        layer = net.layers[0]
        mask = torch.full((n, n), torch.finfo(hidden.dtype).min).triu(1)[None, None]
        layer.self_attn.config._attn_implementation = "eager"
        try:
            _, weights = layer.self_attn(layer.input_layernorm(hidden), position_embeddings=cos_sin,
                                         attention_mask=mask)
        finally:
            layer.self_attn.config._attn_implementation = net.attn
    scores = weights[0, :, n - 1, a:b].float().mean(0)
    top = set(scores.argsort(descending=True, stable=True)[:288].tolist())
    assert set(kept_image.tolist()) == top
    assert kept.tolist() == sorted(kept.tolist())  # original order, text tokens all kept
    assert len(kept) == n - 288


def test_plugin_options_are_axes_suite_keys_and_part_of_the_point_key(pdrop, tmp_path):
    points = points_from({"method": ["llava", "pdrop"], "mode": ["prefill"], "pdrop_ratio": ["0.25", "0.5"],
                          "pdrop_layers": "1,2,3", "device": "cpu"})
    assert [(p.method, p.method_options) for p in points] == [
        ("llava", None), ("pdrop", (("layers", (1, 2, 3)), ("ratio", 0.25))),
        ("pdrop", (("layers", (1, 2, 3)), ("ratio", 0.5)))]
    assert len({key_of(p, POINT_KEY) for p in points}) == 3
    assert points[1].as_dict()["method_options"] == {"layers": [1, 2, 3], "ratio": 0.25}
    suite = tmp_path / "s.yaml"
    suite.write_text("defaults: {model: tiny, device: cpu, mode: prefill}\n"
                     "sweeps:\n  - {method: pdrop, pdrop_layers: [1, 3], pdrop_ratio: 0.1}\n")
    (point,) = load_suite(suite)
    assert point.method_options == (("layers", (1, 3)), ("ratio", 0.1))
    with pytest.raises(DynbenchError, match=r"cut layers must be .* in \[1, 3\].*\[8, 16, 24\]"):
        points_from({"method": ["pdrop"], "mode": ["prefill"], "device": "cpu"})  # 7B defaults on 4 layers
    with pytest.raises(DynbenchError, match="ratio"):
        points_from({"method": ["pdrop"], "pdrop_ratio": ["abc"], "pdrop_layers": "1", "device": "cpu"})
    with pytest.raises(DynbenchError, match=r"ratio \(λ\) must be in \(0, 1\]"):
        points_from({"method": ["pdrop"], "pdrop_ratio": ["1.5"], "pdrop_layers": "1", "device": "cpu"})


def test_a_method_refuses_the_modes_it_does_not_run_in_one_line():
    name = "method_plugins:PrefillOnly"
    with pytest.raises(DynbenchError, match="prefill-only runs in prefill mode only, not kv-cache") as err:
        RunSpec(method=name, mode="kv-cache")
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="PrefillOnly runs prefill only: those kv-cache, no-cache points are skipped"):
        points = points_from({"method": [name], "device": "meta", "model": "llava-1.5-7b"})
    assert [(p.mode, p.method_options) for p in points] == [("prefill", (("keep", 288),))]
    plan = plan_mode(get_preset("tiny"), name, "prefill", 8, drop=DropConfig(options=(("keep", 100),)))
    assert plan.steps[0].layer_image_tokens == [576, 100, 100, 100]
    assert isinstance(registry.get(name), PrefillOnly)


def test_a_broken_plugin_is_one_line_and_breaks_nothing_else(tmp_path, capsys, monkeypatch):
    """A fresh `dynbench` (which reads the plug-ins as it starts) lists and helps; the runs, which import
    torch (seconds per process), go in this process with the broken distribution on sys.path."""
    site = broken_site(tmp_path / "site")
    env = env_with(site)
    listed = dynbench("methods", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    errors = {(m["name"], m["origin"].startswith("entry point")): m["error"] for m in json.loads(listed.stdout)}
    assert "RuntimeError: this plug-in is broken on purpose" in errors["exploding", True]
    assert "is not a dynbench.method_api.Method" in errors["notamethod", True]
    assert errors["fastv", False] is None  # the shipped one stays; the impostor is listed as refused
    assert errors["fastv", True] == "the name 'fastv' is taken by another method"
    for argv in (["--help"], ["run", "--help"], ["methods"]):
        assert dynbench(*argv, env=env).returncode == 0, argv
    monkeypatch.syspath_prepend(str(site))
    _clear()
    try:
        rc, _, err = _main(capsys, "run", "--method", "exploding", "--device", "meta", "--mode", "prefill")
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "exploding" in err and "RuntimeError" in err
        rc, _, err = _main(capsys, "run", "--method", "llava,fastv", "--device", "meta", "--mode", "prefill")
        assert rc == 0, err
        rc, _, err = _main(capsys, "run", "--method", "method_plugins:PrefillOnly", "--mode", "kv-cache", "--device",
                           "meta")
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
    finally:
        monkeypatch.undo()
        _clear()


def test_help_with_plugins_installed_imports_nothing_heavy(pdrop_site, tmp_path):
    env = env_with(pdrop_site, broken_site(tmp_path / "site"))
    code = ("import sys, contextlib, io\nimport dynbench.cli.commands\nfrom dynbench.cli import main\n"
            "buf = io.StringIO()\nwith contextlib.redirect_stdout(buf):\n    assert main(['run', '--help']) == 0\n"
            "print('--pdrop-ratio' in buf.getvalue(), '--pdrop-layers' in buf.getvalue())\n"
            "print(','.join(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))\n")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.splitlines() == ["True True", ""], out.stdout


def test_the_docs_minimal_plugin_runs_as_written(tmp_path, monkeypatch):
    """docs/methods.md's 30-line plug-in, copied out of the page, planned on 7B and run on tiny."""
    import re
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "methods.md").read_text(encoding="utf-8")
    code = re.search(r"<!-- docs-example: half-at-k -->\n```python\n(.+?)```", page, re.S).group(1)
    assert len(code.splitlines()) <= 30
    (tmp_path / "half_at_k.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    _clear()
    (point,) = points_from({"method": ["half_at_k:HalfAtK"], "mode": ["prefill"], "device": "meta",
                            "model": "llava-1.5-7b", "prompt_len": [64]})
    assert point.method_options == (("k", 2), ("keep", 0.5))
    plan = plan_mode(get_preset("llava-1.5-7b"), point.method, "prefill", 64, drop=point.drop)
    assert plan.steps[0].layer_image_tokens == [576, 576] + [288] * 30
    net = build.build_model("tiny", "half_at_k:HalfAtK", seed=0)
    run = run_mode("prefill", net, synthetic_inputs(net.preset, prompt_len=8, seed=0), point.drop)
    assert run.steps[0].layer_seq_lens == [584, 584, 296, 296]
    _clear()


@pytest.mark.processes
@pytest.mark.slow
def test_pdrop_end_to_end_on_the_tiny_preset(pdrop_site, pdrop, tmp_path, capsys, monkeypatch):
    """run → report → plot → baseline/check → show, on CPU, as for a shipped method. `run` and `show` take
    the plug-in's flags, which a fresh `dynbench` registers when it starts: a subprocess each; the
    commands after them read the records, in this process (with the plug-in on sys.path: `pdrop`)."""
    import numpy as np

    env = env_with(pdrop_site)
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "res"
    run = dynbench("run", "--method", "llava,pdrop", "--pdrop-layers", "1,2,3", "--pdrop-ratio", "0.5",
                   "--mode", "prefill,kv-cache", "--prompt-len", "8", "--gen-len", "3", "--warmup", "0",
                   "--repeats", "1", "--device", "cpu", "--out", str(out), env=env)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    summary = {(r["method"], r["mode"]): r for r in rows if r.get("step") is None}
    assert summary["pdrop", "prefill"]["layer_seq_lens"] == [584, 296, 152, 80]
    assert summary["pdrop", "kv-cache"]["method_options"] == {"layers": [1, 2, 3], "ratio": 0.5}
    assert summary["pdrop", "kv-cache"]["layer_cache_lens"] == [584 + 2, 296 + 2, 152 + 2, 80 + 2]
    rc, printed, err = _main(capsys, "report", str(out))
    assert rc == 0 and "layers=1,2,3 ratio=0.5" in printed, err
    rc, _, err = _main(capsys, "plot", str(out), "--out", str(tmp_path / "charts"))
    assert rc == 0 and (tmp_path / "charts" / "layer_tokens.svg").exists(), err
    assert _main(capsys, "baseline", str(out), "--out", str(tmp_path / "base.jsonl"))[0] == 0
    rc, printed, err = _main(capsys, "check", str(out), "--baseline", str(tmp_path / "base.jsonl"))
    assert rc == 0, err
    assert "pdrop prefill P=8 layers=1,2,3 ratio=0.5" in " ".join((printed + err).split())
    rng = np.random.default_rng(3)
    ids = np.concatenate([[1], rng.integers(3, 300, 12), [-200], rng.integers(3, 300, 6)])
    np.savez(tmp_path / "p.npz", input_ids=ids, pixel_values=rng.standard_normal((3, 336, 336)).astype("f4"))
    show = dynbench("show", "--inputs", str(tmp_path / "p.npz"), "--gen-len", "2", "--method", "llava,pdrop",
                    "--pdrop-layers", "1,2,3", "--out", str(tmp_path / "show"), env=env)
    assert show.returncode == 0, show.stderr
    views = json.loads((tmp_path / "show" / "p.json").read_text())["methods"]
    assert len(views["pdrop"]["kept_image_indices"]) == 72 and len(views["llava"]["kept_image_indices"]) == 576
    rc, _, err = _main(capsys, "run", "--method", "pdrop", "--device", "cpu", "--mode", "prefill")
    assert rc == 2 and "pdrop: cut layers" in err, err  # 8,16,24 on 4 layers
    assert len(err.strip().splitlines()) == 1


def test_no_method_name_branches_outside_the_methods_modules():
    """What a method needs is a property of its declaration; the names may be compared only in the
    methods' own modules, plus what is left (presentation of the shipped methods' legacy columns,
    the checkpoint formats, the dense baseline's role) — listed here so it only shrinks."""
    import re
    from pathlib import Path

    root = Path(__file__).parents[1] / "dynbench"
    branch = re.compile(r'(method|\bm)\s*(==|!=|in|not in)\s*\(?\s*"(dynamic-llava|random|fastv|h2o|streaming-llm)"'
                        r"|KV_METHODS|PRUNE_METHODS")
    own = {"models/baselines.py", "models/dynamic_llava.py", "models/llava.py", "models/methods.py", "names.py"}
    left = {"models/checkpoints.py"}  # which weights form an official Dynamic-LLaVA checkpoint
    found = {str(p.relative_to(root)) for p in root.rglob("*.py") if branch.search(p.read_text(encoding="utf-8"))}
    assert found - own <= left, sorted(found - own - left)
