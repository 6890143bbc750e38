"""Filter attention: wrapping/folding identity, penalties by hand, the letter schedule, parameter groups."""

import dataclasses

import pytest
import torch
from torch import nn

from finebench.backbones import create_backbone
from finebench.methods.filter_attention import (
    FilterAttention,
    FilterAttentionConfig,
    attention_layers,
    attention_penalty,
    attention_stats,
    filter_scores,
    fold_attention,
    parse_schedule,
    wrap_convs,
)


@pytest.fixture(scope="module")
def lite0():
    return create_backbone("efficientnet_lite0", num_classes=17).model.eval()


def test_wrapping_with_ones_is_the_identity_on_the_real_backbone(lite0):
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = lite0(x)
        wrapped = wrap_convs(lite0, "full")
        assert torch.equal(wrapped(x), ref)
        layers = attention_layers(wrapped)
        convs = [m for m in wrapped.modules() if isinstance(m, nn.Conv2d)]
        assert len(layers) == len(convs) == 49
        assert all(bool((a == 1).all()) for a in layers.values())
        dw = wrapped.blocks[1][0].conv_dw  # depthwise: in/groups = 1
        assert attention_layers(wrapped)["blocks.1.0.conv_dw"].shape == (dw.out_channels, 1, 1, 1)
        # random attention, then fold: same outputs, plain convs, no attention parameters left
        gen = torch.Generator().manual_seed(1)
        for a in layers.values():
            a.copy_(torch.rand(a.shape, generator=gen) * 1.5 + 0.25)
        scaled = wrapped(x)
        assert not torch.allclose(scaled, ref)
        folded = fold_attention(wrapped)
        assert not attention_layers(folded)
        assert not any("attention" in n for n, _ in folded.named_parameters())
        assert torch.allclose(folded(x), scaled, atol=1e-5, rtol=1e-5)


def test_out_shape_has_one_scalar_per_filter():
    conv = nn.Conv2d(4, 6, 3, groups=2)
    wrap_convs(nn.Sequential(conv), "out")
    (a,) = attention_layers(nn.Sequential(conv)).values()
    assert a.shape == (6, 1, 1, 1)
    with pytest.raises(ValueError, match="attention shape 'rows' is not one of full, out"):
        wrap_convs(nn.Sequential(nn.Conv2d(1, 1, 1)), "rows")


def test_penalties_and_gradients_by_hand():
    a1 = torch.tensor([[0.5], [1.5]], requires_grad=True)  # layer 1: 2 weights
    a2 = torch.tensor([[0.8], [3.0], [-1.0]], requires_grad=True)  # layer 2: 3 weights

    def value_and_grads(kind, **kw):
        a1.grad = a2.grad = None
        p = attention_penalty([a1, a2], kind, **kw)
        p.backward()
        return p.item(), a1.grad.flatten().tolist(), a2.grad.flatten().tolist()

    # l1: mean |a| over all 5 weights
    v, g1, g2 = value_and_grads("l1")
    assert v == pytest.approx(6.8 / 5) and g1 == pytest.approx([0.2, 0.2]) and g2 == pytest.approx([0.2, 0.2, -0.2])
    # l2 (eq. 2 in eq. 4): one L2 norm per filter, summed; with one scalar per filter it is sum |a_j|
    v, g1, g2 = value_and_grads("l2")
    assert v == pytest.approx(0.5 + 1.5 + 0.8 + 3.0 + 1.0)
    assert g1 == pytest.approx([1.0, 1.0]) and g2 == pytest.approx([1.0, 1.0, -1.0])
    # l1sum (eq. 3): the un-normalised sum of |a|
    v, g1, g2 = value_and_grads("l1sum")
    assert v == pytest.approx(6.8) and g1 == pytest.approx([1.0, 1.0]) and g2 == pytest.approx([1.0, 1.0, -1.0])
    # diverge: -sum_l mean(min((a-1)^2, 1)); a2's 3.0 and -1.0 are past the bound -> no gradient there
    v, g1, g2 = value_and_grads("diverge", bound=1.0)
    assert v == pytest.approx(-(0.25 + (0.04 + 1 + 1) / 3))
    assert g1 == pytest.approx([0.5, -0.5]) and g2 == pytest.approx([0.4 / 3, 0.0, 0.0])
    # bimodal: sum of min((a-2)^2, a^2) over all weights / count
    v, g1, g2 = value_and_grads("bimodal")
    assert v == pytest.approx((0.25 + 0.25 + 0.64 + 1 + 1) / 5)
    assert g1 == pytest.approx([0.2, -0.2]) and g2 == pytest.approx([0.32, 0.4, -0.4])
    with pytest.raises(ValueError, match="penalty 'l3' is not one of"):
        attention_penalty([a1], "l3")


