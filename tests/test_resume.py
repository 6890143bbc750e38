"""Resume after a crash: a run killed at any moment goes on from its last checkpoint and gives the numbers an
uninterrupted run gives; the store always parses."""

import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from finebench.benchmark.checkpoint import Checkpoints, rng_state, set_rng_state
from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import run_suite
from finebench.methods import METHODS, Method, Stage
from finebench.results.store import ResultStore

# what differs between two runs of one spec: clocks, dates, memory, and the account of resumes itself
VOLATILE = {
    "started",
    "finished",
    "env",
    "resumes",
    "peak_memory",
    "images_per_second",
    "elapsed",
    "data_stall",
    "data_stall_fraction",
}


def numbers(value):
    """A record without its timings: everything that must be identical between an interrupted and a whole run."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items() if k not in VOLATILE and "seconds" not in k}
    if isinstance(value, list):
        return [numbers(v) for v in value]
    return value


def records(out):
    errors = []
    found = {r.run_id: r for r in ResultStore(out).records(errors)}
    assert errors == []
    return found


SUITE = ["--methods", "cut-full,filter-attention,lora", "--dataset", "synthetic:4x16", "--backbone", "test_resnet",
         "--weights", "random", "--epochs", "4", "--resolution", "32", "--batch-size", "8", "--seeds", "0",
         "--quiet", "method_config.filter-attention.schedule=FAAB"]  # fmt: skip


def bench(out, crash=None):
    env = dict(os.environ, FINEBENCH_CRASH_AT=crash or "")
    return subprocess.run([sys.executable, "-m", "finebench.cli", "run", *SUITE, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    done = bench(out)
    assert done.returncode == 0, done.stderr
    return records(out)


# 8 steps per epoch: step:13 is mid-epoch 2 of the first run, step:40 mid-epoch 1 of the second (after the first
# run's record); checkpoint-write:3 kills while the third checkpoint is written; record-write:1 while the first
# run's record is written (its checkpoints are all there, so it resumes straight to its final evaluation); step:lora
# is mid-epoch 2 of the third run, LoRA, whose peft layers must come back from its checkpoint
@pytest.mark.parametrize(("crash", "interrupted"), [("step:13", "cut-full"), ("step:40", None),
                                                    ("checkpoint-write:3", "cut-full"), ("record-write:1", "cut-full"),
                                                    ("step:lora", "lora")])  # fmt: skip
def test_kill_9_at_any_moment_then_resume_gives_the_uninterrupted_numbers(tmp_path, whole, crash, interrupted):
    out = tmp_path / "res"
    if crash == "step:lora":  # the third run's epoch 2, third step: counted from the runs' recorded steps
        steps = [r.cost["steps"] for r in whole.values()]
        assert len(set(steps)) == 1, steps
        crash = f"step:{2 * steps[0] + steps[0] // 4 + 3}"
    killed = bench(out, crash)
    assert killed.returncode == -9, killed.stderr  # really killed by SIGKILL, no handler ran
    before = set(records(out))  # the store parses after the kill
    assert len(before) < 3
    resumed = bench(out)
    assert resumed.returncode == 0, resumed.stderr
    after = records(out)
    assert set(after) == set(whole)
    for run_id, record in whole.items():
        assert numbers(after[run_id].to_dict()) == numbers(record.to_dict()), run_id
    if interrupted:  # the run was interrupted after a checkpoint: it resumed, and says so
        run = next(r for r in after.values() if r.spec["method"] == interrupted)
        assert run.cost["resumes"][0]["after_epoch"] >= 1
    assert not list((out / "checkpoints").glob("*/*.pt"))  # spent checkpoints are removed once recorded
    again = bench(out)  # finished runs are skipped, never repeated
    assert "0 run(s) recorded, 3 skipped" in again.stdout
    assert set(records(out)) == set(whole)


class Noisy(Method):
    """Draws from Python's, NumPy's and torch's global generators in every step (as dropout would), and trains in
    two stages: the head with a fresh optimiser, then everything with that optimiser continued. Fails once, in
    its third epoch, when `crash` is set."""

    name = "test-noisy"
    crash = False

    def schedule(self, ctx):
        return [Stage("head", 1, frozenset(ctx.stages.head)), Stage("all", 3, None, fresh_optimizer=False)]

    def losses(self, model, batch, out, ctx):
        noise = random.random() + float(np.random.rand()) + float(torch.rand(()))
        ctx.state["steps"] = ctx.state.get("steps", 0) + 1
        if Noisy.crash and ctx.state["steps"] == 2 * len(ctx.loaders["train"]) + 2:
            Noisy.crash = False
            raise RuntimeError("power cut")
        return {"ce": torch.nn.functional.cross_entropy(out * (1 + 0.1 * noise), batch[1])}


@pytest.fixture
def noisy():
    METHODS.register(Noisy.name, Noisy, Noisy.__doc__)
    yield
    del METHODS._entries[Noisy.name]


def test_resume_restores_every_generator_and_the_continued_optimiser(tmp_path, noisy):
    suite = build_suite({"methods": "test-noisy", "datasets": "synthetic:4x12", "backbones": "test_resnet",
                         "weights": "random", "epochs": 4, "resolution": 32, "batch_size": 8})  # fmt: skip
    quiet = Reporter(quiet=True)
    run_suite(suite, tmp_path / "whole", None, "cpu", quiet)
    Noisy.crash = True
    first = run_suite(suite, tmp_path / "res", None, "cpu", quiet)
    assert len(first.failed) == 1 and not Noisy.crash  # failed in epoch 3, after two checkpoints
    ((state, _),) = [Checkpoints(tmp_path / "res", rid).load() for rid in first.failed]
    assert state["epoch"] == 2 and len(state["optimizer"]["param_groups"]) == 2  # head group + the rest added
    second = run_suite(suite, tmp_path / "res", None, "cpu", quiet)
    assert second.done == first.failed
    (whole,), (resumed,) = records(tmp_path / "whole").values(), records(tmp_path / "res").values()
    assert resumed.cost["resumes"][0]["after_epoch"] == 2
    assert numbers(resumed.to_dict()) == numbers(whole.to_dict())


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    state = rng_state()
    draws = random.random(), np.random.randn(), float(torch.rand(()))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(state)
    assert (random.random(), np.random.randn(), float(torch.rand(()))) == draws


def test_a_damaged_or_foreign_checkpoint_is_refused_with_the_file_named(tmp_path):
    ckpt = Checkpoints(tmp_path, "abc")
    ckpt.dir.mkdir(parents=True)
    ckpt.last.write_bytes(b"not a checkpoint")
    with pytest.raises(
        ValueError,
        match=r"checkpoint .*abc/last\.pt cannot be read: not a torch file, or damaged .*; delete .*abc to start",
    ):
        ckpt.load()

    ckpt.last.write_text("hello world")  # text: fails inside the unpickler in yet another way (KeyError)
    with pytest.raises(ValueError, match=r"last\.pt cannot be read: not a torch file, or damaged"):
        ckpt.load()

    class Payload:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (os.system, ("echo owned",))

    torch.save({"format": 1, "x": Payload()}, ckpt.last)
    with pytest.raises(
        ValueError,
        match=r"last\.pt is refused: it holds a Python object \(posix\.system\) besides tensors, and loading it would "
        "run code",
    ):
        ckpt.load()
    other = Checkpoints(tmp_path, "other")
    other.save({"epoch": 1}, 1, {"w": torch.ones(1)})
    ckpt.last.write_bytes(other.last.read_bytes())  # another run's checkpoint in this run's place
    with pytest.raises(ValueError, match="is not a format-1 checkpoint of run abc"):
        ckpt.load()


def test_best_file_named_by_last_survives_a_newer_best(tmp_path):
    ckpt = Checkpoints(tmp_path, "r")
    ckpt.save({"epoch": 1}, 1, {"w": torch.zeros(1)})
    ckpt.save({"epoch": 2}, 1, None)  # no improvement: the best file of epoch 1 stays
    assert sorted(p.name for p in ckpt.dir.iterdir()) == ["best-e1.pt", "last.pt"]
    ckpt.save({"epoch": 3}, 3, {"w": torch.ones(1)})
    assert sorted(p.name for p in ckpt.dir.iterdir()) == ["best-e3.pt", "last.pt"]
    state, best = ckpt.load()
    assert state["epoch"] == 3 and best["w"].item() == 1.0
    assert state["best_file"] == "best-e3.pt"
