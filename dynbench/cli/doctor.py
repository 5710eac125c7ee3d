"""`dynbench doctor`: prove every GPU path (and its CPU analogue) on this machine."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import err_console, flag, out_console

EXAMPLES = """[bold]Examples[/]

  dynbench doctor --out results/doctor                          [dim]# every check; CUDA ones skip without a GPU[/]
  dynbench doctor --device cpu --quick --out /tmp/doctor        [dim]# the CPU half, seconds[/]
  dynbench doctor --only cuda-event-timer,allocator-peak --out results/doctor
"""


@app.command(epilog=EXAMPLES)
def doctor(
    out: Annotated[str, typer.Option(help="folder for doctor.json and doctor.md", metavar="DIR")],
    device: Annotated[str, typer.Option(help="auto | cuda | cpu")] = "auto",
    quick: Annotated[bool, flag("--quick", help="tiny shapes instead of 7B-shaped models (faster)")] = False,
    only: Annotated[str | None, typer.Option(help="run only these checks (comma-separated names)",
                                             metavar="NAME[,…]")] = None,
    json_out: Annotated[bool, flag("--json", help="print doctor.json on stdout")] = False,
) -> None:
    """Run the measurement checks: exit 0 when nothing fails, 1 otherwise (skips never fail)."""
    from dynbench.doctor import CHECKS, run_doctor
    from dynbench.errors import DynbenchError
    from dynbench.report.doctor import render, summary_line, to_markdown
    from dynbench.results import writable_dir, write_atomic

    folder = writable_dir(out)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    unknown = [n for n in names or () if n not in CHECKS]
    if unknown:
        raise DynbenchError(f"unknown check(s) {', '.join(unknown)}; choose from: {', '.join(CHECKS)}")
    console = err_console()
    done: list = []

    def on_check(c) -> None:
        console.print(f"{c.name}: {c.status} ({c.seconds:.1f} s) {c.detail}", highlight=False, markup=False)
        done.append(asdict(c))  # doctor.json after every check: a run cut short keeps what it proved
        write_atomic(folder / "doctor.json", json.dumps({"checks": done, "env": {}, "partial": True}, indent=2,
                                                        sort_keys=True) + "\n")

    report = run_doctor(device, quick, names, on_check=on_check)
    doc = json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n"
    write_atomic(folder / "doctor.json", doc)
    write_atomic(folder / "doctor.md", to_markdown(report))
    if json_out:
        print(doc, end="")
    else:
        out_console().print(render(report))
    console.print(f"{summary_line(report)} — wrote {folder / 'doctor.json'} and {folder / 'doctor.md'}",
                  highlight=False, markup=False)
    failed = [c.name for c in report.checks if c.status == "fail"]
    if failed:
        console.print(f"rerun what failed: dynbench doctor --only {','.join(failed)} --out {out}"
                      + (" --quick" if quick else ""), highlight=False, markup=False)
    raise typer.Exit(report.exit_code)
