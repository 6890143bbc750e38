"""`bench fetch`: download an official archive, extract it safely, verify every file against our manifest."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from finebench.datasets import cub200, flowers17, inat, torchvision_sets
from finebench.datasets.base import DatasetError, sha256_file
from finebench.datasets.cache import decode_all

MARKER = ".finebench-verified"


def download(
    url: str, dest: Path, progress: Callable[[int, int | None], None] | None = None, md5: str | None = None
) -> Path:
    """Download `url` to `dest`, resuming a `dest.part` left by an interrupted attempt (HTTP Range); with `md5`,
    the finished file is checked and a mismatch is an error (the partial file is removed)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    done = tmp.stat().st_size if tmp.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - official URLs or the user's
            resumed = done and resp.status == 206
            total = int(resp.headers.get("Content-Length") or 0) or None
            if total is not None and resumed:
                total += done
            with open(tmp, "ab" if resumed else "wb") as out:
                done = done if resumed else 0
                while block := resp.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and done):  # 416: the range starts at the end, the partial file is already whole
            raise DatasetError(f"download of {url} failed: {e}. Download it by hand and pass --archive PATH.") from e
    except (OSError, http.client.HTTPException) as e:
        raise DatasetError(
            f"download of {url} failed: {type(e).__name__}: {e}. Run the same `bench fetch` again to resume, or "
            "download it by hand and pass --archive PATH."
        ) from e
    if md5 is not None:
        digest = file_md5(tmp)
        if digest != md5:
            tmp.unlink()
            raise DatasetError(f"download of {url}: MD5 {digest} differs from the official {md5}; removed, retry")
    tmp.replace(dest)
    return dest


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()  # noqa: S324 - the datasets publish MD5 checksums
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def member_name(name: str) -> str:
    """An archive member's path without a leading './'."""
    return name[2:] if name.startswith("./") else name


