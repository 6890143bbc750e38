"""Attention Branch Network: shapes across architectures and input sizes, the (1 + M) mechanism, the loss, and the
split of a timm backbone that it relies on."""

import pytest
import torch
import torch.nn.functional as F

from finebench.backbones import create_backbone
from finebench.backbones.stages import stage_map
from finebench.methods.attention_branch import (
    ABNOutput,
    AttentionBranchNet,
    abn_loss,
    apply_attention,
    split_backbone,
)

K = 5


def net(arch, **kw):
    torch.manual_seed(0)
    model = create_backbone(arch, K, "random").model
    return AttentionBranchNet(model, stage_map(model), K, **kw), model


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("size", [48, 75, 112])
def test_output_shapes_for_any_input_size(arch, size):
    abn, _ = net(arch)
    out = abn(torch.randn(2, 3, size, size))
    assert out.logits.shape == out.attention_logits.shape == (2, K)
    g = abn.trunk(torch.randn(2, 3, size, size))
    assert out.attention.shape == (2, 1, *g.shape[-2:])  # M has the trunk output's size (stride-1 branch)
    assert ((out.attention > 0) & (out.attention < 1)).all()


def test_split_after_the_second_to_last_stage():
    abn, model = net("test_resnet")
    assert abn.trunk_names[-1] == "layer3" and abn.last_names == ["layer4"]
    abn, model = net("test_efficientnet")
    assert split_backbone(model, stage_map(model)) == (abn.trunk_names, abn.last_names)
    assert abn.trunk_names[0] == "conv_stem" and abn.last_names[-2:] == ["conv_head", "bn2"]
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # chained trunk -> last stage -> head is the backbone itself
        assert torch.allclose(model.forward_head(abn.last(abn.trunk(x))), model(x), atol=1e-5)


def test_a_backbone_whose_modules_do_not_chain_is_refused():
    model = create_backbone("test_resnet", K, "random").model
    plain = model.forward
    model.forward = lambda x: plain(x) + 1.0  # its forward is no longer the chain of its modules
    with pytest.raises(ValueError, match="do not reproduce its forward pass"):
        AttentionBranchNet(model, stage_map(model), K)


def test_the_one_plus_m_mechanism():
    g = torch.randn(2, 3, 4, 4)
    m = torch.rand(2, 1, 4, 4)
    assert torch.allclose(apply_attention(g, m, "residual"), g + m * g)
    assert torch.allclose(apply_attention(g, m, "multiply"), m * g)
    with pytest.raises(ValueError, match="residual, multiply"):
        apply_attention(g, m, "add")


@pytest.mark.parametrize("mechanism", ["residual", "multiply"])
def test_map_reweights_the_last_stage_input(mechanism):
    abn, model = net("test_resnet", mechanism=mechanism)
    abn.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        abn.map_bn.bias.fill_(-50.0)  # sigmoid -> M = 0
        zero = abn(x)
        g = abn.trunk(x)
        assert zero.attention.max() < 1e-12
        expected = model.forward_head(abn.last(g if mechanism == "residual" else torch.zeros_like(g)))
        assert torch.allclose(zero.logits, expected, atol=1e-5)
        abn.map_bn.bias.fill_(50.0)  # M = 1
        one = abn(x)
        expected = model.forward_head(abn.last(2 * g if mechanism == "residual" else g))
        assert torch.allclose(one.logits, expected, atol=1e-5)


def test_loss_is_the_sum_of_both_branches_cross_entropies():
    from finebench.benchmark.train import train_step
    from finebench.methods.attention_branch import ABNConfig, AttentionBranch

    a, b = torch.randn(4, K), torch.randn(4, K)
    y = torch.tensor([0, 1, 2, 3])
    terms = abn_loss(ABNOutput(a, b, torch.rand(4, 1, 2, 2)), y)
    assert terms["ce"].item() == pytest.approx(F.cross_entropy(a, y).item())
    assert terms["ce_attention"].item() == pytest.approx(F.cross_entropy(b, y).item())
    # the runner trains their sum: both branches receive gradients from one step
    abn, _ = net("test_efficientnet")
    method = AttentionBranch(ABNConfig())
    optimizer = torch.optim.SGD(abn.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in abn.named_parameters()}
    train_step(method, abn, (torch.randn(4, 3, 48, 48), y), optimizer, ctx=None)
    moved = {n for n, p in abn.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("attention_head") for n in moved) and any(n.startswith("map_conv") for n in moved)
    assert any(n.startswith("backbone.classifier") for n in moved) and any(n.startswith("branch.0") for n in moved)
    assert method.logits(ABNOutput(a, b, None)) is a  # accuracy from the perception branch


def test_branch_init_pretrained_copies_the_last_stage_random_does_not():
    pre, model = net("test_resnet")
    rnd, _ = net("test_resnet", branch_init="random")
    src = dict(model.layer4.named_parameters())
    copied = dict(pre.branch[0].named_parameters())
    assert all(torch.equal(copied["0." + n], p) for n, p in src.items())  # same weights, separate tensors
    assert all(copied["0." + n].data_ptr() != p.data_ptr() for n, p in src.items())
    fresh = dict(rnd.branch[0].named_parameters())
    convs = [n for n in src if n.endswith("conv1.weight")]
    assert convs and not any(torch.equal(fresh["0." + n], src[n]) for n in convs)
    strided = [m for m in pre.branch[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.stride == (1, 1) for m in strided)  # the branch copy runs at stride 1
    assert any(m.stride == (2, 2) for m in model.layer4.modules() if isinstance(m, torch.nn.Conv2d))


def test_map_kernel_and_bad_settings():
    assert net("test_resnet", map_kernel=1)[0].map_conv.kernel_size == (1, 1)
    assert net("test_resnet")[0].map_conv.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="map_kernel"):
        net("test_resnet", map_kernel=5)
    with pytest.raises(ValueError, match="branch_init 'zeros'"):
        net("test_resnet", branch_init="zeros")


def test_branch_layout_and_attention_logits_by_global_average_pooling():
    abn, _ = net("test_efficientnet")
    kinds = [type(m).__name__ for m in abn.branch]
    assert kinds == ["Sequential", "BatchNorm2d", "Conv2d", "BatchNorm2d", "ReLU"]
    conv = abn.branch[2]
    assert conv.kernel_size == (1, 1) and conv.out_channels == K and abn.branch[1].num_features == conv.in_channels
    assert abn.attention_head.kernel_size == (1, 1) and (
        abn.attention_head.in_channels,
        abn.attention_head.out_channels,
    ) == (K, K)
    assert abn.map_conv.out_channels == 1 and abn.map_bn.num_features == 1
    abn.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = abn.branch(abn.trunk(x))
        out = abn(x)
    assert torch.allclose(out.attention_logits, abn.attention_head(a).mean((2, 3)), atol=1e-6)
    assert torch.allclose(out.attention, torch.sigmoid(abn.map_bn(abn.map_conv(a))), atol=1e-6)
