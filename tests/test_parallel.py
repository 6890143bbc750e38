"""Many runs at once: `--devices` (one worker process per device), `--launcher local|slurm` (submitit jobs) and
`bench status`. Every path must give the records a serial `bench run` gives, each run recorded exactly once."""

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch
from test_resume import numbers

from finebench.benchmark.parallel import parse_devices, worker_binding
from finebench.benchmark.spec import SpecError, build_suite
from finebench.benchmark.suite import expand
from finebench.cli import main
from finebench.results.lock import RunLock
from finebench.results.queue import note_queued
from finebench.results.status import run_states
from finebench.results.store import ResultStore

SUITE = ["--methods", "cut-fc,cut-full,cut-last", "--dataset", "synthetic:4x12", "--backbone", "test_efficientnet",
         "--weights", "random", "--epochs", "2", "--resolution", "40", "--batch-size", "8"]  # fmt: skip


def bench(*args, env=None):
    # one thread per process everywhere: CPU kernels sum in another order with another thread count, and the
    # records of every path are compared bit for bit
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})  # fmt: skip


def stored(out):
    errors = []
    found = {r.run_id: r for r in ResultStore(out).records(errors)}
    assert errors == []
    return found


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    done = bench("run", *SUITE, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return stored(out)


def same_as_serial(out, serial):
    got = stored(out)
    assert set(got) == set(serial)
    for run_id, record in serial.items():
        assert numbers(got[run_id].to_dict()) == numbers(record.to_dict()), run_id
    assert len(list((Path(out) / "runs").glob("*.json"))) == len(serial)  # each recorded exactly once


def test_device_lists_are_parsed_against_the_gpus_there_are():
    assert parse_devices("0,1,2,3", gpu_count=4) == [torch.device("cuda", i) for i in range(4)]
    assert parse_devices("cuda:1, cpu,cpu", gpu_count=2) == [torch.device("cuda", 1)] + [torch.device("cpu")] * 2
    with pytest.raises(SpecError, match=r"--devices 0,5: no GPU 5 here; this machine has 2 GPU\(s\), indices 0..1"):
        parse_devices("0,5", gpu_count=2)
    with pytest.raises(SpecError, match="--devices 0: this machine has no usable GPU"):
        parse_devices("0", gpu_count=0)
    with pytest.raises(SpecError, match="'gpu1' is not a GPU index"):
        parse_devices("gpu1", gpu_count=2)
    with pytest.raises(SpecError, match="expected a comma list"):
        parse_devices(" , ", gpu_count=2)


def test_each_worker_sees_only_its_own_gpu():
    assert worker_binding(torch.device("cuda", 1), None) == ("1", torch.device("cuda", 0))
    # this process already sees only GPUs 4,5,6: its cuda:1 is physical GPU 5
    assert worker_binding(torch.device("cuda", 1), "4,5,6") == ("5", torch.device("cuda", 0))
    assert worker_binding(torch.device("cpu"), "4,5,6") == (None, torch.device("cpu"))


def test_devices_run_in_parallel_workers_into_one_store_with_the_serial_numbers(tmp_path, serial):
    done = bench("run", *SUITE, "--devices", "cpu,cpu", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "2 worker(s): cpu, cpu" in done.stdout
    assert "[cpu #0]" in done.stdout and "[cpu #1]" in done.stdout  # both workers trained runs
    same_as_serial(tmp_path, serial)
    again = bench("run", *SUITE, "--devices", "cpu,cpu", "--out", str(tmp_path))
    assert "0 run(s) recorded, 3 skipped" in again.stdout


def test_local_launcher_runs_the_suite_as_submitit_jobs_into_the_store(tmp_path, serial):
    done = bench("run", *SUITE, "--launcher", "local", "--array-parallelism", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr + done.stdout
    assert done.stdout.count("started") == 3 and "done: 3 run(s) recorded" in done.stdout
    assert len(list((tmp_path / "jobs").glob("*/*_log.out"))) == 3  # three submitit jobs, each with its log
    same_as_serial(tmp_path, serial)
    status = bench("status", "--results", str(tmp_path))
    assert status.returncode == 0 and "3 run(s): 3 done" in status.stdout


def test_slurm_launcher_submits_one_job_array_whose_tasks_fill_the_store(tmp_path, serial):
    fake = tmp_path / "bin"  # stand-ins for SLURM's tools: sbatch keeps the batch file and answers with a job id
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/sh\ncp "$1" "$KEEP"\necho "Submitted batch job 4242"\n')
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    out, keep = tmp_path / "res", tmp_path / "batch.sh"
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "KEEP": str(keep)}
    done = bench("run", *SUITE, "--launcher", "slurm", "--partition", "gpu", "--array-parallelism", "2",
                 "--job-timeout", "2h", "--out", str(out), env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "submitted: 3 run(s)" in done.stdout
    batch = keep.read_text()
    for line in ("--partition=gpu", "--array=0-2%2", "--gpus-per-node=1", "--time=120", "--signal=USR2@"):
        assert f"#SBATCH {line}" in batch
    status = bench("status", "--results", str(out))
    assert "3 run(s): 3 queued" in status.stdout and "job 4242_0" in status.stdout
    # SLURM starts the array's tasks (here: as SLURM would, with its environment) on the compute nodes
    for task in range(3):
        slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": str(5000 + task), "SLURM_ARRAY_JOB_ID": "4242",
                 "SLURM_ARRAY_TASK_ID": str(task), "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
                 "SLURM_NTASKS": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node1"}  # fmt: skip
        job = subprocess.run([sys.executable, "-m", "submitit.core._submit", str(out / "jobs" / "%j")], env={
            **os.environ, "OMP_NUM_THREADS": "1", **slurm}, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert job.returncode == 0, job.stderr
    same_as_serial(out, serial)
    assert "3 run(s): 3 done" in bench("status", "--results", str(out)).stdout


def test_status_tells_queued_running_failed_stopped_and_done_apart(tmp_path, serial):
    specs = expand(build_suite({"methods": "cut-fc,cut-full,cut-last,cut-last2", "datasets": "synthetic:4x12",
                                "backbones": "test_efficientnet", "weights": "random", "seeds": [7]}))  # fmt: skip
    queued, running, failed, stopped = specs[:4]
    store = ResultStore(tmp_path)
    note_queued(tmp_path, [queued], "slurm", {queued.run_id: "77_3"})
    note_queued(tmp_path, [running, failed], "local", {r.run_id: "1" for r in (running, failed)})
    lock = RunLock(tmp_path, running.run_id)
    assert lock.acquire()  # held by this (live) process
    time.sleep(0.01)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")  # as failure accounts have it: whole seconds
    store.record_failure(failed.run_id, {"run_id": failed.run_id, "spec": failed.to_dict(), "status": "diverged",
                                         "message": "loss not finite at epoch 2", "when": when})  # fmt: skip
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    entry = {"run_id": stopped.run_id, "label": stopped.label, "via": "bench run (device cpu)",
             "host": socket.gethostname(), "pid": int(dead.stdout), "time": time.time()}  # fmt: skip
    (tmp_path / "queue" / f"{stopped.run_id}.json").write_text(json.dumps(entry))
    record = next(iter(serial.values()))
    store.append(record)
    states = {r["run_id"]: r for r in run_states(tmp_path)}
    lock.release()
    assert states[queued.run_id]["state"] == "queued" and "job 77_3" in states[queued.run_id]["detail"]
    assert states[running.run_id]["state"] == "running" and f"pid {os.getpid()}" in states[running.run_id]["detail"]
    assert states[failed.run_id]["state"] == "failed" and "diverged" in states[failed.run_id]["detail"]
    assert states[stopped.run_id]["state"] == "stopped"
    assert states[record.run_id]["state"] == "done" and "test top-1" in states[record.run_id]["detail"]
    assert len(states) == 5
    # once its lock is released (the run stopped) and nothing else is known, it is queued again, not running
    assert {r["run_id"]: r["state"] for r in run_states(tmp_path)}[running.run_id] == "queued"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "99"], "--devices 99"),
        (["--partition", "gpu"], "--partition applies to --launcher slurm|local only"),
        (["--launcher", "local", "--devices", "cpu,cpu"], "--launcher cannot be combined with --devices"),
        (["--launcher", "local", "--partition", "gpu"], "--partition applies to --launcher slurm only"),
        (["--device", "cpu", "--devices", "cpu,cpu"], "--device and --devices: give one"),
        (["--launcher", "local", "--array-parallelism", "0"], "--array-parallelism: must be >= 1, got 0"),
        (["--launcher", "local", "--gpus-per-job", "2"], "--gpus-per-job 2: a run trains on one device"),
        (["--launcher", "local", "--mem-gb", "8"], "--cpus-per-job and --mem-gb apply to --launcher slurm only"),
        (["--launcher", "local", "--device", "cpu"], "--device applies to runs in this process"),
    ],
)
def test_bad_parallel_options_are_refused_before_any_training(tmp_path, capsys, args, message):
    assert main(["run", *SUITE, "--out", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_local_jobs_get_a_gpu_each_through_the_visible_devices(monkeypatch, tmp_path):
    from finebench.benchmark import launch

    monkeypatch.setattr(launch.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(launch.torch.cuda, "device_count", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert launch.local_gpus(1) == ["0", "1", "2"] and launch.local_gpus(0) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert launch.local_gpus(1) == ["4", "6"]
    # and the local executor takes the GPU it is given for its next job
    executor = launch.executor_for(tmp_path, launch.LaunchOptions("local", gpus_per_job=1), 2)
    launch.give_gpu(executor, "6")
    assert executor._executor.parameters["visible_gpus"] == [6]
    assert executor._executor.parameters["gpus_per_node"] == 1


def test_slurm_launcher_needs_sbatch(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no srun
    assert main(["run", *SUITE, "--out", str(tmp_path / "r"), "--launcher", "slurm"]) == 2
    assert "--launcher slurm: sbatch is not on this machine's PATH" in capsys.readouterr().err


def test_a_run_whose_worker_died_shows_as_failed(tmp_path):
    from finebench.benchmark.parallel import died
    from finebench.benchmark.progress import Reporter

    spec = expand(build_suite({"methods": "cut-fc", "datasets": "synthetic:4x12", "backbones": "test_efficientnet"}))[0]
    note_queued(tmp_path, [spec], "bench run (devices cpu, cpu)")
    assert died(spec, tmp_path, Reporter(quiet=True)).status == "failed"
    (state,) = run_states(tmp_path)
    assert state["state"] == "failed" and "worker pool broke" in state["detail"]


def test_status_asks_the_lock_itself_when_its_holder_is_on_another_machine(tmp_path):
    spec = expand(build_suite({"methods": "cut-fc", "datasets": "synthetic:4x12", "backbones": "test_efficientnet"}))[0]
    note_queued(tmp_path, [spec], "slurm", {spec.run_id: "9_0"})
    lock = RunLock(tmp_path, spec.run_id)
    assert lock.acquire()
    remote = json.dumps({"host": "node17", "pid": 4321, "time": time.time()})
    lock.path.write_text(remote)  # as a job on a compute node holds it
    assert run_states(tmp_path)[0]["state"] == "running" and "node17 pid 4321" in run_states(tmp_path)[0]["detail"]
    os.close(lock.fd)  # the node's job was killed by SIGKILL: the lock is gone, its file stays
    lock.fd = None
    assert lock.path.exists()
    assert run_states(tmp_path)[0]["state"] == "queued"
