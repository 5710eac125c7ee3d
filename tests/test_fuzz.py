"""Property-based fuzzing (hypothesis): generated garbage fed to every reader and to the CLI's
parsers. The property: success, or a DynbenchError — one `Error:` line and exit 2 from the CLI —
never another exception (a traceback), and never a changed input file.

The number of examples is kept small for the suite (`FUZZ`); a longer hunt:
`pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long --hypothesis-show-statistics`.
"""

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.records import COLUMNS
from dynbench.results import RECORDS_FILE

LONG = settings.default.max_examples > 100  # --hypothesis-profile=fuzz-long (tests/conftest.py)
FUZZ = settings(max_examples=settings.default.max_examples if LONG else 40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

RUN = ["run", "--mode", "prefill", "--method", "llava", "--prompt-len", "8", "--repeats", "1", "--warmup", "0",
       "--no-flops"]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4)), max_leaves=8)
# half the time a column the reports and the gate read (uniform picks over ~200 columns rarely hit them)
HOT = ["layer_seq_lens", "vision_keep", "latency_ms_samples", "ttft_ms", "total_ms", "tmacs", "kv_bytes", "status",
       "step", "method", "mode", "prompt_len", "gen_len", "batch", "env_id", "point_id", "sample", "round",
       "tpot_ms_median", "image_tokens_kept", "text_tokens_kept", "peak_mem_bytes", "device", "dtype", "model"]
column_names = st.one_of(st.sampled_from(HOT), st.sampled_from(sorted(c.name for c in COLUMNS)))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    base = out.parent / "base.jsonl"
    assert main(["baseline", str(out), "--out", str(base)]) == 0
    return out, base