def test_l2_is_a_group_norm_per_filter_over_its_input_channels():
    """Paper eq. 2: sum over filters j of ||a_j||_2, a_j the (in/groups) attention scalars of filter j; not one norm
    per layer (which would be sqrt(25 + 1) + 2 here)."""
    a = torch.tensor([[3.0, 4.0], [0.6, 0.8]]).view(2, 2, 1, 1).requires_grad_(True)  # filter norms 5 and 1
    b = torch.tensor([[-2.0]]).view(1, 1, 1, 1).requires_grad_(True)  # shape out: |a_j|
    p = attention_penalty([a, b], "l2")
    p.backward()
    assert p.item() == pytest.approx(5.0 + 1.0 + 2.0)
    assert a.grad.flatten().tolist() == pytest.approx([0.6, 0.8, 0.6, 0.8]) and b.grad.item() == pytest.approx(-1.0)


def test_the_default_is_the_papers_penalty_and_no_penalty_is_the_named_ablation():
    cfg = FilterAttentionConfig()
    assert (cfg.penalty, cfg.lam) == ("diverge", 1.0)
    assert FilterAttention.note(dataclasses.asdict(cfg)) is None
    assert "ablation" in FilterAttention.note({"penalty": "none", "lam": 0.0})
    assert "ablation" in FilterAttention.note({"penalty": "diverge", "lam": 0.0})


def test_diverge_bound_keeps_the_penalty_bounded():
    far = torch.full((10, 1), 1e6)
    assert attention_penalty([far], "diverge", bound=2.0).item() == pytest.approx(-2.0)


def test_letter_schedules():
    assert parse_schedule("paper", 12) == "FFAAABAAABAA"  # the paper's default
    assert parse_schedule("paper", 10) == "FFAAABAAAB"
    assert parse_schedule("paper", 3) == "FAA"
    assert parse_schedule("FFFAE", 5) == "FFFAE"
    with pytest.raises(ValueError, match=r"unknown letter\(s\) \['X', 'Z'\]; valid: F \(head\)"):
        parse_schedule("FFXAZ", 5)
    with pytest.raises(ValueError, match="has 3 letters .* budget is 5 epochs"):
        parse_schedule("FAA", 5)
    with pytest.raises(ValueError, match="unknown letter"):
        FilterAttention(FilterAttentionConfig(schedule="FQ"))


def test_letters_select_parameters_by_module_type():
    model = create_backbone("test_resnet", num_classes=3, weights="random").model
    method = FilterAttention(FilterAttentionConfig())
    method.prepare(model, None)
    g = method.groups()
    names = {n for n, _ in model.named_parameters()}
    assert g["F"] == {"fc.weight", "fc.bias"}
    assert len(g["A"]) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert all(n.endswith(".attention") for n in g["A"])
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(g["B"]) == 2 * len(bns) and all(n.endswith((".weight", ".bias")) for n in g["B"])
    assert g["E"] == names - g["A"] and g["A"] | g["E"] == names


def test_stats_rank_filters_and_count_amplified():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    model = wrap_convs(nn.Sequential(conv), "full")
    (a,) = attention_layers(model).values()
    with torch.no_grad():
        a.copy_(torch.tensor([[1.5, 0.5], [0.2, 0.4], [2.0, 1.0]]).view(3, 2, 1, 1))
    assert filter_scores(a).tolist() == pytest.approx([1.0, 0.3, 1.5])
    stats = attention_stats(model, bins=4)
    layer = stats["layers"]["0"]
    assert layer["filter_order"] == [1, 0, 2]
    assert stats["amplified"] == pytest.approx(2 / 6) and stats["suppressed"] == pytest.approx(3 / 6)
    assert sum(layer["histogram"]) == 6 and stats["global_lowest"][0][:2] == ["0", 1]


