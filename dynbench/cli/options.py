"""Command-line options, declared once: the options of one point (shared by `run`, `profile` and
any command that builds points), grouped into help panels, and the consoles.

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
from dynbench.models.presets import PRESETS
from dynbench.names import ATTN_IMPLEMENTATIONS, DTYPE_NAMES, MODES

WHAT = "What to run"
MODEL = "Model and weights"
INPUTS = "Inputs"
MEASURE = "Measurement"
OUTPUT = "Output"
BASELINES = "Baselines' parameters"
PLUGINS = "Plug-in methods' options (dynbench methods)"
CLUSTER = "Shards and jobs (docs/cluster.md)"
DATASETS = "Datasets"


def default(help_text: str, value) -> str:
    """Help with its default shown (`\\[` keeps rich markup from eating the brackets)."""
    return f"{help_text} \\[default: {value}]"


def flag(*names: str, help: str, panel: str | None = None) -> typer.models.OptionInfo:
    """A boolean flag rendered as a flag (no `<bool>` metavar)."""
    return typer.Option(*names, help=help, metavar=" ", rich_help_panel=panel)


def opt(help: str, panel: str, metavar: str | None = None) -> typer.models.OptionInfo:
    return typer.Option(help=help, rich_help_panel=panel, metavar=metavar)


ListOpt = list[str] | None
LIST = "A[,B…]"

# name → (annotation, default) of every point option, in help order
POINT_OPTIONS: dict[str, tuple[object, object]] = {
    "mode": (Annotated[ListOpt, opt(default(" | ".join(MODES), "all three"), WHAT, "MODE[,…]")], None),
    "method": (Annotated[ListOpt, opt(default(" | ".join(registry.names()) + " | package.module:Name",
                                              "llava,dynamic-llava"), WHAT, "METHOD[,…]")], None),
    "prompt_len": (Annotated[ListOpt, opt(default("text tokens in the prompt, image excluded", 64), WHAT,
                                          "N[,…]")], None),
    "gen_len": (Annotated[ListOpt, opt(default("tokens generated in decode modes", 32), WHAT, "N[,…]")], None),
    "vision_keep": (Annotated[ListOpt, opt(default("image keep ratio in (0, 1]", 0.2), WHAT, "R[,…]")], None),
    "text_keep": (Annotated[ListOpt, opt(default("output-text keep ratio (budget policy)", 0.5), WHAT, "R[,…]")],
                  None),
    "text_policy": (Annotated[str | None, opt(default("learned | budget", "budget; learned with --checkpoint"),
                                              WHAT)], None),
    "reuse_vision": (Annotated[bool | None, flag("--reuse-vision", help="no-cache: encode the image once",
                                                 panel=WHAT)], None),
    "batch": (Annotated[int | None, opt(default("batch size, one prompt replicated", 1), WHAT)], None),
    "match_budget": (Annotated[str | None, opt("flops | tokens: set fastv's R (random: its keep) so that its "
                                               "prefill paper TFLOPs or equivalent tokens equal dynamic-llava's",
                                               BASELINES)], None),
    "fastv_k": (Annotated[ListOpt, opt(default("fastv: first pruned layer K", 2), BASELINES, "K[,…]")], None),
    "fastv_r": (Annotated[ListOpt, opt(default("fastv: fraction R of image tokens dropped", 0.5), BASELINES,
                                       "R[,…]")], None),
    "kv_budget": (Annotated[ListOpt, opt(default("h2o, streaming-llm: KV budget, share of P", 0.2), BASELINES,
                                         "F[,…]")], None),
    "model": (Annotated[str | None, opt(default(f"preset: {' | '.join(PRESETS)}", "tiny"), MODEL)], None),
    "checkpoint": (Annotated[str | None, opt("local weights: a llava-hf or official Dynamic-LLaVA folder",
                                             MODEL, "DIR")], None),
    "vision_tower": (Annotated[str | None, opt("local CLIP folder (official checkpoints have none)", MODEL,
                                               "DIR")], None),
    "seed": (Annotated[int | None, opt(default("seed of random weights and synthetic inputs", 0), MODEL)], None),
    "device": (Annotated[str | None, opt(default("auto | cpu | cuda | meta (counts only)", "auto"), MODEL)], None),
    "dtype": (Annotated[str | None, opt(default(" | ".join(DTYPE_NAMES), "float32"), MODEL)], None),
    "attn": (Annotated[str | None, opt(default(" | ".join(ATTN_IMPLEMENTATIONS), "sdpa"), MODEL)], None),
    "image": (Annotated[str | None, opt("an image file (with --prompt and --checkpoint)", INPUTS, "FILE")], None),
    "prompt": (Annotated[str | None, opt("the user's question about --image", INPUTS, "TEXT")], None),
    "inputs": (Annotated[str | None, opt("an .npz with exact input_ids and pixel_values", INPUTS, "FILE")], None),
    "teacher_force": (Annotated[str | None, opt("an .npz with answer_ids fed in decode modes", INPUTS, "FILE")],
                      None),
    "dataset": (Annotated[str | None, opt("samples to run each point over: JSON Lines ({image, prompt, answer} or "
                                          "{inputs, teacher_force}) or LLaVA conversation JSON", DATASETS, "FILE")],
                None),
    "image_folder": (Annotated[str | None, opt(default("the dataset's images are relative to this folder",
                                                       "the dataset file's folder"), DATASETS, "DIR")], None),
    "limit": (Annotated[int | None, opt("at most N samples (the first N, or N drawn with --sample-seed)",
                                        DATASETS, "N")], None),
    "sample_seed": (Annotated[int | None, opt("draw the --limit samples at random with this seed", DATASETS,
                                              "SEED")], None),
    "free_run": (Annotated[bool | None, flag("--free-run", help="every method generates its own tokens (default: "
                                             "the dataset's answers are teacher-forced where it has them)",
                                             panel=DATASETS)], None),
    "skip_bad": (Annotated[bool | None, flag("--skip-bad", help="skip (and count) dataset records that are "
                                             "malformed or miss a file, instead of stopping", panel=DATASETS)],
                 None),
    # robustness (issue 23): the largest image decoded (a decompression bomb is one line)
    "max_image_pixels": (Annotated[int | None, opt("refuse images with more pixels than this (decompression bombs) "
                                                   "\\[default: Pillow's, 89,478,485]", DATASETS, "N")], None),
}


def _plugin_options() -> dict[str, tuple[object, object]]:
    """`--<method>-<option>` of every installed plug-in method (`registry.option_fields`): axes
    take `A[,B…]`, `ints` options one comma-separated list."""
    found = {}
    for name, (method, option) in registry.option_fields().items():
        if name in POINT_OPTIONS:
            continue  # the registry refuses such a plug-in; never shadow a built-in flag
        text = default(f"{method.name}: {option.help}", ",".join(map(str, option.default))
                       if option.kind == "ints" else option.default)
        if option.is_axis:
            found[name] = (Annotated[ListOpt, opt(text, PLUGINS, f"{option.kind.upper()}[,…]")], None)
        else:
            found[name] = (Annotated[str | None, opt(text, PLUGINS, "N,N,…")], None)
    return found


POINT_OPTIONS.update(_plugin_options())
LIST_OPTIONS = {name for name, (ann, _) in POINT_OPTIONS.items() if ann.__origin__ == ListOpt}
SOURCE_OPTIONS = ("checkpoint", "vision_tower", "inputs", "image", "prompt", "teacher_force", "skip_bad",
                  "max_image_pixels")


def split(values: list[str] | None) -> list[str] | None:
    """Repeated flags and comma-separated values → one list (`--gen-len 8,16 --gen-len 32`)."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def point_options(func):
    """Add every point option to `func`'s command-line signature; `func` receives them as
    `point` (RunSpec field → value or list, None = not given) and `source` (the flags that say
    where weights and inputs come from)."""
    sig = inspect.signature(func, eval_str=True)  # the command module uses `from __future__ import annotations`
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for name, p in sig.parameters.items()
           if name not in ("point", "source")]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=dflt)
             for name, (ann, dflt) in POINT_OPTIONS.items()]

    @functools.wraps(func)
    def wrapper(**kwargs):
        values = {name: kwargs.pop(name) for name in POINT_OPTIONS}
        source = {name: values.pop(name) for name in SOURCE_OPTIONS}
        point = {name: split(v) if name in LIST_OPTIONS else v for name, v in values.items()}
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
WarmupOpt = Annotated[int | None, opt("warm-up runs \\[default: prefill 3, decode 1]", MEASURE)]
RepeatsOpt = Annotated[int | None, opt("measured runs \\[default: prefill 10 on GPU, 5 on CPU; decode 1]", MEASURE)]
RegionsOpt = Annotated[bool, flag("--regions", help="also time predictors, token drop and scoring inside every "
                                  "step (adds events to timed steps; recorded)", panel=MEASURE)]
FlopsOpt = Annotated[bool, typer.Option("--flops/--no-flops", help="count FLOPs with fvcore", rich_help_panel=MEASURE)]
DelayOpt = Annotated[float | None, opt("debugging: sleep this long inside every decode step (recorded; proves "
                                       "`check` catches a slowdown)", MEASURE, "MS")]
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
