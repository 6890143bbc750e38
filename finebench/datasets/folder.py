"""`folder:<path>`: any ImageFolder-style tree, `<path>/<class name>/<image>` (classes in name order).

A tree with `train/` and `test/` subfolders of the same classes keeps that partition as its official split (test
stays test; val is carved from train); otherwise the split is ours (stratified, seeded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet
from finebench.datasets.files import class_folders, file_image_set, file_manifest

LICENSE = "the user's own data"


def check_name(name: str) -> str:
    """The path of a `folder:<path>` name."""
    path = name.partition(":")[2]
    if not path:
        raise DatasetError(f"dataset {name!r}: give the tree's path, folder:<path> (<path>/<class name>/<image>)")
    return path


def build(name: str) -> ImageSet:
    path = check_name(name)
    folder = Path(path).expanduser()
    name = f"folder:{path}"
    if not folder.is_dir():
        raise DatasetError(f"dataset {name!r}: {folder} is not a folder (expected <path>/<class name>/<image>)")
    parts = {p: class_folders(folder / p) for p in ("train", "test") if (folder / p).is_dir()}
    if len(parts) == 2:
        classes = sorted(set(parts["train"]) | set(parts["test"]))
        test_only = sorted(set(parts["test"]) - set(parts["train"]))
        if test_only:
            raise DatasetError(f"dataset {name!r}: class(es) {test_only} have test images but no train/ folder")
        rel, labels, which = [], [], []
        for part, tree in parts.items():
            for cls, images in tree.items():
                rel += [f"{part}/{cls}/{img}" for img in images]
                labels += [classes.index(cls)] * len(images)
                which += [part] * len(images)
        which_arr = np.array(which)
        official = {p: np.flatnonzero(which_arr == p) for p in ("train", "test")}
    else:
        tree = class_folders(folder)
        classes = list(tree)
        rel = [f"{cls}/{img}" for cls, images in tree.items() for img in images]
        labels = [k for k, images in enumerate(tree.values()) for _ in images]
        official = None
    if len(classes) < 2:
        raise DatasetError(
            f"dataset {name!r}: found {len(classes)} class folder(s) with images under {folder}; need at least 2 "
            "(<path>/<class name>/<image>.jpg, or train/ and test/ folders of those)"
        )
    digest = file_manifest(folder, rel)
    info = DatasetInfo(name, tuple(classes), str(folder.resolve()), LICENSE, digest, str(folder.resolve()))
    return file_image_set(info, folder, rel, labels, official=official)
