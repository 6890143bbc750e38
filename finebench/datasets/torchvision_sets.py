"""Fine-grained sets that torchvision's dataset classes know how to find, check and download.

Each lives under `<data root>/<name>/` in torchvision's layout (what `bench fetch <name>` produces through
torchvision's own download, which checks the archives' MD5s). We take only the file list and labels from
torchvision and read the images ourselves. The official test set is our test set; val is carved, stratified, from
the official train (+ val) images.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet
from finebench.datasets.files import file_image_set, file_manifest


@dataclass(frozen=True)
class TorchvisionSet:
    cls: str  # torchvision.datasets class name
    train: tuple[str, ...]  # official splits that make our train pool
    test: tuple[str, ...]
    url: str
    license: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # name suffix -> extra kwargs
    manual: str = ""  # how to get the files when torchvision cannot download them


SETS = {
    "flowers102": TorchvisionSet(
        "Flowers102", ("train", "val"), ("test",), "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        "research use (Visual Geometry Group, University of Oxford)",
    ),
    "fgvc-aircraft": TorchvisionSet(
        "FGVCAircraft", ("trainval",), ("test",), "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        "non-commercial research only (images by their photographers)",
        {"annotation_level": "variant"},
        {"variant": {"annotation_level": "variant"}, "family": {"annotation_level": "family"},
         "manufacturer": {"annotation_level": "manufacturer"}},
    ),
    "oxford-pets": TorchvisionSet(
        "OxfordIIITPet", ("trainval",), ("test",), "https://www.robots.ox.ac.uk/~vgg/data/pets/",
        "CC BY-SA 4.0",
    ),
    "dtd": TorchvisionSet(
        "DTD", ("train", "val"), ("test",), "https://www.robots.ox.ac.uk/~vgg/data/dtd/",
        "research use (Visual Geometry Group, University of Oxford)", {"partition": 1},
    ),
    "food101": TorchvisionSet(
        "Food101", ("train",), ("test",), "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        "research use; images from foodspotting.com under their terms",
    ),
    "stanford-cars": TorchvisionSet(
        "StanfordCars", ("train",), ("test",), "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        "non-commercial research only",
        manual=(
            "the original host is gone, so nothing downloads it: get the files from a mirror (e.g. the Kaggle copy "
            "of 'stanford-cars-dataset') and arrange them as <data root>/stanford-cars/stanford_cars/ with "
            "devkit/cars_meta.mat, devkit/cars_train_annos.mat, cars_train/*.jpg, cars_test/*.jpg and "
            "cars_test_annos_withlabels.mat"
        ),
    ),
}  # fmt: skip


def parse_name(name: str) -> tuple[str, str]:
    base, _, variant = name.partition(":")
    if base not in SETS:
        raise DatasetError(f"unknown torchvision dataset {base!r}; known: {', '.join(SETS)}")
    spec = SETS[base]
    if variant and variant not in spec.variants:
        known = ", ".join(f"{base}:{v}" for v in spec.variants) or "none"
        raise DatasetError(f"dataset {name!r}: unknown variant {variant!r}; variants: {known}")
    return base, variant


def dataset_dir(root: Path, base: str) -> Path:
    return root / base


def how_to_get(root: Path, base: str) -> str:
    spec = SETS[base]
    if spec.manual:
        return f"{spec.manual} (data root {root})"
    return f"get it with `bench fetch {base} --data-root {root}` (downloads through torchvision)"


def files_and_labels(ds: Any) -> tuple[list[Path], list[int]]:
    if hasattr(ds, "_samples"):
        return [Path(p) for p, _ in ds._samples], [int(y) for _, y in ds._samples]
    files = getattr(ds, "_image_files", None) or getattr(ds, "_images", None)
    if files is None:
        raise DatasetError(f"torchvision {type(ds).__name__}: no file list found (torchvision changed its layout?)")
    return [Path(p) for p in files], [int(y) for y in ds._labels]


@contextlib.contextmanager
def safe_tar_extraction():
    """torchvision extracts with tarfile's extractall: refuse absolute paths, '..' members, links leaving the tree
    and device files while it does (Python's 'data' filter, PEP 706)."""
    if not hasattr(tarfile, "data_filter"):
        raise DatasetError(
            "this Python's tarfile has no extraction filters (PEP 706; Python >= 3.10.12 / 3.11.4); upgrade Python, "
            "or download and extract the archive yourself"
        )
    before = tarfile.TarFile.extraction_filter
    tarfile.TarFile.extraction_filter = staticmethod(tarfile.data_filter)
    try:
        yield
    finally:
        tarfile.TarFile.extraction_filter = before


def open_split(base: str, root: Path, split: str, variant: str, download: bool = False) -> Any:
    import torchvision.datasets as tvd

    spec = SETS[base]
    kwargs = dict(spec.kwargs) | spec.variants.get(variant, {})
    try:
        with safe_tar_extraction() if download else contextlib.nullcontext():
            return getattr(tvd, spec.cls)(root=str(dataset_dir(root, base)), split=split, download=download, **kwargs)
    except tarfile.TarError as e:
        raise DatasetError(f"dataset {base!r}: an archive was refused or damaged while extracting ({e})") from e
    except (RuntimeError, FileNotFoundError, OSError) as e:
        raise DatasetError(
            f"dataset {base!r} not found or incomplete under {dataset_dir(root, base)} ({e}); {how_to_get(root, base)}"
        ) from e


def present(root: Path, base: str) -> bool:
    try:
        open_split(base, root, SETS[base].test[0], "")
    except DatasetError:
        return False
    return True


def build(root: Path, name: str) -> ImageSet:
    base, variant = parse_name(name)
    spec = SETS[base]
    folder = dataset_dir(root, base).resolve()
    paths, labels, part = [], [], []
    classes: list[str] | None = None
    for which, splits in (("train", spec.train), ("test", spec.test)):
        for split in splits:
            ds = open_split(base, root, split, variant)
            f, y = files_and_labels(ds)
            paths += f
            labels += y
            part += [which] * len(f)
            classes = classes or list(getattr(ds, "classes", []) or [])
    n_classes = max(labels) + 1
    if not classes or len(classes) != n_classes:
        classes = [str(k) for k in range(n_classes)]
    rel = [str(Path(p).resolve().relative_to(folder)) for p in paths]
    part_arr = np.array(part)
    official = {k: np.flatnonzero(part_arr == k) for k in ("train", "test")}
    files_digest = file_manifest(folder, rel)  # the labels and partition too: :variant and :family differ
    digest = hashlib.sha256(f"{files_digest}:{labels}:{part}:{classes}".encode()).hexdigest()
    info = DatasetInfo(name, tuple(str(c) for c in classes), spec.url, spec.license, digest, str(folder))
    return file_image_set(info, folder, rel, labels, official=official)


def fetch(root: Path, name: str, marker: str) -> Path:
    """Download every official split through torchvision (MD5-checked where torchvision has the sums: all but
    FGVC-Aircraft), extracting with tarfile's safety filter, then read every split back and leave a marker."""
    base, variant = parse_name(name)
    spec = SETS[base]
    if spec.manual:
        raise DatasetError(f"bench fetch {base}: {spec.manual}")
    for split in spec.train + spec.test:
        open_split(base, root, split, variant, download=True)
    data = build(root, name)  # every split's file list read back, every listed image present
    (dataset_dir(root, base) / marker).write_text(f"{len(data)} images; manifest {data.info.manifest_hash}\n")
    return dataset_dir(root, base)
