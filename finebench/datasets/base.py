"""What a dataset builder returns, and where data lives."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finebench.core.hashing import sha256_bytes, sha256_file  # noqa: F401 - re-exported for the dataset modules


class DatasetError(ValueError):
    """A dataset that is missing, incomplete or malformed; the message says where we looked and how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    source: str  # URL or generator
    license: str
    manifest_hash: str  # identifies the exact file set (or generator parameters)
    root: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class ImageSet:
    """Items of one dataset: stable ids, integer labels, and a reader that decodes item i at a resolution.

    `read(i, resolution, resize, interpolation)` returns an HxWx3 uint8 array of exactly resolution x resolution.
    """

    info: DatasetInfo
    ids: list[str]
    labels: np.ndarray
    read: Callable[[int, int, str, str], np.ndarray]
    cacheable: bool = True  # False: cheap to regenerate, kept in memory only
    extra: dict = field(default_factory=dict)
    # the dataset's own train/test partition (item indices), when it has one: the test split is then the official
    # test set and val is carved, stratified, from the official train set
    official: dict[str, np.ndarray] | None = None
    paths: list[Path] | None = None  # the image files, for `bench verify`

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, keep: np.ndarray) -> ImageSet:
        """The items at positions `keep` (sorted), with their official partition and reader re-indexed."""
        keep = np.sort(np.asarray(keep, dtype=np.int64))
        position = {int(old): new for new, old in enumerate(keep)}
        official = None
        if self.official is not None:
            official = {k: np.array([position[i] for i in v if i in position], dtype=np.int64)
                        for k, v in self.official.items()}  # fmt: skip
        read = self.read

        def read_kept(i: int, resolution: int, resize: str, interpolation: str) -> np.ndarray:
            return read(int(keep[i]), resolution, resize, interpolation)

        return ImageSet(
            self.info,
            [self.ids[i] for i in keep],
            self.labels[keep],
            read_kept,
            self.cacheable,
            dict(self.extra),
            official,
            [self.paths[i] for i in keep] if self.paths is not None else None,
        )


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """--data-root, then $FINEBENCH_DATA, then the user cache dir."""
    if explicit:
        root, where = Path(explicit).expanduser(), "--data-root"
    elif os.environ.get("FINEBENCH_DATA"):
        root, where = Path(os.environ["FINEBENCH_DATA"]).expanduser(), "FINEBENCH_DATA"
    else:
        return cache_dir() / "data"
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{where} {root} is a file, not a folder; give the folder that holds the datasets")
    return root


def cache_dir() -> Path:
    """$FINEBENCH_CACHE, else $XDG_CACHE_HOME/finebench, else ~/.cache/finebench."""
    if os.environ.get("FINEBENCH_CACHE"):
        return Path(os.environ["FINEBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "finebench"
