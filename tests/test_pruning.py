"""The shared filter ranking and pruning machinery."""

import pytest
import torch
from torch import nn

from finebench.backbones import create_backbone
from finebench.methods.pruning import conv_bn_pairs, prune_channels
from finebench.methods.ranking import Controls, lowest_fraction, matched, ranked_filters


def test_network_and_layer_wise_selection_by_hand():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0, 7.0]), "b": torch.tensor([2.0, 9.0])}
    # network-wise, 50 % of 6 filters: the 3 lowest overall (1.0 a1, 2.0 b0, 3.0 a2)
    assert lowest_fraction(scores, 0.5) == {"a": [1, 2], "b": [0]}
    # layer-wise, 50 % of each layer
    assert lowest_fraction(scores, 0.5, per_layer=True) == {"a": [1, 2], "b": [0]}
    assert lowest_fraction(scores, 0.25, per_layer=True) == {"a": [1], "b": []}  # round(0.5) = 0 of b
    assert lowest_fraction(scores, 0.25) == {"a": [1], "b": [0]}  # round(1.5) = 2 lowest overall
    assert [e[1:] for e in ranked_filters(scores)][:3] == [("a", 1), ("b", 0), ("a", 2)]


def test_ties_are_broken_by_value_then_network_position_never_by_name():
    # "z" comes first in the network, "a" second: equal scores everywhere
    scores = {"z": torch.tensor([1.0, 1.0]), "a": torch.tensor([1.0, 1.0])}
    assert lowest_fraction(scores, 0.5) == {"z": [0, 1], "a": []}  # by position, not "a" < "z"
    second = {"z": torch.tensor([5.0, 0.5]), "a": torch.tensor([0.1, 9.0])}  # e.g. the filters' weight magnitude
    assert lowest_fraction(scores, 0.5, tiebreak=second) == {"z": [1], "a": [0]}
    assert lowest_fraction(scores, 0.5, per_layer=True, tiebreak=second) == {"z": [1], "a": [0]}
    # an unequal first score always wins over the second value
    assert lowest_fraction({"z": torch.tensor([2.0, 1.0])}, 0.5, tiebreak={"z": torch.tensor([0.0, 9.0])}) == {"z": [1]}


def test_controls_match_the_number_of_filters_chosen():
    chosen = {"a": [1, 2], "b": [0]}
    by_layer = matched(chosen, {"a": torch.tensor([0.0, 1, 2, 3]), "b": torch.tensor([3.0, 2, 1])}, per_layer=True)
    assert by_layer == {"a": [0, 1], "b": [2]}  # 2 of a, 1 of b: the same count per layer
    overall = matched(chosen, {"a": torch.tensor([9.0, 8, 7, 6]), "b": torch.tensor([1.0, 2, 3])}, per_layer=False)
    assert overall == {"a": [], "b": [0, 1, 2]}  # 3 in all
    conv_a, conv_b = nn.Conv2d(1, 4, 1, bias=False), nn.Conv2d(1, 3, 1, bias=False)
    with torch.no_grad():  # L1 norms per filter: a [4, 1, 9, 2], b [3, 6, 0.5]
        conv_a.weight.copy_(torch.tensor([4.0, -1.0, 9.0, -2.0]).view(4, 1, 1, 1))
        conv_b.weight.copy_(torch.tensor([3.0, 6.0, -0.5]).view(3, 1, 1, 1))
    model = nn.ModuleDict({"a": conv_a, "b": conv_b})
    controls = Controls.build(model, ["a", "b"], draws=3, seed=0)
    picks = controls.choose(chosen, per_layer=False)
    assert picks["magnitude"] == {"a": [1, 3], "b": [2]}  # the 3 smallest L1 norms: 0.5, 1, 2
    assert len(picks["random"]) == 3 and all(sum(map(len, r.values())) == 3 for r in picks["random"])
    assert len({tuple(map(tuple, r.values())) for r in picks["random"]}) > 1  # the draws differ
    again = Controls.build(model, ["a", "b"], draws=3, seed=0).choose(chosen, per_layer=False)
    assert again == picks  # seeded: the same draws every time
    assert all(list(map(len, r.values())) == [2, 1] for r in controls.choose(chosen, per_layer=True)["random"])


def test_pruned_channel_is_exactly_zero_after_eval_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    with torch.no_grad():  # trained-looking BN statistics, so a zeroed weight alone would leave a constant
        model[1].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.3]))
        model[1].bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    pairs = conv_bn_pairs(model, x)
    assert pairs == {"0": "1", "3": None}

    naive = nn.Sequential(*[m for m in __import__("copy").deepcopy(model)])
    with torch.no_grad():
        naive[0].weight[2] = 0
        naive[0].bias[2] = 0
        assert naive[:3](x)[:, 2].abs().min() > 0  # zeroing weights alone is not pruning

    assert prune_channels(model, {"0": [2]}, pairs) == 1
    with torch.no_grad():
        hidden = model[:3](x)
    assert torch.equal(hidden[:, 2], torch.zeros_like(hidden[:, 2]))
    assert hidden[:, [0, 1, 3]].abs().sum() > 0


