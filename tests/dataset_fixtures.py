"""Tiny trees in each dataset's official format, with generated JPEGs (the formats as DATASETS.md describes them)."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def jpeg(path: Path, colour, size=(40, 30), box=None, box_colour=(255, 255, 255)) -> None:
    """A solid image (w x h), optionally with a `box` (x, y, w, h) filled in another colour."""
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8) + np.array(colour, dtype=np.uint8)
    if box is not None:
        x, y, w, h = box
        arr[y : y + h, x : x + w] = box_colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)


CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]


def make_cub(root: Path, per_class: int = 8, test_per_class: int = 3) -> Path:
    """<root>/CUB_200_2011 with the official text files (1-based ids, space separated) and images/<class>/<file>."""
    folder = root / "CUB_200_2011"
    images, labels, split, boxes = [], [], [], []
    image_id = 0
    for c, cls in enumerate(CUB_CLASSES, 1):
        for k in range(per_class):
            image_id += 1
            name = f"{cls.split('.', 1)[1]}_{k:04d}_{image_id}.jpg"
            box = (10 + k, 5, 16, 12)  # a white box on a coloured background
            jpeg(folder / "images" / cls / name, (60 * c, 30, 200 - 50 * c), (48, 32), box)
            images.append(f"{image_id} {cls}/{name}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {0 if k < test_per_class else 1}")
            boxes.append(f"{image_id} {box[0]}.0 {box[1]}.0 {box[2]}.0 {box[3]}.0")
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "classes.txt").write_text("\n".join(f"{i} {c}" for i, c in enumerate(CUB_CLASSES, 1)) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (folder / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    return folder


# (id, name, supercategory, class) of a small taxonomy
TAXA = [
    (0, "Rana temporaria", "Amphibia", "Amphibia"),
    (1, "Bufo bufo", "Amphibia", "Amphibia"),
    (2, "Turdus merula", "Aves", "Aves"),
    (3, "Ambystoma mexicanum", "Amphibia", "Amphibia"),
]


def make_inat(root: Path, year: str, per_class: int = 4) -> Path:
    """<root>/inat<year> with the year's training annotation file and the image tree its file_names name.

    2018: obfuscated category names in train2018.json, the real taxonomy in categories.json; 2021: supercategory
    'Amphibians', class 'Amphibia', image_dir_name, images under train/<image_dir_name>/."""
    folder = root / f"inat{year}"
    images, annotations, categories = [], [], []
    image_id = 100
    for cid, name, superc, cls in TAXA:
        if year == "2018":
            categories.append({"id": cid, "name": str(cid), "supercategory": superc})
        else:
            dirname = f"{cid:05d}_Animalia_Chordata_{cls}_{name.replace(' ', '_')}"
            superc_2021 = "Amphibians" if superc == "Amphibia" else "Birds"
            categories.append({"id": cid, "name": name, "supercategory": superc_2021, "kingdom": "Animalia",
                               "class": cls, "image_dir_name": dirname})  # fmt: skip
        for k in range(per_class):
            image_id += 1
            if year == "2018":
                rel = f"train_val2018/{superc}/{cid}/{image_id:08x}.jpg"
            else:
                rel = f"train/{dirname}/{image_id:08x}.jpg"
            jpeg(folder / rel, (40 * cid + 20, 100, 50 + 10 * k))
            images.append({"id": image_id, "width": 40, "height": 30, "file_name": rel, "license": 1})
            annotations.append({"id": image_id + 5000, "image_id": image_id, "category_id": cid})
    # an image of the validation file that must not appear, and an image without annotation
    images.append({"id": 9999, "width": 40, "height": 30, "file_name": "train_val2018/Amphibia/0/none.jpg"})
    annotation_file = {"2018": "train2018.json", "2021": "train.json"}[year]
    body = {"info": {"year": int(year)}, "images": images, "annotations": annotations, "categories": categories,
            "licenses": []}  # fmt: skip
    (folder / annotation_file).write_text(json.dumps(body))
    if year == "2018":
        real = [{"id": cid, "name": name, "supercategory": superc, "kingdom": "Animalia", "class": cls}
                for cid, name, superc, cls in TAXA]  # fmt: skip
        (folder / "categories.json").write_text(json.dumps(real))
    return folder


def make_folder(root: Path, classes=("oak", "ash", "elm"), per_class: int = 6) -> Path:
    for c, cls in enumerate(classes):
        for k in range(per_class):
            jpeg(root / cls / f"img{k}.jpg", (80 * c, 40 * k, 100))
    return root


def make_dtd(root: Path, classes=("banded", "dotted"), per_split: int = 3) -> Path:
    """torchvision's DTD layout under our <data root>/dtd/ (torchvision's root): dtd/dtd/images/<class>/<file>.jpg and
    dtd/dtd/labels/{train,val,test}1.txt, as torchvision's own download extracts it."""
    data = root / "dtd" / "dtd" / "dtd"
    k = 0
    for split in ("train", "val", "test"):
        lines = []
        for c, cls in enumerate(classes):
            for _ in range(per_split):
                k += 1
                jpeg(data / "images" / cls / f"{cls}_{k:04d}.jpg", (100 * c, 50, 50))
                lines.append(f"{cls}/{cls}_{k:04d}.jpg")
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")
    return data


def make_tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    """A tar archive (gzip-compressed by default) of the given member names and contents, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
