"""`bench tune --devices …` and `bench tune --launcher slurm|local --workers N`: several tuning workers on one
study storage. Each worker is the same loop as a single `bench tune` (claim a trial under the study's lock, train
it, tell the study), so workers never run a trial twice and stop once every method has its --trials."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from finebench.benchmark.parallel import _WORKER, bind_worker
from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import SuiteSpec


def worker_tune(suite: SuiteSpec, opts: Any, out: Path, data_root: str | None) -> dict[str, int]:
    from finebench.benchmark.tune import tune_suite

    reporter = Reporter(quiet=_WORKER["quiet"], prefix=_WORKER["tag"], live=False)
    return tune_suite(suite, opts, out, data_root, _WORKER["device"], reporter, quiet_preflight=True).ran


def tune_parallel(suite: SuiteSpec, opts: Any, out: Path, data_root: str | None, devices: list[torch.device],
                  reporter: Reporter) -> dict[str, int]:  # fmt: skip
    """One tuning worker per device (spawned processes, as `bench run --devices`); trials each ran, by study."""
    ctx = mp.get_context("spawn")
    slots = ctx.Queue()
    for slot, device in enumerate(devices):
        slots.put((slot, str(device)))
    reporter.print(f"{len(devices)} tuning worker(s): {', '.join(map(str, devices))}")
    ran: dict[str, int] = {}
    with ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=bind_worker,
                             initargs=(slots, len(devices), reporter.quiet)) as pool:  # fmt: skip
        futures = [pool.submit(worker_tune, suite, opts, out, data_root) for _ in devices]
        try:
            for f in futures:
                for name, n in f.result().items():
                    ran[name] = ran.get(name, 0) + n
        except BaseException:  # Ctrl-C, SIGTERM: stop the workers; their trials are retried by the next bench tune
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return ran


class TuneJob:
    """One cluster job: a tuning worker. Requeued after a time-out or preemption with the same arguments; the trial
    it was running is then retried (from its last epoch checkpoint) by whichever worker claims next."""

    def __call__(self, suite: SuiteSpec, opts: Any, out: str, data_root: str | None) -> dict[str, int]:
        from finebench.benchmark.env import git_commit
        from finebench.benchmark.tune import tune_suite

        git_commit()
        return tune_suite(suite, opts, Path(out), data_root, "auto", Reporter(live=False)).ran

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def tune_jobs(suite: SuiteSpec, opts: Any, out: Path, data_root: str | None, launch: Any, workers: int,
              reporter: Reporter) -> list[str]:  # fmt: skip
    """Submit `workers` tuning jobs (a SLURM array, or local processes); returns their job ids. Local jobs (and
    SLURM ones with --wait) are waited for."""
    from finebench.benchmark.launch import executor_for

    executor = executor_for(out, launch, workers)
    jobs = executor.map_array(TuneJob(), [suite] * workers, [opts] * workers, [str(out)] * workers,
                              [data_root] * workers)  # fmt: skip
    reporter.print(f"submitted {len(jobs)} tuning job(s) ({launch.launcher}); logs in {Path(out) / 'jobs'}")
    if launch.launcher == "local" or launch.wait:
        for job in jobs:
            try:
                job.result()
            except Exception as e:  # noqa: BLE001 - a job that broke; the others' trials stand, a rerun finishes
                reporter.print(f"[job {job.job_id}] failed: {str(e).strip()[-500:]}")
    return [j.job_id for j in jobs]
