"""The regularised fine-tuning baselines (L2-SP, DELTA, BSS, LwF, Co-Tuning, StochNorm, Bi-Tuning): each term by hand
on small tensors against its paper's equation (value and gradient, and a case where it must vanish), then each
method through the runner: what trains, what is charged, what is deployed, and that a run resumes exactly."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from finebench.backbones import create_pretrained
from finebench.backbones.weights import WeightsError
from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import run_suite
from finebench.cli import main
from finebench.methods.bi_tuning import (
    cce_loss,
    ccl_loss,
    enqueue,
    momentum_update,
    queue_logits,
    uniform_kl,
    with_one,
)
from finebench.methods.bss import bss_penalty
from finebench.methods.co_tuning import category_relationship, soft_cross_entropy
from finebench.methods.delta import (
    chain_start,
    channel_weights,
    feature_distance,
    last_conv,
    loss_increases,
    network_tail,
    weighted_feature_distance,
)
from finebench.methods.l2_sp import kernels, l2, l2_sp
from finebench.methods.lwf import lwf_loss
from finebench.methods.pretrained import pooled_features
from finebench.methods.stochnorm import make_plain, make_stochastic, stoch_batch_norm
from finebench.results.store import ResultStore

NEW = ["l2-sp", "delta", "bss", "lwf", "co-tuning", "stochnorm", "bi-tuning"]


# --- L2-SP (Li et al. 2018, eq. 4: alpha/2 ||w_S - w0_S||^2 + beta/2 ||w_Sbar||^2) ---------------------------------
def test_l2_sp_value_and_gradient_by_hand_and_zero_at_the_pretrained_point():
    w = torch.tensor([1.0, 2.0, -1.0], requires_grad=True)
    w0 = torch.tensor([0.5, 2.0, 1.0])
    alpha = 0.1
    term = alpha / 2 * l2_sp({"w": w}, {"w": w0})
    assert term.item() == pytest.approx(0.05 * (0.25 + 0 + 4))  # alpha/2 * 4.25
    term.backward()
    assert torch.allclose(w.grad, torch.tensor([0.05, 0.0, -0.2]))  # alpha * (w - w0)
    at_start = w0.clone().requires_grad_(True)
    zero = l2_sp({"w": at_start}, {"w": w0})
    zero.backward()
    assert zero.item() == 0 and at_start.grad.abs().sum() == 0
    head = torch.tensor([3.0, 4.0], requires_grad=True)
    (0.01 / 2 * l2([head])).backward()
    assert l2([head]).item() == 25 and torch.allclose(head.grad, 0.01 * head.detach())


def test_l2_sp_pulls_only_kernels_by_default_as_the_authors_code():
    model = timm.create_model("test_resnet", num_classes=3)
    names = [n for n, _ in model.named_parameters()]
    chosen = kernels(model, names)
    modules = dict(model.named_modules())
    assert chosen and all(n.endswith(".weight") for n in chosen)
    assert all(isinstance(modules[n.rsplit(".", 1)[0]], (nn.Conv2d, nn.Linear)) for n in chosen)
    assert not any(isinstance(modules[n.rsplit(".", 1)[0]], nn.BatchNorm2d) for n in chosen)
    assert len(chosen) < len(names)


# --- DELTA (Li et al. 2019, eq. 3-4: sum_j W_j ||FM_j(w) - FM_j(w*)||^2, W = softmax of the loss increases) ---------
def test_delta_weighted_distance_value_and_gradient_by_hand():
    fs = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]]], requires_grad=True)  # (B=1, C=2, h=1, w=2)
    ft = torch.zeros(1, 2, 1, 2)
    w = torch.tensor([0.25, 0.75])
    d = weighted_feature_distance(fs, ft, w)
    # channel 0: mean over positions (1 + 9) / 2 = 5; 1/2 * C * W_0 * 5 = 0.5 * 2 * 0.25 * 5
    assert d.item() == pytest.approx(1.25)
    d.backward()
    # d/dfs = 1/2 * C * W_c * 2 (fs - ft) / (h w)
    assert torch.allclose(fs.grad, torch.tensor([[[[0.25, 0.75]], [[0.0, 0.0]]]]))
    same = fs.detach().clone().requires_grad_(True)
    zero = weighted_feature_distance(same, fs.detach(), w)
    zero.backward()
    assert zero.item() == 0 and same.grad.abs().sum() == 0
    assert feature_distance(fs.detach(), ft).item() == pytest.approx(0.5 * 10)  # TLlib's unweighted variant
    # over the batch's images: the authors' code sums (two copies of the image count twice), the paper's per-example
    # term averages (the method's default)
    two, zeros = fs.detach().repeat(2, 1, 1, 1), ft.repeat(2, 1, 1, 1)
    assert weighted_feature_distance(two, zeros, w, "sum").item() == 2.5
    assert weighted_feature_distance(two, zeros, w, "mean").item() == 1.25
    assert feature_distance(two, zeros, "mean").item() == pytest.approx(0.5 * 10)


def test_delta_channel_weights_are_a_softmax_of_z_scored_increases():
    inc = torch.tensor([1.0, 2.0, 3.0])
    z = torch.tensor([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])  # (x - 2) / population std sqrt(2/3)
    assert torch.allclose(channel_weights(inc), F.softmax(z / 5, dim=0))
    assert torch.allclose(channel_weights(torch.full((4,), 0.3)), torch.full((4,), 0.25))  # no information: uniform


@pytest.mark.parametrize("arch", ["test_resnet", "test_efficientnet"])
@pytest.mark.parametrize("taps", ["conv", "output"])
def test_delta_channel_removal_from_the_block_on_equals_the_whole_network_with_the_channel_zeroed(arch, taps):
    torch.manual_seed(0)
    net = timm.create_model(arch, num_classes=5).eval()
    head = nn.Linear(net.num_features, 3).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    group = net.feature_info[2]["module"]
    tap = last_conv(net, group) if taps == "conv" else group
    start = chain_start(net, tap)
    assert start is not None and network_tail(net, start) is not None  # the fast path is taken, not the fallback
    assert (start == tap) == (taps == "output")
    module = dict(net.named_modules())[tap]
    if taps == "conv":
        assert isinstance(module, nn.Conv2d) and module.bias is None  # before its BatchNorm: zeroing = no filter
    fast = loss_increases(net, head, tap, x, y)
    with torch.no_grad():
        base = F.cross_entropy(head(pooled_features(net, x)), y)
        for j in (0, len(fast) // 2, len(fast) - 1):
            handle = module.register_forward_hook(lambda m, a, o, j=j: o.index_fill(1, torch.tensor([j]), 0.0))
            slow = F.cross_entropy(head(pooled_features(net, x)), y) - base
            handle.remove()
            assert fast[j].item() == pytest.approx(slow.item(), abs=1e-5)
    assert fast.abs().sum() > 0


def test_delta_taps_the_authors_convolutions_on_resnet():
    net = timm.create_model("resnet50", num_classes=3)
    taps = [last_conv(net, net.feature_info[i]["module"]) for i in range(1, 5)]
    assert taps == ["layer1.2.conv3", "layer2.3.conv3", "layer3.5.conv3", "layer4.2.conv3"]


@pytest.mark.parametrize("reference_bn", ["batch", "moving"])
def test_delta_term_is_zero_at_the_pretrained_point_unless_the_reference_uses_moving_statistics(reference_bn):
    from finebench.backbones.stages import stage_map
    from finebench.methods.base import Context
    from finebench.methods.cost import BudgetMeter
    from finebench.methods.delta import Delta, DeltaConfig

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3)
    with torch.no_grad():  # moving statistics unlike any batch's, as pretrained ones are on new data
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    spec = type("Spec", (), {"seed": 0, "train": type("T", (), {"batch_size": 4, "resolution": 32})})()
    ctx = Context(spec, 3, stage_map(model), BudgetMeter(1, 4), torch.device("cpu"))
    method = Delta(DeltaConfig(attention="none", reference_bn=reference_bn))
    model = method.prepare(model, ctx).train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    term = method.losses(model, (x, y), model(x), ctx)["delta"]
    if reference_bn == "batch":
        assert term.item() == 0  # the same weights normalised the same way: nothing has moved
    else:
        assert term.item() > 0.1  # the gap between batch and moving statistics alone
    running = [m.running_mean.clone() for m in method.reference.modules() if isinstance(m, nn.BatchNorm2d)]
    method.reference(x)
    after = [m.running_mean for m in method.reference.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))  # the reference stays as it was
    assert not any(p.requires_grad for p in method.reference.parameters())


# --- BSS (Chen et al. 2019: eta * sum_{i<=k} sigma_{-i}^2 of the batch's feature matrix) ---------------------------
def test_bss_value_and_gradient_by_hand_and_zero_when_the_smallest_singular_value_is_zero():
    f = torch.zeros(3, 4)
    f[0, 0], f[1, 1], f[2, 2] = 3.0, 2.0, 1.0
    f.requires_grad_(True)
    assert bss_penalty(f, 1).item() == pytest.approx(1.0)
    assert bss_penalty(f, 2).item() == pytest.approx(5.0)
    bss_penalty(f, 1).backward()
    expect = torch.zeros(3, 4)
    expect[2, 2] = 2.0  # d sigma_min^2 / dF = 2 sigma u v^T
    assert torch.allclose(f.grad, expect, atol=1e-5)
    rank2 = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)  # rows 1, 2 dependent
    zero = bss_penalty(rank2, 1)
    zero.backward()
    assert zero.item() == pytest.approx(0.0, abs=1e-10) and torch.isfinite(rank2.grad).all()
    assert rank2.grad.abs().max() < 1e-5


# --- LwF (Li & Hoiem, eq. 2-3: -sum y'_o log yhat'_o, y' = y^(1/T) normalised = softmax(logits / T)) ----------------
def test_lwf_term_value_and_gradient_by_hand_and_no_pull_when_the_old_head_agrees():
    recorded = torch.tensor([[2.0, 0.0]])
    old = torch.zeros(1, 2, requires_grad=True)
    loss = lwf_loss(old, recorded, temperature=2.0)
    t = torch.tensor([math.e / (math.e + 1), 1 / (math.e + 1)])  # softmax([2, 0] / 2)
    assert loss.item() == pytest.approx(math.log(2))  # -(t0 + t1) log 1/2
    y = F.softmax(recorded, dim=1)[0]  # the paper's eq. 3 form: y^(1/T) renormalised, y the probabilities
    assert torch.allclose(y**0.5 / (y**0.5).sum(), t)
    loss.backward()
    assert torch.allclose(old.grad[0], (torch.tensor([0.5, 0.5]) - t) / 2)  # (softmax(s/T) - y') / T, no T^2
    agree = recorded.clone().requires_grad_(True)
    lwf_loss(agree, recorded).backward()
    assert agree.grad.abs().max() < 1e-7


# --- Co-Tuning (You et al. 2020: p(y_s | y_t) by the direct approach; lambda * CE(p(y_s | y_t), C_s(F(x)))) ---------
def test_co_tuning_relationship_and_term_by_hand():
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    rel = category_relationship(probs, torch.tensor([0, 0, 1]), num_classes=3)
    assert torch.allclose(rel, torch.tensor([[0.75, 0.25], [0.0, 1.0], [0.5, 0.5]]))  # class 2 has no image: mean
    logits = torch.zeros(1, 2, requires_grad=True)
    term = soft_cross_entropy(logits, rel[[0]])
    assert term.item() == pytest.approx(math.log(2))
    term.backward()
    assert torch.allclose(logits.grad, torch.tensor([[-0.25, 0.25]]))  # softmax - target
    fit = torch.log(torch.tensor([[0.75, 0.25]])).requires_grad_(True)
    soft_cross_entropy(fit, rel[[0]]).backward()
    assert fit.grad.abs().max() < 1e-6  # the source head already predicts the translated label


# --- StochNorm (Kou et al. 2020: z = (1 - s) BN_moving(x) + s BN_batch(x), s ~ Bernoulli(p) per channel) ------------
def test_stochnorm_mask_chooses_batch_or_moving_statistics_per_channel():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    bn = nn.BatchNorm2d(3)
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(2.0)
    bn.weight.data = torch.tensor([1.0, 2.0, 0.5])
    reference = nn.BatchNorm2d(3)
    reference.load_state_dict(bn.state_dict())
    moving = F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, False, 0.0, bn.eps)
    batch = reference.train()(x)  # plain training BN: batch statistics, running statistics updated
    z = stoch_batch_norm(x, bn, torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(z[:, 0], batch[:, 0], atol=1e-6) and torch.allclose(z[:, 2], batch[:, 2], atol=1e-6)
    assert torch.allclose(z[:, 1], moving[:, 1], atol=1e-6)  # s = 0: the moving statistics from before the batch
    # the running statistics are updated from the batch as by plain BatchNorm, whatever the mask
    assert torch.allclose(bn.running_mean, reference.running_mean)
    assert torch.allclose(bn.running_var, reference.running_var)
    assert int(bn.num_batches_tracked) == 1
    # gradients: each channel's as its own branch's (the moving branch with the statistics from before the batch)
    xg = x.clone().requires_grad_(True)
    probe = nn.BatchNorm2d(3)
    probe.load_state_dict({**reference.state_dict(), "running_mean": torch.full((3,), 0.5),
                           "running_var": torch.full((3,), 2.0), "weight": bn.weight.detach()})  # fmt: skip
    g = torch.randn_like(x)
    (stoch_batch_norm(xg, probe, torch.tensor([1.0, 0.0, 1.0])) * g).sum().backward()
    x_batch, x_moving = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    w = bn.weight.detach()
    (F.batch_norm(x_batch, None, None, w, bn.bias.detach(), True, 0.0, bn.eps) * g).sum().backward()
    (F.batch_norm(x_moving, torch.full((3,), 0.5), torch.full((3,), 2.0), w, bn.bias.detach(), False, 0.0, bn.eps)
     * g).sum().backward()  # fmt: skip
    assert torch.allclose(xg.grad[:, [0, 2]], x_batch.grad[:, [0, 2]], atol=1e-6)
    assert torch.allclose(xg.grad[:, 1], x_moving.grad[:, 1], atol=1e-6)  # = g * gamma / sqrt(2 + eps)
    assert torch.allclose(x_moving.grad[:, 1], g[:, 1] * 2.0 / math.sqrt(2.0 + bn.eps), atol=1e-6)


def test_stochnorm_layers_keep_their_class_extras_and_deploy_as_the_plain_network():
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", num_classes=4)  # BatchNormAct2d: BN then activation
    keys = list(net.state_dict())
    x = torch.randn(4, 3, 32, 32)
    plain_eval = net.eval()(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    n = make_stochastic(net, p=1.0)
    assert n == sum(1 for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)) and n > 0
    assert list(net.state_dict()) == keys
    assert torch.allclose(net.eval()(x), plain_eval)  # evaluation: moving statistics, as plain BN
    out_p1 = net.train()(x)  # p = 1: always the batch's statistics, as plain BN in training
    net.load_state_dict(state)
    plain = make_plain(net)
    assert torch.allclose(out_p1, plain.train()(x), atol=1e-5)
    assert not any(type(m).__name__.startswith("Stoch") for m in plain.modules())
    net.load_state_dict(state)
    make_stochastic(net, p=0.0)  # p = 0: always the moving statistics (those from before the batch)
    assert torch.allclose(net.train()(x), plain_eval, atol=1e-5)


# --- Bi-Tuning (Zhong et al. 2020, its implementation: CCL on projections, CCE on classifier rows) ------------------
def test_bi_tuning_terms_by_hand():
    # uniform target on the first K + 1 of 1 + C*K logits; K = 1, C = 2: three equal logits -> log(3 / 2)
    assert uniform_kl(torch.zeros(2, 3), k=1).item() == pytest.approx(math.log(1.5))
    assert uniform_kl(torch.tensor([[0.0, 0.0, -1e4]]), k=1).item() == pytest.approx(0.0, abs=1e-6)  # all on positives
    scores = torch.arange(4.0).view(1, 2, 2)  # (N=1, C=2, K=2): class 0 keys 0, 1; class 1 keys 2, 3
    logits = queue_logits(torch.tensor([9.0]), scores, torch.tensor([1]), temperature=0.5)
    assert logits.tolist() == [[18.0, 4.0, 6.0, 0.0, 2.0]]  # [current, own class's keys, the others'] / T
    # CCL's gradient reaches the query projection; CCE's reaches the features but not the classifier
    z_q = F.normalize(torch.randn(3, 4), dim=1).requires_grad_(True)
    queue = F.normalize(torch.randn(4, 2, 2), dim=0)
    ccl_loss(z_q, F.normalize(torch.randn(3, 4), dim=1), queue, torch.tensor([0, 1, 1]), 0.07).backward()
    assert z_q.grad.abs().sum() > 0
    h = torch.randn(3, 5, requires_grad=True)
    w = torch.randn(2, 5, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    qh = F.normalize(torch.randn(6, 2, 2), dim=0)
    cce_loss(h, w, b, qh, torch.tensor([0, 1, 1]), 0.07).backward()
    assert h.grad.abs().sum() > 0 and w.grad is None and b.grad is None
    assert torch.allclose(with_one(torch.tensor([[3.0]])), torch.tensor([[0.9486833, 0.3162278]]))


def test_bi_tuning_queues_are_class_rings_and_the_key_encoder_a_momentum_average():
    qz, qh = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    pointer = torch.zeros(2, dtype=torch.long)
    enqueue([qz, qh], pointer, [torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[4.0], [5.0], [6.0]])],
            torch.tensor([0, 0, 0]))  # fmt: skip
    assert qz[0, 0].tolist() == [3.0, 2.0] and qh[0, 0].tolist() == [6.0, 5.0]  # the third key overwrote the first
    assert pointer.tolist() == [1, 0] and qz[0, 1].tolist() == [0.0, 0.0]
    key, query = {"w": torch.tensor([1.0])}, {"w": torch.tensor([3.0])}
    momentum_update(key, query, 0.9)
    assert key["w"].item() == pytest.approx(1.2)


# --- the pretrained network's own head (LwF, Co-Tuning) ------------------------------------------------------------
def test_a_weights_file_without_its_classifier_is_refused_before_training(tmp_path, capsys):
    state = timm.create_model("test_resnet").state_dict()
    full, headless = tmp_path / "full.pt", tmp_path / "headless.pt"
    torch.save(state, full)
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, headless)
    assert create_pretrained("test_resnet", str(full)).model.get_classifier().out_features == 1000
    with pytest.raises(WeightsError, match=r"headless\.pt has no classifier \(fc\.weight\)"):
        create_pretrained("test_resnet", str(headless))
    for method in ("lwf", "co-tuning"):
        rc = main(["run", "--methods", method, "--dataset", "synthetic:4x12", "--backbone", "test_resnet",
                   "--weights", str(headless), "--epochs", "2", "--resolution", "32", "--quiet",
                   "--out", str(tmp_path / "res")])  # fmt: skip
        err = capsys.readouterr().err
        assert rc != 0 and f"method '{method}'" in err and "has no classifier (fc.weight)" in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "res" / "runs").exists() or not list((tmp_path / "res" / "runs").iterdir())


# --- through the runner ----------------------------------------------------------------------------------------------
SUITE = {"methods": ",".join(NEW), "datasets": "synthetic:4x12", "backbones": "test_resnet", "weights": "random",
         "epochs": 3, "resolution": 32, "batch_size": 8, "seeds": [0]}  # fmt: skip


def numbers(value):
    from test_resume import numbers as strip

    return strip(value)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    result = run_suite(build_suite(SUITE), out, None, "cpu", Reporter(quiet=True))
    assert not result.failed
    return {r.spec["method"]: r for r in ResultStore(out).records()}


def test_each_method_trains_charges_and_deploys_what_it_says(whole):
    assert sorted(whole) == sorted(NEW)
    plain = sum(p.numel() for p in timm.create_model("test_resnet", num_classes=4).parameters())
    for name, r in whole.items():
        terms = set(r.epochs[-1]["losses"])
        expected = {"l2-sp": {"ce", "l2_sp", "l2_head"}, "delta": {"ce", "delta", "l2_head"}, "bss": {"ce", "bss"},
                    "lwf": {"ce", "lwf"}, "co-tuning": {"ce", "co_tuning"}, "stochnorm": {"ce"},
                    "bi-tuning": {"ce", "ccl", "cce"}}[name]  # fmt: skip
        assert terms == expected, name  # every term logged under its own name
        assert r.params["deployed"] == plain, name  # the plain network: extra heads removed, frozen copies never in
        assert r.params["total"] >= plain and r.cost["train_flops"] > 0
    for name in ("l2-sp", "delta", "bss", "stochnorm"):
        assert whole[name].params["total"] == plain  # no frozen copy counted, nothing added
    # the source head (1000 ImageNet-shaped classes of test_resnet) and the projector train, then are removed
    assert whole["lwf"].params["trainable"] == plain + 96 * 1000 + 1000 == whole["co-tuning"].params["trainable"]
    assert whole["bi-tuning"].params["trainable"] == plain + 96 * 128 + 128
    charges = {n: set(r.cost["charges"]) for n, r in whole.items()}
    assert "channel-attention" in charges["delta"] and "relationship" in charges["co-tuning"]
    att = whole["delta"].cost["charges"]["channel-attention"]
    assert att["flops"] > 0 and att["samples"] > 0 and att["seconds"] > 0
    rel = whole["co-tuning"].cost["charges"]["relationship"]
    assert rel["samples"] == whole["co-tuning"].dataset["sizes"]["train"] and rel["flops"] > 0
    # the frozen reference's forward is inside the step: DELTA's and LwF's steps cost more than BSS's
    per = {n: max(r.cost["train_flops_per_sample"].values()) for n, r in whole.items()}
    assert per["delta"] > 1.2 * per["stochnorm"] and per["lwf"] > 1.2 * per["stochnorm"]
    assert per["bi-tuning"] > 1.2 * per["stochnorm"]  # the key encoder's forward
    assert per["lwf"] > 1.2 * whole["lwf"].cost["train_flops_per_sample"]["warm-up"]  # the warm-up: head only
    assert whole["lwf"].epochs[0]["stage"] == "warm-up" and whole["lwf"].epochs[1]["stage"] == "lwf"
    assert set(whole["lwf"].epochs[0]["losses"]) == {"ce"}  # the warm-up: L_old is constant and not computed


def test_a_run_interrupted_mid_epoch_resumes_to_the_uninterrupted_numbers(tmp_path, whole, monkeypatch):
    """Each method fails in its second epoch (after one checkpoint) and is resumed: the queues, key encoder,
    relationship and channel weights it carries come back, so every number matches the run that was not stopped."""
    import finebench.benchmark.runner as runner

    per_epoch = whole["bss"].cost["steps"] // 3
    steps = {"n": 0}
    original = runner.Run.execute

    def execute(self):
        steps["n"] = 0
        return original(self)

    def crash_point(point):
        if point == "step":
            steps["n"] += 1
            if steps["n"] == per_epoch + 1:  # the first step of epoch 2
                raise RuntimeError("power cut")

    monkeypatch.setattr(runner.Run, "execute", execute)
    monkeypatch.setattr(runner, "crash_point", crash_point)
    suite = build_suite(SUITE)
    first = run_suite(suite, tmp_path, None, "cpu", Reporter(quiet=True))
    assert len(first.failed) == len(NEW)
    monkeypatch.undo()
    from finebench.methods.co_tuning import CoTuning
    from finebench.methods.delta import Delta

    passes = []

    def counted(cls, name):
        real = getattr(cls, name)

        def wrapper(self, *args):
            passes.append(name)
            return real(self, *args)

        monkeypatch.setattr(cls, name, wrapper)

    counted(Delta, "channel_attention")
    counted(CoTuning, "relationship")
    second = run_suite(suite, tmp_path, None, "cpu", Reporter(quiet=True))
    assert not second.failed
    assert passes == []  # the passes before training are not made again: their results came from the checkpoint
    resumed = {r.spec["method"]: r for r in ResultStore(tmp_path).records()}
    for name in NEW:
        assert resumed[name].cost["resumes"][0]["after_epoch"] == 1, name
        assert numbers(resumed[name].to_dict()) == numbers(whole[name].to_dict()), name
