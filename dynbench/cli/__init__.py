"""`dynbench` command line (Typer). Thin: each command parses, calls one library function, prints.

`app.py` holds the app, `main.py` the entry point and the error map, `options.py` the options
declared once, one module per group of commands (`run`, `profile`, `report` + `plot`, `baseline`
+ `check`, `models` + `env`).
Heavy libraries (torch, transformers, fvcore, matplotlib) are imported inside the commands, so
`dynbench --help` is instant.
"""

from dynbench.cli.app import app
from dynbench.cli.main import main

__all__ = ["app", "main"]
