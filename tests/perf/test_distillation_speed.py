"""A training step of attention transfer (its teacher's forward included), of KD, and of the Attention Branch
Network, each interleaved with the same step of cut-full (EfficientNet-Lite0 student, Lite2 teacher, shipped
weights); ratios in the summary of `pytest tests/perf --benchmark-enable`."""

import pytest
import torch
from perf_helpers import interleaved_ratio

from finebench.backbones import create_backbone
from finebench.backbones.stages import stage_map
from finebench.benchmark.runner import StepLoop, build_method
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand
from finebench.methods import Context
from finebench.methods.cost import BudgetMeter

BATCH, RES, CLASSES = 16, 96, 17


def loop_for(method_name: str, **config) -> StepLoop:
    torch.manual_seed(0)
    layer = {"methods": method_name, "backbones": "efficientnet_lite0", "datasets": "synthetic", "resolution": RES}
    spec = expand(build_suite({**layer, "batch_size": BATCH, "method_config": {method_name: config}}))[0]
    model = create_backbone("efficientnet_lite0", CLASSES).model
    ctx = Context(spec, CLASSES, stage_map(model), BudgetMeter(1, BATCH), torch.device("cpu"))
    teacher = create_backbone("efficientnet_lite2", CLASSES).model  # the default teacher of Lite0
    ctx.source_model = lambda *args, **kw: (teacher, "benchmark")
    method = build_method(spec)
    loop = StepLoop(method, method.prepare(model, ctx), ctx, total_steps=10_000)
    loop.begin_stage(method.schedule(ctx)[0])
    loop.begin_epoch()
    return loop


@pytest.mark.benchmark(group="distillation-step")
@pytest.mark.parametrize("method", ["attention-transfer", "attention-transfer:gradient", "kd", "abn"])
def test_step_vs_cut_full_step(benchmark, method):
    x, y = torch.randn(BATCH, 3, RES, RES), torch.arange(BATCH) % CLASSES
    name, _, kind = method.partition(":")
    full, other = loop_for("cut-full"), loop_for(name, **({"kind": kind} if kind else {}))
    key = f"ratio_{method.replace(':', '_')}_over_full"
    ratio = interleaved_ratio(benchmark, lambda: full.step(x, y), lambda: other.step(x, y), key)
    assert ratio > 0 and other.steps >= 1 and other.epoch_losses()
