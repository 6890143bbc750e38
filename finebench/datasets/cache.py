"""Decoded, resized images kept as one uint8 array (N, 3, R, R) per (dataset manifest, resolution, resize policy).

An epoch then costs model time, not JPEG time. The array is built once (in parallel threads), saved atomically
under the cache dir and memory-mapped by every later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from finebench.core.atomic import atomic_write
from finebench.datasets.base import DatasetError, ImageSet, cache_dir

_MEMO: dict[str, tuple[np.ndarray, dict[int, str]]] = {}


def cache_key(data: ImageSet, resolution: int, resize: str, interpolation: str) -> str:
    info = data.info
    parts = (info.name, info.manifest_hash, info.root, len(data), resolution, resize, interpolation, "chw")
    raw = ":".join(str(p) for p in parts)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def decode_all(
    data: ImageSet, resolution: int, resize: str, interpolation: str, progress=None, every: bool = False
) -> tuple[np.ndarray, dict[int, str]]:
    """All images decoded in parallel threads; returns the array and {index: reason} of the items that could not
    be read (left black in the array). A file that is not the official one (checksum) raises, unless `every`
    (`bench verify`), which lists it with the others."""
    out = np.zeros((len(data), 3, resolution, resolution), dtype=np.uint8)  # channel-first: batches need no transpose
    bad: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            out[i] = data.read(i, resolution, resize, interpolation).transpose(2, 0, 1)
        except DatasetError as e:
            if not every:
                raise  # a checksum mismatch: the copy is not the official one, never skipped
            bad[i] = str(e)
        except Exception as e:  # noqa: BLE001 - PIL raises many types for truncated or foreign files
            bad[i] = f"{type(e).__name__}: {e}"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for n, _ in enumerate(pool.map(work, range(len(data))), 1):
            if progress is not None:
                progress(n, len(data))
    return out, bad


def bad_images_message(data: ImageSet, bad: dict[int, str]) -> str:
    names = [f"{data.ids[i]} ({bad[i]})" for i in sorted(bad)[:10]]
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    where = f" under {data.info.root}" if data.info.root else ""
    return (
        f"dataset {data.info.name!r}: {len(bad)} image(s) cannot be read{where}: {'; '.join(names)}{more}. "
        f"`bench verify {data.info.name}` lists every bad file; re-fetch them, or run with --skip-bad-images to "
        "leave them out (the record counts them)."
    )


def available_memory() -> int | None:
    """Bytes of memory the system can give now (Linux MemAvailable), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cache_path(data: ImageSet, resolution: int, resize: str, key: str, root: Path | None = None) -> Path:
    safe = data.info.name.replace(":", "_").replace("/", "_")
    return (root or cache_dir() / "images") / f"{safe}-{resolution}-{resize}-{key}.npy"


def check_room(data: ImageSet, resolution: int, resize: str, interpolation: str, root: Path | None = None) -> None:
    """Refuse, before any work, an image cache that cannot fit: it is built in memory (N x 3 x R x R bytes) and,
    for cacheable datasets, written to the cache folder. A cache already on disk needs neither."""
    if data.cacheable and cache_path(data, resolution, resize, cache_key(data, resolution, resize, interpolation),
                                     root).exists():  # fmt: skip
        return
    need = len(data) * 3 * resolution * resolution
    gib = need / 2**30
    memory = available_memory()
    if memory is not None and need > 0.8 * memory:
        raise ValueError(
            f"resolution {resolution} px: {data.info.name}'s {len(data):,} images need {gib:,.1f} GiB of memory as "
            f"an image cache, more than this machine has free ({memory / 2**30:,.1f} GiB); use a lower --resolution"
        )
    folder = root or cache_dir() / "images"
    probe = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if data.cacheable and probe is not None:
        free = shutil.disk_usage(probe).free
        if need > free:
            raise ValueError(
                f"resolution {resolution} px: the image cache of {data.info.name} needs {gib:,.1f} GiB on disk in "
                f"{folder}, which has {free / 2**30:,.1f} GiB free; use a lower --resolution or set FINEBENCH_CACHE"
            )


def cached_images(
    data: ImageSet,
    resolution: int,
    resize: str,
    interpolation: str,
    root: Path | None = None,
    progress=None,
    skip_bad: bool = False,
) -> tuple[np.ndarray, list[int]]:
    """All images of `data` as an (N, 3, R, R) uint8 array, from the cache when present, and the sorted indices of
    unreadable items. Unreadable items are an error (naming them) unless `skip_bad`."""
    key = cache_key(data, resolution, resize, interpolation)
    if key in _MEMO and _MEMO[key][1] and any_readable(data, _MEMO[key][1], resolution, resize, interpolation):
        del _MEMO[key]  # an item held as unreadable reads now: look again
    if key not in _MEMO:
        if not data.cacheable:
            arr, bad = decode_all(data, resolution, resize, interpolation, progress)
        else:
            path = cache_path(data, resolution, resize, key, root)
            bad_path = path.with_suffix(".bad.json")
            if path.exists() and bad_path.exists() and repaired(data, bad_path, resolution, resize, interpolation):
                path.unlink()  # an image listed as unreadable reads now (re-fetched): rebuild the cache
            if not path.exists():
                arr, bad = decode_all(data, resolution, resize, interpolation, progress)
                # the list of unreadable items first: a reader that sees the array also sees the list
                atomic_write(bad_path, lambda f: f.write(json.dumps({str(k): v for k, v in bad.items()}).encode()))
                atomic_write(path, lambda f: np.save(f, arr))
            arr = np.load(path, mmap_mode="r")
            if arr.shape != (len(data), 3, resolution, resolution):
                raise ValueError(f"image cache {path} has shape {arr.shape}; delete it to rebuild")
            bad = {int(k): v for k, v in json.loads(bad_path.read_text()).items()} if bad_path.exists() else {}
        _MEMO[key] = (arr, bad)
    arr, bad = _MEMO[key]
    if bad and not skip_bad:
        raise DatasetError(bad_images_message(data, bad))
    return arr, sorted(bad)


def repaired(data: ImageSet, bad_path: Path, resolution: int, resize: str, interpolation: str) -> bool:
    """True when an item that the cache lists as unreadable can be read now."""
    return any_readable(data, json.loads(bad_path.read_text()), resolution, resize, interpolation)


def any_readable(data: ImageSet, items, resolution: int, resize: str, interpolation: str) -> bool:
    for i in items:
        try:
            data.read(int(i), resolution, resize, interpolation)
        except Exception:  # noqa: BLE001, S112 - still unreadable, as recorded
            continue
        return True
    return False
