"""One training step through the runner (StepLoop.step) vs the same step in a bare PyTorch loop.

Same model, batch, optimiser and hyperparameters; `pytest tests/perf --benchmark-enable` prints the ratio.
"""

import pytest
import torch
import torch.nn.functional as F
from perf_helpers import interleaved_ratio

from finebench.backbones import create_backbone
from finebench.backbones.stages import stage_map
from finebench.benchmark.runner import StepLoop, build_method
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand
from finebench.methods import Context
from finebench.methods.cost import BudgetMeter

BATCH, RES, CLASSES = 16, 96, 17


def setup():
    torch.manual_seed(0)
    spec = expand(build_suite({"methods": "cut-full", "backbones": "efficientnet_lite0", "datasets": "synthetic",
                               "weights": "random", "resolution": RES, "batch_size": BATCH}))[0]  # fmt: skip
    model = create_backbone("efficientnet_lite0", CLASSES, "random").model
    x, y = torch.randn(BATCH, 3, RES, RES), torch.arange(BATCH) % CLASSES
    return spec, model, x, y


def bare_step(spec, model, x, y):
    """The same step written as a plain PyTorch loop would: forward, cross-entropy, backward, SGD step."""
    cfg = spec.train
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


@pytest.mark.benchmark(group="train-step")
def test_step_bare_pytorch_baseline(benchmark):
    spec, model, x, y = setup()
    benchmark.pedantic(bare_step(spec, model, x, y), rounds=40, warmup_rounds=5)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.benchmark(group="train-step")
def test_step_runner(benchmark):
    spec, model, x, y = setup()
    ctx = Context(spec, CLASSES, stage_map(model), BudgetMeter(1, BATCH), torch.device("cpu"))
    method = build_method(spec)
    loop = StepLoop(method, method.prepare(model, ctx), ctx, total_steps=10_000)
    loop.begin_stage(method.schedule(ctx)[0])
    loop.begin_epoch()
    benchmark.pedantic(loop.step, args=(x, y), rounds=40, warmup_rounds=5)
    assert ctx.budget.steps == loop.steps >= 1 and loop.seen == loop.steps * BATCH
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.benchmark(group="train-step-interleaved")
def test_step_runner_vs_bare_interleaved(benchmark):
    """Both steps alternately on twin models; the ratio of the medians goes into extra_info and the summary."""
    import copy

    spec, model, x, y = setup()
    twin = copy.deepcopy(model)
    bare = bare_step(spec, model, x, y)

    ctx = Context(spec, CLASSES, stage_map(twin), BudgetMeter(1, BATCH), torch.device("cpu"))
    method = build_method(spec)
    loop = StepLoop(method, method.prepare(twin, ctx), ctx, total_steps=10_000)
    loop.begin_stage(method.schedule(ctx)[0])
    loop.begin_epoch()
    ratio = interleaved_ratio(benchmark, bare, lambda: loop.step(x, y), "ratio_runner_over_bare")
    assert ratio > 0 and ctx.budget.steps >= 1
