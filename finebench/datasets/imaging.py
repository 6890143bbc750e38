"""Decode and resize an image file to a square uint8 array."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def load_square(
    source: Path | bytes,
    resolution: int,
    resize: str,
    interpolation: str = "bicubic",
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """center-crop: shorter side to `resolution` then a centred square crop; squash: both sides to `resolution`.
    `source` is a path or the file's bytes; `box` (x, y, width, height in pixels) crops the image first."""
    resample = _RESAMPLE.get(interpolation, Image.BICUBIC)
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        if box is None:
            img.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale that is still >= resolution
        img = img.convert("RGB")
        if box is not None:
            x, y, w, h = box
            left, top = max(0, int(x)), max(0, int(y))
            right, bottom = min(img.width, int(round(x + w))), min(img.height, int(round(y + h)))
            if right - left < 1 or bottom - top < 1:
                raise ValueError(f"box {box} lies outside the {img.width}x{img.height} image")
            img = img.crop((left, top, right, bottom))
        w, h = img.size
        if resize == "squash":
            img = img.resize((resolution, resolution), resample)
        elif resize == "center-crop":
            scale = resolution / min(w, h)
            nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
            img = img.resize((nw, nh), resample)
            left, top = (nw - resolution) // 2, (nh - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
        else:
            raise ValueError(f"resize policy {resize!r} is not one of center-crop, squash")
        return np.asarray(img, dtype=np.uint8)
