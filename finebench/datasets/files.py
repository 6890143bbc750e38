"""Datasets that are image files on disk plus annotation files: one way to build them, hash them and read them."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet, sha256_file
from finebench.datasets.imaging import load_square

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def file_manifest(root: Path, relpaths: Sequence[str], annotations: Sequence[Path] = (), hint: str = "") -> str:
    """sha256 over the annotation files' contents and every image's relative path and size (a stat per file, so
    building a dataset stays fast; `bench verify` decodes every file). Missing images are an error naming them."""
    h = hashlib.sha256()
    for path in annotations:
        h.update(f"{path.name}\t{sha256_file(path)}\n".encode())
    missing = []
    for rel in relpaths:
        try:
            size = (root / rel).stat().st_size
        except OSError:
            missing.append(rel)
            continue
        h.update(f"{rel}\t{size}\n".encode())
    if missing:
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DatasetError(
            f"{len(missing)} of {len(relpaths)} images listed by the annotations are missing under {root}: "
            f"{', '.join(missing[:20])}{more}{hint}"
        )
    return h.hexdigest()


def file_image_set(
    info: DatasetInfo,
    root: Path,
    relpaths: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    boxes: Sequence[tuple[float, float, float, float]] | None = None,
    official: dict[str, np.ndarray] | None = None,
) -> ImageSet:
    """An ImageSet over files `root / relpath`, optionally cropped to a box (x, y, w, h) each before resizing."""
    paths = [root / rel for rel in relpaths]

    def read(i: int, resolution: int, resize: str, interpolation: str) -> np.ndarray:
        return load_square(paths[i], resolution, resize, interpolation, boxes[i] if boxes is not None else None)

    labels = np.asarray(labels, dtype=np.int64)
    return ImageSet(info, list(relpaths), labels, read, official=official, paths=paths)


def read_table(path: Path, columns: int, what: str) -> list[list[str]]:
    """Whitespace-separated rows of at least `columns` fields (the last field keeps any spaces); errors name the file
    and line."""
    if not path.is_file():
        raise DatasetError(f"{what}: {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) < columns:
            raise DatasetError(f"{path}:{n}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    return rows


def class_folders(folder: Path) -> dict[str, list[str]]:
    """{class folder name: image file names} for an ImageFolder-style tree (sorted, hidden files skipped)."""
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p.name for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if images:
            out[sub.name] = images
    return out
