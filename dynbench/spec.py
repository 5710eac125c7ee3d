"""What one benchmark point is (`RunSpec`), and how lists of flag values expand into points.

Axes a point does not use are None, so the same measurement never appears twice: `llava` and the
baselines have no text keep or text policy, `prefill` has no `gen_len` or text keep, only
`no-cache` uses `reuse_vision`, and the `learned` text policy has no `text_keep`. Vision keep
belongs to `dynamic-llava`, `random` and a budget-matched `fastv` (the keep it is matched to);
`fastv_k` / `fastv_r` to `fastv`, `kv_budget` to `h2o` / `streaming-llm`, `match_budget` to
`random` / `fastv`. `h2o` / `streaming-llm` have no no-cache mode: a sweep skips those points.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from dynbench import registry
from dynbench.errors import DynbenchError
from dynbench.models.presets import get_preset
from dynbench.models.rules import DropConfig, check_fastv
from dynbench.names import (
    ATTN_IMPLEMENTATIONS,
    DEVICES,
    DTYPE_NAMES,
    MATCH_BUDGETS,
    MODES,
    TEXT_POLICIES,
)

MAX_TOTAL_TOKENS = 1_048_576
TEXT_KEEP_WITH_LEARNED = (
    "--text-keep cannot be used with --text-policy learned (the predictor decides); "
    "use --text-policy budget to impose a keep ratio"
)
DEFAULT_VISION_KEEP = 0.2  # official `vision_keep_rate`
DEFAULT_TEXT_KEEP = 0.5  # official `output_text_keep_rate` (the training target)
DEFAULT_FASTV_K, DEFAULT_FASTV_R = 2, 0.5  # the FastV paper's default
DEFAULT_KV_BUDGET = 0.2  # h2o: 10 % heavy hitters + 10 % recent, of the prompt P


@dataclass(frozen=True)
class RunSpec:
    model: str = "tiny"
    method: str = "dynamic-llava"
    mode: str = "kv-cache"
    prompt_len: int | None = 64  # None: a dataset point (each sample has its own; its rows say)
    gen_len: int | None = 32
    vision_keep: float | None = DEFAULT_VISION_KEEP
    text_keep: float | None = DEFAULT_TEXT_KEEP
    text_policy: str | None = "budget"
    fastv_k: int | None = None  # fastv: first pruned layer K
    fastv_r: float | None = None  # fastv: fraction R of image tokens dropped
    kv_budget: float | None = None  # h2o / streaming-llm: KV budget, fraction of the prompt P
    match_budget: str | None = None  # random / fastv: "flops" | "tokens" (fastv_r then derived)
    reuse_vision: bool | None = None
    batch: int = 1
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    attn: str = "sdpa"
    warmup: int | None = None  # None: the mode's default (see `collapse`)
    repeats: int | None = None
    regions: bool = False  # time every named region (predictors, token drop, scoring) too: perturbs steps
    debug_decode_delay_ms: float | None = None  # debugging: a sleep in every decode step (proves the gate fires)
    # where weights and inputs come from (flags of a whole run, not sweep axes; None = random
    # weights / synthetic prompt)
    checkpoint: str | None = None
    inputs: str | None = None  # an .npz of exact tensors, or the image of --image/--prompt
    teacher_force: str | None = None
    # a dataset point: the same spec run once per sample (`datasets.py`; None without --dataset)
    dataset: str | None = None
    image_folder: str | None = None
    limit: int | None = None
    sample_seed: int | None = None
    free_run: bool | None = None  # decode modes: False = the dataset's answers are teacher-forced
    # a plug-in method's options (`method_api.Option`), ((name, value), …) in declaration order;
    # None for the shipped methods (their options are the fields above)
    method_options: tuple[tuple[str, object], ...] | None = None

    def __post_init__(self):
        preset = get_preset(self.model)
        _one_of("mode", self.mode, MODES)
        method = registry.get(self.method)  # an unknown or broken method: one line
        _one_of("device", self.device, DEVICES)
        _one_of("dtype", self.dtype, DTYPE_NAMES)
        _one_of("attn", self.attn, ATTN_IMPLEMENTATIONS)
        if self.text_policy is not None:
            _one_of("text-policy", self.text_policy, TEXT_POLICIES)
        if self.match_budget is not None:
            _one_of("match-budget", self.match_budget, MATCH_BUDGETS)
        method.check_mode(self.mode)
        if self.fastv_k is not None or self.fastv_r is not None:
            check_fastv(self.drop.fastv_k, self.drop.fastv_r, preset.layers)
        if self.method_options is None and any(o.field is None for o in method.options):
            # built directly (not through `collapse`): the plug-in's defaults, recorded as used
            values = method.option_values({})
            object.__setattr__(self, "method_options", tuple((o.name, values[o.name]) for o in method.options
                                                             if o.field is None))
        if self.method_options is not None:
            method.check(preset, method.values_of(self.drop))
        if self.kv_budget is not None and not 0 < self.kv_budget <= 1:
            raise DynbenchError(f"kv_budget must be in (0, 1], got {self.kv_budget}")
        for name in ("vision_keep", "text_keep"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise DynbenchError(f"--{name.replace('_', '-')} must be in (0, 1], got {value}")
        if self.text_policy == "learned" and self.text_keep is not None:
            raise DynbenchError(TEXT_KEEP_WITH_LEARNED)
        if self.attn == "flash_attention_2" and self.dtype == "float32":
            raise DynbenchError("--attn flash_attention_2 runs float16 or bfloat16 only (flash-attn rejects "
                                "float32); add --dtype bfloat16 or use --attn sdpa")
        if self.device == "meta" and method.text_policy and self.text_policy == "learned" \
                and self.mode != "prefill":
            raise DynbenchError("learned text decisions depend on the weights and cannot be counted without running "
                                "the model; use --text-policy budget on the meta device")
        self._check_counts(preset)

    def _check_counts(self, preset) -> None:
        """Token counts, sizes and repeats in range (after the names are known good)."""
        if self.prompt_len is None and self.dataset is None:
            raise DynbenchError("--prompt-len is needed (only a --dataset point takes each sample's own)")
        if self.prompt_len is not None and self.prompt_len < 0:
            raise DynbenchError(f"--prompt-len must be ≥ 0, got {self.prompt_len}")
        if self.dataset is None and any(v is not None for v in (self.image_folder, self.limit, self.sample_seed)):
            raise DynbenchError("--image-folder, --limit and --sample-seed go with --dataset")
        if self.limit is not None and self.limit < 1:
            raise DynbenchError(f"--limit must be ≥ 1, got {self.limit}")
        if self.gen_len is not None and self.gen_len < 1:
            raise DynbenchError(f"--gen-len must be ≥ 1, got {self.gen_len}")
        if self.batch < 1:
            raise DynbenchError(f"--batch must be ≥ 1, got {self.batch}")
        if self.debug_decode_delay_ms is not None and self.debug_decode_delay_ms < 0:
            raise DynbenchError(f"--debug-decode-delay-ms must be ≥ 0, got {self.debug_decode_delay_ms}")
        if self.warmup is not None and self.warmup < 0:
            raise DynbenchError(f"--warmup must be ≥ 0, got {self.warmup}")
        if self.repeats is not None and self.repeats < 1 and self.device != "meta":
            raise DynbenchError(f"--repeats must be ≥ 1, got {self.repeats}")
        total = (self.prompt_len or 0) + (self.gen_len or 0)
        if total > MAX_TOTAL_TOKENS:
            raise DynbenchError(
                f"--prompt-len + --gen-len = {total} is over the limit of {MAX_TOTAL_TOKENS:,} tokens"
            )
        positions = total + preset.image_tokens
        if positions > preset.max_position_embeddings:
            warnings.warn(
                f"{positions} positions exceed {self.model}'s max_position_embeddings "
                f"({preset.max_position_embeddings}); RoPE extrapolates (the paper's Table 4 does too)",
                stacklevel=2,
            )

    @property
    def drop(self) -> DropConfig:
        return DropConfig(
            vision_keep=self.vision_keep or 1.0,
            text_keep=self.text_keep,
            text_policy=self.text_policy or "budget",
            fastv_k=DEFAULT_FASTV_K if self.fastv_k is None else self.fastv_k,
            fastv_r=DEFAULT_FASTV_R if self.fastv_r is None else self.fastv_r,
            kv_budget=DEFAULT_KV_BUDGET if self.kv_budget is None else self.kv_budget,
            seed=self.seed,
            options=self.method_options or (),
        )

    @property
    def matched_ratio(self) -> float | None:
        """The ratio `--match-budget` set: fastv's R, random's vision keep (same count and layer as
        dynamic-llava, so equal by construction); None without matching."""
        if self.match_budget is None:
            return None
        return getattr(self, registry.get(self.method).matched_ratio_field)

    def as_dict(self) -> dict:
        """The fields as a record carries them (`method_options` a mapping; lists for `ints`)."""
        fields = asdict(self)
        if self.method_options is not None:
            fields["method_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.method_options}
        return fields


def _one_of(flag: str, value, choices) -> None:
    if value not in choices:
        raise DynbenchError(f"unknown {flag} {value!r}; choose one of: {', '.join(choices)}")


def collapse(fields: dict) -> dict:
    """Set to None every axis a point does not use (see module docstring), and fill in the
    mode's default warm-up and repeats (DESIGN: decode modes 1 + 1 — one repeat is a whole
    generation whose steps give the statistics; prefill 3 + 10 on GPU, 3 + 5 on CPU — five TTFT
    samples is the fewest the report's and the gate's bootstrap CI accept; nothing runs on
    meta)."""
    fields = dict(fields)
    prefill, device = fields.get("mode") == "prefill", fields.get("device", "cpu")
    if device == "meta":
        fields.update(warmup=0, repeats=0)
    if fields.get("warmup") is None:
        fields["warmup"] = 3 if prefill else 1
    if fields.get("repeats") is None:
        fields["repeats"] = (10 if device == "cuda" else 5) if prefill else 1
    if fields.get("dataset") is None:
        fields.update(image_folder=None, limit=None, sample_seed=None, free_run=None)
    elif fields.get("free_run") is None:
        fields["free_run"] = False
    if fields.get("mode") == "prefill":
        fields.update(gen_len=None, text_keep=None, text_policy=None, free_run=None)
    if fields.get("mode") != "no-cache":
        fields["reuse_vision"] = None
    info = registry.get(fields["method"]) if fields.get("method") is not None else None
    if info is None or not info.text_policy:
        fields.update(text_keep=None, text_policy=None)
    elif fields.get("text_policy") == "learned":
        fields["text_keep"] = None
    if info is None or not info.budget_matched:
        fields["match_budget"] = None
    return _pack_options(_own_fields(info, fields))


def _own_fields(info, fields: dict) -> dict:
    """A shipped method's option fields filled in (defaults; `--match-budget` sets the matched
    ratio), every other method's set to None."""
    owned = {o.field: o for o in info.options if o.field} if info is not None else {}
    matched = fields.get("match_budget") is not None
    if matched:
        preset = get_preset(fields.get("model", "tiny"))
        keep = DEFAULT_VISION_KEEP if fields.get("vision_keep") is None else fields["vision_keep"]
        given = {o.name: fields.get(f) for f, o in owned.items() if f != "vision_keep"}
        values = info.matched_options(preset, keep, fields["match_budget"], given)
        fields.update({o.field: values[o.name] for o in owned.values() if o.name in values}, vision_keep=keep)
    for name in ("vision_keep", "fastv_k", "fastv_r", "kv_budget"):
        if name not in owned and not (matched and name == "vision_keep"):
            fields[name] = None
        elif fields.get(name) is None:
            fields[name] = owned[name].default
    return fields


