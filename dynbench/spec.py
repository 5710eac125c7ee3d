"""What one benchmark point is (`RunSpec`), and how lists of flag values expand into points.

A point's fields are declared once, in `fields.py`; `RunSpec` is built from that table and settles
itself when made: a field the point does not use is None, one it uses and was not given takes its
declared default, and every value is checked once, here. `llava` and the baselines have no text keep
or text policy, `prefill` has no `gen_len` or text keep, only `no-cache` uses `reuse_vision`, and the
`learned` text policy has no `text_keep`. Vision keep belongs to `dynamic-llava`, `random` and a
budget-matched `fastv` (the keep it is matched to); `fastv_k` / `fastv_r` to `fastv`, `kv_budget` to
`h2o` / `streaming-llm`, `match_budget` to `random` / `fastv`. `h2o` / `streaming-llm` have no
no-cache mode: a sweep skips those points. The device `auto` stays in the spec until the sweep runs
(`resolved`), so a Slurm login node expands a GPU sweep without a GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from dataclasses import asdict, dataclass, make_dataclass
from pathlib import Path

import yaml

from dynbench import registry
from dynbench.errors import DynbenchError
from dynbench.fields import FIELD, KINDS, POINT_FIELDS, SUITE_FIELDS, PointField
from dynbench.models.presets import get_preset
from dynbench.models.rules import LEARNED_NEEDS_WEIGHTS, DropConfig, check_fastv
from dynbench.names import MODES

MAX_TOTAL_TOKENS = 1_048_576
TEXT_KEEP_WITH_LEARNED = (
    "--text-keep cannot be used with --text-policy learned (the predictor decides); "
    "use --text-policy budget to impose a keep ratio"
)
# every field None = "not given": the RunSpec fills in what its point uses (`_settled`)
_Fields = make_dataclass("_Fields", [(f.name, KINDS[f.kind] | None, dataclasses.field(default=None))
                                     for f in POINT_FIELDS], frozen=True)


@dataclass(frozen=True)
class RunSpec(_Fields):
    """One benchmark point: the fields of `fields.POINT_FIELDS` (keyword arguments; any not given
    takes its default), settled and checked when made. `method_options`: a plug-in method's options,
    ((name, value), …) in declaration order; None for the shipped methods (their options are fields)."""

    def __post_init__(self):
        for name, value in _settled(asdict(self)).items():
            object.__setattr__(self, name, value)
        preset = get_preset(self.model)
        method = registry.get(self.method)
        for f in POINT_FIELDS:
            _check_value(f, getattr(self, f.name))
        method.check_mode(self.mode)
        if self.fastv_k is not None or self.fastv_r is not None:
            check_fastv(self.fastv_k, self.fastv_r, preset.layers)
        if self.method_options is not None:
            method.check(preset, method.values_of(self.drop))
        if self.attn == "flash_attention_2" and self.dtype == "float32":
            raise DynbenchError("--attn flash_attention_2 runs float16 or bfloat16 only (flash-attn rejects "
                                "float32); add --dtype bfloat16 or use --attn sdpa")
        if self.device == "meta" and self.text_policy == "learned":
            raise DynbenchError(LEARNED_NEEDS_WEIGHTS)
        if self.repeats is not None and self.repeats < 1 and self.device != "meta":
            raise DynbenchError(f"--repeats must be ≥ 1, got {self.repeats}")
        self._check_length(preset)

    def _check_length(self, preset) -> None:
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
                stacklevel=4,  # the caller of RunSpec(...): warn ← _check_length ← __post_init__ ← __init__
            )

    def resolved(self) -> RunSpec:
        """This point on this machine: `auto` → cuda when visible, else cpu (and the repeats that
        depend on it); `cuda` without a GPU is an error."""
        device = resolve_device(self.device)
        return self if device == self.device else dataclasses.replace(self, device=device)

    @property
    def drop(self) -> DropConfig:
        """The keeps and baseline parameters the model reads (a field the point leaves None: its default)."""
        return DropConfig(
            vision_keep=self.vision_keep or 1.0,
            text_keep=self.text_keep,
            text_policy=self.text_policy or FIELD["text_policy"].default,
            **{n: FIELD[n].default if getattr(self, n) is None else getattr(self, n)
               for n in ("fastv_k", "fastv_r", "kv_budget")},
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


def _settled(values: dict) -> dict:
    """`values` with every field the point does not use set to None, every field it uses and lacks
    set to its declared default, and the warm-up and repeats the mode implies (DESIGN: decode modes
    1 + 1 — one repeat is a whole generation whose steps give the statistics; prefill 3 + 10 on GPU,
    3 + 5 on CPU — five TTFT samples is the fewest the report's and the gate's bootstrap CI accept;
    nothing runs on meta; on `auto` the prefill repeats wait for the device)."""
    for name in ("model", "method", "mode", "device", "text_policy"):
        if values[name] is None:
            values[name] = FIELD[name].default
    method = registry.get(values["method"])
    _check_value(FIELD["mode"], values["mode"])  # the modes' rules below need a known one
    if values["text_policy"] == "learned" and values["text_keep"] is not None and _uses(FIELD["text_keep"], values,
                                                                                       method, policy=False):
        raise DynbenchError(TEXT_KEEP_WITH_LEARNED)
    alone = [f.flag for f in POINT_FIELDS if f.dataset and values["dataset"] is None and values[f.name] not in (None,
                                                                                                            False)]
    if alone:
        raise DynbenchError(f"{', '.join(alone)} go with --dataset")
    for f in POINT_FIELDS:
        if not _uses(f, values, method):
            values[f.name] = None
        elif values[f.name] is None and not (f.dataset is False and values["dataset"] is not None):
            values[f.name] = f.default  # (a dataset point's sample gives its own prompt length)
    prefill, device = values["mode"] == "prefill", values["device"]
    if device == "meta":
        values.update(warmup=0, repeats=0)
    if values["warmup"] is None:
        values["warmup"] = 3 if prefill else 1
    if values["repeats"] is None:  # prefill on `auto`: None until the device is resolved
        values["repeats"] = {"cuda": 10, "cpu": 5}.get(device) if prefill else 1
    if values["method_options"] is None and any(o.field is None for o in method.options):
        defaults = method.option_values({})  # made directly (not from flags): the plug-in's defaults, recorded
        values["method_options"] = tuple((o.name, defaults[o.name]) for o in method.options if o.field is None)
    return values


def _uses(f: PointField, values: dict, method, *, policy: bool = True) -> bool:
    """Whether a point of these `values` and `method` uses field `f` (`PointField.modes`, `.methods`,
    `.dataset`; the learned text policy has no text keep unless `policy` is False)."""
    if values["mode"] not in f.modes:
        return False
    if f.dataset and values["dataset"] is None:
        return False
    if f.methods == "option":  # a method's own option; vision keep also the ratio a budget match starts from
        return f.name in {o.field for o in method.options} or (
            f.name == "vision_keep" and method.budget_matched and values["match_budget"] is not None)
    if f.methods is not None and not getattr(method, f.methods):
        return False
    return not (policy and f.name == "text_keep" and values["text_policy"] == "learned")


def _check_value(f: PointField, value) -> None:
    """One field's value against its declaration: a choice, a ratio in (0, 1], a minimum."""
    if value is None:
        return
    if isinstance(f.choices, tuple) and value not in f.choices:
        raise DynbenchError(f"unknown {f.flag[2:]} {value!r}; choose one of: {', '.join(f.choices)}")
    if f.ratio and not 0 < value <= 1:
        raise DynbenchError(f"{f.flag} must be in (0, 1], got {value}")
    if f.minimum is not None and value < f.minimum:
        raise DynbenchError(f"{f.flag} must be ≥ {f.minimum:g}, got {value}")