def cli_ok_or_one_line(capsys, argv) -> int:
    """Run the CLI in this process: any exception but a usage error escapes `main` and fails the test."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc == 2:
        assert len([line for line in err.splitlines() if line.startswith("Error:")]) == 1, err
    assert rc in (0, 1, 2), (rc, err)
    return rc


@st.composite
def damaged_records(draw, lines):
    """A real records.jsonl with damage: a column set to a random value, a line replaced by
    garbage, a line cut short, or rows removed."""
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["retype", "column", "drop-column", "garbage", "cut", "drop-line", "json"]))
        if how == "retype":  # a column a reader uses, holding a value of another JSON type
            try:
                row = json.loads(lines[i])
            except ValueError:
                continue
            if isinstance(row, dict):
                row[draw(st.sampled_from(HOT))] = draw(st.sampled_from([5, -1, 2.5, "0.2", "abc", [1, "x"], {"a": 1},
                                                                        True, [], ""]))
                lines[i] = json.dumps(row)
        elif how in ("column", "drop-column"):
            try:
                row = json.loads(lines[i])
            except ValueError:
                continue  # damaged already
            if not isinstance(row, dict):
                continue
            name = draw(column_names)
            if how == "column":
                row[name] = draw(json_values)
            else:
                row.pop(name, None)
            lines[i] = json.dumps(row)
        elif how == "garbage":
            lines[i] = draw(st.binary(max_size=40)).decode("latin-1").replace("\n", " ")
        elif how == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif how == "json":
            lines[i] = json.dumps(draw(json_values))
        elif len(lines) > 1:
            del lines[i]
    return "\n".join(lines) + draw(st.sampled_from(["\n", ""]))


READERS = {
    "report": lambda folder, base, tmp: ["report", str(folder)],
    "check": lambda folder, base, tmp: ["check", str(folder), "--baseline", str(base)],
    "merge": lambda folder, base, tmp: ["merge", str(folder), "--out", str(tmp / "merged")],
    "baseline": lambda folder, base, tmp: ["baseline", str(folder), "--out", str(tmp / "b.jsonl")],
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_damaged_records_are_read_or_refused_in_one_line(results, capsys, reader):
    folder, base = results
    lines = (folder / RECORDS_FILE).read_text().splitlines()

    @FUZZ
    @given(text=damaged_records(lines))
    def fuzz(text):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "in").mkdir()
            (tmp / "in" / RECORDS_FILE).write_text(text)
            before = digest(tmp / "in" / RECORDS_FILE)
            cli_ok_or_one_line(capsys, READERS[reader](tmp / "in", base, tmp))
            assert digest(tmp / "in" / RECORDS_FILE) == before

    fuzz()


def test_damaged_baselines_are_read_or_refused_in_one_line(results, capsys):
    folder, base = results
    lines = base.read_text().splitlines()

    @FUZZ
    @given(text=damaged_records(lines))
    def fuzz(text):
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write(text)
        path = Path(f.name)
        before = digest(path)
        try:
            cli_ok_or_one_line(capsys, ["check", str(folder), "--baseline", str(path)])
            assert digest(path) == before
        finally:
            path.unlink()

    fuzz()


def _library_ok_or_one_line(call):
    try:
        call()
    except DynbenchError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(data=st.one_of(json_values, st.dictionaries(st.sampled_from(["mode", "method", "prompt_len", "gen_len",
                                                                    "batch", "seed", "vision_keep", "sweeps",
                                                                    "defaults", "dataset", "sample_seed"]),
                                                   json_values, max_size=5)),
       raw=st.booleans(), text=st.text(max_size=60))
def test_suites(data, raw, text):
    from dynbench.spec import load_suite

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text if raw else json.dumps(data))  # JSON is YAML; raw text tries the YAML parser
    path = Path(f.name)
    before = digest(path)
    try:
        _library_ok_or_one_line(lambda: load_suite(path))
        assert digest(path) == before
    finally:
        path.unlink()


@FUZZ
@given(records=st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"image": st.one_of(st.just("img.png"), st.just("cut.png"), st.just("missing.png"), json_values),
     "prompt": st.one_of(st.text(max_size=20), json_values)},
    optional={"answer": json_values, "inputs": json_values, "id": json_values})), max_size=4),
    jsonl=st.booleans(), limit=st.one_of(st.none(), st.integers(-2, 5)), seed=st.one_of(st.none(), st.integers(0, 9)),
    skip_bad=st.booleans())
def test_datasets(tmp_path_factory, records, jsonl, limit, seed, skip_bad):
    from PIL import Image

    from dynbench.datasets import load_dataset

    folder = tmp_path_factory.mktemp("ds")
    Image.new("RGB", (16, 16)).save(folder / "img.png")
    (folder / "cut.png").write_bytes((folder / "img.png").read_bytes()[:40])
    path = folder / ("data.jsonl" if jsonl else "data.json")
    path.write_text("\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records))
    before = digest(path)
    _library_ok_or_one_line(lambda: load_dataset(path, limit=limit, sample_seed=seed, skip_bad=skip_bad))
    assert digest(path) == before


@FUZZ
@given(data=st.one_of(json_values, st.fixed_dictionaries({"shard": json_values, "of": json_values,
                                                          "sweep": json_values, "points": json_values})),
       raw=st.binary(max_size=40), use_raw=st.booleans())
def test_shard_manifests(tmp_path_factory, data, raw, use_raw):
    from dynbench.shards import MANIFEST_FILE, read_manifest

    folder = tmp_path_factory.mktemp("shard")
    (folder / MANIFEST_FILE).write_bytes(raw if use_raw else json.dumps(data).encode())
    before = digest(folder / MANIFEST_FILE)
    _library_ok_or_one_line(lambda: read_manifest(folder))
    assert digest(folder / MANIFEST_FILE) == before


npz_arrays = st.one_of(
    st.builds(lambda v, shape: np.full(shape, v), st.integers(-300, 40000) | st.floats(allow_nan=True),
              st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)),
    st.just(np.array(["text"])), st.just(np.array([-200, 1, 2, 3])),
    st.just(np.zeros((1, 3, 336, 336), dtype=np.float32)), st.just(np.zeros((3, 32, 32), dtype=np.float16)),
)


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(["input_ids", "pixel_values", "attention_mask", "other"]),
                              npz_arrays, max_size=4),
       batch=st.one_of(st.none(), st.integers(1, 3)), garbage=st.one_of(st.none(), st.binary(max_size=30)))
def test_npz_inputs(tmp_path_factory, arrays, batch, garbage):
    from dynbench.inputs import npz_inputs
    from dynbench.models.presets import get_preset

    path = tmp_path_factory.mktemp("npz") / "x.npz"
    if garbage is not None:
        path.write_bytes(garbage)
    else:
        np.savez(path, **arrays)
    before = digest(path)
    _library_ok_or_one_line(lambda: npz_inputs(path, get_preset("tiny"), batch=batch))
    assert digest(path) == before


RUN_FLAGS = ["--prompt-len", "--gen-len", "--batch", "--seed", "--vision-keep", "--text-keep", "--kv-budget",
             "--fastv-k", "--fastv-r", "--warmup", "--repeats", "--debug-decode-delay-ms", "--gpu-spec", "--shard",
             "--dtype", "--attn", "--model", "--method", "--mode", "--match-budget", "--text-policy"]
values = st.one_of(st.text(max_size=12), st.integers(-(2**70), 2**70).map(str), st.floats().map(str),
                   st.sampled_from(["nan", "inf", "-inf", "0", "1e309", "1/0", "0/0", "2/1", "1,2,3", ""]))


@FUZZ
@given(flags=st.lists(st.tuples(st.sampled_from(RUN_FLAGS), values), min_size=1, max_size=3))
def test_run_flags_parse_or_refuse_in_one_line(capsys, flags):
    argv = ["run", "--device", "meta", *(a for pair in flags for a in pair)]
    assume("--help" not in argv)
    cli_ok_or_one_line(capsys, argv)
