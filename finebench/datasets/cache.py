"""Decoded, resized images kept as one uint8 array per (dataset manifest, resolution, resize policy).

An epoch then costs model time, not JPEG time. The array is built once (in parallel threads), saved atomically
under the cache dir and memory-mapped by every later run.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from finebench.datasets.base import ImageSet, cache_dir
from finebench.results.atomic import atomic_write

_MEMO: dict[str, np.ndarray] = {}


def cache_key(data: ImageSet, resolution: int, resize: str, interpolation: str) -> str:
    raw = f"{data.info.manifest_hash}:{data.info.root}:{len(data)}:{resolution}:{resize}:{interpolation}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def decode_all(data: ImageSet, resolution: int, resize: str, interpolation: str, progress=None) -> np.ndarray:
    out = np.empty((len(data), resolution, resolution, 3), dtype=np.uint8)

    def work(i: int) -> None:
        out[i] = data.read(i, resolution, resize, interpolation)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for n, _ in enumerate(pool.map(work, range(len(data))), 1):
            if progress is not None:
                progress(n, len(data))
    return out


def cached_images(
    data: ImageSet, resolution: int, resize: str, interpolation: str, root: Path | None = None, progress=None
) -> np.ndarray:
    """All images of `data` as an (N, R, R, 3) uint8 array, from the cache when present."""
    key = cache_key(data, resolution, resize, interpolation)
    if key in _MEMO:
        return _MEMO[key]
    if not data.cacheable:
        arr = decode_all(data, resolution, resize, interpolation, progress)
    else:
        safe = data.info.name.replace(":", "_").replace("/", "_")
        path = (root or cache_dir() / "images") / f"{safe}-{resolution}-{resize}-{key}.npy"
        if not path.exists():
            arr = decode_all(data, resolution, resize, interpolation, progress)
            atomic_write(path, lambda f: np.save(f, arr))
        arr = np.load(path, mmap_mode="r")
        if arr.shape != (len(data), resolution, resolution, 3):
            raise ValueError(f"image cache {path} has shape {arr.shape}; delete it to rebuild")
    _MEMO[key] = arr
    return arr
