"""Filter attention's cost: a training step vs the same step of cut-full, and the folded model's inference vs the
plain model's (both interleaved on twin models; ratios in the summary of `pytest tests/perf --benchmark-enable`)."""

import copy

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
from finebench.methods.filter_attention import attention_layers, fold_attention, wrap_convs

BATCH, RES, CLASSES = 16, 96, 17


def loop_for(method_name: str, stage_letter: str | None = None):
    torch.manual_seed(0)
    layer = {"methods": method_name, "backbones": "efficientnet_lite0", "datasets": "synthetic", "resolution": RES}
    spec = expand(build_suite({**layer, "batch_size": BATCH}))[0]
    model = create_backbone("efficientnet_lite0", CLASSES).model
    ctx = Context(spec, CLASSES, stage_map(model), BudgetMeter(1, BATCH), torch.device("cpu"))
    method = build_method(spec)
    loop = StepLoop(method, method.prepare(model, ctx), ctx, total_steps=10_000)
    stages = method.schedule(ctx)
    stage = next(s for s in stages if stage_letter is None or s.name.endswith(stage_letter))
    loop.begin_stage(stage)
    loop.begin_epoch()
    return loop


@pytest.mark.benchmark(group="filter-attention-step")
def test_attention_step_vs_cut_full_step(benchmark):
    x, y = torch.randn(BATCH, 3, RES, RES), torch.arange(BATCH) % CLASSES
    full, attention = loop_for("cut-full"), loop_for("filter-attention", ":A")
    ratio = interleaved_ratio(
        benchmark, lambda: full.step(x, y), lambda: attention.step(x, y), "ratio_attention_over_full"
    )
    assert ratio > 0 and attention.steps >= 1


@pytest.mark.benchmark(group="filter-attention-inference")
def test_folded_inference_vs_plain(benchmark):
    x = torch.randn(32, 3, RES, RES)
    plain = create_backbone("efficientnet_lite0", CLASSES).model.eval()
    wrapped = wrap_convs(copy.deepcopy(plain), "full")
    with torch.no_grad():
        for a in attention_layers(wrapped).values():
            a.uniform_(0.5, 1.5)
    folded = fold_attention(wrapped).eval()
    assert sum(p.numel() for p in folded.parameters()) == sum(p.numel() for p in plain.parameters())

    def infer(model):
        with torch.no_grad():
            return model(x)

    ratio = interleaved_ratio(benchmark, lambda: infer(plain), lambda: infer(folded), "ratio_folded_over_plain")
    assert ratio > 0
