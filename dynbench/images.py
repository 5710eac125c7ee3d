"""Reading an image a user names: decoded in full, and every failure one line.

An image is decoded (`convert("RGB")` reads every byte), not only opened: a truncated file fails
when a dataset is checked, named with its record, before anything runs — not mid-sweep. An image
with more pixels than the limit (Pillow's `Image.MAX_IMAGE_PIXELS`, about 89 million by default;
`--max-image-pixels N` sets it) is refused before it is decoded: a decompression bomb (a small
file that expands to gigabytes) is one line, not a MemoryError or Pillow's traceback.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dynbench.errors import DynbenchError


class BadImage(DynbenchError):
    """An image that cannot be used; the message names the file and the fix."""


def set_max_pixels(limit: int | None) -> None:
    """`--max-image-pixels`: the largest image (width × height) dynbench decodes."""
    if limit is None:
        return
    if limit < 1:
        raise DynbenchError(f"--max-image-pixels must be ≥ 1, got {limit}")
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = int(limit)


def decode_rgb(path: str | Path):
    """The image at `path` as a decoded RGB PIL image; BadImage (one line) when it cannot be."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DynbenchError("images need Pillow: pip install pillow") from None
    path = Path(path).expanduser()
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit: refused, not warned
            with Image.open(path) as image:
                return image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"image {path} has more than {limit:,} pixels (a decompression bomb?); if it is genuine, "
                       "raise the limit with --max-image-pixels N") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, MemoryError) as exc:
        raise BadImage(f"cannot read image {path} ({' '.join(str(exc).split())[:200]})") from None
