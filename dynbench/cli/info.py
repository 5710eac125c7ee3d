"""`dynbench models`, `dynbench gpus` and `dynbench env`: what dynbench knows and what it would record."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dynbench.cli.app import app
from dynbench.cli.options import flag, out_console
from dynbench.errors import DynbenchError
from dynbench.names import ATTN_IMPLEMENTATIONS, DTYPE_NAMES

MODELS_EXAMPLES = """[bold]Examples[/]

  dynbench models                                   [dim]# tiny, llava-1.5-7b, llava-1.5-13b and their sizes[/]
"""
GPUS_EXAMPLES = """[bold]Examples[/]

  dynbench gpus                                     [dim]# names for run --gpu NAME[/]
  dynbench gpus --json > gpus.json                  [dim]# the same table, machine-readable[/]
"""
ENV_EXAMPLES = """[bold]Examples[/]

  dynbench env                                      [dim]# what a run here would record, and its env_id[/]
  dynbench env --device cuda --dtype bfloat16 --json
"""


@app.command(epilog=MODELS_EXAMPLES)
def models() -> None:
    """List the model presets with parameter counts (built on the meta device, no weights)."""
    from dynbench.models.build import build_model, count_parameters
    from dynbench.models.presets import PRESETS
    from dynbench.report.tables import presets_table

    # the baselines (random, fastv, h2o, streaming-llm) have llava's parameters
    counts = {name: [count_parameters(build_model(name, m, device="meta")) for m in ("llava", "dynamic-llava")]
              for name in PRESETS}
    out_console().print(presets_table(PRESETS, counts))


@app.command(epilog=GPUS_EXAMPLES)
def gpus(json_out: Annotated[bool, flag("--json", help="print the table as JSON")] = False) -> None:
    """List the GPU specs roofline bounds use (--gpu NAME): dense peaks, bandwidth, sources."""
    from dataclasses import asdict

    from dynbench.measure.gpus import GPUS
    from dynbench.report.tables import gpus_table

    if json_out:
        print(json.dumps([asdict(g) for g in GPUS.values()], indent=2))
        return
    out_console().print(gpus_table(GPUS))


@app.command("env", epilog=ENV_EXAMPLES)
def env_command(
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    dtype: Annotated[str, typer.Option(help=" | ".join(DTYPE_NAMES))] = "float32",
    attn: Annotated[str, typer.Option(help=" | ".join(ATTN_IMPLEMENTATIONS))] = "sdpa",
    json_out: Annotated[bool, flag("--json", help="print the snapshot as JSON")] = False,
) -> None:
    """Show the environment a run would record (GPU, driver, versions, threads, env_id)."""
    from dynbench.measure import env as envmod
    from dynbench.models.build import DTYPES
    from dynbench.report.tables import env_table
    from dynbench.spec import resolve_device

    if dtype not in DTYPES:
        raise DynbenchError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    snap = envmod.snapshot(resolve_device(device), DTYPES[dtype], attn)
    snap["env_id"] = envmod.env_id(snap)
    if json_out:
        print(json.dumps(snap, indent=2, sort_keys=True))
        return
    out_console().print(env_table(snap))
