"""`dynbench show` rendered: the paper's pictures of what was kept, for one input.

From the `kept.KeptView` of each method (read off a real run) and the pixels the model saw:
  * `<name>.png` — the image as the vision tower saw it (336 px, after pad / crop; the CLIP
    normalisation undone) with its 24 × 24 patch grid, one panel per method side by side: patches
    whose image token was dropped at the sparse layer dimmed, kept ones outlined (the paper's
    COCO figure);
  * `<name>.html` — one self-contained page (images embedded, no script, no network): per method
    its picture, then the generated text of every round with kept and dropped tokens styled
    apart (dropped: struck through on red; kept: on green; a round's last token, never fed: dotted);
    every text is HTML-escaped;
  * `<name>.json` — per method `kept_image_indices` (0-based within the image's tokens) and
    `generated`: one entry per generated token `{"id", "text" (with a tokenizer), "kept":
    true | false | null, "round"}` (null: the round's last token, never fed back).
Patch i of the grid is row i // 24, column i % 24 (CLIP's row-major patch order).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dynbench.kept import KeptView

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation (its processor's default)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SCALE = 2  # pixels per image pixel in the pictures: outlines stay crisp
DIM = 0.3  # a dropped patch keeps this much of its colour …
DIM_TO = np.array([0.12, 0.12, 0.12])  # … the rest goes to dark grey
OUTLINE = np.array([1.0, 0.84, 0.0])  # kept patches: a yellow frame
GRID = 0.35  # the grid lines: white at this opacity


def image_rgb(pixel_values, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> np.ndarray:
    """(H, W, 3) floats in [0, 1]: the model's (3, H, W) pixels with the normalisation undone."""
    px = np.asarray(pixel_values, dtype=np.float64)
    rgb = px * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    return np.clip(rgb.transpose(1, 2, 0), 0.0, 1.0)


def grid_side(image_tokens: int) -> int:
    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise ValueError(f"{image_tokens} image tokens do not form a square grid")
    return side


def overlay(rgb: np.ndarray, kept: Sequence[int], image_tokens: int, scale: int = SCALE) -> np.ndarray:
    """The picture of one method: (H·scale, W·scale, 3) uint8, dropped patches dimmed, the grid
    drawn, kept patches outlined."""
    side = grid_side(image_tokens)
    img = np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)
    patch = img.shape[0] // side
    keep = np.zeros(image_tokens, dtype=bool)
    keep[list(kept)] = True
    mask = np.repeat(np.repeat(keep.reshape(side, side), patch, axis=0), patch, axis=1)
    full = np.zeros(img.shape[:2], dtype=bool)
    full[: mask.shape[0], : mask.shape[1]] = mask
    img = np.where(full[..., None], img, DIM * img + (1 - DIM) * DIM_TO)
    edges = np.arange(side + 1) * patch
    for e in edges[1:-1]:
        img[e, :] = (1 - GRID) * img[e, :] + GRID
        img[:, e] = (1 - GRID) * img[:, e] + GRID
    w = max(scale, 1)
    for i in np.flatnonzero(keep):
        r, c = divmod(int(i), side)
        y, x = r * patch, c * patch
        img[y : y + w, x : x + patch] = OUTLINE
        img[y + patch - w : y + patch, x : x + patch] = OUTLINE
        img[y : y + patch, x : x + w] = OUTLINE
        img[y : y + patch, x + patch - w : x + patch] = OUTLINE
    return (img * 255 + 0.5).astype(np.uint8)


def _caption(view: KeptView) -> str:
    fed = [t for t in view.tokens if t.kept is not None]
    image = f"{len(view.kept_image_indices)} / {view.image_tokens} image tokens kept"
    if not fed:
        return image
    return f"{image} · {sum(bool(t.kept) for t in fed)} / {len(fed)} generated tokens kept"