def point(fields: dict) -> RunSpec:
    """The RunSpec of one combination of flag or suite values: a plug-in's `--<method>-<option>`
    values packed into `method_options`, `--match-budget`'s ratio derived."""
    return RunSpec(**_pack_options(_matched(dict(fields))))


def _matched(fields: dict) -> dict:
    """`--match-budget` (methods with `budget_matched`): the option values that match dynamic-llava's
    prefill cost at the point's vision keep."""
    info = registry.get(fields.get("method") or FIELD["method"].default)
    if fields.get("match_budget") is None or not info.budget_matched:
        return fields
    preset = get_preset(fields.get("model") or FIELD["model"].default)
    keep = FIELD["vision_keep"].default if fields.get("vision_keep") is None else fields["vision_keep"]
    owned = [o for o in info.options if o.field and o.field != "vision_keep"]
    values = info.matched_options(preset, keep, fields["match_budget"], {o.name: fields.get(o.field) for o in owned})
    fields.update({o.field: values[o.name] for o in owned if o.name in values}, vision_keep=keep)
    return fields


def _pack_options(fields: dict) -> dict:
    """Plug-in option fields (`pdrop_ratio`, …) → the point's `method_options`: its own method's
    values (defaults filled in), the other methods' dropped."""
    method_name = fields.get("method") or FIELD["method"].default
    own = {}
    for field, (method, option) in registry.option_fields([method_name]).items():
        value = fields.pop(field, None)
        if method is registry.get(method_name):
            own[option.name] = value
    info = registry.get(method_name)
    plugin = [o.name for o in info.options if o.field is None]
    values = info.option_values(own) if plugin else {}
    fields["method_options"] = tuple((name, values[name]) for name in plugin) or None
    return fields


