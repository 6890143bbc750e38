"""Append-only results store: one JSON file per finished run under <out>/runs/, written atomically.

A record is written to a temporary file, flushed to disk and renamed into place, so a reader sees either no record
or a whole one; run ids are spec hashes, so `bench run` skips what is already recorded.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from finebench.core.atomic import atomic_write, fsync_dir
from finebench.results.faults import crash_point
from finebench.results.record import NewerRecord, RunRecord

# what reading a record file can raise when it is damaged: unreadable, not JSON, or JSON that is not a record
UNREADABLE = (OSError, ValueError, TypeError, KeyError, AttributeError)


def read_record(path: Path) -> RunRecord:
    return RunRecord.from_dict(json.loads(path.read_text()))


def finite(value):
    """NaN and infinities -> None, so a record is strict JSON that any tool reads."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class ResultStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.runs = self.root / "runs"

    def path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def has(self, run_id: str) -> bool:
        return self.path(run_id).exists()

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def record_failure(self, run_id: str, info: dict) -> Path:
        """A failed run's account (status, message, traceback, last good epoch) under <out>/failed/: apart from the
        finished runs, so a later `bench run` tries it again and no report mixes it into a mean."""
        dest = self.failed / f"{run_id}.json"
        atomic_write(dest, lambda f: f.write(json.dumps(finite(info), indent=1, sort_keys=True).encode()))
        return dest

    def clear_failure(self, run_id: str) -> None:
        (self.failed / f"{run_id}.json").unlink(missing_ok=True)

    def failures(self) -> list[dict]:
        out = []
        for path in sorted(self.failed.glob("*.json")) if self.failed.is_dir() else []:
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def damaged(self, run_id: str) -> str | None:
        """Why the record file of `run_id` cannot be read (truncated, not JSON, not a record); None when it reads or
        is absent."""
        try:
            read_record(self.path(run_id))
        except (FileNotFoundError, NewerRecord):
            return None  # absent, or whole but from a newer finebench: not ours to move
        except UNREADABLE as e:
            return f"{type(e).__name__}: {e}"[:300]
        return None

    def set_aside_if_damaged(self, run_id: str) -> tuple[str, Path] | None:
        """(why, where it went) when the record of `run_id` was damaged and is now set aside (see `set_aside`)."""
        why = self.damaged(run_id)
        return None if why is None else (why, self.set_aside(run_id))

    def set_aside(self, run_id: str) -> Path:
        """Move a damaged record out of runs/ to <out>/damaged/<run id>.<UTC time>.json (kept, never deleted), so
        the run counts as not recorded and trains again."""
        self.damaged_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        dest = self.damaged_dir / f"{run_id}.{stamp}.json"
        try:
            os.replace(self.path(run_id), dest)
        except FileNotFoundError:  # another `bench run` on this folder moved it first
            return dest.with_name(f"{run_id}.json (moved by another process)")
        fsync_dir(self.runs)
        return dest

    @property
    def damaged_dir(self) -> Path:
        return self.root / "damaged"

    def get(self, run_id: str) -> RunRecord | None:
        """The record of `run_id`, or None when it is not recorded (or not readable)."""
        try:
            return read_record(self.path(run_id))
        except UNREADABLE:
            return None

    def append(self, record: RunRecord) -> Path:
        self.runs.mkdir(parents=True, exist_ok=True)
        dest = self.path(record.run_id)
        if dest.exists():
            raise FileExistsError(f"run {record.run_id} is already recorded in {dest}; records are never overwritten")
        fd, tmp = tempfile.mkstemp(prefix=f".{record.run_id}.", suffix=".tmp", dir=self.runs)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(finite(record.to_dict()), f, indent=1, sort_keys=True, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())
            crash_point("record-write")  # fault injection: a kill between writing a record and linking it in
            try:
                os.link(tmp, dest)  # fails if another process recorded the same run meanwhile: first writer wins
            except FileExistsError:
                raise
            except OSError:  # file systems without hard links
                os.replace(tmp, dest)
            fsync_dir(self.runs)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest

    def records(self, errors: list[str] | None = None) -> Iterator[RunRecord]:
        """Every readable record; damaged files are reported in `errors` (when given) and skipped."""
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob("*.json")):
            try:
                yield read_record(path)
            except UNREADABLE as e:
                if errors is not None:
                    errors.append(f"{path}: {type(e).__name__}: {e}"[:400])
