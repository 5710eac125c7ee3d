"""`dynbench` command line (Typer). Thin: parse → RunSpec points → library → render.

Errors a user can cause are `DynbenchError`s (and click usage errors): one line on stderr,
exit code 2. Set DYNBENCH_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from typing import Annotated

import click
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dynbench.errors import DynbenchError
from dynbench.inputs import synthetic_inputs
from dynbench.models.build import METHODS, build_model, count_parameters
from dynbench.models.presets import DTYPES, PRESETS
from dynbench.modes import MODES, ModeResult, run_mode
from dynbench.spec import DEFAULT_TEXT_KEEP, DEFAULT_VISION_KEEP, RunSpec, expand

# typer ≥ 0.20 vendors click: catch usage errors from whichever click raised them.
try:
    from typer._click import exceptions as _vendored_click
except ImportError:  # older typer uses click itself
    _vendored_click = click.exceptions
USAGE_ERRORS = (click.exceptions.UsageError, _vendored_click.UsageError)
EXITS = (click.exceptions.Exit, typer.Exit)
ABORTS = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Efficiency benchmarking of Dynamic-LLaVA against dense LLaVA-1.5.",
)
# stdout piped to a file or CI log: do not squeeze tables into 80 columns
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

ListOpt = list[str] | None


def _split(values: list[str] | None, cast: Callable, flag: str, default: list) -> list:
    """Repeated flags and comma-separated values → one list (`--gen-len 8,16 --gen-len 32`)."""
    if not values:
        return list(default)
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    try:
        return [cast(v) for v in items]
    except ValueError:
        raise DynbenchError(f"{flag}: cannot read {','.join(items)!r} as {cast.__name__} values") from None


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DynbenchError("--device cuda: no CUDA device is visible; use --device cpu")
    if device == "meta":
        raise DynbenchError(
            "--device meta builds shapes only and cannot generate tokens; "
            "use --device cpu or cuda (meta-device FLOP counting comes with the measurement layer)"
        )
    return device


def _runs(values: list[int]) -> str:
    """[640, 640, 179, 179] → '640×2 179×2'."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        parts.append(f"{values[i]}×{j - i}" if j - i > 1 else str(values[i]))
        i = j
    return " ".join(parts)


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:.2f}"


