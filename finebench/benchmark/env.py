"""Where and with what a run ran: git commit, library versions, device."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = (
    "finebench",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pandas",
    "scipy",
    "pillow",
    "peft",
    "torch-pruning",
    "optuna",
)


@functools.cache
def git_commit() -> dict[str, Any]:
    """Commit (and dirty flag) of the finebench source tree, when the imported package is a git checkout's own
    (an editable install); None for an installed copy, which could sit inside an unrelated repository. Cached:
    the first call (at suite start) describes the code this process loaded, even if the checkout moves on."""
    src = Path(__file__).resolve().parents[2]
    try:
        top = subprocess.run(["git", "-C", str(src), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             timeout=10)  # fmt: skip
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != src:
            return {"commit": None, "dirty": None}
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "platform": platform.platform(), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def environment(device: torch.device) -> dict[str, Any]:
    return {**git_commit(), "versions": versions(), **device_info(device), "host": platform.node()}
