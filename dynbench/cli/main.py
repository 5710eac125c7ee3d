"""The console entry point: registers the commands on the app, runs it, and maps errors —
every user error is one line on stderr and exit code 2 (DYNBENCH_DEBUG=1 shows tracebacks)."""

from __future__ import annotations

import os
import sys

import typer

from dynbench.cli.app import app
from dynbench.errors import DynbenchError


def _is_usage_error(exc: BaseException) -> bool:
    """click's UsageError family (also typer's vendored copy): exit code 2 and a message."""
    return getattr(exc, "exit_code", None) == 2 and hasattr(exc, "format_message")


def main(argv: list[str] | None = None) -> int:
    """Console entry point: exit 0 ok, 1 failure, 2 usage or input error (one line on stderr)."""
    import dynbench.cli.commands  # noqa: F401 — registers the commands on `app` (here: `import dynbench.cli` stays light)

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
