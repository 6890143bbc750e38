"""`bench fetch`: download an official archive, extract it safely, verify every file against our manifest."""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from finebench.datasets import flowers17
from finebench.datasets.base import DatasetError, sha256_file

MARKER = ".finebench-verified"


def download(url: str, dest: Path, progress: Callable[[int, int | None], None] | None = None) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310 - fixed URLs
            total = int(resp.headers.get("Content-Length") or 0) or None
            done = 0
            while block := resp.read(1 << 20):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except OSError as e:
        raise DatasetError(f"download of {url} failed: {e}. Download it by hand and pass --archive PATH.") from e
    tmp.replace(dest)
    return dest


def safe_extract(archive: Path, target: Path, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
    """Extract regular files and folders only; a member that would land outside `target` is refused."""
    target = target.resolve()
    names = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not keep(member.name):
                continue
            dest = (target / member.name).resolve()
            if dest != target and target not in dest.parents:
                raise DatasetError(f"archive {archive}: member {member.name!r} would extract outside {target}")
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                names.append(member.name)
            else:
                raise DatasetError(f"archive {archive}: member {member.name!r} is a link or device; refused")
    return names


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


def fetch_flowers17(root: Path, archive: Path | None = None, url: str = flowers17.URL, progress=None) -> Path:
    """Download (unless `archive` is given), extract to <root>/flowers17/jpg, verify, and leave a marker."""
    target = flowers17.dataset_dir(root)
    if (target / MARKER).exists():
        return target
    with tempfile.TemporaryDirectory(dir=root if root.exists() else None) as tmp:
        if archive is None:
            archive = download(url, Path(tmp) / "17flowers.tgz", progress)
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


FETCHERS = {"flowers17": fetch_flowers17}
