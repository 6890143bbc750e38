"""`bench run --launcher slurm|local`: a suite's unrecorded runs as submitit jobs, one job per run, each writing
its record into the shared store.

SLURM: one job array (`--array-parallelism N` caps how many of its jobs run at once); `bench run` returns once it
is submitted (or waits with `--wait`) and `bench status` shows each run's state. A job that SLURM stops at its time
limit or preempts is requeued by submitit (the job is checkpointable) and its run goes on from the end of its last
finished epoch. Local: submitit's local executor runs the jobs as processes on this machine, at most
`--array-parallelism` at a time (default 1), and `bench run` waits for them: the same path as SLURM's, testable
without a cluster.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import RunSpec, SpecError, SuiteSpec
from finebench.results.queue import note_queued

LAUNCHERS = ("local", "slurm")


@dataclass(frozen=True)
class LaunchOptions:
    launcher: str  # local | slurm
    partition: str | None = None
    gpus_per_job: int | None = None  # default: 1 on SLURM; locally 1 when this machine has a GPU, else 0
    array_parallelism: int | None = None  # jobs running at once (SLURM default: no cap; local default: 1)
    timeout_min: int = 24 * 60
    cpus_per_job: int | None = None
    mem_gb: float | None = None
    wait: bool = False  # SLURM: block until every job has finished (local always waits)

    def check(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise SpecError(f"--launcher {self.launcher!r} is not one of {', '.join(LAUNCHERS)}")
        if self.gpus_per_job is not None and self.gpus_per_job > 1:
            raise SpecError(f"--gpus-per-job {self.gpus_per_job}: a run trains on one device; use 1 (or 0 for CPU "
                            "jobs), and --array-parallelism to run more runs at once")  # fmt: skip
        if self.launcher == "local" and (self.cpus_per_job or self.mem_gb):
            raise SpecError("--cpus-per-job and --mem-gb apply to --launcher slurm only")
        for name in ("gpus_per_job", "array_parallelism", "cpus_per_job"):
            value = getattr(self, name)
            if value is not None and value < (0 if name == "gpus_per_job" else 1):
                raise SpecError(f"--{name.replace('_', '-')}: must be >= {0 if name == 'gpus_per_job' else 1}, "
                                f"got {value}")  # fmt: skip
        if self.timeout_min < 1:
            raise SpecError(f"--job-timeout: must be at least 1 minute, got {self.timeout_min}")
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if self.launcher == "slurm" and missing:
            raise SpecError(f"--launcher slurm: {missing[0]} is not on this machine's PATH; submit from a SLURM login "
                            "node (or use --launcher local to run the jobs here)")  # fmt: skip
        if self.partition and self.launcher != "slurm":
            raise SpecError("--partition applies to --launcher slurm only")


def parse_timeout(text: str | None) -> int:
    """'90m', '4h', '1.5h' or minutes -> whole minutes."""
    from finebench.benchmark.spec import parse_duration

    if text is None:
        return 24 * 60
    return max(1, round(parse_duration(text, "--job-timeout") / 60))


class RunJob:
    """What one job executes: one run, through the same per-run function (and lock) as `bench run`. Requeued
    after a time-out or preemption with the same arguments; the run resumes from its last checkpoint."""

    def __call__(self, spec: RunSpec, out: str, data_root: str | None) -> dict[str, Any]:
        from finebench.benchmark.env import git_commit
        from finebench.benchmark.suite import pick_device, run_one

        git_commit()
        reporter = Reporter(live=False)
        outcome = run_one(spec, Path(out), data_root, pick_device("auto"), reporter, False)
        return dataclasses.asdict(outcome)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def executor_for(out: Path, opts: LaunchOptions, jobs: int):
    import submitit

    executor = submitit.AutoExecutor(folder=Path(out) / "jobs" / "%j", cluster=opts.launcher)
    gpus = opts.gpus_per_job
    if gpus is None:
        gpus = 1 if opts.launcher == "slurm" or torch.cuda.is_available() else 0
    params: dict[str, Any] = {
        "name": "finebench",
        "timeout_min": opts.timeout_min,
        "gpus_per_node": gpus,
        "tasks_per_node": 1,
        "cpus_per_task": opts.cpus_per_job,
        "mem_gb": opts.mem_gb,
    }
    if opts.launcher == "slurm":
        params |= {"slurm_partition": opts.partition, "slurm_array_parallelism": opts.array_parallelism or jobs}
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def launch(todo: list[RunSpec], out: Path, data_root: str | None, opts: LaunchOptions, reporter: Reporter):
    """Submit `todo`; yields each run's Outcome when its job ends (local, or SLURM with --wait)."""
    from finebench.benchmark.suite import Outcome

    if not todo:
        return
    executor = executor_for(out, opts, len(todo))
    args = [str(out)] * len(todo), [data_root] * len(todo)
    if opts.launcher == "slurm":
        jobs = executor.map_array(RunJob(), todo, *args)  # one job array
        note_queued(out, todo, "slurm", {s.run_id: j.job_id for s, j in zip(todo, jobs, strict=True)})
        reporter.print(f"submitted {len(jobs)} job(s) to SLURM as array {jobs[0].job_id.split('_')[0]}; logs in "
                       f"{Path(out) / 'jobs'}; `bench status --results {out}` shows their runs")  # fmt: skip
        running = list(zip(todo, jobs, strict=True)) if opts.wait else []
        waiting: list[RunSpec] = []
    else:
        note_queued(out, todo, "local")
        running, waiting = [], list(todo)
    cap = opts.array_parallelism or 1
    gpus = local_gpus(executor.parameters.get("gpus_per_node", 0)) if opts.launcher == "local" else []
    if gpus:
        cap = min(cap, len(gpus))  # one run per GPU at a time
    free = list(gpus)
    held: dict[str, str] = {}  # local job id -> the GPU it was given
    while running or waiting:
        while waiting and (opts.launcher == "slurm" or len(running) < cap):
            spec = waiting.pop(0)
            if gpus:  # submitit's local executor would give every job GPU 0: give each a free one
                gpu = free.pop(0)
                give_gpu(executor, gpu)
            job = executor.submit(RunJob(), spec, *(a[0] for a in args))
            if gpus:
                held[job.job_id] = gpu
            note_queued(out, [spec], "local", {spec.run_id: job.job_id})
            reporter.print(f"[job {job.job_id}] {spec.label}  (run {spec.run_id}) started")
            running.append((spec, job))
        for spec, job in [(s, j) for s, j in running if j.done()]:
            running.remove((spec, job))
            if job.job_id in held:
                free.append(held.pop(job.job_id))
            try:
                outcome = Outcome(**job.result())
            except Exception as e:  # noqa: BLE001 - the job itself broke (killed, out of memory...); its run is failed
                reporter.print(f"[job {job.job_id}] {spec.label}: job failed: {str(e).strip()[-500:]}")
                outcome = Outcome(spec.run_id, "failed")
            else:
                reporter.print(f"[job {job.job_id}] {spec.label}: {outcome.status}")
            yield outcome
        if running:
            time.sleep(0.5)


