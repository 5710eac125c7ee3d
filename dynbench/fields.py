"""A point's fields, declared once: name, type, default, help, sweep axis or not, and which modes,
methods and points use it.

Everything else is built from `POINT_FIELDS`: the `RunSpec` dataclass and its validation and
defaults (`spec.py`), the point flags and their help (`cli/options.py`), the suite keys, the record's
spec columns (`records.py`) and the defaults of the shipped methods' options (`models/methods.py`).
A field a point does not use is None in it (`PointField.used_by`), so the same measurement never
appears twice under two names. Plain data, no imports beyond `names`: `--help` stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynbench.names import ATTN_IMPLEMENTATIONS, DEVICES, DTYPE_NAMES, MATCH_BUDGETS, MODES, TEXT_POLICIES

DECODE_MODES = ("no-cache", "kv-cache")
KINDS = {"str": str, "int": int, "float": float, "bool": bool, "dict": dict}

# help panels of the flags (`dynbench run --help`), in the order they are shown
WHAT, BASELINES, MODEL, INPUTS, DATASETS, MEASURE = (
    "What to run", "Baselines' parameters", "Model and weights", "Inputs", "Datasets", "Measurement")
PANELS = (WHAT, BASELINES, MODEL, INPUTS, DATASETS, MEASURE)

# which commands take a field as a flag: every command that builds points (`run`, `profile`, `show`),
# `run` only (how it measures), or none (set from elsewhere: the source's labels, plug-in options)
EVERY_COMMAND, RUN_ONLY, NO_FLAG = "point", "run", ""


@dataclass(frozen=True)
class PointField:
    name: str
    kind: str  # str | int | float | bool | dict (`KINDS`)
    help: str  # the flag's help (`{choices}` is filled in); the record column's doc unless `doc` says more
    panel: str = WHAT
    default: Any = None  # what a point that uses the field takes when it is not given (None: decided per point)
    axis: bool = False  # a sweep axis: a list of values crossed with the other axes (`--gen-len 8,16`)
    sweep: tuple | None = None  # a sweep's values when not given, where not just (default,)
    shown: str | None = None  # the default as the help says it, where not `default` / `sweep`
    metavar: str | None = None
    choices: tuple[str, ...] | None = None  # the values allowed (None: any; methods and models are
    # checked by the registry and the presets, and their help lists what is installed: `cli/options.py`)
    minimum: float | None = None  # a number at least this
    ratio: bool = False  # a ratio in (0, 1]
    modes: tuple[str, ...] = MODES  # the modes that use it
    methods: str | None = None  # the methods that use it: those with this `Method` attribute true
    # (`text_policy`, `budget_matched`), or "option": those with an option stored in this field
    dataset: bool | None = None  # True: only dataset points use it; False: a dataset point takes it from each sample
    command: str = EVERY_COMMAND
    doc: str | None = None  # the record column's description, where it differs from `help`
    unit: str = ""
    nullable: bool = False  # an axis whose list may hold null (each dataset sample's own, prefill's one token)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def sweep_values(self) -> list:
        """An axis' values when the flag or suite key is not given ([None]: each point's default)."""
        return list(self.sweep) if self.sweep else [None]

    @property
    def column_doc(self) -> str:
        """The record column's description (docs/records.md)."""
        return self.doc or self.help_text(default=False)

    def help_text(self, choices: tuple[str, ...] | None = None, *, default: bool = True) -> str:
        """The help with its choices (`choices`, or the declared ones) and its default."""
        text = self.help.replace("{choices}", " | ".join(choices or self.choices or ()))
        if not default:
            return text
        shown = self.shown
        if shown is None and self.default is not None and not isinstance(self.default, bool):
            shown = ",".join(map(str, self.sweep or (self.default,)))
        return f"{text} [default: {shown}]" if shown else text


