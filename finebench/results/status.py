"""`bench status`: each run known to a results folder and where it stands.

done: its record is in the store. running: its lock file names a holder (on this host: a live process).
failed: its latest attempt left a failure account (`bench run` retries it). queued: handed to a launcher (a SLURM
job, a local job, a `bench run` process) and not begun. stopped: handed to a `bench run` process on this host that
has ended without beginning it. damaged: its record file cannot be read (`bench run` moves it aside and trains the run
again). A job a scheduler dropped before it began stays `queued` here: the scheduler
(`squeue`, `sacct`) has the last word on its jobs.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from finebench.core.labels import spec_label
from finebench.results.lock import RunLock
from finebench.results.queue import queued
from finebench.results.store import ResultStore

STATES = ("done", "running", "failed", "queued", "stopped", "damaged")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(out: Path, run_id: str) -> dict | None:
    """Who holds the run's lock, from its lock file; None when nobody does (no file, or a dead process here)."""
    lock = RunLock(out, run_id)
    path, owner = lock.path, lock.owner()
    if owner is None:
        return None
    if owner.get("host") == socket.gethostname():
        return owner if alive(int(owner.get("pid", -1))) else None  # a dead holder's file: the kernel dropped its lock
    # held on another machine (a compute node): ask the lock itself, as a job killed by SIGKILL leaves its file. The
    # probe holds a shared lock for an instant; a `bench run` trying the run in that instant skips it as running.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return owner
    except OSError:
        return owner  # the file system cannot tell: trust the file
    finally:
        os.close(fd)
    return None


def when(seconds: float | None) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M") if seconds else "?"


def failed_at(failure: dict) -> float:
    try:
        return datetime.fromisoformat(failure["when"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


def run_states(out: Path) -> list[dict[str, Any]]:
    """One entry per run the folder knows of: run_id, state, label, detail."""
    store = ResultStore(out)
    errors: list = []
    records = {r.run_id: r for r in store.records(errors)}
    unread = [p for p in sorted(store.runs.glob("*.json")) if p.stem not in records]
    damaged = {p.stem: (p, why) for p in unread if (why := store.damaged(p.stem))}
    newer = {p.stem: p for p in unread if p.stem not in damaged}  # whole, from a newer finebench: kept as recorded
    failures = {f["run_id"]: f for f in store.failures() if "run_id" in f}
    queue = queued(out)
    locks = {p.stem for p in (Path(out) / "locks").glob("*.lock")}
    here = socket.gethostname()
    rows = []
    for run_id in sorted(set(records) | set(damaged) | set(newer) | set(failures) | set(queue) | locks):
        entry = queue.get(run_id, {})
        label = entry.get("label", "")
        if run_id in damaged and holder(out, run_id) is None:
            path, why = damaged[run_id]
            rows.append({"run_id": run_id, "state": "damaged", "label": label,
                         "detail": f"record {path} cannot be read ({why}); `bench run` moves it to "
                                   f"{store.damaged_dir}/ (kept) and trains the run again"})  # fmt: skip
            continue
        if run_id in newer:
            rows.append({"run_id": run_id, "state": "done", "label": label,
                         "detail": f"{newer[run_id]} is from a newer finebench; upgrade to read it"})  # fmt: skip
            continue
        if run_id in records:
            r = records[run_id]
            label = spec_label(r.spec)
            rows.append({"run_id": run_id, "state": "done", "label": label,
                         "detail": f"test top-1 {r.best['test']['top1']:.1f} at epoch {r.best['epoch']}"})  # fmt: skip
            continue
        owner = holder(out, run_id)
        failure = failures.get(run_id)
        if failure and not label:
            label = spec_label(failure.get("spec", {}))
        job = f"job {entry['job']}, " if entry.get("job") else ""
        if owner is not None:
            state, detail = (
                "running",
                f"{job}{owner.get('host')} pid {owner.get('pid')} since {when(owner.get('time'))}",
            )
        elif failure and failed_at(failure) >= entry.get("time", 0) - 1:  # failed since its hand-over (`when` is in
            # whole seconds)
            state, detail = "failed", f"{failure.get('status')}: {failure.get('message', '')[:120]}"
        elif entry:
            ended = not entry.get("job") and entry.get("host") == here and not alive(int(entry.get("pid", -1)))
            state = "stopped" if ended else "queued"
            detail = f"{job}via {entry.get('via')} at {when(entry.get('time'))}"
            if ended:
                detail += " (that process has ended; `bench run` again picks it up)"
        else:
            continue  # a lock file left by a dead process, nothing else known
        rows.append({"run_id": run_id, "state": state, "label": label, "detail": detail})
    return rows


def status_text(out: Path) -> str:
    rows = run_states(out)
    if not rows:
        return f"no runs known in {out} (no records, failures, queued or running runs)"
    width = max(len(r["label"]) for r in rows)
    lines = [f"{r['run_id']}  {r['state']:<8} {r['label']:<{width}}  {r['detail']}" for r in rows]
    counts = Counter(r["state"] for r in rows)
    lines.append(f"{len(rows)} run(s): " + ", ".join(f"{counts[s]} {s}" for s in STATES if counts[s]))
    return "\n".join(lines)
