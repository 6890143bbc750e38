"""The dataset loaders on tiny trees in each official format (see dataset_fixtures.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from finebench.datasets import build_dataset
from finebench.datasets.base import DatasetError
from finebench.datasets.cache import cached_images
from finebench.datasets.split import make_split

from dataset_fixtures import CUB_CLASSES, make_cub, make_dtd, make_folder, make_inat, make_tar


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_cub_classes_official_split_and_determinism(tmp_path):
    make_cub(tmp_path, per_class=8, test_per_class=3)
    data = build_dataset("cub200", tmp_path)
    assert data.info.classes == tuple(CUB_CLASSES) and len(data) == 24
    assert data.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    assert data.ids[0].startswith("images/001.Black_footed_Albatross/")
    split = make_split(data, (0.7, 0.15, 0.15), 0, tmp_path / "splits")
    assert split.policy == "official"
    folder = tmp_path / "CUB_200_2011"
    paths = dict(line.split() for line in (folder / "images.txt").read_text().splitlines())
    flags = dict(line.split() for line in (folder / "train_test_split.txt").read_text().splitlines())
    official_test = {f"images/{paths[i]}" for i, flag in flags.items() if flag == "0"}
    assert {data.ids[i] for i in split.test} == official_test and len(official_test) == 9  # the whole test set
    assert set(split.train) | set(split.val) == set(data.official["train"]) and not set(split.val) & set(split.train)
    assert np.bincount(data.labels[split.val]).tolist() == [1, 1, 1]  # val carved per class from official train
    again = make_split(build_dataset("cub200", tmp_path), (0.7, 0.15, 0.15), 0, None)
    assert again.hash == split.hash and np.array_equal(again.val, split.val)
    other = make_split(data, (0.7, 0.15, 0.15), 1, None)
    assert np.array_equal(other.test, split.test) and other.hash != split.hash  # a new seed re-carves val only


def test_cub_bbox_variant_crops_to_the_box(tmp_path):
    make_cub(tmp_path)
    plain = build_dataset("cub200", tmp_path)
    boxed = build_dataset("cub200:bbox", tmp_path)
    assert plain.info.manifest_hash == boxed.info.manifest_hash and boxed.info.name == "cub200:bbox"
    full = plain.read(0, 16, "squash", "bilinear")
    crop = boxed.read(0, 16, "squash", "bilinear")
    assert crop.mean() > 240  # all white: the box only
    assert full.mean() < 200  # mostly the coloured background
    a, _ = cached_images(plain, 16, "squash", "bilinear", root=tmp_path / "cache")
    b, _ = cached_images(boxed, 16, "squash", "bilinear", root=tmp_path / "cache")
    assert not np.array_equal(a, b)  # two caches, not one shared by mistake


def test_cub_errors_name_the_file(tmp_path):
    folder = make_cub(tmp_path)
    (folder / "train_test_split.txt").write_text("1 1\n2 1\n")
    with pytest.raises(DatasetError, match=r"train_test_split.txt: no entry for image id\(s\) \[3, 4"):
        build_dataset("cub200", tmp_path)
    make_cub(tmp_path)
    (folder / "images" / CUB_CLASSES[1]).rename(folder / "moved")
    with pytest.raises(DatasetError, match="8 of 24 images listed by the annotations are missing.*Laysan"):
        build_dataset("cub200", tmp_path)
    with pytest.raises(DatasetError, match=r"not found: .*CUB_200_2011 does not exist.*bench fetch cub200"):
        build_dataset("cub200", tmp_path / "empty")


def test_bench_run_on_a_cub_tree(tmp_path):
    make_cub(tmp_path / "data")
    out = bench("run", "--methods", "cut-fc", "--dataset", "cub200", "--data-root", str(tmp_path / "data"),
                "--backbone", "test_resnet", "--weights", "random", "--epochs", "1", "--resolution", "32",
                "batch_size=8", "--quiet", "--out", "res", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    assert record["dataset"]["name"] == "cub200" and record["dataset"]["num_classes"] == 3
    assert "Caltech" in record["dataset"]["license"] and record["dataset"]["source"].endswith("CUB_200_2011.tgz")
    assert len(record["dataset"]["manifest_hash"]) == 64
    assert record["dataset"]["sizes"]["test"] == 9 and record["dataset"]["split_policy"] == "official"
    assert record["dataset"]["sizes"]["train"] + record["dataset"]["sizes"]["val"] == 15


@pytest.mark.parametrize("year", ["2018", "2021"])
def test_inat_amphibian_filter_across_years(tmp_path, year):
    make_inat(tmp_path, year, per_class=4)
    name = {"2018": "inat-amphibia", "2021": "inat:2021:supercategory=Amphibians"}[year]
    data = build_dataset(name, tmp_path)
    # three amphibian species of the four taxa, in category-id order; the bird and the unannotated image left out
    assert data.info.classes == ("Rana temporaria", "Bufo bufo", "Ambystoma mexicanum")
    assert len(data) == 12 and data.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert all("Turdus" not in i and "/2/" not in i for i in data.ids)
    if year == "2021":  # the same animals by another field
        assert build_dataset("inat:2021:class=Amphibia", tmp_path).ids == data.ids
    split = make_split(data, (0.5, 0.25, 0.25), 0, None)
    assert split.policy == "stratified" and len(split.test) == 3 and len(split.val) == 3
    assert data.read(0, 8, "squash", "bilinear").shape == (8, 8, 3)


def test_inat_errors_list_what_exists(tmp_path):
    make_inat(tmp_path, "2018")
    with pytest.raises(DatasetError, match="no category has supercategory='Amphibians'; values: Amphibia, Aves"):
        build_dataset("inat:2018:supercategory=Amphibians", tmp_path)
    with pytest.raises(DatasetError, match="no field 'colour'; fields: class, id, kingdom, name, supercategory"):
        build_dataset("inat:2018:colour=green", tmp_path)
    with pytest.raises(DatasetError, match="train2019.json does not exist"):
        build_dataset("inat:2019:supercategory=Amphibians", tmp_path)


def test_folder_tree_and_train_test_layout(tmp_path):
    make_folder(tmp_path / "plain")
    data = build_dataset(f"folder:{tmp_path / 'plain'}")
    assert data.info.classes == ("ash", "elm", "oak") and len(data) == 18 and data.official is None
    make_folder(tmp_path / "parts" / "train", per_class=5)
    make_folder(tmp_path / "parts" / "test", per_class=2)
    parts = build_dataset(f"folder:{tmp_path / 'parts'}")
    assert len(parts) == 21 and len(parts.official["test"]) == 6
    assert make_split(parts, (0.7, 0.15, 0.15), 0, None).policy == "official"
    with pytest.raises(DatasetError, match="need at least 2"):
        build_dataset(f"folder:{tmp_path / 'plain' / 'oak'}")
    make_folder(tmp_path / "parts" / "test", classes=("yew",), per_class=1)
    with pytest.raises(DatasetError, match=r"class\(es\) \['yew'\] have test images but no train/ folder"):
        build_dataset(f"folder:{tmp_path / 'parts'}")


def test_a_corrupt_image_is_named_verified_and_skippable(tmp_path):
    root = make_folder(tmp_path / "tree")
    bad = root / "elm" / "img3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated JPEG
    data = build_dataset(f"folder:{root}")
    with pytest.raises(DatasetError, match=r"1 image\(s\) cannot be read.*elm/img3.jpg.*--skip-bad-images"):
        cached_images(data, 16, "squash", "bilinear", root=tmp_path / "cache")
    _, skipped = cached_images(data, 16, "squash", "bilinear", root=tmp_path / "cache", skip_bad=True)
    assert [data.ids[i] for i in skipped] == ["elm/img3.jpg"]

    verify = bench("verify", f"folder:{root}", cwd=tmp_path)
    assert verify.returncode == 1 and "bad: elm/img3.jpg" in verify.stdout and "1 of 18 images" in verify.stdout
    args = ["run", "--methods", "cut-fc", "--dataset", f"folder:{root}", "--backbone", "test_resnet", "--weights",
            "random", "--epochs", "1", "--resolution", "32", "batch_size=4", "--quiet", "--out", "res"]  # fmt: skip
    refused = bench(*args, cwd=tmp_path)
    assert refused.returncode == 2 and "elm/img3.jpg" in refused.stderr
    assert not (tmp_path / "res" / "runs").exists()
    run = bench(*args, "--skip-bad-images", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    assert record["dataset"]["skipped_bad_images"] == 1 and record["spec"]["train"]["skip_bad_images"] is True
    sizes = record["dataset"]["sizes"]
    assert sizes["train"] + sizes["val"] + sizes["test"] == 17
    split = json.loads((tmp_path / "res" / record["dataset"]["split_file"]).read_text())
    assert "elm/img3.jpg" not in split["train"] + split["val"] + split["test"]

    # in process: the loaders' positions point at the very items the split file names (after the skipped one too)
    import torch

    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.runner import Run
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand

    suite = {"methods": "cut-fc", "datasets": f"folder:{root}", "backbones": "test_resnet", "weights": "random",
             "epochs": 1, "resolution": 16, "skip_bad_images": True}  # fmt: skip
    run = Run(expand(build_suite(suite))[0], None, tmp_path / "res2", torch.device("cpu"), Reporter(quiet=True))
    run.setup()
    for part in ("train", "val", "test"):
        assert sorted(run.data.ids[i] for i in getattr(run.split, part)) == sorted(split[part])
    train = run.loaders["train"]
    assert sorted(train.labels.tolist()) == sorted(run.data.labels[run.split.train].tolist())

    bad.write_bytes((root / "elm" / "img2.jpg").read_bytes())  # re-fetched: the cache is rebuilt, nothing skipped
    _, skipped = cached_images(data, 16, "squash", "bilinear", root=tmp_path / "cache")
    assert skipped == []


def test_list_datasets_shows_what_is_present(tmp_path):
    make_cub(tmp_path / "data")
    out = bench("list", "datasets", "--data-root", str(tmp_path / "data"), cwd=tmp_path).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "present" in lines["cub200"] and "absent" in lines["inat-amphibia"] and "absent" in lines["flowers17"]
    assert {"stanford-cars", "fgvc-aircraft", "folder", "inat", "dtd", "food101", "oxford-pets"} <= set(lines)
    verbose = bench("list", "datasets", "-v", cwd=tmp_path).stdout
    assert "11,788 images" in verbose and "CUB_200_2011.tgz" in verbose


def test_torchvision_sets_use_torchvisions_file_lists_and_official_test(tmp_path):
    make_dtd(tmp_path)
    data = build_dataset("dtd", tmp_path)
    assert data.info.classes == ("banded", "dotted") and len(data) == 18
    assert len(data.official["test"]) == 6 and len(data.official["train"]) == 12  # train + val pooled
    assert all(data.ids[i].startswith("dtd/dtd/images/") for i in data.official["test"])
    assert data.read(0, 8, "squash", "bilinear").shape == (8, 8, 3)
    with pytest.raises(DatasetError, match="dataset 'food101' not found or incomplete.*bench fetch food101"):
        build_dataset("food101", tmp_path)
    with pytest.raises(DatasetError, match="nothing downloads it.*devkit/cars_meta.mat"):
        build_dataset("stanford-cars", tmp_path)


def tar_gz(path, folder, arcroot=""):
    """Pack `folder`'s files into a .tar.gz at `path`, names relative to folder's parent (or `arcroot`)."""
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(folder.parent if not arcroot else arcroot)))
    return path


def test_fetch_cub_from_an_archive_checks_and_marks_the_tree(tmp_path):
    from finebench.datasets.fetch import MARKER

    make_cub(tmp_path / "src")
    archive = tar_gz(tmp_path / "CUB_200_2011.tgz", tmp_path / "src" / "CUB_200_2011")
    out = bench("fetch", "cub200", "--data-root", str(tmp_path / "data"), "--archive", str(archive), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "data" / "CUB_200_2011" / MARKER).exists()
    assert len(build_dataset("cub200", tmp_path / "data")) == 24
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".fetch-")]  # staging cleaned up


def test_fetch_inat_extracts_only_the_subset_from_the_streamed_archive(tmp_path):
    import tarfile

    src = make_inat(tmp_path / "src", "2018")
    annotations = tmp_path / "train2018.json.tar.gz"
    with tarfile.open(annotations, "w:gz") as tar:
        tar.add(src / "train2018.json", arcname="train2018.json")
    images = tar_gz(tmp_path / "train_val2018.tar.gz", src / "train_val2018")
    args = ["fetch", "inat-amphibia", "--data-root", str(tmp_path / "data"), "--archive", str(images),
            "--annotations", str(annotations)]  # fmt: skip
    official = bench(*args, cwd=tmp_path)  # the archive's name is the official one; its MD5 cannot be
    assert official.returncode == 2 and "differs from the expected b1c6952ce38f31868cc50ea72d066cc3" in official.stderr
    tree = tmp_path / "data" / "inat2018" / "train_val2018"
    assert not list(tree.rglob("*.jpg"))  # what it extracted is gone again
    out = bench(*args, "--md5", "none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert {p.name for p in tree.iterdir()} == {"Amphibia"}  # the birds stayed in the archive
    assert len(list(tree.rglob("*.jpg"))) == 12
    assert len(build_dataset("inat-amphibia", tmp_path / "data")) == 12


def test_download_resumes_a_partial_file_and_checks_md5(tmp_path):
    import hashlib
    import http.server
    import threading

    from finebench.datasets.fetch import download

    blob = bytes(range(256)) * 400
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.bin").write_bytes(blob)
    ranges = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "www"), **k)

        def log_message(self, *a):
            pass

        def do_GET(self):
            ranges.append(self.headers.get("Range"))
            start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
            if start >= len(blob):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(blob) - start))
            self.end_headers()
            self.wfile.write(blob[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/a.bin"
    try:
        dest = tmp_path / "dl" / "a.bin"
        dest.parent.mkdir()
        (tmp_path / "dl" / "a.bin.part").write_bytes(blob[:1000])  # an interrupted earlier attempt
        download(url, dest, md5=hashlib.md5(blob).hexdigest())
        assert dest.read_bytes() == blob and ranges == ["bytes=1000-"]
        with pytest.raises(DatasetError, match="differs from the official"):
            download(url, tmp_path / "dl" / "b.bin", md5="0" * 32)
        assert not (tmp_path / "dl" / "b.bin").exists() and not (tmp_path / "dl" / "b.bin.part").exists()
        (tmp_path / "dl" / "c.bin.part").write_bytes(blob)  # whole already: the server answers 416
        download(url, tmp_path / "dl" / "c.bin", md5=hashlib.md5(blob).hexdigest())
        assert (tmp_path / "dl" / "c.bin").read_bytes() == blob
    finally:
        server.shutdown()


def test_fetch_inat_downloads_annotations_and_checks_the_images_archive_against_its_own_md5(tmp_path, monkeypatch):
    import shutil
    import tarfile

    from finebench.datasets import fetch

    src = make_inat(tmp_path / "src", "2018")
    annotations = tmp_path / "train2018.json.tar.gz"
    with tarfile.open(annotations, "w:gz") as tar:
        tar.add(src / "train2018.json", arcname="train2018.json")
    asked = []

    def offline_download(url, dest, progress=None, md5=None):
        asked.append((url.rsplit("/", 2)[-2:], md5))
        if not url.endswith("train2018.json.tar.gz"):
            raise fetch.DatasetError(f"download of {url} failed: offline")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(annotations, dest)
        return dest

    monkeypatch.setattr(fetch, "download", offline_download)
    images = tar_gz(tmp_path / "train_val2018.tar.gz", src / "train_val2018")
    with pytest.raises(DatasetError, match="differs from the expected b1c6952ce38f31868cc50ea72d066cc3"):
        fetch.fetch_inat(tmp_path / "data", "inat-amphibia", archive=images)
    assert asked[0] == (["2018", "train2018.json.tar.gz"], "bfa29d89d629cbf04d826a720c0a68b0")
    assert asked[1][0] == ["2018", "categories.json.tar.gz"]  # the real taxonomy, tried; offline here
    fetch.fetch_inat(tmp_path / "data", "inat-amphibia", archive=images, md5=None)
    assert len(build_dataset("inat-amphibia", tmp_path / "data")) == 12


def test_an_interrupted_stream_leaves_no_truncated_file(tmp_path):
    import io

    from finebench.datasets.fetch import safe_extract

    rng = np.random.default_rng(0)
    blobs = {f"train/a/{k}.jpg": rng.bytes(20_000) for k in range(6)}
    whole = make_tar(blobs, mode="w")
    cut = io.BytesIO(whole[: int(len(whole) * 0.6)])  # the connection drops in the middle of a member
    with pytest.raises(DatasetError, match="cannot be read to the end"):
        safe_extract(cut, tmp_path / "out")
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert 1 <= len(files) < 6 and not [p for p in files if p.name.endswith(".part")]
    for p in files:  # every file that is there is whole
        assert p.read_bytes() == blobs[str(p.relative_to(tmp_path / "out"))]