def test_pairs_found_on_real_architectures():
    for name, conv, bn in (
        ("test_resnet", "layer1.0.conv1", "layer1.0.bn1"),
        ("efficientnet_lite0", "conv_stem", "bn1"),
    ):
        model = create_backbone(name, num_classes=3, weights="random").model
        pairs = conv_bn_pairs(model, torch.zeros(1, 3, 64, 64))
        assert pairs[conv] == bn and len(pairs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize("name", ["efficientnet_lite0", "test_resnet", "test_efficientnet"])
def test_physical_removal_computes_what_the_masks_compute(name):
    """Removing channels gives a really smaller network with the masked network's outputs."""
    import copy

    from finebench.methods.pruning import channel_chains, mask_channels, remove_channels

    model = create_backbone(name, num_classes=5, weights="random").model.eval()
    chains = channel_chains(model)
    assert any(c.consumer is not None for c in chains.values())
    gen = torch.Generator().manual_seed(1)
    convs = {k: m for k, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    pruned = {
        k: torch.randperm(m.out_channels, generator=gen)[: m.out_channels // 3].tolist() for k, m in convs.items()
    }
    masked, small = copy.deepcopy(model), copy.deepcopy(model)
    mask_channels(masked, pruned, chains)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    counts = remove_channels(small, pruned, chains, x[:1])
    with torch.no_grad():
        assert torch.allclose(masked(x), small(x), atol=1e-5)
        assert not torch.allclose(model(x), masked(x), atol=1e-3)
    assert counts["removed"] > 0  # (depthwise choices merge into their expansion's, so no count identity holds)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_chain_passes_through_depthwise_and_stops_at_a_residual_add():
    from finebench.methods.pruning import channel_chains

    chains = channel_chains(create_backbone("efficientnet_lite0", num_classes=5, weights="random").model)
    # inverted residual: expansion 1x1 -> BN+act -> depthwise -> BN+act -> projection 1x1 reads it alone
    through = [t for t in chains["blocks.1.0.conv_pw"].through if not t.endswith((".aa", ".se"))]  # identities
    assert through == ["blocks.1.0.bn1", "blocks.1.0.conv_dw", "blocks.1.0.bn2"]
    assert chains["blocks.1.0.conv_pw"].consumer == "blocks.1.0.conv_pwl" and chains["blocks.1.0.conv_pw"].exact
    assert "blocks.1.0.conv_dw" not in chains  # part of the expansion's chain, not a root
    # the projection of a block with a skip connection feeds an add: not removable
    assert chains["blocks.1.1.conv_pwl"].consumer is None and chains["blocks.1.1.conv_pwl"].exact
    # the head conv reaches the classifier through pooling (and functional dropout): a linear consumer
    assert chains["conv_head"].consumer == "classifier"


def test_gates_are_not_pruned_and_residual_filters_are_counted():
    from finebench.methods.pruning import Pruner

    se_model = create_backbone("test_efficientnet", num_classes=3, weights="random").model
    pruner = Pruner(se_model, torch.zeros(1, 3, 64, 64))
    se_convs = {n for n, _ in se_model.named_modules() if n.endswith("se.conv_expand")}
    assert se_convs and not (se_convs & pruner.prunable())  # sigmoid(0) = 0.5: zeroing is not removal
    lite = Pruner(
        create_backbone("efficientnet_lite0", num_classes=3, weights="random").model, torch.zeros(1, 3, 64, 64)
    )
    # pruning expansion channels 0 and 1 leaves depthwise filters 0 and 1 with nothing but zeros to read
    assert lite.residual({"blocks.1.0.conv_pw": [0, 1]}) == 2
    assert lite.residual({"blocks.1.0.conv_pw": [0, 1], "blocks.1.0.conv_dw": [1]}) == 1  # filter 1 chosen directly
    assert lite.residual({"blocks.1.0.conv_dw": [3]}) == 0


def test_removed_cost_by_hand_counts_masked_and_whole_layers():
    """conv a (3->4, 3x3, bias) -> BN -> ReLU -> conv b (4->2, 1x1) reads it alone: pruning a's filters 0 and 2
    removes 2 rows of a (2 x 27 weights + 2 biases), 2 x 2 BN affine values and 2 input columns of b (2 x 2)."""
    from finebench.methods.pruning import Pruner, removed_cost

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1, bias=False))
    example = torch.zeros(1, 3, 8, 8)
    pruner = Pruner(model, example)
    assert pruner.flops == {"0": 2.0 * 27 * 4 * 64, "3": 2.0 * 4 * 2 * 64}
    cost = removed_cost(model, {"0": [0, 2]}, pruner)
    assert cost["params"] == 2 * 27 + 2 + 2 * 2 + 2 * 2
    assert cost["flops"] == pytest.approx(pruner.flops["0"] / 2 + pruner.flops["3"] / 2)
    whole = removed_cost(model, {"0": [0, 1, 2, 3]}, pruner)  # a whole layer: all of a and of b's inputs
    assert whole["params"] == 4 * 27 + 4 + 8 + 8 and whole["flops"] == pytest.approx(sum(pruner.flops.values()))
    # the physical removal of a whole layer masks it instead, but the removed cost still counts it
    assert Pruner(model, example).remove(__import__("copy").deepcopy(model), {"0": [0, 1, 2, 3]})["removed"] == 0


def test_removed_cost_grows_with_the_share_pruned_on_a_real_backbone():
    from finebench.methods.cost import forward_flops
    from finebench.methods.pruning import Pruner, removed_cost
    from finebench.methods.ranking import lowest_fraction

    model = create_backbone("efficientnet_lite0", num_classes=5, weights="random").model.eval()
    pruner = Pruner(model, torch.zeros(1, 3, 64, 64))
    assert sum(pruner.flops.values()) == pytest.approx(forward_flops(model, 64, torch.device("cpu")))
    gen = torch.Generator().manual_seed(0)
    layers = sorted(pruner.prunable())
    scores = {n: torch.rand(pruner.widths[n], generator=gen) for n in layers}
    removed = [removed_cost(model, lowest_fraction(scores, r), pruner) for r in (0.1, 0.3, 0.5, 0.75, 0.95)]
    assert all(
        a["params"] < b["params"] and a["flops"] < b["flops"] for a, b in zip(removed, removed[1:], strict=False)
    )
