"""`dynbench profile`: one point under torch.profiler — a trace and per-range tables."""

from __future__ import annotations

import json
from typing import Annotated

from dynbench.cli.app import app
from dynbench.cli.options import MEASURE, OUTPUT, JsonOpt, err_console, flag, opt, out_console, point_options
from dynbench.errors import DynbenchError

EXAMPLES = """[bold]Examples[/]

  dynbench profile --method dynamic-llava --mode kv-cache --gen-len 16 --out results/prof
  dynbench profile --method llava --mode prefill --device cuda --dtype bfloat16 --with-stack --out results/prof
"""


@app.command(epilog=EXAMPLES)
@point_options
def profile(
    point: dict,
    source: dict,
    out: Annotated[str, opt("folder for the trace (TensorBoard / Perfetto)", OUTPUT, "DIR")],
    wait: Annotated[int, opt("profiler schedule: runs skipped", MEASURE)] = 1,
    warmup: Annotated[int, opt("profiler schedule: warm-up runs (traced, discarded)", MEASURE)] = 1,
    active: Annotated[int, opt("profiler schedule: recorded runs", MEASURE)] = 1,
    with_stack: Annotated[bool, flag("--with-stack", help="record Python stacks", panel=MEASURE)] = False,
    shapes: Annotated[bool, opt("record input shapes", MEASURE)] = True,
    memory: Annotated[bool, opt("record allocations", MEASURE)] = True,
    gzip: Annotated[bool, flag("--gzip", help="write the trace as .json.gz", panel=OUTPUT)] = False,
    top: Annotated[int, opt("rows in the top-operator table", OUTPUT)] = 15,
    json_out: JsonOpt = False,
) -> None:
    """Profile one point with torch.profiler: a trace for Perfetto / TensorBoard and per-range tables."""
    from dynbench import profile as profiling
    from dynbench.report.profile import render
    from dynbench.sources import Source
    from dynbench.spec import points_from, resolved

    if point["method"] is None:
        raise DynbenchError("profile needs --method (one of the methods: the trace is of one model)")
    point.setdefault("mode", None)
    point["mode"] = point["mode"] or ["kv-cache"]
    src = Source(**source)
    points = resolved(points_from(src.defaults_for(point), source=src.labels))
    if len(points) != 1:
        raise DynbenchError(f"profile takes one point, the flags give {len(points)}: give one value per flag")
    spec = points[0]
    if spec.device == "meta":
        raise DynbenchError("--device meta runs nothing, so there is nothing to profile; use cpu or cuda")
    from dynbench.run import check_attn

    check_attn(spec.attn)
    net = src.build_net(spec)
    inputs = src.point_inputs(spec, net.preset).to(net.device)
    result = profiling.profile_point(
        net, inputs, spec.drop, spec.mode, spec.gen_len or 1, out, reuse_vision=bool(spec.reuse_vision),
        wait=wait, warmup=warmup, active=active, record_shapes=shapes, profile_memory=memory,
        with_stack=with_stack, use_gzip=gzip, top=top,
    )
    console = err_console() if json_out else out_console()
    for table in render(result):
        console.print(table)
    err_console().print(f"trace: {result.trace_path}  (open it in https://ui.perfetto.dev or TensorBoard)",
                        highlight=False)
    if json_out:
        print(json.dumps(profiling.to_json(result), default=str))
