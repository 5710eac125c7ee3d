"""The Typer app and the error map: every user error is one line on stderr and exit code 2."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import typer

from dynbench.errors import DynbenchError

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


def _is_usage_error(exc: BaseException) -> bool:
    """click's UsageError family (also typer's vendored copy): exit code 2 and a message."""
    return getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0 ok, 1 failure, 2 usage or input error (one line on stderr)."""
    import dynbench.cli.commands  # noqa: F401 — registers the commands on `app`

    debug = os.environ.get("DYNBENCH_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    try:
        rc = app(args=args, prog_name="dynbench", standalone_mode=False)
        return rc if isinstance(rc, int) else 0
    except DynbenchError as e:
        if debug:
            raise
        print("Error: " + " ".join(str(e).splitlines()), file=sys.stderr)  # one line, whatever a name holds
        return e.exit_code
    except typer.Exit as e:  # typer's own (older typer: click's, which typer.Exit then is)
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return 130
    except Exception as e:
        if not _is_usage_error(e):
            raise
        if debug:
            raise
        command = f" {args[0]}" if args and not args[0].startswith("-") else ""
        print(f"Error: {e.format_message()} (see dynbench{command} --help)", file=sys.stderr)
        return 2
