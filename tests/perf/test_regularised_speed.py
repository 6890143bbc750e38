"""A training step of each regularised fine-tuning method (a frozen reference's or key encoder's forward included),
interleaved with the same step of cut-full (EfficientNet-Lite0, shipped ImageNet weights, 17 classes); ratios in the
summary of `pytest tests/perf --benchmark-enable`. Passes before training (DELTA's channel attention, Co-Tuning's
relationship) are not in the step: they are charged once per run, as the records show."""

import pytest
import torch
from perf_helpers import interleaved_ratio, method_context, step_loop

from finebench.benchmark.runner import StepLoop
from finebench.methods.delta import last_conv

BATCH, RES, CLASSES = 16, 96, 17


class Calibration(list):
    """A few fixed batches standing in for the unaugmented training split."""

    @property
    def num_samples(self) -> int:
        return sum(len(y) for _, y in self)


def loop_for(method_name: str, **config) -> StepLoop:
    method, model, ctx = method_context(method_name, BATCH, RES, CLASSES, **config)
    gen = torch.Generator().manual_seed(1)
    ctx.loaders["calibration"] = Calibration(
        (torch.randn(BATCH, 3, RES, RES, generator=gen), torch.arange(BATCH) % CLASSES) for _ in range(2)
    )
    if method_name == "delta":  # uniform channel weights: the step is the same, without the pre-pass (charged apart)
        convs = [last_conv(model, ctx.stages.stage_modules[i]) for i in ctx.stages.groups]
        modules = dict(model.named_modules())
        ctx.state["channel_attention"] = {n: torch.full((modules[n].out_channels,), 1 / modules[n].out_channels)
                                          for n in convs}  # fmt: skip
    return step_loop(method, method.prepare(model, ctx), ctx)  # LwF: its main stage, not the warm-up


@pytest.mark.benchmark(group="regularised-step")
@pytest.mark.parametrize("method", ["l2-sp", "delta", "bss", "lwf", "co-tuning", "stochnorm", "bi-tuning"])
def test_step_vs_cut_full_step(benchmark, method):
    x, y = torch.randn(BATCH, 3, RES, RES), torch.arange(BATCH) % CLASSES
    full, other = loop_for("cut-full"), loop_for(method)
    ratio = interleaved_ratio(benchmark, lambda: full.step(x, y), lambda: other.step(x, y), f"ratio_{method}_over_full")
    assert ratio > 0 and other.steps >= 1 and len(other.epoch_losses()) >= 1
