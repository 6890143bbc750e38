"""Failure isolation and locking: one run's failure is recorded and the suite goes on; runs are never run twice."""

import json
import os
import subprocess
import sys

import pytest
import torch

from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import failure_info, run_suite
from finebench.methods import METHODS, Method
from finebench.results.lock import RunLock
from finebench.results.store import ResultStore


class NanAtEpoch2(Method):
    """Trains normally, then its loss turns NaN in the second epoch."""

    name = "test-nan-at-2"

    def on_epoch_end(self, model, epoch, ctx):
        self.epoch = epoch + 1

    def losses(self, model, batch, out, ctx):
        loss = torch.nn.functional.cross_entropy(out, batch[1])
        return {"ce": loss * float("nan") if getattr(self, "epoch", 0) >= 1 else loss}


class Broken(Method):
    name = "test-broken"

    def prepare(self, model, ctx):
        raise RuntimeError("something inside the method broke")


@pytest.fixture
def extra_methods():
    for cls in (NanAtEpoch2, Broken):
        METHODS.register(cls.name, cls, cls.__doc__ or cls.name)
    yield
    for cls in (NanAtEpoch2, Broken):
        del METHODS._entries[cls.name]


def suite(methods):
    return build_suite({"methods": methods, "datasets": "synthetic:4x12", "backbones": "test_resnet",
                        "weights": "random", "epochs": 3, "resolution": 32, "batch_size": 8})  # fmt: skip


def test_a_diverging_and_a_broken_run_are_recorded_and_the_rest_finish(tmp_path, extra_methods):
    result = run_suite(suite("cut-fc,test-nan-at-2,test-broken,cut-last"), tmp_path, None, "cpu", Reporter(quiet=True))
    store = ResultStore(tmp_path)
    assert len(result.done) == 2 and len(result.failed) == 2
    assert sorted(r.spec["method"] for r in store.records()) == ["cut-fc", "cut-last"]
    failures = {f["spec"]["method"]: f for f in store.failures()}
    nan = failures["test-nan-at-2"]
    assert nan["status"] == "diverged" and nan["epoch"] == 2 and nan["last_good"]["epoch"] == 1
    broken = failures["test-broken"]
    assert broken["status"] == "error" and "something inside the method broke" in broken["message"]
    assert "Traceback" in broken["traceback"] and "prepare" in broken["traceback"]
    assert not list((tmp_path / "locks").glob("*.lock"))  # every lock released

    from finebench.reports import write_report

    md = write_report(tmp_path, tmp_path / "rep", "md").markdown
    assert "## Failed runs (not in any table)" in md and "| test-nan-at-2 | synthetic:4x12 |" in md
    assert "diverged at epoch 2" in md and "test-broken" not in md.split("## Failed runs")[0]

    again = run_suite(suite("cut-fc,test-broken"), tmp_path, None, "cpu", Reporter(quiet=True))
    assert len(again.skipped) == 1 and len(again.failed) == 1  # the finished run skipped, the failed one retried
    with pytest.raises(RuntimeError, match="something inside the method broke"):
        run_suite(suite("test-broken"), tmp_path, None, "cpu", Reporter(quiet=True), fail_fast=True)


def test_out_of_memory_is_named_with_a_hint():
    from finebench.benchmark.suite import expand

    spec = expand(suite("cut-fc"))[0]
    info = failure_info(spec, RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1.0)
    assert info["status"] == "out-of-memory" and "smaller --batch-size than 8" in info["hint"]


def test_lock_is_exclusive_and_a_killed_holders_lock_is_free(tmp_path):
    first, second = RunLock(tmp_path, "abc"), RunLock(tmp_path, "abc")
    assert first.acquire() and not second.acquire()
    assert first.owner()["pid"] == os.getpid()
    first.release()
    assert second.acquire()
    second.release()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom finebench.results.lock import RunLock\n"
                               f"assert RunLock({str(tmp_path)!r}, 'abc').acquire()\nprint('held', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert not RunLock(tmp_path, "abc").acquire()  # a live process holds it
    holder.kill()  # kill -9: no clean-up of its own
    holder.wait()
    third = RunLock(tmp_path, "abc")
    assert third.acquire() and third.owner()["pid"] == os.getpid()  # the kernel dropped the dead holder's lock
    third.release()


def test_two_processes_on_one_results_folder_run_every_run_once(tmp_path):
    args = [sys.executable, "-m", "finebench.cli", "run", "--methods", "cut-fc,cut-last,cut-last2,cut-full",
            "--dataset", "synthetic:4x12", "--backbone", "test_resnet", "--weights", "random", "--epochs", "2",
            "--resolution", "32", "--seeds", "0,1", "batch_size=8", "--quiet", "--out", "res"]  # fmt: skip
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    assert len(records) == 8 and len({r["run_id"] for r in records}) == 8
    done = [int(o.split("done: ")[1].split(" ")[0]) for o, _ in outs]
    assert sum(done) == 8  # each run trained by exactly one of the two
    assert not list((tmp_path / "res" / "locks").glob("*.lock"))


def test_ctrl_c_leaves_the_store_consistent_and_says_how_to_go_on(tmp_path):
    import signal
    import time

    args = [sys.executable, "-m", "finebench.cli", "run", "--methods", "cut-fc,cut-full", "--dataset",
            "synthetic:4x40", "--backbone", "test_resnet", "--weights", "random", "--epochs", "60", "--resolution",
            "48", "batch_size=8", "--out", "res"]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines as they are printed, not when the pipe's buffer flushes
    # a test runner started in the background by a shell inherits SIGINT ignored, and so would the child (Python
    # then installs no KeyboardInterrupt handler): give the child the default disposition, as a terminal has
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))  # fmt: skip
    for line in proc.stdout:  # the first run recorded, the second one started: interrupt it mid-training
        if line.startswith("[2/2]"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: every finished run is recorded" in err and "continues with the rest" in err
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    assert [r["spec"]["method"] for r in records] == ["cut-fc"]
    assert not list((tmp_path / "res" / "locks").glob("*.lock"))  # the interrupted run's lock released
    assert not [p for p in (tmp_path / "res").rglob("*.tmp")]
