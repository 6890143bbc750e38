"""Oxford 17 Category Flower Dataset (Nilsback & Zisserman 2006) in the official archive layout.

`<root>/flowers17/jpg/image_0001.jpg ... image_1360.jpg` (+ files.txt); label of image_NNNN = (NNNN - 1) // 80.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np

from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet, sha256_bytes
from finebench.datasets.imaging import load_square

NAME = "flowers17"
URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
CLASSES = (
    "Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip", "Fritillary",
    "Sunflower", "Daisy", "ColtsFoot", "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy",
)  # fmt: skip
PER_CLASS = 80
LICENSE = "research use (Visual Geometry Group, University of Oxford)"


def manifest_text() -> str:
    """sha256 of every file of the official archive's jpg/ folder."""
    return (files("finebench.datasets") / "manifests" / "flowers17.sha256").read_text()


def manifest() -> dict[str, str]:
    entries = {}
    for line in manifest_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.strip()] = digest
    return entries


def dataset_dir(root: Path) -> Path:
    return root / NAME


def missing_message(root: Path, detail: str) -> str:
    return (
        f"dataset {NAME!r} not found: {detail} (looked in {dataset_dir(root) / 'jpg'}, data root from --data-root, "
        f"then $FINEBENCH_DATA, then the user cache dir). Get it with `bench fetch {NAME} --data-root {root}`, "
        f"or download {URL} and extract it so that {dataset_dir(root) / 'jpg' / 'image_0001.jpg'} exists."
    )


def build(root: Path) -> ImageSet:
    jpg = dataset_dir(root) / "jpg"
    if not jpg.is_dir():
        raise DatasetError(missing_message(root, "folder does not exist"))
    names = sorted(n for n in manifest() if n.startswith("image_"))
    present = {p.name for p in jpg.iterdir()}
    absent = [n for n in names if n not in present]
    if absent:
        raise DatasetError(missing_message(root, f"{len(absent)} of {len(names)} images missing, e.g. {absent[0]}"))
    labels = np.array([(int(n[6:10]) - 1) // PER_CLASS for n in names], dtype=np.int64)
    where = str(dataset_dir(root).resolve())
    info = DatasetInfo(NAME, CLASSES, URL, LICENSE, sha256_bytes(manifest_text().encode()), where)

    digests = manifest()

    def read(i: int, resolution: int, resize: str, interpolation: str) -> np.ndarray:
        """Decode one image, checking its bytes against the manifest first (the cache then holds verified data)."""
        blob = (jpg / names[i]).read_bytes()
        if sha256_bytes(blob) != digests[names[i]]:
            raise DatasetError(
                f"{jpg / names[i]}: checksum differs from the official file; the copy is damaged or not the "
                f"official one. Re-fetch with `bench fetch {NAME} --data-root {root}`."
            )
        return load_square(blob, resolution, resize, interpolation)

    return ImageSet(info, [f"jpg/{n}" for n in names], labels, read)
