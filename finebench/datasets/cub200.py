"""CUB-200-2011 (Wah et al. 2011) from its official folder layout.

`<root>/CUB_200_2011/` holds `images.txt` (`<image_id> <class_folder>/<file>.jpg`), `classes.txt`
(`<class_id> 001.Black_footed_Albatross`), `image_class_labels.txt` (`<image_id> <class_id>`),
`train_test_split.txt` (`<image_id> <1 = train, 0 = test>`), `bounding_boxes.txt` (`<image_id> <x> <y> <w> <h>`)
and `images/<class_folder>/<file>.jpg`. Ids are 1-based. The official test set is our test set; val is carved,
stratified, from the official train set. `cub200:bbox` crops every image to its bounding box first (the
attention-transfer paper's CUB setting).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet
from finebench.datasets.files import file_image_set, file_manifest, read_table

NAME = "cub200"
FOLDER = "CUB_200_2011"
URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
LICENSE = "research and non-commercial use (Caltech); images from Flickr, see the dataset's README"
FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")
VARIANTS = ("", "bbox")


def dataset_dir(root: Path) -> Path:
    return root / FOLDER


def present(root: Path) -> bool:
    return (dataset_dir(root) / "images.txt").is_file()


def hint(root: Path) -> str:
    return (
        f". Get it with `bench fetch cub200 --data-root {root}`, or download {URL} (about 1.1 GB) and extract it "
        f"under {root} so that {dataset_dir(root) / 'images.txt'} exists"
    )


def check_name(name: str) -> str:
    """The variant of a `cub200[:bbox]` name."""
    variant = name.partition(":")[2]
    if variant not in VARIANTS:
        raise DatasetError(f"dataset {name!r}: the only variant is cub200:bbox (crop to the bounding box)")
    return variant


def build(root: Path, name: str = NAME) -> ImageSet:
    variant = check_name(name)
    folder = dataset_dir(root)
    if not folder.is_dir():
        raise DatasetError(f"dataset {NAME!r} not found: {folder} does not exist{hint(root)}")
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"dataset {NAME!r}: {folder} lacks {', '.join(missing)}{hint(root)}")
    images = {int(i): rel for i, rel in read_table(folder / "images.txt", 2, NAME)}
    classes = sorted((int(i), name) for i, name in read_table(folder / "classes.txt", 2, NAME))
    class_index = {cid: k for k, (cid, _) in enumerate(classes)}
    labels = {int(i): int(c) for i, c in read_table(folder / "image_class_labels.txt", 2, NAME)}
    is_train = {int(i): v for i, v in read_table(folder / "train_test_split.txt", 2, NAME)}
    boxes = {int(r[0]): tuple(float(v) for v in r[1:5]) for r in read_table(folder / "bounding_boxes.txt", 5, NAME)}
    ids = sorted(images)
    for what, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train),
                        ("bounding_boxes.txt", boxes)):  # fmt: skip
        lacking = [i for i in ids if i not in table]
        if lacking:
            raise DatasetError(f"{folder / what}: no entry for image id(s) {lacking[:5]} of images.txt")
    unknown = sorted({labels[i] for i in ids} - set(class_index))
    if unknown:
        raise DatasetError(f"{folder / 'image_class_labels.txt'}: class id(s) {unknown[:5]} are not in classes.txt")
    bad_flags = sorted({is_train[i] for i in ids} - {"0", "1"})
    if bad_flags:
        raise DatasetError(f"{folder / 'train_test_split.txt'}: flags must be 1 (train) or 0 (test), got {bad_flags}")
    rel = [f"images/{images[i]}" for i in ids]
    official = {
        "train": np.array([k for k, i in enumerate(ids) if is_train[i] == "1"], dtype=np.int64),
        "test": np.array([k for k, i in enumerate(ids) if is_train[i] == "0"], dtype=np.int64),
    }
    name = NAME if not variant else f"{NAME}:{variant}"
    digest = file_manifest(folder, rel, [folder / f for f in FILES], hint(root))
    info = DatasetInfo(name, tuple(n for _, n in classes), URL, LICENSE, digest, str(folder.resolve()))
    box_list = [boxes[i] for i in ids] if variant == "bbox" else None
    return file_image_set(info, folder, rel, [class_index[labels[i]] for i in ids], box_list, official)
