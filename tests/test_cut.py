"""Level of cut: exactly the intended parameters train, and frozen BatchNorm keeps its statistics."""

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.backbones import create_backbone
from finebench.backbones.stages import stage_map
from finebench.benchmark.runner import StepLoop, build_method
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand
from finebench.methods import Context
from finebench.methods.cost import BudgetMeter


def make_loop(method: str, backbone: str, **cfg):
    layer = {"methods": method, "backbones": backbone, "datasets": "synthetic", "weights": "random", "epochs": 1}
    spec = expand(build_suite({**layer, "resolution": 32, **cfg}))[0]
    torch.manual_seed(0)
    model = create_backbone(backbone, 4, "random").model
    ctx = Context(spec, 4, stage_map(model), BudgetMeter(1, 8), torch.device("cpu"))
    m = build_method(spec)
    loop = StepLoop(m, m.prepare(model, ctx), ctx, total_steps=2)
    loop.begin_stage(m.schedule(ctx)[0])
    loop.begin_epoch()
    return loop, ctx


def step_and_diff(loop):
    """Two steps (the first only reaches past timm's zero-initialised last BN of each residual block)."""
    before = {k: v.clone() for k, v in loop.model.state_dict().items()}
    for _ in range(2):
        loop.step(torch.randn(8, 3, 32, 32), torch.arange(8) % 4)
    after = loop.model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("method, stages_trained", [("cut-fc", 0), ("cut-last", 1), ("cut-last2", 2), ("cut-full", 5)])
def test_exactly_the_intended_parameters_train(method, stages_trained, backbone):
    loop, ctx = make_loop(method, backbone)
    smap = ctx.stages
    expected = set(smap.head) | set(smap.last(stages_trained))
    trainable = {n for n, p in loop.model.named_parameters() if p.requires_grad}
    assert trainable == expected
    changed = step_and_diff(loop)
    params = dict(loop.model.named_parameters())
    assert {k for k in changed if k in params} == expected  # every trainable moved, nothing else did


@pytest.mark.parametrize("backbone", ["test_resnet", "test_efficientnet"])
def test_frozen_batchnorm_stays_in_eval_and_keeps_statistics(backbone):
    loop, ctx = make_loop("cut-last", backbone)
    last = set(ctx.stages.last(1))
    for name, module in loop.model.named_modules():
        if isinstance(module, _BatchNorm):
            trains = any(f"{name}.{p}" in last for p in ("weight", "bias"))
            assert module.training == trains, name
    changed = step_and_diff(loop)
    moved_stats = {k.rsplit(".", 1)[0] for k in changed if k.endswith("running_mean")}
    assert moved_stats and all(f"{m}.weight" in last for m in moved_stats)


def test_freeze_bn_keeps_every_batchnorm_in_eval():
    loop, _ = make_loop("cut-full", "test_resnet", method_config={"cut-full": {"freeze_bn": True}})
    bns = [m for m in loop.model.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert not any(k.endswith("running_mean") for k in step_and_diff(loop))
    assert loop.model.training  # the rest of the network trains


def test_stage_map_covers_every_parameter_once():
    for name in ("test_resnet", "test_efficientnet", "resnet50"):
        model = create_backbone(name, 3, "random").model
        smap = stage_map(model)
        names = [n for n, _ in model.named_parameters()]
        assert sorted(smap.body + smap.head) == sorted(names)
        assert len(smap.stages) == len(model.feature_info)
    smap = stage_map(create_backbone("resnet50", 3, "random").model)
    assert all(n.startswith("layer4.") for n in smap.last(1))
    assert smap.head == ("fc.weight", "fc.bias")


# The intended trainable parameters, spelled with the architectures' own module names (not via the stage map).
EXPECTED_PREFIXES = {
    ("test_resnet", "cut-fc"): ("fc.",),
    ("test_resnet", "cut-last"): ("fc.", "layer4."),
    ("test_resnet", "cut-last2"): ("fc.", "layer4.", "layer3."),
    ("test_efficientnet", "cut-fc"): ("classifier.",),
    ("test_efficientnet", "cut-last"): ("classifier.", "bn2.", "conv_head.", "blocks.4."),
    ("test_efficientnet", "cut-last2"): ("classifier.", "bn2.", "conv_head.", "blocks.4.", "blocks.3."),
}


@pytest.mark.parametrize("backbone, method", sorted(EXPECTED_PREFIXES))
def test_cut_levels_by_module_name(backbone, method):
    loop, _ = make_loop(method, backbone)
    prefixes = EXPECTED_PREFIXES[(backbone, method)]
    for name, p in loop.model.named_parameters():
        assert p.requires_grad == name.startswith(prefixes), name
