"""A per-run lock between processes sharing one results folder, which a dead holder does not keep forever."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class RunLock:
    """`<store>/locks/<run id>.lock`, created exclusively, holding the owner's host and pid. A lock whose owner is a
    dead process on this host, or older than `stale_after` seconds (an owner on another host that vanished), is
    taken over."""

    def __init__(self, root: Path, run_id: str, stale_after: float = 7 * 24 * 3600) -> None:
        self.path = Path(root) / "locks" / f"{run_id}.lock"
        self.stale_after = stale_after
        self.held = False

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def stale(self) -> bool:
        owner = self.owner()
        if owner is None:  # being written, or damaged: judge by age
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return True
        if owner.get("host") == socket.gethostname():
            return not alive(int(owner.get("pid", -1)))
        return time.time() - float(owner.get("time", 0)) > self.stale_after

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when a live process does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self.stale():
                    return False
                self.path.unlink(missing_ok=True)  # a dead holder's: take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
            self.held = True
            return True
        return False

    def wait(self, poll: float = 5.0) -> None:
        """Block until this process holds the lock."""
        while not self.acquire():
            time.sleep(poll)

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.wait()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