@app.command()
def run(
    mode: Annotated[ListOpt, typer.Option(help=f"{' | '.join(MODES)} (default: all three)")] = None,
    method: Annotated[ListOpt, typer.Option(help=f"{' | '.join(METHODS)} (default: both)")] = None,
    model: Annotated[str, typer.Option(help=f"preset: {' | '.join(PRESETS)}")] = "tiny",
    prompt_len: Annotated[ListOpt, typer.Option(help="text tokens in the prompt (image excluded)")] = None,
    gen_len: Annotated[ListOpt, typer.Option(help="tokens generated (decode modes)")] = None,
    vision_keep: Annotated[ListOpt, typer.Option(help="image keep ratio (0, 1]")] = None,
    text_keep: Annotated[ListOpt, typer.Option(help="output-text keep ratio (0, 1], budget policy")] = None,
    text_policy: Annotated[str, typer.Option(help="learned | budget")] = "budget",
    reuse_vision: Annotated[bool, typer.Option(help="no-cache: run the vision tower once")] = False,
    batch: Annotated[int, typer.Option(help="batch size (one prompt replicated)")] = 1,
    seed: Annotated[int, typer.Option(help="seed for weights and synthetic inputs")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help=" | ".join(DTYPES))] = "float32",
    attn: Annotated[str, typer.Option(help="sdpa | eager | flash_attention_2")] = "sdpa",
) -> None:
    """Run the model in each mode and print realized token counts, per-layer lengths and KV bytes."""
    if text_policy == "learned" and text_keep:
        raise DynbenchError(
            "--text-keep cannot be used with --text-policy learned (the predictor decides); "
            "use --text-policy budget to impose a keep ratio"
        )
    axes = {
        "mode": _split(mode, str, "--mode", MODES),
        "method": _split(method, str, "--method", METHODS),
        "prompt_len": _split(prompt_len, int, "--prompt-len", [64]),
        "gen_len": _split(gen_len, int, "--gen-len", [32]),
        "vision_keep": _split(vision_keep, float, "--vision-keep", [DEFAULT_VISION_KEEP]),
        "text_keep": _split(text_keep, float, "--text-keep", [DEFAULT_TEXT_KEEP])
        if text_policy == "budget" else [None],  # fmt: skip
    }
    fixed = dict(
        model=model, text_policy=text_policy, reuse_vision=reuse_vision, batch=batch, seed=seed,
        device=_resolve_device(device), dtype=dtype, attn=attn,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        points = expand(axes, fixed)
    for message in dict.fromkeys(str(w.message) for w in caught):
        err.print(f"[yellow]Warning:[/] {message}")
    _check_attn(attn)
    results = _run_points(points)
    out.print(_results_table(results))


def _check_attn(attn: str) -> None:
    if attn == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise DynbenchError("--attn flash_attention_2 needs the flash-attn package; use sdpa or eager")


def _run_points(points: list[RunSpec]) -> list[tuple[RunSpec, ModeResult]]:
    """Build each model once (per preset, method, dtype, device, attn, seed) and run its points."""
    results, models = [], {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("running", total=len(points))
        for spec in points:
            key = (spec.model, spec.method, spec.dtype, spec.device, spec.attn, spec.seed)
            if key not in models:
                progress.update(task, description=f"building {spec.model} {spec.method}")
                models = {key: build_model(
                    spec.model, spec.method, attn=spec.attn, dtype=DTYPES[spec.dtype],
                    device=spec.device, seed=spec.seed,
                )}  # fmt: skip  (one model in memory at a time)
            net = models[key]
            label = f"{spec.method} {spec.mode} P={spec.prompt_len} g={spec.gen_len}"
            progress.update(task, description=label)
            inputs = synthetic_inputs(net.preset, spec.prompt_len, spec.batch, spec.seed)
            results.append((spec, run_mode(spec.mode, net, inputs, spec.drop, spec.gen_len or 1,
                                           bool(spec.reuse_vision))))  # fmt: skip
            progress.advance(task)
    return results


def _results_table(results: list[tuple[RunSpec, ModeResult]]) -> Table:
    table = Table(title="dynbench run (wall time is host time, not a benchmark: see README)")
    for col in ("method", "mode", "prompt", "gen", "keep v/t", "img kept", "text kept/fed",
                "layer seq lens", "layer cache lens", "KV prompt MiB", "KV gen MiB"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("method", "mode") else "right")
    for spec, res in results:
        last = res.last
        keeps = "—" if spec.vision_keep is None else f"{spec.vision_keep:g}/" + (
            "learned" if spec.text_policy == "learned" else "—" if spec.text_keep is None
            else f"{spec.text_keep:g} imposed"
        )  # fmt: skip
        table.add_row(
            spec.method, spec.mode, str(spec.prompt_len), str(spec.gen_len or "—"), keeps,
            str(last.image_tokens_kept),
            "—" if spec.mode == "prefill" else f"{last.text_tokens_kept}/{last.text_tokens_fed}",
            _runs(last.layer_seq_lens) if last.layer_seq_lens else "—",
            _runs(last.layer_cache_lens) if last.layer_cache_lens else "—",
            _mib(last.kv_bytes_prompt), _mib(last.kv_bytes_generated),
        )  # fmt: skip
    return table


@app.command()
def models() -> None:
    """List the model presets with parameter counts (built on the meta device, no weights)."""
    table = Table(title="dynbench model presets")
    for col in ("preset", "params llava", "params dynamic-llava", "image tokens", "layers",
                "hidden", "sparse layer", "description"):  # fmt: skip
        table.add_column(col, overflow="fold")
    for name, p in PRESETS.items():
        counts = [count_parameters(build_model(name, m, device="meta")) for m in METHODS]
        table.add_row(
            name, *(f"{n / 1e9:.3f} B" if n > 1e8 else f"{n / 1e6:.2f} M" for n in counts),
            str(p.image_tokens), str(p.layers), str(p.hidden), str(p.sparse_layer), p.description,
        )  # fmt: skip
    out.print(table)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0 ok, 1 failure, 2 usage or input error (one line on stderr)."""
    debug = os.environ.get("DYNBENCH_DEBUG") == "1"
    try:
        rc = app(args=argv, prog_name="dynbench", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except DynbenchError as e:
        if debug:
            raise
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except USAGE_ERRORS as e:
        if debug:
            raise
        print(f"Error: {e.format_message()} (see dynbench {' '.join((argv or sys.argv[1:])[:1])} --help)",
              file=sys.stderr)  # fmt: skip
        return 2
    except EXITS as e:
        return e.exit_code
    except ABORTS:
        print("Interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