def _pack_options(fields: dict) -> dict:
    """Plug-in option fields (`pdrop_ratio`, …) → the point's `method_options`: its own method's
    values (defaults filled in), the other methods' dropped."""
    method_name = fields.get("method")
    own = {}
    for field, (method, option) in registry.option_fields([method_name]).items():
        value = fields.pop(field, None)
        if method_name is not None and method is registry.get(method_name):
            own[option.name] = value
    info = registry.get(method_name) if method_name is not None else None
    plugin = [o.name for o in info.options if o.field is None] if info is not None else []
    values = info.option_values(own) if plugin else {}
    fields["method_options"] = tuple((name, values[name]) for name in plugin) or None
    return fields


def expand(axes: dict[str, list], fixed: dict) -> list[RunSpec]:
    """Cross product of the list-valued `axes` plus the `fixed` fields, collapsed and
    de-duplicated, in order. `--text-keep` with the learned policy is refused, not ignored."""
    if fixed.get("text_policy") == "learned" and any(v is not None for v in axes.get("text_keep", [])):
        raise DynbenchError(TEXT_KEEP_WITH_LEARNED)
    for value in axes.get("match_budget", []):
        if value is not None:
            _one_of("match-budget", value, MATCH_BUDGETS)
    matched = [m for m in registry.names() if registry.get(m).budget_matched]
    if any(v is not None for v in axes.get("match_budget", [])) and not set(axes.get("method", [])) & set(matched):
        warnings.warn(f"--match-budget sets the ratio of {' and '.join(matched)} only; no such point here",
                      stacklevel=2)
    names = list(axes)
    points: dict[RunSpec, None] = {}
    skipped: set[str] = set()
    for values in itertools.product(*(axes[n] for n in names)):
        fields = dict(zip(names, values, strict=True), **fixed)
        method = registry.get(fields["method"]) if fields.get("method") is not None else None
        if method is not None and fields.get("mode") in MODES and fields["mode"] not in method.modes:
            skipped.add((f"{fields['method']} runs {', '.join(method.modes)} only", fields["mode"]))
            continue
        points[RunSpec(**collapse(fields))] = None
    if skipped:
        what = "; ".join(sorted(dict.fromkeys(m for m, _ in skipped)))
        modes = ", ".join(sorted({mode for _, mode in skipped}))
        if not points:
            raise DynbenchError(f"{what}: no point is left to run")
        warnings.warn(f"{what}: those {modes} points are skipped", stacklevel=2)
    return list(points)