_F = PointField
POINT_FIELDS: tuple[PointField, ...] = (
    _F("model", "str", "preset: {choices}", MODEL, default="tiny",
       doc="model preset (or a checkpoint's shape name)"),
    _F("method", "str", "{choices}", default="dynamic-llava", axis=True, sweep=("llava", "dynamic-llava"),
       metavar="METHOD",
       doc="llava | dynamic-llava | random | fastv | h2o | streaming-llm | a plug-in's name (dynbench methods)"),
    _F("mode", "str", "{choices}", default="kv-cache", axis=True, sweep=MODES, shown="all three", metavar="MODE",
       choices=MODES),
    _F("prompt_len", "int", "text tokens in the prompt, image excluded", default=64, axis=True, metavar="N",
       minimum=0, dataset=False, unit="tokens", nullable=True),
    _F("gen_len", "int", "tokens generated in decode modes", default=32, axis=True, metavar="N", minimum=1,
       modes=DECODE_MODES, unit="tokens", nullable=True, doc="tokens generated (decode modes)"),
    _F("vision_keep", "float", "image keep ratio in (0, 1]", default=0.2, axis=True, metavar="R", ratio=True,
       methods="option", doc="requested image keep ratio (dynamic-llava, random, matched fastv)"),
    _F("text_keep", "float", "output-text keep ratio (budget policy)", default=0.5, axis=True, metavar="R",
       ratio=True, modes=DECODE_MODES, methods="text_policy",
       doc="requested output-text keep ratio (dynamic-llava, budget policy)"),
    _F("text_policy", "str", "{choices}", default="budget", shown="budget; learned with --checkpoint",
       choices=TEXT_POLICIES, modes=DECODE_MODES, methods="text_policy",
       doc="learned | budget (dynamic-llava, decode modes)"),
    _F("fastv_k", "int", "fastv: first pruned layer K", BASELINES, default=2, axis=True, metavar="K",
       methods="option"),
    _F("fastv_r", "float", "fastv: fraction R of image tokens dropped", BASELINES, default=0.5, axis=True,
       metavar="R", methods="option"),
    _F("kv_budget", "float", "h2o, streaming-llm: KV budget, share of P", BASELINES, default=0.2, axis=True,
       metavar="F", ratio=True, methods="option", doc="h2o / streaming-llm: KV budget, share of the prompt P"),
    _F("match_budget", "str", "{choices}: set fastv's R (random: its keep) so that its prefill paper TFLOPs or "
       "equivalent tokens equal dynamic-llava's", BASELINES, axis=True, metavar="BY", choices=MATCH_BUDGETS,
       methods="budget_matched", doc="random / fastv: flops | tokens — ratio set to match dynamic-llava"),
    _F("reuse_vision", "bool", "no-cache: encode the image once", default=False, modes=("no-cache",),
       doc="no-cache: the image is encoded once"),
    _F("batch", "int", "batch size, one prompt replicated", default=1, axis=True, metavar="N", minimum=1,
       doc="batch size (one prompt replicated)"),  # an axis: suites sweep batch 1 and 8 (the paper's Table 4)
    _F("seed", "int", "seed of random weights and synthetic inputs", MODEL, default=0, minimum=0,
       doc="seed of random weights, synthetic inputs and random pruning"),
    _F("device", "str", "{choices} (meta: counts only)", MODEL, default="auto", choices=DEVICES,
       doc="cpu | cuda | meta (auto is resolved when the sweep runs)"),
    _F("dtype", "str", "{choices}", MODEL, default="float32", choices=DTYPE_NAMES),
    _F("attn", "str", "{choices}", MODEL, default="sdpa", choices=ATTN_IMPLEMENTATIONS,
       doc="sdpa | eager | flash_attention_2 (the point's backend; see attn_ledger)"),
    _F("warmup", "int", "warm-up runs", MEASURE, shown="prefill 3, decode 1", minimum=0, command=RUN_ONLY,
       doc="warm-up runs (not recorded)"),
    _F("repeats", "int", "measured runs", MEASURE, shown="prefill 10 on GPU, 5 on CPU; decode 1", minimum=0,
       command=RUN_ONLY),
    _F("regions", "bool", "also time predictors, token drop and scoring inside every step (adds events to timed "
       "steps; recorded)", MEASURE, default=False, command=RUN_ONLY,
       doc="fine regions (predictors, token drop, scoring) were timed inside the steps"),
    _F("debug_decode_delay_ms", "float", "debugging: sleep this long inside every decode step (recorded; proves "
       "`check` catches a slowdown)", MEASURE, metavar="MS", minimum=0, command=RUN_ONLY, unit="ms",
       doc="debugging: a sleep added to every decode step (--debug-decode-delay-ms; proves the gate fires). "
       "Not part of the point key"),
    # where weights and inputs come from: labels of the run's source (`sources.Source.labels`), not flags here
    _F("checkpoint", "str", "--checkpoint folder; null = random weights", command=NO_FLAG),
    _F("inputs", "str", "--inputs .npz or --image file; null = a synthetic prompt", command=NO_FLAG),
    _F("teacher_force", "str", "--teacher-force .npz of answer tokens", modes=DECODE_MODES, command=NO_FLAG),
    # a dataset point: the same spec run once per sample (`datasets.py`)
    _F("dataset", "str", "samples to run each point over: JSON Lines ({image, prompt, answer} or {inputs, "
       "teacher_force}) or LLaVA conversation JSON", DATASETS, metavar="FILE",
       doc="--dataset file: the samples the point ran over (JSON Lines or LLaVA JSON)"),
    _F("image_folder", "str", "the dataset's images are relative to this folder", DATASETS,
       shown="the dataset file's folder", metavar="DIR", dataset=True,
       doc="--image-folder the dataset's images are relative to"),
    _F("limit", "int", "at most N samples (the first N, or N drawn with --sample-seed)", DATASETS, metavar="N",
       minimum=1, dataset=True, doc="--limit: at most this many samples of the dataset"),
    _F("sample_seed", "int", "draw the --limit samples at random with this seed", DATASETS, metavar="SEED",
       minimum=0, dataset=True, doc="--sample-seed: the samples were drawn at random with this seed"),
    _F("free_run", "bool", "every method generates its own tokens (default: the dataset's answers are "
       "teacher-forced where it has them)", DATASETS, default=False, modes=DECODE_MODES, dataset=True,
       doc="dataset: every method generates its own tokens (false: the dataset's answers are teacher-forced "
       "where it has them)"),
    # method plug-ins (`method_api.py`): set from the `--<method>-<option>` flags a plug-in declares
    _F("method_options", "dict", "", command=NO_FLAG,
       doc="a plug-in method's options, e.g. pdrop {layers: [8, 16, 24], ratio: 0.5} (flags --<method>-<option>); "
       "null for the shipped methods, whose options are the columns above"),
)
FIELD: dict[str, PointField] = {f.name: f for f in POINT_FIELDS}
assert len(FIELD) == len(POINT_FIELDS), "a field is declared twice"
# the keys a suite (or a flag set) may give: every field a command takes as a flag
SUITE_FIELDS: dict[str, PointField] = {f.name: f for f in POINT_FIELDS if f.command != NO_FLAG}


def flag_fields(command: str) -> list[PointField]:
    """The fields `command` (`EVERY_COMMAND` or `RUN_ONLY`) takes as flags, in help-panel order."""
    wanted = (EVERY_COMMAND,) if command == EVERY_COMMAND else (EVERY_COMMAND, RUN_ONLY)
    return sorted((f for f in POINT_FIELDS if f.command in wanted), key=lambda f: PANELS.index(f.panel))
