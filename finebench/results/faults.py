"""Fault injection for the crash tests: `FINEBENCH_CRASH_AT=<point>:<n>` kills this process with SIGKILL (as
`kill -9` or a preemption would) the n-th time the code passes `crash_point(<point>)`. Unset, it does nothing.

Points: `step` (after an optimiser step), `checkpoint-write` (a checkpoint's temporary file written, not yet
renamed), `record-write` (a record's temporary file written, not yet linked into the store).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter[str] = Counter()


def crash_point(point: str) -> None:
    target = os.environ.get("FINEBENCH_CRASH_AT")
    if not target:
        return
    name, _, count = target.partition(":")
    if name != point:
        return
    _passed[point] += 1
    if _passed[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