# ---- from flags or a suite to points ----------------------------------------------------------------
# field -> (type, is a sweep axis, default); a default of None is resolved by `collapse`/RunSpec
FIELDS: dict[str, tuple[type, bool, object]] = {
    "mode": (str, True, list(MODES)),
    "method": (str, True, ["llava", "dynamic-llava"]),
    "prompt_len": (int, True, [64]),
    "gen_len": (int, True, [32]),
    "vision_keep": (float, True, [DEFAULT_VISION_KEEP]),
    "text_keep": (float, True, None),  # 0.5 under the budget policy, none when learned
    "fastv_k": (int, True, None),  # fastv only: 2
    "fastv_r": (float, True, None),  # fastv only: 0.5, or derived by match_budget
    "kv_budget": (float, True, None),  # h2o / streaming-llm only: 0.2
    "match_budget": (str, True, None),  # random / fastv: flops | tokens
    "model": (str, False, "tiny"),
    "text_policy": (str, False, "budget"),
    "reuse_vision": (bool, False, False),
    "batch": (int, True, [1]),  # an axis: suites sweep batch 1 and 8 (the paper's Table 4)
    "seed": (int, False, 0),
    "device": (str, False, "auto"),
    "dtype": (str, False, "float32"),
    "attn": (str, False, "sdpa"),
    "warmup": (int, False, None),
    "repeats": (int, False, None),
    "regions": (bool, False, False),
    "debug_decode_delay_ms": (float, False, None),
    # datasets (one value per sweep; a suite key too): the samples a point runs over
    "dataset": (str, False, None),
    "image_folder": (str, False, None),
    "limit": (int, False, None),
    "sample_seed": (int, False, None),
    "free_run": (bool, False, None),
}
MAX_POINTS = 10_000
NULLABLE_AXES = ("prompt_len", "gen_len")  # null: each dataset sample's own / prefill's single token