def expand(axes: dict[str, list], fixed: dict) -> list[RunSpec]:
    """Cross product of the list-valued `axes` plus the `fixed` fields, one `RunSpec` each, de-duplicated,
    in order. `--text-keep` with the learned policy is refused, not ignored."""
    if fixed.get("text_policy") == "learned" and any(v is not None for v in axes.get("text_keep", [])):
        raise DynbenchError(TEXT_KEEP_WITH_LEARNED)
    for value in axes.get("match_budget", []):
        _check_value(FIELD["match_budget"], value)
    matched = [m for m in registry.names() if registry.get(m).budget_matched]
    if any(v is not None for v in axes.get("match_budget", [])) and not set(axes.get("method", [])) & set(matched):
        warnings.warn(f"--match-budget sets the ratio of {' and '.join(matched)} only; no such point here",
                      stacklevel=2)
    names = list(axes)
    points: dict[RunSpec, None] = {}
    skipped: set[str] = set()
    for values in itertools.product(*(axes[n] for n in names)):
        fields = dict(zip(names, values, strict=True), **fixed)
        method = registry.get(fields.get("method") or FIELD["method"].default)
        if fields.get("mode") in MODES and fields["mode"] not in method.modes:
            skipped.add((f"{fields['method']} runs {', '.join(method.modes)} only", fields["mode"]))
            continue
        points[point(fields)] = None
    if skipped:
        what = "; ".join(sorted(dict.fromkeys(m for m, _ in skipped)))
        modes = ", ".join(sorted({mode for _, mode in skipped}))
        if not points:
            raise DynbenchError(f"{what}: no point is left to run")
        warnings.warn(f"{what}: those {modes} points are skipped", stacklevel=2)
    return list(points)


# ---- from flags or a suite to points ----------------------------------------------------------------
MAX_POINTS = 10_000


def resolve_device(device: str) -> str:
    """`auto` → cuda when visible, else cpu; `cuda` without a GPU is an error."""
    if device in ("cpu", "meta"):
        return device  # no torch needed
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DynbenchError("--device cuda: no CUDA device is visible; use --device cpu")
    return device


def resolved(points: list[RunSpec]) -> list[RunSpec]:
    """The points on this machine (`RunSpec.resolved`), de-duplicated (`auto` and `cpu` may meet)."""
    return list(dict.fromkeys(p.resolved() for p in points))


def _cast(f: PointField, value, where: str):
    """A flag or suite value as the field's kind; one line naming the flag otherwise."""
    typ = KINDS[f.kind]
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
            return _in_range(f, cast, where)
    raise DynbenchError(f"{where}{f.flag}: cannot read {value!r} as {typ.__name__}")


INT64 = 2**63  # records, tables and torch hold 64-bit integers: a larger one crashed them later


def _in_range(f: PointField, value, where: str):
    """A number that every later stage can hold: finite floats, 64-bit ints."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DynbenchError(f"{where}{f.flag}: {value} is not a finite number")
    if isinstance(value, int) and not -INT64 <= value < INT64:
        raise DynbenchError(f"{where}{f.flag}: {value} is out of range (a 64-bit integer)")
    return value


def points_from(values: dict, where: str = "", source: dict | None = None) -> list[RunSpec]:
    """Sweep points from flag or suite values: field → value, list of values, or None (not given:
    an axis' sweep values, else the point's default). `source` (checkpoint / inputs / teacher_force
    labels) is the same for every point."""
    plugin = registry.option_fields(_listed(values.get("method")))
    unknown = _unknown(values, {*SUITE_FIELDS, *plugin})
    if unknown:
        raise DynbenchError(f"{where}unknown key(s) {unknown}; allowed: {', '.join([*SUITE_FIELDS, *plugin])}")
    if values.get("dataset") is not None and values.get("prompt_len") is not None:
        raise DynbenchError(f"{where}--prompt-len is set by each sample of --dataset; drop it")
    axes, fixed = {}, {}
    for f in SUITE_FIELDS.values():
        value = values.get(f.name)
        if f.axis:
            items = f.sweep_values if value is None else _listed(value)
            if value is not None and None in items and f.default is not None and not f.nullable:  # `batch: [null]`
                raise DynbenchError(f"{where}{f.flag}: an empty (null) value in the list; give a value or leave "
                                    "the key out")
            axes[f.name] = [None if v is None else _cast(f, v, where) for v in items]
        elif isinstance(value, list):
            raise DynbenchError(f"{where}{f.flag} takes one value, got a list")
        else:
            fixed[f.name] = None if value is None else _cast(f, value, where)
    for name, (_, option) in plugin.items():  # a plug-in's options: axes, or one list per sweep (`ints`)
        value = values.get(name)
        if option.is_axis:
            axes[name] = [None if v is None else option.parse(v, where) for v in _listed(value) or [None]]
        else:
            fixed[name] = None if value is None else option.parse(value, where)
    if fixed["dataset"] is not None:
        fixed["dataset"] = _dataset_path(fixed["dataset"], where)
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
    unknown = _unknown(defaults, {*SUITE_FIELDS, *registry.option_fields(methods + _listed(defaults.get("method")))})
    if unknown:
        raise DynbenchError(f"suite {path}: unknown key(s) in defaults: {unknown}; "
                            f"allowed: {', '.join(SUITE_FIELDS)}")
    points: dict[RunSpec, None] = {}
    for i, sweep in enumerate(sweeps, start=1):
        if not isinstance(sweep, dict):
            raise DynbenchError(f"suite {path}: sweep {i} must be a mapping")
        for point in points_from({**defaults, **sweep}, f"suite {path.name}, sweep {i}: ", source):
            points[point] = None
    return list(points)
