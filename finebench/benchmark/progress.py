"""Progress display: a live bar per epoch on a terminal, plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Reporter:
    def __init__(
        self, quiet: bool = False, console: Console | None = None, prefix: str = "", live: bool | None = None
    ) -> None:
        self.console = console or Console(file=sys.stdout, highlight=False)
        self.live = self.console.is_terminal and not quiet and live is not False
        self.quiet, self.prefix = quiet, prefix  # prefix: on every line (a parallel worker's device)
        self._progress: Progress | None = None
        self._task = None

    def print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(self.prefix + text, markup=False, soft_wrap=True)

    def start_epoch(self, label: str, steps: int) -> None:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"), console=self.console, transient=True,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task(label, total=steps, info="")

    def step(self, info: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, info=info)

    def counter(self, label: str):
        """A progress(done, total) callback for long preparations (image caching): a bar on a terminal, one line
        when done otherwise. Silent when never called (nothing to do)."""
        started: list[float] = []

        def progress(done: int, total: int) -> None:
            if not started:
                started.append(time.perf_counter())
                self.start_epoch(label, total)
            self.step()
            if done == total:
                self.end_epoch(f"  {label}: {total} done in {fmt_seconds(time.perf_counter() - started[0])}")

        return progress

    def end_epoch(self, line: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.print(line)


def epoch_line(
    epoch: int,
    epochs: int,
    losses: dict[str, float],
    val: dict[str, float],
    ips: float,
    eta: float,
    mark: str,
    stall: float = 0.0,
) -> str:
    loss_txt = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
    return (
        f"  epoch {epoch:>3}/{epochs}  {loss_txt}  val top1 {val['top1']:5.1f} top3 {val['top3']:5.1f}  "
        f"{ips:7.1f} img/s (data wait {100 * stall:.1f} %)  ETA {fmt_seconds(eta)}{mark}"
    )


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self) -> float:
        t = time.perf_counter()
        dt, self.t0 = t - self.t0, t
        return dt