def png_bytes(pictures: Sequence[np.ndarray], views: Sequence[KeptView], title: str) -> bytes:
    """The pictures side by side, each titled with its method and counts, as a PNG file."""
    from matplotlib.figure import Figure

    h, w = pictures[0].shape[:2]
    dpi = 100
    fig = Figure(figsize=(len(pictures) * (w + 40) / dpi, (h + 110) / dpi), dpi=dpi)
    fig.suptitle(title, fontsize=11)
    for k, (pic, view) in enumerate(zip(pictures, views, strict=True)):
        ax = fig.add_axes((k / len(pictures) + 0.01, 0.02, 1 / len(pictures) - 0.02, h / (h + 110)))
        ax.imshow(pic, interpolation="nearest")
        ax.set_title(f"{view.method}\n{_caption(view)}", fontsize=9)
        ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def _png_bytes(picture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG")
    return buf.getvalue()


CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin: 0.2em 0; } h3 { font-size: 0.95em; margin: 0.8em 0 0.2em; }
.meta, .caption { color: #555; font-size: 0.9em; }
.legend span { margin-right: 1em; }
.methods { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.method { flex: 1 1 340px; max-width: 700px; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; }
.method img { width: 336px; max-width: 100%; height: auto; image-rendering: pixelated; display: block; }
.q { font-style: italic; color: #333; margin: 0.2em 0; white-space: pre-wrap; }
.answer { line-height: 1.9; white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 0.92em; }
.tok { border-radius: 3px; padding: 0.05em 0; }
.kept { background: #d3f0d3; }
.dropped { background: #f8d0d0; color: #8a2b2b; text-decoration: line-through; }
.last { border-bottom: 2px dotted #888; }
"""


def _token_html(token) -> str:
    cls = {True: "kept", False: "dropped", None: "last"}[token.kept]
    what = {True: "kept in the cache", False: "dropped from the cache (layers ≥ sparse layer)",
            None: "last token of the round, never fed back"}[token.kept]
    text = token.text if token.text else f"#{token.id}"  # no tokenizer, or an id it cannot spell
    return (f'<span class="tok {cls}" title="{html.escape(f"id {token.id}: {what}", quote=True)}">'
            f"{html.escape(text)}</span>")


def page_html(title: str, meta: str, views: Sequence[KeptView], pictures: Sequence[np.ndarray]) -> str:
    """The page (module doc): one section per method, side by side."""
    sections = []
    for view, pic in zip(views, pictures, strict=True):
        src = "data:image/png;base64," + base64.b64encode(_png_bytes(pic)).decode("ascii")
        alt = f"{view.method}: {_caption(view)}; dropped patches dimmed, kept ones outlined"
        parts = [f'<section class="method"><h2>{html.escape(view.method)}</h2>',
                 f'<p class="caption">{html.escape(_caption(view))}</p>',
                 f'<img alt="{html.escape(alt, quote=True)}" src="{src}">']
        for r in range(view.rounds):
            tokens = [t for t in view.tokens if t.round == r]
            question = view.questions[r] if r < len(view.questions) else None
            parts.append(f"<h3>Round {r}</h3>")
            if question is not None:
                parts.append(f'<p class="q">{html.escape(question)}</p>')
            parts.append(f'<p class="answer">{"".join(_token_html(t) for t in tokens)}</p>')
        parts.append("</section>")
        sections.append("\n".join(parts))
    legend = ('<p class="legend"><span class="tok kept">kept</span> <span class="tok dropped">dropped</span> '
              '<span class="tok last">never fed (a round\'s last token)</span></p>')
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
            f'<p class="meta">{html.escape(meta)}</p>\n{legend}\n<div class="methods">\n'
            + "\n".join(sections) + "\n</div>\n</body></html>\n")


def write_show(out_dir: Path, name: str, pixel_values, views: Sequence[KeptView], info: dict[str, Any],
               mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> list[Path]:
    """Write `<name>.png`, `<name>.html` and `<name>.json` under `out_dir`, together or none of
    them (`safe_io.write_together`); return the paths."""
    from dynbench.safe_io import write_together

    rgb = image_rgb(pixel_values, mean, std)
    pictures = [overlay(rgb, v.kept_image_indices, v.image_tokens) for v in views]
    side = grid_side(views[0].image_tokens)
    title = f"dynbench show — {name}"
    meta = " · ".join(f"{k} {v}" for k, v in info.items() if v is not None)
    doc = {"name": name, **info, "image_grid": side, "patch_pixels": rgb.shape[0] // side,
           "methods": {v.method: v.as_dict() for v in views}}
    files = {out_dir / f"{name}.png": png_bytes(pictures, views, title),
             out_dir / f"{name}.html": page_html(title, meta, views, pictures),
             out_dir / f"{name}.json": json.dumps(doc, indent=1) + "\n"}
    write_together(files)
    return list(files)