class NoDevice(DynbenchError):
    """The sweep names a device this machine lacks (a Slurm login node submitting GPU shards)."""


def resolve_device(device: str) -> str:
    """`auto` → cuda when visible, else cpu; `cuda` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise NoDevice("--device cuda: no CUDA device is visible; use --device cpu")
    return device


def _cast(name: str, value, typ: type, where: str):
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
            return str(value).lower() in ("true", "1", "yes")
    elif typ is str:
        if isinstance(value, str):
            return value
    else:
        try:
            if isinstance(value, bool):
                raise ValueError
            cast = typ(value) if typ is float or not isinstance(value, float) else typ(str(value))
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            return _in_range(name, cast, where)
    flag = "--" + name.replace("_", "-")
    raise DynbenchError(f"{where}{flag}: cannot read {value!r} as {typ.__name__}")


INT64 = 2**63  # records, tables and torch hold 64-bit integers: a larger one crashed them later
SEEDS = ("seed", "sample_seed")


def _in_range(name: str, value, where: str):
    """A number that every later stage can hold: finite floats, 64-bit ints, seeds ≥ 0."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, float) and not math.isfinite(value):
        raise DynbenchError(f"{where}{flag}: {value} is not a finite number")
    if isinstance(value, int) and not -INT64 <= value < INT64:
        raise DynbenchError(f"{where}{flag}: {value} is out of range (a 64-bit integer)")
    if name in SEEDS and value < 0:
        raise DynbenchError(f"{where}{flag}: a seed must be ≥ 0, got {value}")
    return value


