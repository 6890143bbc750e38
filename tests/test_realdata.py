"""Real images and real pretrained features: ../shared/datasets (FINEBENCH_DATA) and the shipped weights."""

import tarfile

import pytest

from finebench.cli import main
from finebench.datasets import build_dataset
from finebench.datasets.base import DatasetError
from finebench.datasets.fetch import MARKER, fetch_flowers17, safe_extract
from finebench.results.store import ResultStore

from dataset_fixtures import make_tar


def test_flowers17_layout_labels_and_split(flowers_root):
    data = build_dataset("flowers17", flowers_root)
    assert len(data) == 1360 and data.info.num_classes == 17
    assert data.ids[0] == "jpg/image_0001.jpg" and data.labels[0] == 0 and data.labels[80] == 1
    assert data.labels[-1] == 16 and data.info.classes[9] == "Sunflower"
    img = data.read(0, 64, "center-crop", "bicubic")
    assert img.shape == (64, 64, 3) and img.dtype.name == "uint8" and img.std() > 10


def test_fine_tuning_real_weights_beats_chance_by_far(flowers_root, tmp_path, capsys):
    """cut-fc on the real ImageNet features: a few steps on 8 images per class already classify flowers."""
    code = main(["run", "--methods", "cut-fc", "--dataset", "flowers17", "--backbone", "efficientnet_lite0",
                 "--data-root", str(flowers_root), "--epochs", "2", "--resolution", "96", "--out", str(tmp_path),
                 "train_per_class=8", "batch_size=16", "lr=0.05"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (record,) = ResultStore(tmp_path).records()
    assert record.dataset["sizes"] == {"train": 136, "val": 204, "test": 204}
    assert record.cost["steps"] == 2 * 9
    chance = 100 / 17
    assert record.best["test"]["top1"] > 8 * chance  # > 47 %, chance is 5.9 %
    assert record.backbone["weights"].startswith("shipped:")


def test_fetch_verifies_every_file_and_marks_the_tree(flowers_root, tmp_path):
    jpg = flowers_root / "flowers17" / "jpg"
    archive = tmp_path / "17flowers.tgz"
    with tarfile.open(archive, "w") as tar:  # the official archive's layout: jpg/... at the top
        tar.add(jpg, arcname="jpg")
    root = tmp_path / "root"
    root.mkdir()
    target = fetch_flowers17(root, archive=archive)
    assert (target / MARKER).exists() and (target / "jpg" / "image_1360.jpg").exists()
    assert len(build_dataset("flowers17", root)) == 1360


def test_fetch_names_a_corrupt_file(tmp_path):
    archive = tmp_path / "bad.tgz"
    archive.write_bytes(make_tar({"jpg/image_0001.jpg": b"not a jpeg", "jpg/files.txt": b""}))
    (tmp_path / "root").mkdir()
    with pytest.raises(DatasetError, match=r"image_0001.jpg \(checksum mismatch\)"):
        fetch_flowers17(tmp_path / "root", archive=archive)
    assert not (tmp_path / "root" / "flowers17").exists()


def test_archive_member_escaping_the_target_is_refused(tmp_path):
    archive = tmp_path / "evil.tgz"
    archive.write_bytes(make_tar({"jpg/ok.jpg": b"x", "../evil.txt": b"y"}))
    with pytest.raises(DatasetError, match="would extract outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_a_damaged_image_is_named_before_training(flowers_root, tmp_path):
    """A copy whose file differs from the official one is refused when the cache is built, naming the file."""
    from finebench.datasets.cache import cached_images

    jpg = tmp_path / "flowers17" / "jpg"
    jpg.mkdir(parents=True)
    for src in (flowers_root / "flowers17" / "jpg").iterdir():
        (jpg / src.name).symlink_to(src)
    (jpg / "image_0042.jpg").unlink()
    (jpg / "image_0042.jpg").write_bytes((flowers_root / "flowers17" / "jpg" / "image_0043.jpg").read_bytes())
    data = build_dataset("flowers17", tmp_path)
    with pytest.raises(DatasetError, match=r"image_0042.jpg: checksum differs"):
        cached_images(data, 16, "center-crop", "bicubic")