def safe_extract(archive: Path | IO[bytes], target: Path, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
    """Extract regular files and folders only; a member that would land outside `target` is refused, and so is a
    link or device. `archive` may be a path (tar of any compression, or zip) or a stream (tar, read once, front to
    back: a 120 GB archive never needs to be on disk when `keep` selects a few of its members). Each file is written
    to `<name>.part` and renamed once whole and of the size the archive states, so an interrupted extraction never
    leaves a truncated file under its real name."""
    target = target.resolve()
    names: list[str] = []
    if isinstance(archive, Path | str) and zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = member_name(info.filename)
                if not keep(name) or info.is_dir():
                    continue
                dest = inside(target, name, archive)
                with zf.open(info) as src:
                    write_whole(src, dest, info.file_size, archive, name)
                names.append(name)
        return names
    try:
        opened = tarfile.open(archive) if isinstance(archive, Path | str) else tarfile.open(fileobj=archive, mode="r|*")
        with opened as tar:
            for member in tar:
                name = member_name(member.name)
                if not keep(name):
                    continue
                dest = inside(target, name, archive)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    src = tar.extractfile(member)
                    with src:
                        write_whole(src, dest, member.size, archive, name)
                    names.append(name)
                else:
                    raise DatasetError(f"archive {archive}: member {name!r} is a link or device; refused")
    except (tarfile.TarError, EOFError, OSError, http.client.HTTPException) as e:
        raise DatasetError(
            f"archive {archive}: cannot be read to the end ({type(e).__name__}: {e}); {len(names)} complete "
            "files were extracted. Run the same `bench fetch` again (or fetch a fresh copy of the archive)."
        ) from e
    return names


def inside(target: Path, name: str, archive) -> Path:
    dest = (target / name).resolve()
    if dest != target and target not in dest.parents:
        raise DatasetError(f"archive {archive}: member {name!r} would extract outside {target}")
    return dest


def write_whole(src: IO[bytes], dest: Path, size: int, archive, name: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with open(part, "wb") as out:
            shutil.copyfileobj(src, out)
        if part.stat().st_size != size:
            raise DatasetError(f"archive {archive}: member {name!r} ended after {part.stat().st_size} of {size} bytes")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def verify_tree(folder: Path, manifest: dict[str, str]) -> list[str]:
    """Names of files that are missing or whose sha256 differs from the manifest."""
    bad = []
    for name, digest in manifest.items():
        path = folder / name
        if not path.is_file():
            bad.append(f"{name} (missing)")
        elif sha256_file(path) != digest:
            bad.append(f"{name} (checksum mismatch)")
    return bad


def fetch_flowers17(root: Path, archive: Path | None = None, url: str = flowers17.URL, progress=None, **_) -> Path:
    """Download (unless `archive` is given), extract to <root>/flowers17/jpg, verify, and leave a marker."""
    target = flowers17.dataset_dir(root)
    if (target / MARKER).exists():
        return target
    if (target / "jpg").is_dir() and not verify_tree(target / "jpg", flowers17.manifest()):
        return target  # a copy made by other means that matches every checksum: nothing to fetch (left as it is)
    with staged(root) as tmp:
        if archive is None:
            archive = download(url, root / ".downloads" / "17flowers.tgz", progress)
        staging = Path(tmp) / "extract"
        safe_extract(Path(archive), staging)
        bad = verify_tree(staging / "jpg", flowers17.manifest())
        if bad:
            raise DatasetError(f"{archive}: {len(bad)} files fail verification, e.g. {', '.join(bad[:3])}")
        target.mkdir(parents=True, exist_ok=True)
        if (target / "jpg").exists():
            shutil.rmtree(target / "jpg")
        shutil.move(str(staging / "jpg"), target / "jpg")
    (target / MARKER).write_text(f"verified against the finebench manifest ({len(flowers17.manifest())} files)\n")
    return target


def staged(root: Path):
    """A temporary folder beside the data root (same file system, so finished trees move in by rename)."""
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root, prefix=".fetch-")


def fetch_cub200(root: Path, archive: Path | None = None, url: str = cub200.URL, progress=None, **_) -> Path:
    """Download (unless `archive`), extract safely, check the layout and decode every image, then move
    CUB_200_2011/ under the data root and leave a marker."""
    target = cub200.dataset_dir(root)
    if (target / MARKER).exists():
        return target
    if target.exists():
        raise DatasetError(
            f"{target} exists but was not fetched by finebench; check it with `bench verify cub200`, or move it "
            "away and fetch again"
        )
    with staged(root) as tmp:
        if archive is None:
            archive = download(url, root / ".downloads" / "CUB_200_2011.tgz", progress)
        staging = Path(tmp) / "extract"
        safe_extract(Path(archive), staging)
        data = cub200.build(staging)  # every annotation file parsed, every listed image present
        _, bad = decode_all(data, 32, "squash", "bilinear")
        if bad:
            raise DatasetError(f"{archive}: {len(bad)} images cannot be read, e.g. {data.ids[min(bad)]}")
        shutil.move(str(cub200.dataset_dir(staging)), target)
    (target / MARKER).write_text(f"{len(data)} images decoded; manifest {data.info.manifest_hash}\n")
    return target


# Official files per year: (file under BASE_URL/<year>/, MD5 or None where DATASETS.md gives none we are sure of)
INAT_ANNOTATIONS = {
    "2018": ("train2018.json.tar.gz", "bfa29d89d629cbf04d826a720c0a68b0"),
    "2019": ("train2019.json.tar.gz", None),
    "2021": ("train.json.tar.gz", None),
    "2021-mini": ("train_mini.json.tar.gz", None),
}
# the un-obfuscated taxonomy of the years whose training files obfuscate it (fetched when available)
INAT_CATEGORIES = {"2018": "categories.json.tar.gz", "2019": "categories.json.tar.gz"}
INAT_IMAGES = {
    "2017": ("train_val_images.tar.gz", "7c784ea5e424efaec655bd392f87301f"),
    "2018": ("train_val2018.tar.gz", "b1c6952ce38f31868cc50ea72d066cc3"),
    "2019": ("train_val2019.tar.gz", "c60a6e2962c9b8ccbd458d12c8582644"),
    "2021": ("train.tar.gz", "e0526d53c7f7b2e3167b2b43bb2690ed"),
    "2021-mini": ("train_mini.tar.gz", "db6ed8330e634445efc8fec83ae81442"),
}


class HashingReader:
    """A read-only stream that computes the MD5 and counts the bytes of what passes through it."""

    def __init__(self, raw: IO[bytes], progress=None, total: int | None = None) -> None:
        self.raw, self.progress, self.total = raw, progress, total
        self.md5 = hashlib.md5()  # noqa: S324 - the datasets publish MD5 checksums
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        block = self.raw.read(n)
        self.md5.update(block)
        self.done += len(block)
        if self.progress:
            self.progress(self.done, self.total)
        return block


def fetch_inat(
    root: Path,
    name: str = "inat-amphibia",
    archive: Path | None = None,
    url: str | None = None,
    annotations: Path | None = None,
    progress=None,
    md5: str | None = "official",
) -> Path:
    """The annotation file (downloaded, or `annotations`: a .json or the official .tar.gz), then only the images of
    the subset, streamed out of the official images archive (downloaded, or `archive`) without storing it: for
    inat-amphibia about 1-2 GB on disk instead of 120 GB. The archive's MD5 is checked as it streams by (`md5`:
    "official", another hex digest, or None to skip for a repacked mirror); on a mismatch the extracted images
    are removed again."""
    q = inat.parse_name(name)
    folder = inat.dataset_dir(root, q.year)
    marker = folder / f"{MARKER}-{q.name.replace(':', '_').replace('=', '_')}"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / inat.TRAIN_FILES[q.year]
    if annotations is not None:
        if Path(annotations).suffix == ".json":
            shutil.copyfile(annotations, json_path)
        else:
            keep = (json_path.name, "categories.json")
            safe_extract(Path(annotations), folder, keep=lambda n: Path(n).name in keep)
    elif not json_path.exists():
        if q.year not in INAT_ANNOTATIONS:
            raise DatasetError(
                f"bench fetch {name}: give the {q.year} annotation file with --annotations PATH (the official "
                f"archive, e.g. train_val2017.zip, or {json_path.name})"
            )
        ann_file, ann_md5 = INAT_ANNOTATIONS[q.year]
        year_url = f"{inat.BASE_URL}/{q.year.split('-')[0]}"
        got = download(f"{year_url}/{ann_file}", root / ".downloads" / ann_file, progress, ann_md5)
        safe_extract(got, folder, keep=lambda n: Path(n).name == json_path.name)
        if q.year in INAT_CATEGORIES and not (folder / "categories.json").exists():
            cat_file = INAT_CATEGORIES[q.year]
            try:
                got = download(f"{year_url}/{cat_file}", root / ".downloads" / f"{q.year}-{cat_file}", progress)
                safe_extract(got, folder, keep=lambda n: Path(n).name == "categories.json")
            except DatasetError as e:  # the filter may still work on the training file's own fields
                print(f"\nwarning: no real taxonomy for {q.year} ({e}); class names stay the training file's")
    if not json_path.exists():
        raise DatasetError(f"bench fetch {name}: the annotations gave no {json_path.name}")
    wanted = {f for f, _ in inat.listing(json_path, q)["images"]}
    missing = {f for f in wanted if not (folder / f).is_file()}
    if missing:
        file, official = INAT_IMAGES[q.year]
        expected = official if md5 == "official" else md5
        if archive is not None:
            stream = HashingReader(open(archive, "rb"), progress, Path(archive).stat().st_size)
        else:
            source = url or f"{inat.BASE_URL}/{q.year.split('-')[0]}/{file}"
            try:
                resp = urllib.request.urlopen(source, timeout=60)  # noqa: S310 - the official URL or the user's
            except OSError as e:
                raise DatasetError(f"download of {source} failed: {e}; download it and pass --archive PATH") from e
            stream = HashingReader(resp, progress, int(resp.headers.get("Content-Length") or 0) or None)
        with stream.raw:
            extracted = safe_extract(stream, folder, keep=lambda n: n in missing)
            try:
                while stream.read(1 << 20):  # the rest of the archive, for its checksum
                    pass
            except (OSError, http.client.HTTPException) as e:
                raise DatasetError(f"{archive or file}: the stream broke off ({e}); run the same fetch again") from e
        if expected is not None and stream.md5.hexdigest() != expected:
            for rel in extracted:
                (folder / rel).unlink(missing_ok=True)
            raise DatasetError(
                f"{archive or file}: MD5 {stream.md5.hexdigest()} differs from the expected {expected}; its "
                f"{len(extracted)} extracted images were removed (a repacked mirror: --md5 none)"
            )
    absent = sorted(f for f in wanted if not (folder / f).is_file())
    if absent:
        raise DatasetError(f"bench fetch {name}: {len(absent)} images of the subset are not in the archive, e.g. "
                           f"{absent[:3]}")  # fmt: skip
    marker.write_text(json.dumps({"dataset": q.name, "images": len(wanted)}) + "\n")
    return folder


def fetch_torchvision(root: Path, name: str, **_) -> Path:
    return torchvision_sets.fetch(root, name, MARKER)


FETCHERS: dict[str, Callable[..., Path]] = {
    "flowers17": lambda root, name, **kw: fetch_flowers17(root, **kw),
    "cub200": lambda root, name, **kw: fetch_cub200(root, **kw),
    "inat-amphibia": fetch_inat,
    "inat": fetch_inat,
    **{n: fetch_torchvision for n in torchvision_sets.SETS},
}