def points_from(values: dict, where: str = "", source: dict | None = None) -> list[RunSpec]:
    """Sweep points from flag or suite values: field → value, list of values, or None (default).
    `source` (checkpoint / inputs / teacher_force labels) is the same for every point."""
    plugin = registry.option_fields(_listed(values.get("method")))
    unknown = _unknown(values, {*FIELDS, *plugin})
    if unknown:
        raise DynbenchError(f"{where}unknown key(s) {unknown}; allowed: {', '.join([*FIELDS, *plugin])}")
    if values.get("dataset") is not None and values.get("prompt_len") is not None:
        raise DynbenchError(f"{where}--prompt-len is set by each sample of --dataset; drop it")
    axes, fixed = {}, {}
    for name, (typ, is_axis, default) in FIELDS.items():
        value = values.get(name)
        if value is None:
            value = default
        if is_axis:
            items = value if isinstance(value, list) else [value]
            if None in items and default is not None and name not in NULLABLE_AXES:  # `batch: [null]`
                raise DynbenchError(f"{where}--{name.replace('_', '-')}: an empty (null) value in the list; "
                                    "give a value or leave the key out")
            axes[name] = [None if v is None else _cast(name, v, typ, where) for v in items]
        else:
            if isinstance(value, list):
                raise DynbenchError(f"{where}--{name.replace('_', '-')} takes one value, got a list")
            fixed[name] = None if value is None else _cast(name, value, typ, where)
    for name, (_, option) in plugin.items():  # a plug-in's options: axes, or one list per sweep (`ints`)
        value = values.get(name)
        if option.is_axis:
            axes[name] = [None if v is None else option.parse(v, where) for v in _listed(value) or [None]]
        else:
            fixed[name] = None if value is None else option.parse(value, where)
    if fixed["dataset"] is not None:
        axes["prompt_len"] = [None]
        fixed["dataset"] = _dataset_path(fixed["dataset"], where)
    if axes["text_keep"] == [None] and fixed["text_policy"] == "budget":
        axes["text_keep"] = [DEFAULT_TEXT_KEEP]
    fixed["device"] = resolve_device(fixed["device"])
    return expand(axes, {**fixed, **(source or {})})


def _listed(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _unknown(keys, allowed) -> str:
    """The keys not in `allowed`, escaped and sorted as text (YAML keys can be numbers, or hold a
    newline): one line, or "" when none."""
    return ", ".join(sorted(repr(str(k))[1:-1] for k in keys if k not in allowed))[:200]


def _dataset_path(path: str, where: str) -> str:
    """The dataset file as given (it names the point), once it is known to exist."""
    if not Path(path).expanduser().is_file():
        raise DynbenchError(f"{where}--dataset {path}: no such file")
    return path


SUITE_KEYS = ("description", "defaults", "sweeps")


def load_suite(path: str | Path, source: dict | None = None) -> list[RunSpec]:
    """Points of a suite file: `defaults` merged into each of `sweeps` (or one flat sweep)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise DynbenchError(f"cannot read suite {path}: {exc.strerror}") from None
    except yaml.constructor.ConstructorError as exc:  # a tag safe_load refuses: !!python/…
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        tag = (exc.problem or "").replace("could not determine a constructor for the tag", "tag").strip()
        raise DynbenchError(f"suite {path}{at}: {tag or 'a YAML tag'} is not allowed — suites are plain YAML "
                            "(mappings, lists, numbers, strings), read with yaml.safe_load") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise DynbenchError(f"suite {path} is not valid YAML{at}") from None
    if not isinstance(data, dict):
        raise DynbenchError(f"suite {path} must be a mapping of settings (see suites/smoke.yaml)")
    if "sweeps" not in data:
        data = {"description": data.pop("description", None), "sweeps": [data]}
    unknown = _unknown(data, SUITE_KEYS)
    if unknown:
        allowed = ", ".join(SUITE_KEYS)
        raise DynbenchError(f"suite {path}: unknown key(s) {unknown}; allowed: {allowed}")
    defaults, sweeps = data.get("defaults") or {}, data["sweeps"]
    if not isinstance(defaults, dict) or not isinstance(sweeps, list) or not sweeps:
        raise DynbenchError(f"suite {path}: `defaults` must be a mapping and `sweeps` a non-empty list")
    methods = [m for sweep in sweeps if isinstance(sweep, dict) for m in _listed(sweep.get("method"))]
    unknown = _unknown(defaults, {*FIELDS, *registry.option_fields(methods + _listed(defaults.get("method")))})
    if unknown:
        raise DynbenchError(f"suite {path}: unknown key(s) in defaults: {unknown}; "
                            f"allowed: {', '.join(FIELDS)}")
    points: dict[RunSpec, None] = {}
    for i, sweep in enumerate(sweeps, start=1):
        if not isinstance(sweep, dict):
            raise DynbenchError(f"suite {path}: sweep {i} must be a mapping")
        for point in points_from({**defaults, **sweep}, f"suite {path.name}, sweep {i}: ", source):
            points[point] = None
    return list(points)
