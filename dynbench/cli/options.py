"""Command-line options: the point options (built from `fields.POINT_FIELDS`, plus the flags of
where weights and inputs come from, `sources.Source`), grouped into help panels, and the consoles.

`point_options` adds the point options to a command's signature, and hands the command their
values as one dict keyed by `RunSpec` field names (`point`), lists split on commas.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Annotated

import typer

from dynbench import registry
from dynbench.fields import (  # noqa: F401 (the panels the commands' own options use too)
    BASELINES,
    DATASETS,
    EVERY_COMMAND,
    FIELD,
    INPUTS,
    KINDS,
    MEASURE,
    MODEL,
    PANELS,
    RUN_ONLY,
    WHAT,
    PointField,
    flag_fields,
)
from dynbench.models.presets import PRESETS

OUTPUT = "Output"
PLUGINS = "Plug-in methods' options (dynbench methods)"
CLUSTER = "Shards and jobs (docs/cluster.md)"


def default(help_text: str, value) -> str:
    """Help with its default shown (`\\[` keeps rich markup from eating the brackets)."""
    return f"{help_text} \\[default: {value}]"


def flag(*names: str, help: str, panel: str | None = None) -> typer.models.OptionInfo:
    """A boolean flag rendered as a flag (no `<bool>` metavar)."""
    return typer.Option(*names, help=help, metavar=" ", rich_help_panel=panel)


def opt(help: str, panel: str, metavar: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(help=help, rich_help_panel=panel, metavar=metavar)


ListOpt = list[str] | None


def _installed(name: str) -> tuple[str, ...] | None:
    """The methods and presets a flag's help lists: what this installation has (plug-ins included)."""
    if name == "method":
        return (*registry.names(), "package.module:Name")
    return tuple(PRESETS) if name == "model" else None


def field_option(f: PointField) -> tuple[object, object]:
    """(annotation, default) of a point field's flag: axes take `A[,B…]`, booleans are flags."""
    text = f.help_text(_installed(f.name)).replace("[", "\\[")  # rich markup would eat "[default: …]"
    if f.kind == "bool":
        return Annotated[bool | None, flag(f.flag, help=text, panel=f.panel)], None
    if f.axis:
        return Annotated[ListOpt, opt(text, f.panel, f"{f.metavar or f.kind.upper()}[,…]")], None
    return Annotated[KINDS[f.kind] | None, opt(text, f.panel, f.metavar)], None


# where weights and inputs come from (`sources.Source`'s fields): the same for every point of a run
SOURCE_OPTIONS: dict[str, tuple[object, object]] = {
    "checkpoint": (Annotated[str | None, opt("local weights: a llava-hf or official Dynamic-LLaVA folder",
                                             MODEL, "DIR")], None),
    "vision_tower": (Annotated[str | None, opt("local CLIP folder (official checkpoints have none)", MODEL,
                                               "DIR")], None),
    "image": (Annotated[str | None, opt("an image file (with --prompt and --checkpoint)", INPUTS, "FILE")], None),
    "prompt": (Annotated[str | None, opt("the user's question about --image", INPUTS, "TEXT")], None),
    "inputs": (Annotated[str | None, opt("an .npz with exact input_ids and pixel_values", INPUTS, "FILE")], None),
    "teacher_force": (Annotated[str | None, opt("an .npz with answer_ids fed in decode modes", INPUTS, "FILE")],
                      None),
    "skip_bad": (Annotated[bool | None, flag("--skip-bad", help="skip (and count) dataset records that are "
                                             "malformed or miss a file, instead of stopping", panel=DATASETS)],
                 None),
    # robustness (issue 23): the largest image decoded (a decompression bomb is one line)
    "max_image_pixels": (Annotated[int | None, opt("refuse images with more pixels than this (decompression bombs) "
                                                   "\\[default: Pillow's, 89,478,485]", DATASETS, "N")], None),
}


def _plugin_options(taken) -> dict[str, tuple[object, object]]:
    """`--<method>-<option>` of every installed plug-in method (`registry.option_fields`): axes
    take `A[,B…]`, `ints` options one comma-separated list."""
    found = {}
    for name, (method, option) in registry.option_fields().items():
        if name in taken:
            continue  # the registry refuses such a plug-in; never shadow a built-in flag
        text = default(f"{method.name}: {option.help}", ",".join(map(str, option.default))
                       if option.kind == "ints" else option.default)
        if option.is_axis:
            found[name] = (Annotated[ListOpt, opt(text, PLUGINS, f"{option.kind.upper()}[,…]")], None)
        else:
            found[name] = (Annotated[str | None, opt(text, PLUGINS, "N,N,…")], None)
    return found


