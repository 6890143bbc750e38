"""Which runs were handed to which launcher, for `bench status`: `<store>/queue/<run id>.json` holds the latest
hand-over of each run (the launcher, a scheduler's job id, the submitting host and process, the time)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from finebench.core.atomic import atomic_write


def queue_dir(out: Path) -> Path:
    return Path(out) / "queue"


def note_queued(out: Path, specs: Iterable[Any], via: str, jobs: dict[str, str] | None = None) -> None:
    """Note that `specs` (RunSpecs) were handed to `via`; `jobs` maps run ids to scheduler job ids."""
    for spec in specs:
        entry = {"run_id": spec.run_id, "label": spec.label, "via": via, "host": socket.gethostname(),
                 "pid": os.getpid(), "time": time.time()}  # fmt: skip
        if jobs and spec.run_id in jobs:
            entry["job"] = jobs[spec.run_id]
        text = json.dumps(entry)
        atomic_write(queue_dir(out) / f"{spec.run_id}.json", lambda f, t=text: f.write(t.encode()))


def queued(out: Path) -> dict[str, dict[str, Any]]:
    entries = {}
    folder = queue_dir(out)
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        entries[entry.get("run_id", path.stem)] = entry
    return entries
