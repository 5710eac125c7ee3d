"""The Typer app the commands register on (`main.py` runs it and maps errors to exit codes)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
    help="Efficiency benchmarking of Dynamic-LLaVA against dense LLaVA-1.5: FLOPs, memory, latency and the "
    "tokens each method really keeps, in prefill, decoding without and with KV cache.",
    epilog="Examples: [bold]dynbench run --mode kv-cache[/]   ·   "
    "[bold]dynbench run --device meta --model llava-1.5-7b --mode prefill --prompt-len 40[/]   ·   "
    "[bold]dynbench report results/smoke[/].  DYNBENCH_DEBUG=1 shows tracebacks.",
)


def package_version() -> str:
    try:
        return version("dynbench")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        print(f"dynbench {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version_: bool = typer.Option(False, "--version", help="print the version and exit", metavar=" ",
                                  callback=_show_version, is_eager=True),
) -> None:
    """Efficiency benchmarking of Dynamic-LLaVA against dense LLaVA-1.5."""
