"""The shared filter ranking and pruning machinery."""

import torch
from torch import nn

from finebench.backbones import create_backbone
from finebench.methods.pruning import conv_bn_pairs, lowest_fraction, prune_channels, ranked_filters


def test_network_and_layer_wise_selection_by_hand():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0, 7.0]), "b": torch.tensor([2.0, 9.0])}
    # network-wise, 50 % of 6 filters: the 3 lowest overall (1.0 a1, 2.0 b0, 3.0 a2)
    assert lowest_fraction(scores, 0.5) == {"a": [1, 2], "b": [0]}
    # layer-wise, 50 % of each layer
    assert lowest_fraction(scores, 0.5, per_layer=True) == {"a": [1, 2], "b": [0]}
    assert lowest_fraction(scores, 0.25, per_layer=True) == {"a": [1], "b": []}  # round(0.5) = 0 of b
    assert lowest_fraction(scores, 0.25) == {"a": [1], "b": [0]}  # round(1.5) = 2 lowest overall
    assert [e[1:] for e in ranked_filters(scores)][:3] == [("a", 1), ("b", 0), ("a", 2)]


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
