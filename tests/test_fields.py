"""A point's fields are declared once (`dynbench/fields.py`): whichever way a point is made — a
RunSpec in code, flags, a suite file — it gets the same defaults, the official ones written out here
by hand, and the same fields are None where the point does not use them."""

from dataclasses import fields as dataclass_fields

import pytest

from dynbench import registry
from dynbench.cli.options import POINT_OPTIONS, RUN_OPTIONS, SOURCE_OPTIONS
from dynbench.errors import DynbenchError
from dynbench.fields import POINT_FIELDS, SUITE_FIELDS
from dynbench.models.rules import DropConfig
from dynbench.records import SPEC_COLUMNS
from dynbench.spec import RunSpec, load_suite, points_from

# the defaults as the paper and the official code set them (vision_keep_rate 0.2, output_text_keep_rate 0.5),
# FastV's paper (K 2, R 0.5), H2O's 10 % + 10 % budget, and dynbench's documented lengths
OFFICIAL = {"model": "tiny", "prompt_len": 64, "gen_len": 32, "vision_keep": 0.2, "text_keep": 0.5,
            "text_policy": "budget", "batch": 1, "seed": 0, "dtype": "float32", "attn": "sdpa", "regions": False}
BASELINE_DEFAULTS = {"fastv": {"fastv_k": 2, "fastv_r": 0.5}, "h2o": {"kv_budget": 0.2},
                     "streaming-llm": {"kv_budget": 0.2}}


def _flags(**given) -> dict:
    return {**dict.fromkeys(SUITE_FIELDS), **given}


def test_one_default_per_field_whichever_way_a_point_is_made(tmp_path):
    direct = RunSpec(method="dynamic-llava", mode="kv-cache", device="meta")
    [flagged] = points_from(_flags(method=["dynamic-llava"], mode=["kv-cache"], device="meta"))
    (tmp_path / "s.yaml").write_text("method: dynamic-llava\nmode: kv-cache\ndevice: meta\n")
    [suited] = load_suite(tmp_path / "s.yaml")
    assert direct == flagged == suited
    assert {k: getattr(direct, k) for k in OFFICIAL} == OFFICIAL
    drop = DropConfig()
    assert (drop.vision_keep, drop.text_keep, drop.text_policy) == (0.2, 0.5, "budget")
    for method, expected in BASELINE_DEFAULTS.items():
        spec = RunSpec(method=method, mode="prefill", device="meta")
        assert {k: getattr(spec, k) for k in expected} == expected == {k: getattr(drop, k) for k in expected}
        options = registry.get(method).options  # `dynbench methods` lists the same defaults
        assert {o.field: o.default for o in options if o.field in expected} == expected


def test_a_field_the_point_does_not_use_is_none_and_one_it_uses_is_filled():
    unused = {  # (method, mode) → the fields that must be None, by the module docstring's rules
        ("llava", "prefill"): ("gen_len", "vision_keep", "text_keep", "text_policy", "fastv_k", "kv_budget",
                               "reuse_vision", "match_budget"),
        ("fastv", "no-cache"): ("vision_keep", "text_keep", "text_policy", "kv_budget"),
        ("h2o", "kv-cache"): ("vision_keep", "text_keep", "fastv_k", "fastv_r", "reuse_vision", "match_budget"),
    }
    for (method, mode), names in unused.items():
        spec = RunSpec(method=method, mode=mode, device="cpu", vision_keep=0.3, text_keep=0.3, fastv_k=1,
                       kv_budget=0.3, reuse_vision=True)
        assert all(getattr(spec, n) is None for n in names), (method, mode, spec)
    assert RunSpec(method="fastv", mode="no-cache", device="cpu").reuse_vision is False  # used, so filled
    learned = RunSpec(method="dynamic-llava", mode="kv-cache", text_policy="learned", device="cpu")
    assert learned.text_keep is None  # the predictor decides
    assert RunSpec(mode="prefill", device="cpu").repeats == 5 and RunSpec(mode="prefill", device="auto").repeats is None


def test_the_same_value_is_refused_the_same_way_from_code_flags_and_suites(tmp_path):
    (tmp_path / "s.yaml").write_text("vision_keep: 0\n")
    for make in (lambda: RunSpec(vision_keep=0.0), lambda: points_from(_flags(vision_keep=["0"])),
                 lambda: load_suite(tmp_path / "s.yaml")):
        with pytest.raises(DynbenchError, match=r"--vision-keep must be in \(0, 1\], got 0"):
            make()
    with pytest.raises(DynbenchError, match="--limit, --sample-seed go with --dataset"):
        RunSpec(limit=3, sample_seed=1)


def test_flags_suite_keys_record_columns_and_runspec_come_from_the_one_table():
    names = [f.name for f in POINT_FIELDS]
    assert [f.name for f in dataclass_fields(RunSpec)] == names == list(SPEC_COLUMNS)
    flags = {n for n in RUN_OPTIONS if n not in SOURCE_OPTIONS and n not in registry.option_fields()}
    assert flags == set(SUITE_FIELDS)  # every suite key is a flag of `run`, and the other way round
    assert set(POINT_OPTIONS) < set(RUN_OPTIONS)  # profile / show: the point without how `run` measures
    assert {"warmup", "repeats"} <= set(RUN_OPTIONS) - set(POINT_OPTIONS)
    fastv_k = RUN_OPTIONS["fastv_k"][0].__metadata__[0]
    assert "default: 2]" in fastv_k.help and fastv_k.rich_help_panel == "Baselines' parameters"
