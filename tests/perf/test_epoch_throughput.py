"""End to end: one training epoch through the runner (its data path from the uint8 cache, the step loop, progress,
budget and fault-injection checks) vs the same epoch in a bare PyTorch loop over the same cached pixels.

Same model, batches, augmentation (flips), normalisation, optimiser and hyperparameters; both alternate in the
same process, and the ratio of the medians (runner img/s over bare img/s) is printed by
`pytest tests/perf --benchmark-enable` and kept in the benchmark's extra_info.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from perf_helpers import interleaved_ratio

from finebench.benchmark.progress import Reporter
from finebench.benchmark.runner import Run, StepLoop
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand


def prepared_run(tmp_path, **over):
    layer = {"methods": "cut-full", "datasets": "synthetic:8x24", "backbones": "efficientnet_lite0",
             "weights": "random", "resolution": 64, "batch_size": 16, "scheduler": "constant", "epochs": 1000,
             **over}  # fmt: skip
    spec = expand(build_suite(layer))[0]
    run = Run(spec, None, tmp_path, torch.device("cpu"), Reporter(quiet=True))
    run.setup()
    run.ctx.budget.start()
    return run


def bare_epoch(run, model):
    """A plain loop over the run's cached uint8 train pixels: the same order, flips and normalisation."""
    train = run.loaders["train"]
    cfg = run.spec.train
    images, labels, idx = train.images, torch.as_tensor(run.data.labels), train.indices
    mean, std = train.mean, train.std
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    epoch = [0]

    def one_epoch():
        gen = torch.Generator().manual_seed(epoch[0])
        epoch[0] += 1
        order = torch.randperm(len(idx), generator=gen).numpy()
        flips = torch.rand(len(idx), generator=gen) < 0.5
        for start, end in train.bounds():
            rows = idx[order[start:end]]
            x = torch.from_numpy(np.ascontiguousarray(images[rows]))
            f = flips[start:end]
            x[f] = x[f].flip(-1)
            x = x.float().sub_(mean).div_(std)
            y = labels[rows]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(idx)

    return one_epoch


def runner_epoch(run):
    loop = StepLoop(run.method, run.model, run.ctx, total_steps=10**9, precision=run.precision)
    epoch = [0]

    def one_epoch():
        run.train_epoch(loop, epoch[0])
        epoch[0] += 1
        return run.loaders["train"].num_samples

    return one_epoch


@pytest.mark.benchmark(group="epoch")
def test_epoch_bare_loop_baseline(benchmark, tmp_path):
    run = prepared_run(tmp_path)
    n = benchmark.pedantic(bare_epoch(run, copy.deepcopy(run.model)), rounds=6, warmup_rounds=1)
    benchmark.extra_info["images_per_epoch"] = n
    assert n == run.loaders["train"].num_samples


@pytest.mark.benchmark(group="epoch")
def test_epoch_runner(benchmark, tmp_path):
    run = prepared_run(tmp_path)
    n = benchmark.pedantic(runner_epoch(run), rounds=6, warmup_rounds=1)
    assert run.ctx.budget.samples % n == 0 and run.ctx.budget.samples >= n and run.ctx.budget.data_seconds > 0


@pytest.mark.benchmark(group="epoch-interleaved")
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_epoch_runner_vs_bare_interleaved(benchmark, tmp_path, amp):
    """Runner img/s over bare img/s is 1 / (time ratio); the bare loop stays fp32 (the baseline), so with bf16 the
    ratio is also what autocast gives on this CPU."""
    run = prepared_run(tmp_path, amp=amp)
    bare, runner = bare_epoch(run, copy.deepcopy(run.model)), runner_epoch(run)
    ratio = interleaved_ratio(benchmark, bare, runner, f"ratio_runner_over_bare_time_{amp}", rounds=6, warmup=1)
    benchmark.extra_info[f"runner_img_per_s_over_bare_{amp}"] = 1 / ratio
    budget = run.ctx.budget
    benchmark.extra_info["runner_data_stall_fraction"] = budget.data_seconds / budget.train_seconds
    assert ratio > 0 and budget.samples > 0
