"""A per-run lock between processes sharing one results folder, which a dead holder does not keep.

`<store>/locks/<run id>.lock` is held with an exclusive `flock`: the kernel drops it when the holding process dies
(kill -9, a preempted job), so there is no staleness to guess. The file names its holder (host, pid, time) for
people; it is removed on release, and an acquirer checks that the file it locked is still the one at the path (the
usual guard against locking a file that its previous holder has just unlinked).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


class RunLock:
    def __init__(self, root: Path, run_id: str) -> None:
        self.path = Path(root) / "locks" / f"{run_id}.lock"
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another holder (process or open lock) does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed it while we waited for it: lock the new file
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())
        self.fd = fd
        return True

    def wait(self, poll: float = 5.0) -> None:
        """Block until this process holds the lock, saying whom it waits for."""
        told = False
        while not self.acquire():
            if not told:
                print(f"  waiting for {self.path.name} (held by {self.owner()})", file=sys.stderr, flush=True)
                told = True
            time.sleep(poll)

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        self.wait()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
