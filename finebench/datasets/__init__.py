"""Dataset registry: a builder per name (or name family, `family:<argument>`), data roots resolved in one place."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finebench.core.registry import Registry
from finebench.datasets import cub200, flowers17, folder, inat, synthetic, torchvision_sets
from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet, data_root

__all__ = ["DATASETS", "DatasetError", "DatasetInfo", "ImageSet", "build_dataset", "data_root", "check_name"]


@dataclass(frozen=True)
class DatasetEntry:
    build: Callable[[Path, str], ImageSet]  # (data root, full name) -> items
    facts: str  # classes, images per official split, source, license
    present: Callable[[Path], bool] | None = None  # None: nothing to download (generated, or the user's folder)
    check: Callable[[str], object] | None = None  # validates a full name's argument without touching data


DATASETS = Registry("dataset")


def _register(name: str, entry: DatasetEntry, description: str) -> None:
    DATASETS.register(name, lambda: entry, description)


_register(
    "flowers17",
    DatasetEntry(lambda root, name: flowers17.build(root), "17 classes, 1,360 images (80 per class); "
                 f"{flowers17.URL}; {flowers17.LICENSE}", lambda root: (flowers17.dataset_dir(root) / "jpg").is_dir()),
    "Oxford Flowers-17: 17 classes x 80 images, official archive layout",
)  # fmt: skip
_register(
    "cub200",
    DatasetEntry(
        cub200.build,
        f"200 classes, 11,788 images (official 5,994 train / 5,794 test); {cub200.URL}; {cub200.LICENSE}",
        cub200.present,
        cub200.check_name,
    ),
    "CUB-200-2011, official layout and train/test split; cub200:bbox crops to the bounding boxes",
)
_register(
    "inat-amphibia",
    DatasetEntry(
        inat.build,
        f"144 classes, 11,156 images (iNat 2018 train, supercategory Amphibia; split 70/15/15 by us); {inat.LICENSE}",
        lambda root: inat.present(root, "inat-amphibia"),
    ),
    "iNaturalist 2018 amphibians (the filter-attention paper's set), from the official JSON + image tree",
)
_register(
    "inat",
    DatasetEntry(inat.build, f"inat:<year>:<field>=<value>, years {', '.join(inat.TRAIN_FILES)}; {inat.LICENSE}",
                 None, inat.parse_name),
    "any iNaturalist subset: inat:<year>:<field>=<value>, e.g. inat:2021:class=Aves",
)  # fmt: skip
for _name, _spec in torchvision_sets.SETS.items():
    _register(
        _name,
        DatasetEntry(
            torchvision_sets.build,
            f"official {'+'.join(_spec.train)} / {'+'.join(_spec.test)} splits via torchvision.datasets."
            f"{_spec.cls}; {_spec.url}; {_spec.license}",
            lambda root, n=_name: torchvision_sets.present(root, n),
            torchvision_sets.parse_name,
        ),
        f"{_spec.cls} through torchvision"
        + (f" ({', '.join(f'{_name}:{v}' for v in _spec.variants)})" if _spec.variants else "")
        + (" - manual download" if _spec.manual else ""),
    )
_register(
    "folder",
    DatasetEntry(lambda root, name: folder.build(name), "folder:<path>, <path>/<class>/<image>", None,
                 folder.check_name),
    "your own ImageFolder tree: folder:<path> (<path>/<class name>/<image>)",
)  # fmt: skip
_register(
    "synthetic",
    DatasetEntry(lambda root, name: synthetic.build(name), "generated; synthetic:<K>x<N>", None, synthetic.parse_name),
    "generated fine-grained set (synthetic:<K>x<N> sizes)",
)


def family(name: str) -> str:
    return name if name in DATASETS else name.split(":", 1)[0]


def check_name(name: str) -> None:
    """Raise early (before any training) for a name no builder accepts."""
    entry = DATASETS.get(family(name))()
    if entry.check is not None:
        entry.check(name)
    elif ":" in name:
        raise DatasetError(f"dataset {name!r}: {family(name)} takes no ':' argument")


def build_dataset(name: str, root: str | os.PathLike | None = None) -> ImageSet:
    check_name(name)
    return DATASETS.get(family(name))().build(Path(data_root(root)), name)


def presence(name: str, root: str | os.PathLike | None = None) -> str:
    """'present', 'absent' or '-' (nothing to download) under the data root."""
    entry = DATASETS.get(family(name))()
    if entry.present is None:
        return "-"
    return "present" if entry.present(Path(data_root(root))) else "absent"
