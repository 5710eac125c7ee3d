"""`dynbench methods`: the methods that can be measured, their options and where each came from."""

from __future__ import annotations

import json

from dynbench.cli.app import app
from dynbench.cli.options import JsonOpt, out_console

EXAMPLES = """[bold]Examples[/]

  dynbench methods                                  [dim]# shipped methods and installed plug-ins[/]
  pip install -e examples/dynbench-pdrop && dynbench methods   [dim]# … now with pdrop[/]
  dynbench methods --json
"""


@app.command(epilog=EXAMPLES)
def methods(json_out: JsonOpt = False) -> None:
    """List the methods: the shipped ones and the plug-ins of the `dynbench.methods` entry-point group
    (a broken plug-in is listed with its error); options with their flags and defaults."""
    from dynbench.registry import listing
    from dynbench.report.tables import methods_table

    rows = [_row(entry) for entry in listing()]
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    out_console().print(methods_table(rows))


def _row(entry) -> dict:
    m = entry.method
    options = [] if m is None else [
        {"flag": "--" + m.field(o).replace("_", "-"), "kind": o.kind, "default": o.default, "help": o.help}
        for o in m.options]
    return {"name": entry.name, "origin": entry.origin, "summary": m.summary if m else None,
            "modes": list(m.modes) if m else None, "options": options, "error": entry.error}
