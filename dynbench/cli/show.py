"""`dynbench show`: the paper's pictures of what each method kept on one input (PNG, HTML, JSON)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from dynbench.cli.app import app
from dynbench.cli.options import DATASETS, OUTPUT, opt, out_console, point_options
from dynbench.errors import DynbenchError

EXAMPLES = """[bold]Examples[/]

  dynbench show --checkpoint ckpt --image cat.jpg --prompt "What is this?" --out results/show
  dynbench show --checkpoint ckpt --dataset data.jsonl --sample 3 --method dynamic-llava,fastv,random --out results/show
  dynbench show --inputs prompt.npz --gen-len 16 --out results/show      [dim]# tiny random weights[/]
"""


@app.command(epilog=EXAMPLES)
@point_options
def show(
    point: dict,
    source: dict,
    out: Annotated[str, opt("folder for <name>.png, <name>.html and <name>.json", OUTPUT, "DIR")],
    sample: Annotated[int | None, opt("with --dataset: the sample to show (0-based) \\[default: 0]", DATASETS,
                                      "I")] = None,
    name: Annotated[str | None, opt("file name stem \\[default: the sample id, image or inputs name]", OUTPUT)] = None,
) -> None:
    """Which image patches and generated tokens each method kept on one input, as the paper shows them."""
    from dynbench.kept import show_views
    from dynbench.models.presets import get_preset
    from dynbench.report.show import CLIP_MEAN, CLIP_STD, write_show
    from dynbench.results import writable_dir
    from dynbench.sources import Source
    from dynbench.spec import points_from, resolved

    if name is not None:
        file_stem(name)  # checked before anything runs
    src = Source(**source)
    if point["method"] is None:
        info = src.checkpoint_info(point.get("model"))
        point["method"] = [info.method if info is not None else "dynamic-llava"]
    point["mode"] = point["mode"] or ["kv-cache"]
    if sample is not None and point.get("dataset") is None:
        raise DynbenchError("--sample picks a sample of --dataset; give --dataset FILE")
    points = resolved(points_from(src.defaults_for(point), source=src.labels))
    if len({p.method for p in points}) != len(points):
        raise DynbenchError(f"show draws one input per method; the flags give {len(points)} points: give one value "
                            "per flag (several only for --method)")
    if points[0].device == "meta":
        raise DynbenchError("--device meta runs nothing, so nothing was kept; use cpu or cuda")
    src.check_datasets(points)
    spec = points[0]
    chosen = src.dataset(spec).sample(sample or 0) if spec.dataset is not None else None
    inputs, views = show_views(points, src, get_preset(spec.model), chosen)
    default = chosen.id if chosen else src.image or src.inputs or f"synthetic-p{spec.prompt_len}"
    stem = file_stem(name) if name is not None else _stem(default)
    info = {"checkpoint": spec.checkpoint, "dataset": spec.dataset, "sample": None if chosen is None else chosen.index,
            "sample_id": None if chosen is None else chosen.id, "image": str(chosen.image) if chosen and chosen.image
            else src.image, "inputs": src.inputs, "prompt": src.prompt, "mode": spec.mode, "gen_len": spec.gen_len,
            "vision_keep": spec.vision_keep, "text_policy": spec.text_policy}
    mean, std = src.image_norm() or (CLIP_MEAN, CLIP_STD)
    for path in write_show(writable_dir(Path(out)), stem, inputs.pixel_values[0], views, info, mean, std):
        out_console().print(str(path), highlight=False)


def file_stem(name: str) -> str:
    """`--name`: a file name stem inside --out, never a path (no `/`, no `..`, no hidden file)."""
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}", name):
        raise DynbenchError(f"--name {name!r}: give a file name stem (letters, digits, . _ -; at most 200), not a "
                            "path — the files go into --out")
    return name


def _stem(value) -> str:
    """A file name from a sample id or a path: its stem, safe characters only."""
    text = Path(str(value)).stem if "/" in str(value) or "." in str(value) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "show"
