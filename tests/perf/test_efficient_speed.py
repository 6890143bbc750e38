"""Parameter-efficient methods on EfficientNet-Lite0 (shipped ImageNet weights, 17 classes), each interleaved with
its baseline in the same run; ratios in the summary of `pytest tests/perf --benchmark-enable`:

- the deployed network's inference (an eval forward of a batch) against the plain network's: after `finalize`
  SSF and LoRA are merged and filter attention folded, so their ratio should be 1; the unmerged network's ratio is
  what merging saves;
- one training step against cut-full's step."""

import pytest
import torch
from perf_helpers import interleaved_ratio, median_ratio, method_context, step_loop

from finebench.backbones import create_backbone

BATCH, RES, CLASSES = 16, 112, 17
TWINS = ["bitfit", "bn-only", "ssf", "lora", "filter-attention"]


def trained_and_deployed(name: str):
    """The method's prepared network with its added parameters moved off their start (so that nothing merges to a
    no-op), and the network `finalize` deploys from a second, identical one."""

    def trained():
        method, model, ctx = method_context(name, BATCH, RES, CLASSES)
        model = method.prepare(model, ctx).eval()
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n or "ssf_" in n or "attention" in n:
                    p.add_(0.01 * torch.randn(p.shape, generator=gen))
        return method, model, ctx

    unmerged = trained()[1]
    method, model, ctx = trained()
    return unmerged, method.finalize(model, ctx).eval()


@pytest.mark.benchmark(group="deployed-inference")
@pytest.mark.parametrize("method", TWINS)
def test_deployed_inference_vs_the_plain_network(benchmark, method):
    x = torch.randn(BATCH, 3, RES, RES)
    plain = create_backbone("efficientnet_lite0", CLASSES).model.eval()
    unmerged, deployed = trained_and_deployed(method)
    with torch.no_grad():
        assert torch.allclose(unmerged(x), deployed(x), rtol=1e-3, atol=1e-3)  # deploying changes no output
        ratio = interleaved_ratio(benchmark, lambda: plain(x), lambda: deployed(x), f"ratio_{method}_deployed")
        if method in ("ssf", "lora", "filter-attention") and not benchmark.disabled:  # what merging saves
            benchmark.extra_info[f"ratio_{method}_unmerged"] = median_ratio(lambda: plain(x), lambda: unmerged(x))
    assert sum(p.numel() for p in deployed.parameters()) == sum(p.numel() for p in plain.parameters())
    assert ratio > 0


@pytest.mark.benchmark(group="efficient-step")
@pytest.mark.parametrize("method", ["bitfit", "bn-only", "ssf", "lora", "cut-stage"])
def test_step_vs_cut_full_step(benchmark, method):
    x, y = torch.randn(BATCH, 3, RES, RES), torch.arange(BATCH) % CLASSES
    loops = []
    for name in ("cut-full", method):
        m, model, ctx = method_context(name, BATCH, RES, CLASSES)
        loops.append(step_loop(m, m.prepare(model, ctx), ctx))
    full, other = loops
    ratio = interleaved_ratio(benchmark, lambda: full.step(x, y), lambda: other.step(x, y), f"ratio_{method}_over_full")
    assert ratio > 0 and other.steps >= 1 and other.epoch_losses()
