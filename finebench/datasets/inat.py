"""iNaturalist subsets read from the official annotation JSON (2017, 2018, 2019, 2021 formats) and image tree.

`inat:<year>:<field>=<value>` keeps the training images whose category has `field == value` (any category field:
supercategory, kingdom, phylum, class, order, family, genus, name), e.g. `inat:2021:class=Aves`. Years: 2017, 2018,
2019, 2021 and 2021-mini. `inat-amphibia` is `inat:2018:supercategory=Amphibia`, the filter-attention paper's
11,156 images of 144 amphibian species (the iNat 2018 training set's Amphibia). The amphibian label is spelled
`Amphibia` (2017, 2018) or `Amphibians` (2019, 2021 supercategory; 2021 also has class `Amphibia`).

Layout: `<root>/inat<year>/` holds the annotation file (`train2017.json`, `train2018.json`, `train2019.json`,
`train.json`, `train_mini.json`) and the images under the paths its `file_name`s give (e.g.
`train_val2018/Amphibia/<category>/<image>.jpg`). For 2018 and 2019, whose training files obfuscate the taxonomy,
the official `categories.json` beside it supplies the real names and ranks when present. Labels are the kept
categories in category-id order; the split is ours (stratified, seeded; the paper's 70/15/15 is the default).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from finebench.core.atomic import atomic_write
from finebench.datasets.base import DatasetError, DatasetInfo, ImageSet, cache_dir
from finebench.datasets.files import file_image_set, file_manifest

BASE_URL = "https://ml-inat-competition-datasets.s3.amazonaws.com"
LICENSE = "non-commercial research and education only; images may not be redistributed (iNaturalist terms)"
TRAIN_FILES = {
    "2017": "train2017.json",
    "2018": "train2018.json",
    "2019": "train2019.json",
    "2021": "train.json",
    "2021-mini": "train_mini.json",
}
ALIASES = {"inat-amphibia": "inat:2018:supercategory=Amphibia"}


@dataclass(frozen=True)
class Query:
    year: str
    field: str
    value: str

    @property
    def name(self) -> str:
        return f"inat:{self.year}:{self.field}={self.value}"


def parse_name(name: str) -> Query:
    spec = ALIASES.get(name, name)
    m = re.fullmatch(r"inat:([0-9]{4}(?:-mini)?):([a-z_]+)=(.+)", spec)
    if not m or m.group(1) not in TRAIN_FILES:
        raise DatasetError(
            f"dataset {name!r}: expected inat:<year>:<field>=<value> with year one of {', '.join(TRAIN_FILES)}, "
            "e.g. inat:2018:supercategory=Amphibia or inat:2021:class=Aves (or inat-amphibia)"
        )
    return Query(*m.groups())


def dataset_dir(root: Path, year: str) -> Path:
    return root / f"inat{year.split('-')[0]}"


def present(root: Path, name: str = "inat-amphibia") -> bool:
    q = parse_name(name)
    return (dataset_dir(root, q.year) / TRAIN_FILES[q.year]).is_file()


def hint(root: Path, year: str) -> str:
    folder = dataset_dir(root, year)
    return (
        f". Put the official {TRAIN_FILES[year]} and the image folders it names under {folder} "
        f"(`bench fetch inat-amphibia --data-root {root}` for iNat 2018 amphibians; archives at {BASE_URL}/{year}/)"
    )


def categories_of(annotations: dict, folder: Path, year: str) -> dict[int, dict]:
    cats = {int(c["id"]): dict(c) for c in annotations.get("categories", [])}
    extra = folder / "categories.json"
    if extra.is_file():  # the real taxonomy of the obfuscated training categories (2018, 2019)
        for c in json.loads(extra.read_text()):
            cats.setdefault(int(c["id"]), {}).update(c)
    return cats


def listing(path: Path, query: Query) -> dict:
    """{categories: [[id, name]], images: [[file_name, category id]]} of the query, memoised per annotation file
    (the 2021 file is hundreds of MB; parsing it once is enough)."""
    files = (path, path.parent / "categories.json")
    stamps = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files if p.is_file()]
    key = hashlib.sha256(f"{stamps}:{query.name}".encode()).hexdigest()
    memo = cache_dir() / "listings" / f"inat-{key[:16]}.json"
    if memo.is_file():
        return json.loads(memo.read_text())
    try:
        annotations = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable iNaturalist annotation file ({e})") from e
    for key_ in ("images", "annotations", "categories"):
        if key_ not in annotations:
            raise DatasetError(f"{path}: lacks the {key_!r} list of the official format")
    try:
        return select(annotations, path, query, memo)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}: an entry lacks a field of the official format ({type(e).__name__}: {e})") from e


def select(annotations: dict, path: Path, query: Query, memo: Path) -> dict:
    cats = categories_of(annotations, path.parent, query.year)
    fields = sorted({k for c in cats.values() for k in c})
    if query.field not in fields:
        extra = "" if (path.parent / "categories.json").is_file() else " (no categories.json beside it)"
        raise DatasetError(f"{path}: categories have no field {query.field!r}{extra}; fields: {', '.join(fields)}")
    kept = {cid for cid, c in cats.items() if str(c.get(query.field)) == query.value}
    if not kept:
        values = sorted({str(c.get(query.field)) for c in cats.values()})
        raise DatasetError(
            f"{path}: no category has {query.field}={query.value!r}; values: {', '.join(values[:30])}"
            + (" ..." if len(values) > 30 else "")
        )
    files = {int(im["id"]): im["file_name"] for im in annotations["images"]}
    images = sorted(
        (files[int(a["image_id"])], int(a["category_id"]))
        for a in annotations["annotations"]
        if int(a["category_id"]) in kept and int(a["image_id"]) in files
    )
    out = {"categories": [[cid, str(cats[cid].get("name", cid))] for cid in sorted(kept)], "images": images}
    atomic_write(memo, lambda f: f.write(json.dumps(out).encode()))
    return out


def build(root: Path, name: str) -> ImageSet:
    query = parse_name(name)
    folder = dataset_dir(root, query.year)
    path = folder / TRAIN_FILES[query.year]
    if not path.is_file():
        raise DatasetError(f"dataset {name!r} not found: {path} does not exist{hint(root, query.year)}")
    found = listing(path, query)
    index = {cid: k for k, (cid, _) in enumerate(found["categories"])}
    rel = [f for f, _ in found["images"]]
    labels = [index[c] for _, c in found["images"]]
    digest = hashlib.sha256(
        (json.dumps(found, sort_keys=True) + file_manifest(folder, rel, hint=hint(root, query.year))).encode()
    ).hexdigest()
    source = f"{BASE_URL}/{query.year.split('-')[0]}/ ({TRAIN_FILES[query.year]}, {query.field}={query.value})"
    classes = tuple(n for _, n in found["categories"])
    info = DatasetInfo(name, classes, source, LICENSE, digest, str(folder.resolve()))
    return file_image_set(info, folder, rel, labels)