def command_options(command: str) -> dict[str, tuple[object, object]]:
    """name → (annotation, default) of every point option `command` takes, in help order: the
    fields' flags and the source's by panel, then the plug-ins'."""
    named = {f.name: (f.panel, field_option(f)) for f in flag_fields(command)}
    named |= {name: (ann.__metadata__[0].rich_help_panel, (ann, dflt)) for name, (ann, dflt) in SOURCE_OPTIONS.items()}
    ordered = sorted(named.items(), key=lambda item: PANELS.index(item[1][0]))
    found = {name: option for name, (_, option) in ordered}
    return found | _plugin_options(found)


RUN_OPTIONS = command_options(RUN_ONLY)  # `run`: the point options and how it measures
POINT_OPTIONS = {name: option for name, option in RUN_OPTIONS.items()  # `profile`, `show`: all but `run`'s own
                 if name not in FIELD or FIELD[name].command != RUN_ONLY}


def split(values: list[str] | None) -> list[str] | None:
    """Repeated flags and comma-separated values → one list (`--gen-len 8,16 --gen-len 32`)."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def point_options(func=None, *, command: str = EVERY_COMMAND):
    """Add every point option of `command` to `func`'s command-line signature; `func` receives them
    as `point` (RunSpec field → value or list, None = not given) and `source` (the flags that say
    where weights and inputs come from)."""
    if func is None:
        return functools.partial(point_options, command=command)
    options = RUN_OPTIONS if command == RUN_ONLY else POINT_OPTIONS
    lists = {name for name, (ann, _) in options.items() if ann.__origin__ == ListOpt}
    sig = inspect.signature(func, eval_str=True)  # the command module uses `from __future__ import annotations`
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for name, p in sig.parameters.items()
           if name not in ("point", "source")]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=dflt)
             for name, (ann, dflt) in options.items()]

    @functools.wraps(func)
    def wrapper(**kwargs):
        values = {name: kwargs.pop(name) for name in options}
        source = {name: values.pop(name) for name in SOURCE_OPTIONS}
        point = {name: split(v) if name in lists else v for name, v in values.items()}
        return func(point=point, source=source, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*added, *own])  # help panels: what to run first
    wrapper.__annotations__ = {**{p.name: p.annotation for p in own}, **{p.name: p.annotation for p in added}}
    return wrapper


def _console(stderr: bool):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # piped to a file or CI log: do not squeeze tables into 80 columns
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def out_console():
    return _console(stderr=False)


def err_console():
    return _console(stderr=True)


JsonOpt = Annotated[bool, flag("--json", help="print only JSON on stdout (tables go to stderr)", panel=OUTPUT)]

# `dynbench run`'s own options (beside the point options): measurement, output, shards and jobs
FlopsOpt = Annotated[bool, typer.Option("--flops/--no-flops", help="count FLOPs with fvcore", rich_help_panel=MEASURE)]
GpuOpt = Annotated[str | None, opt("roofline bounds on this GPU (dynbench gpus): a projection on cpu / meta; on "
                                   "cuda the card NVML names is the default", MEASURE, "NAME")]
GpuSpecOpt = Annotated[str | None, opt("roofline bounds on a GPU not in the table: peak TFLOP/s and memory GB/s",
                                       MEASURE, "TFLOPS,GBPS")]
SuiteOpt = Annotated[str | None, opt("a suite YAML file instead of the point flags", OUTPUT, "FILE")]
OutOpt = Annotated[str | None, opt("results folder (records.jsonl is appended there)", OUTPUT, "DIR")]
ResumeOpt = Annotated[bool, flag("--resume", help="skip points already recorded in --out", panel=OUTPUT)]
ShardOpt = Annotated[str | None, opt("measure only shard K of N of the sweep (deterministic, balanced by estimated "
                                     "cost, a model's points together)", CLUSTER, "K/N")]
ExecutorOpt = Annotated[str | None, opt("local | slurm: run the sweep as --jobs shard jobs (submitit) into "
                                        "--out DIR/shards/K, then merge them into --out DIR", CLUSTER)]
JobsOpt = Annotated[int | None, opt("number of shard jobs (--executor)", CLUSTER, "N")]
ParallelOpt = Annotated[int | None, opt("jobs at once \\[default: slurm all; local one per GPU, or per CPU core]",
                                        CLUSTER, "N")]
PartitionOpt = Annotated[str | None, opt("Slurm partition (--executor slurm)", CLUSTER, "NAME")]
GpusPerJobOpt = Annotated[int, opt("GPUs per job", CLUSTER)]
TimeoutOpt = Annotated[int | None, opt(default("wall-clock limit of each job, minutes", "720"), CLUSTER, "M")]