def test_letters_become_stages_as_in_the_authors_code(tmp_path):
    from finebench.backbones.stages import stage_map
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand
    from finebench.methods import Context
    from finebench.methods.cost import BudgetMeter

    layer = {"methods": "filter-attention", "datasets": "synthetic", "backbones": "test_resnet", "epochs": 6}
    spec = expand(build_suite({**layer, "weights": "random"}))[0]
    model = create_backbone("test_resnet", num_classes=8, weights="random").model
    ctx = Context(spec, 8, stage_map(model), BudgetMeter(6, 10), torch.device("cpu"))
    method = FilterAttention(FilterAttentionConfig())
    method.prepare(model, ctx)
    stages = method.schedule(ctx)
    assert [s.name for s in stages] == ["1:F", "2:A", "3:A", "4:A", "5:B", "6:A"]
    assert all(s.epochs == 1 and s.fresh_optimizer and s.optimizer == "adam" and s.lr == 1e-3 for s in stages)
    assert all(s.weight_decay == 0.0 and s.constant_lr for s in stages)
    assert [s.bn for s in stages] == ["auto", "auto", "auto", "auto", "train", "auto"]
    shared = FilterAttention(FilterAttentionConfig(fresh_optimizer=False, optimizer="suite"))
    shared.prepare(create_backbone("test_resnet", num_classes=8, weights="random").model, ctx)
    assert all(not s.fresh_optimizer and s.optimizer is None and s.lr is None for s in shared.schedule(ctx))


def test_filter_attention_through_the_runner(tmp_path):
    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.runner import Run
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand, pick_device

    layer = {"methods": "filter-attention", "datasets": "synthetic:4x12", "backbones": "test_efficientnet",
             "weights": "random", "epochs": 3, "resolution": 40, "batch_size": 8,
             "method_config": {"filter-attention": {"penalty": "l1", "lam": 0.01, "prune_ratios": [0.5]}}}  # fmt: skip
    spec = expand(build_suite(layer))[0]
    rec = Run(spec, None, tmp_path, pick_device("cpu"), Reporter(quiet=True)).execute()
    assert [e["stage"] for e in rec.epochs] == ["1:F", "2:A", "3:A"]
    assert all("attention_penalty" in e["losses"] and "ce" in e["losses"] for e in rec.epochs)
    plain = sum(p.numel() for p in create_backbone("test_efficientnet", 4, "random").model.parameters())
    assert rec.params["deployed"] == plain < rec.params["total"]  # folded: no attention parameters left
    att = rec.extras["attention"]
    assert 0 <= att["amplified"] <= 1 and att["layers"] and att["global_lowest"]
    assert rec.cost["analysis_seconds"] > 0
    assert rec.cost["total_seconds"] <= rec.epochs[-1]["elapsed"] + 60  # the pruning sweep is not in the total
    nwp, lwp = rec.extras["attention_pruning"]
    assert (nwp["mode"], lwp["mode"]) == ("nwp", "lwp") and nwp["ratio"] == lwp["ratio"] == 0.5
    assert nwp["filters"] > 0 and lwp["filters"] > 0 and set(nwp) >= {"val", "test"}
    for entry in (nwp, lwp):  # each result beside its controls, with as many filters
        controls = entry["controls"]
        assert controls["magnitude"]["filters"] == entry["filters"] and len(controls["random"]) == 3
        assert all(r["filters"] == entry["filters"] and "top1" in r["test"] for r in controls["random"])
    assert "variant" not in rec.extras  # l1 with lam > 0 is not the ablation


def test_schedule_with_b_on_a_model_without_norms_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.get_classifier = lambda: model[4]
    method = FilterAttention(FilterAttentionConfig(schedule="FAB"))
    method.prepare(model, None)

    class Ctx:
        class spec:
            backbone = "toy"

            class train:
                epochs = 3

    with pytest.raises(ValueError, match="has B .* no normalisation layers"):
        method.schedule(Ctx)