def give_gpu(executor, gpu: str) -> None:
    """The local executor's next job sees physical GPU `gpu` only (AutoExecutor does not pass `visible_gpus` on, so
    it is set on the local executor itself)."""
    executor._executor.update_parameters(visible_gpus=[int(gpu)])


def local_gpus(per_job: int) -> list[str]:
    """The physical ids of this machine's GPUs a local job may be given (none for CPU jobs), through the
    CUDA_VISIBLE_DEVICES this process runs under."""
    import os

    if not per_job or not torch.cuda.is_available():
        return []
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    ids = visible or [str(i) for i in range(torch.cuda.device_count())]
    if not all(i.isdigit() for i in ids):
        raise SpecError(f"--launcher local: CUDA_VISIBLE_DEVICES={','.join(ids)} names GPUs by UUID; submitit's local "
                        "executor takes GPU indices")  # fmt: skip
    return ids


def launch_suite(suite: SuiteSpec, out: Path, data_root: str | None, opts: LaunchOptions, reporter: Reporter):
    """Check the suite here (names, data, weights, image caches: built once, before any job starts), then submit its
    unrecorded runs."""
    from finebench.benchmark.suite import collect, pick_device, plan

    opts.check()
    todo, result = plan(
        suite, out, data_root, pick_device("cpu"), reporter, f"launcher {opts.launcher}", warn_on=[]
    )  # the jobs' nodes are not this machine: no precision warning from here
    outcomes = list(launch(todo, out, data_root, opts, reporter))
    if opts.launcher == "slurm" and not opts.wait:
        result.submitted = [s.run_id for s in todo]
        return result
    return collect(outcomes, todo, result)
