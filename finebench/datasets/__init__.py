"""Dataset registry: a builder per name returning an ImageSet; data roots resolved in one place."""

from __future__ import annotations

import os
from pathlib import Path

from finebench.benchmark.registry import Registry
from finebench.datasets import flowers17, synthetic
from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet, data_root

__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "ImageSet", "build_dataset", "data_root", "check_name"]

DATASETS = Registry("dataset")
DATASETS.register("flowers17", flowers17.build, "Oxford Flowers-17: 17 classes x 80 images, official archive layout")
DATASETS.register(
    "synthetic", lambda root: synthetic.build("synthetic"), "generated fine-grained set (synthetic:<K>x<N> sizes)"
)


def check_name(name: str) -> None:
    """Raise early (before any training) for a name no builder accepts."""
    if name.startswith("synthetic:"):
        synthetic.parse_name(name)
    else:
        DATASETS.entry(name)


def build_dataset(name: str, root: str | os.PathLike | None = None) -> ImageSet:
    if name.startswith("synthetic:"):
        return synthetic.build(name)
    return DATASETS.get(name)(Path(data_root(root)))
