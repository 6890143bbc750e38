"""`bench run --devices 0,1,2,3`: a suite's independent runs in parallel on one machine, one worker process per
listed device, all writing into one store.

A process pool (the standard library's, spawn start method) holds one worker per device; each worker binds its
device once (a GPU through CUDA_VISIBLE_DEVICES, so that everything the run touches is on that GPU alone) and takes
the next run when it finishes one. Each run goes through the same per-run function as a serial suite, under the
run's lock, so several `bench` processes (or machines) sharing the store still never repeat a run; a teacher two
runs need is trained once, the other waits for it. `cpu` entries make CPU workers (for testing the logic, or for
spreading small runs over a many-core CPU), each with its share of the cores.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import RunSpec, SpecError

_WORKER: dict = {}  # in a worker process: its device and the tag its lines carry


def parse_devices(text: str, gpu_count: int | None = None) -> list[torch.device]:
    """'0,1,2,3' (GPU indices), 'cuda:N' or 'cpu' entries -> devices; every GPU must exist on this machine
    (`gpu_count`: how many it has, default torch's count). The same entry may repeat (two workers on one device)."""
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries:
        raise SpecError(f"--devices {text!r}: expected a comma list of GPU indices (0,1,2,3), cuda:N or cpu")
    devices = []
    for e in entries:
        index = e.removeprefix("cuda:")
        if e == "cpu":
            devices.append(torch.device("cpu"))
        elif index.isdigit():
            devices.append(torch.device("cuda", int(index)))
        else:
            raise SpecError(f"--devices: {e!r} is not a GPU index (0, 1, ...), cuda:N or cpu")
    gpus = [d.index for d in devices if d.type == "cuda"]
    if gpus:
        count = torch.cuda.device_count() if gpu_count is None else gpu_count
        if count == 0:
            raise SpecError(f"--devices {text}: this machine has no usable GPU (CUDA is not available); "
                            "--devices cpu,cpu runs CPU workers")  # fmt: skip
        missing = sorted({i for i in gpus if i >= count})
        if missing:
            raise SpecError(f"--devices {text}: no GPU {missing[0]} here; this machine has {count} GPU(s), "
                            f"indices 0..{count - 1}")  # fmt: skip
    return devices


def worker_binding(device: torch.device, parent_visible: str | None) -> tuple[str | None, torch.device]:
    """(CUDA_VISIBLE_DEVICES for the worker, the device it then uses). GPU N of this process (N-th of its visible
    GPUs, when CUDA_VISIBLE_DEVICES already narrows them) becomes the worker's only GPU, cuda:0."""
    if device.type != "cuda":
        return None, device
    visible = [v.strip() for v in parent_visible.split(",") if v.strip()] if parent_visible else None
    physical = visible[device.index] if visible else str(device.index)
    return physical, torch.device("cuda", 0)


def bind_worker(slots, workers: int, quiet: bool) -> None:
    """Pool initializer: take one device slot for this worker's lifetime."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    slot, device = slots.get()
    device = torch.device(device)
    visible, device = worker_binding(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible  # before this process first touches CUDA
    elif not os.environ.get("OMP_NUM_THREADS"):  # CPU workers share the cores, unless told how many threads to use
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    name = f"gpu {visible}" if visible is not None else f"cpu #{slot}"
    _WORKER.update(device=device, tag=f"[{name}] ", quiet=quiet)


def worker_run(spec: RunSpec, out: Path, data_root: str | None, fail_fast: bool):
    from finebench.benchmark.suite import run_one

    tag = _WORKER["tag"]
    reporter = Reporter(quiet=_WORKER["quiet"], prefix=tag, live=False)  # lines, not bars: workers share a terminal
    return run_one(spec, out, data_root, _WORKER["device"], reporter, fail_fast)


def run_parallel(
    todo: list[RunSpec],
    devices: list[torch.device],
    out: Path,
    data_root: str | None,
    reporter: Reporter,
    fail_fast: bool,
) -> Iterator:
    """Outcomes of `todo`'s runs, as they finish, over one worker per device."""
    if not todo:
        return
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no CUDA state or threads inherited
    slots = ctx.Queue()
    workers = min(len(devices), len(todo))
    for slot, device in enumerate(devices[:workers]):
        slots.put((slot, str(device)))
    reporter.print(f"{workers} worker(s): {', '.join(map(str, devices[:workers]))}")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=bind_worker, initargs=(slots, workers,
                               reporter.quiet))  # fmt: skip
    futures = {pool.submit(worker_run, spec, out, data_root, fail_fast): spec for spec in todo}
    try:
        for future in as_completed(futures):
            try:
                yield future.result()  # with fail_fast, a failed run's error is raised here
            except BrokenProcessPool:  # a worker was killed (by the system's out-of-memory killer, say)
                yield died(futures[future], out, reporter)
    except BaseException:  # --fail-fast, Ctrl-C, SIGTERM: stop the workers now; their runs resume from checkpoints
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def died(spec: RunSpec, out: Path, reporter: Reporter):
    """The account of a run whose worker process died under it (or that was waiting when the pool broke)."""
    from finebench.benchmark.suite import Outcome, failure_info
    from finebench.results.store import ResultStore

    store = ResultStore(out)
    if store.has(spec.run_id):
        return Outcome(spec.run_id, "done")
    error = RuntimeError(
        "the worker pool broke: a worker process died (killed by the system, out of host memory?) "
        "before this run finished; `bench run` again resumes it from its last checkpoint"
    )
    path = store.record_failure(spec.run_id, failure_info(spec, error, 0.0))
    reporter.print(f"{spec.label}  (run {spec.run_id}): FAILED, worker process died -> {path}")
    return Outcome(spec.run_id, "failed")
