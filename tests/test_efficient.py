"""Parameter-efficient and schedule baselines (BitFit, BN-only, SSF, LoRA through peft, LP-FT, WiSE-FT, surgical
cuts) and the learning-rate options every method takes (head_lr_scale, layer_decay): the maths by hand against the
papers' equations, the merges on the real Lite0, then every method through the runner (what trains, what is
charged, what is deployed) and an interrupted run resuming exactly."""

import math

import numpy as np
import pytest
import timm
import torch
from torch import nn

from finebench.backbones import create_backbone
from finebench.backbones.stages import stage_map
from finebench.benchmark.progress import Reporter
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand, run_suite
from finebench.benchmark.train import lr_groups
from finebench.cli import main
from finebench.methods.level_of_cut import cut_parameters, stage_parameters
from finebench.methods.lora import add_lora, lora_targets, merge_lora
from finebench.methods.lp_ft import choose_alpha, interpolate, probe_epochs
from finebench.methods.selective import bias_parameters, norm_parameters
from finebench.methods.ssf import add_ssf, merge_affine, merge_ssf, ssf, ssf_targets
from finebench.results.store import ResultStore

NEW = ["cut-stage", "bitfit", "bn-only", "ssf", "lora", "lp-ft", "wise-ft"]


def lite0(weights="default"):
    return create_backbone("efficientnet_lite0", 17, weights).model.eval()


def real_images(root, n=4, res=112):
    """n Flowers-17 images at res px, normalised as Lite0 expects (random pixels when the real data is absent)."""
    if root is None:
        return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(0))
    from finebench.datasets import build_dataset

    data = build_dataset("flowers17", root)
    pix = np.stack([data.read(i * 80, res, "center-crop", "bilinear") for i in range(n)])
    x = torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255
    return (x - 0.5) / 0.5  # Lite0's mean and std are 0.5


@pytest.fixture(scope="module")
def images(shared_root):
    return real_images(shared_root)


# --- BitFit and BN-only: which parameters -------------------------------------------------------------------------
def test_bitfit_takes_every_bias_and_bn_only_every_batchnorm_affine_parameter():
    model = timm.create_model("test_resnet", num_classes=4)
    bn = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    biased = [n for n, m in model.named_modules() if getattr(m, "bias", None) is not None]
    assert sorted(bias_parameters(model)) == sorted(f"{n}.bias" for n in biased)
    assert sorted(norm_parameters(model)) == sorted([f"{n}.weight" for n in bn] + [f"{n}.bias" for n in bn])
    assert not any(n.endswith(".weight") and "bn" not in n for n in bias_parameters(model))  # no conv kernel


# --- SSF (Lian et al. 2022): eq. 1 y = gamma * x + beta; eq. 2-3 the merge -------------------------------------------
def test_ssf_scale_and_shift_by_hand():
    x = torch.tensor([[[[3.0]], [[5.0]]]])  # 1 x 2 channels x 1 x 1
    y = ssf(x, torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0]))
    assert y.flatten().tolist() == [7.0, 1.5]  # 2*3+1, 0.5*5-1
    feats = torch.tensor([[3.0, 5.0]])  # features: the last dim is the channel
    assert ssf(feats, torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0])).tolist() == [[7.0, 1.5]]


def test_ssf_merge_into_the_preceding_layer_by_hand():
    w, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 1.0])
    scale, shift = torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0])
    w2, b2 = merge_affine(w, b, scale, shift)
    assert w2.tolist() == [[2.0, 4.0], [1.5, 2.0]] and b2.tolist() == [3.0, -0.5]  # eq. 2-3
    x = torch.tensor([[1.0, -2.0]])
    assert torch.allclose(ssf(x @ w.T + b, scale, shift), x @ w2.T + b2)


def test_ssf_merged_lite0_equals_the_unmerged_one_and_is_the_plain_network(images):
    """On the real Lite0 (shipped ImageNet weights) and real images: SSF after every BatchNorm, perturbed far from its
    init, changes the outputs; merged, the plain network computes the same outputs within float tolerance."""
    model = lite0()
    plain_out = model(images)
    plain_params = sum(p.numel() for p in model.parameters())
    head = set(stage_map(model).head)
    targets = ssf_targets(model, head)
    assert len(targets) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # Lite0: every BN, no biases
    added = add_ssf(model, targets, 0.2, torch.Generator().manual_seed(0))
    assert len(added) == 2 * len(targets) and all(n.rsplit(".", 1)[1] in ("ssf_scale", "ssf_shift") for n in added)
    with torch.no_grad():
        unmerged = model(images)
    assert (unmerged - plain_out).abs().max() > 0.1  # SSF does something
    merge_ssf(model)
    assert not any(hasattr(type(m), "plain_class") for m in model.modules())  # the backbone's own classes again
    assert sum(p.numel() for p in model.parameters()) == plain_params  # no extra parameter at deployment
    assert "bn1.act" in dict(model.named_modules())  # timm's BatchNormAct2d kept its activation
    with torch.no_grad():
        merged = model(images)
    assert torch.allclose(merged, unmerged, rtol=1e-4, atol=1e-4), (merged - unmerged).abs().max()


# --- LoRA through peft (Hu et al. 2022): eq. 3 h = W0 x + (alpha / r) B A x ------------------------------------------
def test_lora_update_by_hand_and_its_merge():
    conv = nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
    model = nn.Sequential(conv)
    add_lora(model, ["0"], rank=1, alpha=2.0, dropout=0.0)
    layer = model[0]
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
        layer.lora_B["default"].weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
    x = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    # W0 x = [1, 2]; (alpha / r) B A x = 2 * [1, 0] * (1 + 2) = [6, 0]
    assert model(x).flatten().tolist() == [7.0, 2.0]
    merge_lora(model)
    assert type(model[0]) is nn.Conv2d  # the base layer back in its place
    assert model[0].weight.flatten().tolist() == [3.0, 2.0, 0.0, 1.0]  # W0 + 2 B A
    assert model(x).flatten().tolist() == [7.0, 2.0]


def test_lora_merged_lite0_equals_the_unmerged_one_and_is_the_plain_network(images):
    model = lite0()
    plain_params = sum(p.numel() for p in model.parameters())
    head = set(stage_map(model).head)
    names = lora_targets(model, ("conv", "linear"), head)
    modules = dict(model.named_modules())
    assert names and all(modules[n].groups == 1 for n in names)  # depthwise convolutions: not adapted
    assert "classifier" not in names
    assert len(names) == sum(isinstance(m, nn.Conv2d) and m.groups == 1 for m in model.modules())
    plain_out = model(images)
    torch.manual_seed(0)  # peft draws A from the global generator
    add_lora(model, names, rank=8, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        assert torch.allclose(model(images), plain_out, atol=1e-5)  # B = 0: the start is the pretrained network
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(n)))
        unmerged = model(images)
    assert (unmerged - plain_out).abs().max() > 0.1
    merge_lora(model)
    assert sum(p.numel() for p in model.parameters()) == plain_params
    assert not any(".lora_" in n or "base_layer" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        merged = model(images)
    assert torch.allclose(merged, unmerged, rtol=1e-4, atol=1e-4), (merged - unmerged).abs().max()


def test_lora_targets_by_kind_and_by_module_name():
    model = lite0("random")
    head = set(stage_map(model).head)
    pointwise = lora_targets(model, ("pointwise",), head)
    assert "conv_stem" not in pointwise and "conv_stem" in lora_targets(model, ("conv",), head)  # the stem is 3x3
    assert lora_targets(model, ("linear",), head) == []  # Lite0's only linear layer is the classifier
    block6 = lora_targets(model, (r"blocks\.6\..*",), head)
    assert block6 and all(n.startswith("blocks.6.") for n in block6)
    assert "blocks.6.0.conv_dw" not in block6  # grouped: never a target, even by name


def test_lora_adapts_exactly_the_named_modules_and_no_dilated_convolution():
    from collections import OrderedDict

    inner = nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 4, 1), dilated=nn.Conv2d(4, 4, 3, padding=2, dilation=2)))
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 1), block=inner))
    assert lora_targets(model, ("conv",), set()) == ["conv", "block.conv"]  # not the dilated one
    assert lora_targets(model, ("conv",), {"block.conv.weight"}) == ["conv"]  # a head is never a target
    add_lora(model, ["conv"], rank=2, alpha=2.0, dropout=0.0)
    assert type(model.block.conv) is nn.Conv2d  # a name ending in a target's is not that target (peft's suffix rule)
    assert type(model.conv) is not nn.Conv2d


def test_lora_targets_that_match_nothing_are_refused_before_training(tmp_path, capsys):
    code = main(["run", "--methods", "lora", "--dataset", "synthetic:4x4", "--backbone", "test_resnet", "--weights",
                 "random", "--epochs", "1", "--resolution", "32", "--out", str(tmp_path / "r"),
                 "method_config.lora.targets=nothing\\.here"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "method_config.lora.targets=nothing\\.here" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "runs").exists() or not list((tmp_path / "r" / "runs").glob("*.json"))


# --- LP-FT and WiSE-FT (Wortsman et al. 2022, eq. 1: theta_alpha = (1 - alpha) theta_0 + alpha theta_1) ---------------
def test_wise_ft_deploys_the_selected_model_when_there_is_nothing_to_interpolate():
    from types import SimpleNamespace

    from finebench.methods.lp_ft import WiseFT, WiseFTConfig

    model = timm.create_model("test_resnet", num_classes=4)
    probe = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = SimpleNamespace(state={"probe_weights": probe}, stages=stage_map(model), log=None, validate=None)
    with torch.no_grad():
        model.fc.weight.add_(1.0)  # only the classifier moved: the best epoch was in the probe phase
    method = WiseFT(WiseFTConfig())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert method.finalize(model, ctx) is model and "probe phase" in method.skipped  # validate is never called
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert method.extras(model, ctx)["wise_ft"]["alpha"] is None
    ctx.state = {}  # a time budget stopped training within the probe
    method.finalize(model, ctx)
    assert "before the probe phase ended" in method.skipped


def test_ssf_after_batchnorm_in_training_mode_is_batchnorm_then_scale_and_shift():
    from finebench.methods.ssf import ssf_class

    bn = nn.BatchNorm2d(2).train()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([2.0, 3.0]))
        bn.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    reference = nn.BatchNorm2d(2).train()
    reference.load_state_dict(bn.state_dict())
    expected = ssf(reference(x), torch.tensor([0.5, 2.0]), torch.tensor([1.0, 0.0]))
    bn.register_parameter("ssf_scale", nn.Parameter(torch.tensor([0.5, 2.0])))
    bn.register_parameter("ssf_shift", nn.Parameter(torch.tensor([1.0, 0.0])))
    bn.__class__ = ssf_class(nn.BatchNorm2d)
    assert torch.allclose(bn(x), expected, atol=1e-6)
    assert torch.allclose(bn.running_mean, reference.running_mean) and int(bn.num_batches_tracked) == 1


def test_probe_share_of_the_budget():
    assert probe_epochs(4, 0.5) == 2 and probe_epochs(10, 0.3) == 3
    assert probe_epochs(2, 0.9) == 1 and probe_epochs(2, 0.1) == 1  # each phase gets at least one epoch
    with pytest.raises(ValueError, match="at least 2 epochs"):
        probe_epochs(1, 0.5)


def test_wise_ft_interpolation_by_hand():
    theta_0 = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    theta_1 = {"w": torch.tensor([1.0, 4.0]), "n": torch.tensor(7)}
    mixed = interpolate(theta_0, theta_1, 0.25)
    assert mixed["w"].tolist() == [0.25, 2.5] and int(mixed["n"]) == 7  # counters come from the fine-tuned end
    assert interpolate(theta_0, theta_1, 0.0)["w"].tolist() == [0.0, 2.0]
    assert interpolate(theta_0, theta_1, 1.0)["w"].tolist() == [1.0, 4.0]


def test_wise_ft_alpha_is_the_best_on_val_ties_to_the_lower_loss_then_the_larger_alpha():
    scores = {0.0: {"top1": 50, "loss": 1.0}, 0.5: {"top1": 60, "loss": 0.9}, 1.0: {"top1": 60, "loss": 0.8}}
    assert choose_alpha(scores, "top1") == 1.0
    scores[0.5]["loss"] = 0.8
    assert choose_alpha(scores, "top1") == 1.0
    scores[0.5]["top1"] = 61
    assert choose_alpha(scores, "top1") == 0.5


# --- surgical cuts (Lee et al. 2023) and the learning-rate options --------------------------------------------------
def test_cut_stage_trains_exactly_one_stage_and_the_head():
    stages = stage_map(timm.create_model("test_resnet", num_classes=4))
    n = len(stages.stages)
    for k in range(n):
        assert stage_parameters(stages, k) == frozenset(stages.stages[k] + stages.head)
    assert stage_parameters(stages, -1) == cut_parameters(stages, "last")  # the last stage alone: cut-last
    with pytest.raises(ValueError, match=f"use 0..{n - 1}"):
        stage_parameters(stages, n)


def test_layer_decay_groups_are_timms_and_the_head_gets_its_scale():
    from timm.optim import param_groups_layer_decay

    model = timm.create_model("test_resnet", num_classes=4)
    head = stage_map(model).head
    groups = lr_groups(model, list(model.parameters()), head, 0.5, 10.0, 1e-4)
    ours = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    theirs = {id(p): g["lr_scale"] for g in param_groups_layer_decay(model, layer_decay=0.5) for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert set(ours) == set(theirs) == set(names)
    for i, scale in ours.items():
        assert scale == pytest.approx(theirs[i] * (10.0 if names[i] in head else 1.0)), names[i]
    assert min(ours.values()) < 0.5 * max(theirs.values())  # the earliest layers really train slower
    # both off: one group, as the optimisers of checkpoints written before these options had
    assert [(g["lr_scale"], len(g["params"])) for g in lr_groups(model, list(model.parameters()), head)] == [
        (1.0, len(names))
    ]
    only_head = lr_groups(model, list(model.parameters()), head, 1.0, 10.0)
    assert [(g["lr_scale"], len(g["params"])) for g in only_head] == [(1.0, len(names) - 2), (10.0, 2)]


def test_learning_rate_options_are_in_the_run_id_and_the_label_and_absent_at_their_defaults():
    from finebench.reports.frame import method_label

    base = {"methods": "cut-full", "datasets": "synthetic:4x4", "backbones": "test_resnet", "weights": "random"}
    default = expand(build_suite(base))[0]
    scaled = expand(build_suite(base | {"method_config": {"cut-full": {"head_lr_scale": 10}}}))[0]
    decayed = expand(build_suite(base | {"method_config": {"cut-full": {"layer_decay": 0.7}}}))[0]
    assert len({default.run_id, scaled.run_id, decayed.run_id}) == 3
    # a record written before the options existed has the default's id: its config lacks them
    older = type(default)(default.method, {"freeze_bn": False, "freeze_stages": 0}, default.dataset,
                          default.backbone, default.seed, default.train)  # fmt: skip
    assert older.run_id == default.run_id
    from finebench.methods.catalogue import MethodCatalogue
    from finebench.reports import catalogue

    catalogue.use(MethodCatalogue())
    assert method_label("cut-full", dict(default.method_config)) == "cut-full"
    assert method_label("cut-full", dict(scaled.method_config)) == "cut-full (head_lr_scale=10.0)"
    assert method_label("lora", dict(scaled.method_config) | {"layer_decay": 0.7}).endswith("layer_decay=0.7)")


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("head_lr_scale=0", "positive number"),
        ("layer_decay=1.5", "must be in (0, 1]"),
        ("head_lr_scl=10", "for every method: head_lr_scale, layer_decay"),
        ("bn=frozen", "is not one of auto, eval, train"),
    ],
)
def test_bad_learning_rate_options_are_refused_by_name(tmp_path, capsys, setting, says):  # fmt: skip
    code = main(
        [
            "run",
            "--methods",
            "bitfit",
            "--dataset",
            "synthetic:4x4",
            "--backbone",
            "test_resnet",
            "--weights",
            "random",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            f"method_config.bitfit.{setting}",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and "method_config.bitfit" in err and says in err and "Traceback" not in err


# --- every method through the runner --------------------------------------------------------------------------------
SUITE = {"methods": ",".join(NEW), "datasets": "synthetic:4x12", "backbones": "test_resnet", "weights": "random",
         "epochs": 3, "resolution": 32, "batch_size": 8, "seeds": [0],
         "method_config": {"cut-stage": {"stage": 2}, "wise-ft": {"probe_fraction": 0.3}}}  # fmt: skip


@pytest.fixture(scope="module")
def whole_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    result = run_suite(build_suite(SUITE), out, None, "cpu", Reporter(quiet=True))
    assert not result.failed
    return out


@pytest.fixture(scope="module")
def whole(whole_out):
    return {r.spec["method"]: r for r in ResultStore(whole_out).records()}


def test_each_method_trains_what_it_says_and_deploys_the_plain_network(whole):
    model = timm.create_model("test_resnet", num_classes=4)
    plain = sum(p.numel() for p in model.parameters())
    sizes = dict(model.named_parameters())
    stages = stage_map(model)
    head = sum(sizes[n].numel() for n in stages.head)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    channels = sum(m.num_features for m in bn)
    assert sorted(whole) == sorted(NEW)
    for name, r in whole.items():
        assert r.params["deployed"] == plain == r.params["plain"], name  # merged or untouched: no extra parameter
    assert whole["cut-stage"].params["trainable"] == sum(sizes[n].numel() for n in stages.stages[2]) + head
    bitfit = set(bias_parameters(model)) | set(stages.head)  # every bias, and the whole new classifier
    assert whole["bitfit"].params["trainable"] == sum(sizes[n].numel() for n in bitfit)
    assert whole["bn-only"].params["trainable"] == 2 * channels + head
    assert whole["ssf"].params["trainable"] == 2 * channels + head == whole["ssf"].params["total"] - plain + head
    lora = whole["lora"].params
    assert head < lora["trainable"] < plain and lora["total"] == plain + lora["trainable"] - head
    for name, stages in (("lp-ft", ["probe", "probe", "fine-tune"]), ("wise-ft", ["probe", "fine-tune"])):
        r = whole[name]
        assert [e["stage"] for e in r.epochs] == stages + ["fine-tune"] * (
            3 - len(stages)
        )  # round(0.5 * 3) = 2, round(0.3 * 3) = 1
        per = r.cost["train_flops_per_sample"]
        assert per["probe"] < per["fine-tune"]  # the probe needs no gradient through the backbone
        first = stages.index("fine-tune")
        assert r.epochs[first]["lr"] > r.epochs[first - 1]["lr"]  # the fine-tuning restarts the schedule


@pytest.fixture(scope="module")
def wise(tmp_path_factory):
    """WiSE-FT where fine-tuning beats the probe on val (a larger synthetic set, lr 0.1), so alpha is searched."""
    out = tmp_path_factory.mktemp("wise")
    suite = build_suite(SUITE | {"methods": "wise-ft", "datasets": "synthetic:4x24", "lr": 0.1, "epochs": 4,
                                 "method_config": {"wise-ft": {"probe_fraction": 0.25}}})  # fmt: skip
    assert not run_suite(suite, out, None, "cpu", Reporter(quiet=True)).failed
    (r,) = ResultStore(out).records()
    assert r.best["epoch"] > 1, "fine-tuning must beat the probe on val for this test to mean anything"
    return r


def test_wise_ft_chooses_alpha_on_val_and_charges_the_search(wise):
    r = wise
    alpha = r.extras["wise_ft"]["alpha"]
    curve = r.extras["wise_ft"]["val"]
    assert len(curve) == 11 and str(alpha) in curve
    assert curve[str(alpha)] == max(curve.values())
    assert r.best["val_finalized"]["top1"] == pytest.approx(curve[str(alpha)], abs=1e-3)
    assert r.cost["charged_after_training"] == ["alpha-search"]  # after the best epoch: not in the time to it
    from finebench.reports.frame import run_row

    prepare = r.cost["charges"]["prepare"]["seconds"]
    assert run_row(r)["seconds_to_best"] == pytest.approx(r.best["seconds_to_best"] + prepare)
    search = r.cost["charges"]["alpha-search"]
    assert search["samples"] == 11 * r.dataset["sizes"]["val"] and search["flops"] > 0 and search["seconds"] > 0
    assert search["flops"] == pytest.approx(search["samples"] * r.cost["flops_per_image"])


def test_a_run_interrupted_mid_epoch_resumes_to_the_uninterrupted_numbers(tmp_path, whole, monkeypatch):
    """Each method fails at the first step of its third epoch and is resumed: peft's LoRA layers, SSF's parameters
    and WiSE-FT's probe weights (saved after its one probe epoch) come back from the checkpoint, and LP-FT's
    fine-tuning starts its own schedule at the restored step, so every number matches the run not stopped."""
    from test_regularised import numbers

    import finebench.benchmark.runner as runner

    per_epoch = whole["bitfit"].cost["steps"] // 3
    steps = {"n": 0}
    original = runner.Run.execute

    def execute(self):
        steps["n"] = 0
        return original(self)

    def crash_point(point):
        if point == "step":
            steps["n"] += 1
            if steps["n"] == 2 * per_epoch + 1:
                raise RuntimeError("power cut")

    monkeypatch.setattr(runner.Run, "execute", execute)
    monkeypatch.setattr(runner, "crash_point", crash_point)
    suite = build_suite(SUITE)
    assert len(run_suite(suite, tmp_path, None, "cpu", Reporter(quiet=True)).failed) == len(NEW)
    monkeypatch.undo()
    assert not run_suite(suite, tmp_path, None, "cpu", Reporter(quiet=True)).failed
    resumed = {r.spec["method"]: r for r in ResultStore(tmp_path).records()}
    for name in NEW:
        assert resumed[name].cost["resumes"][0]["after_epoch"] == 2, name
        assert numbers(resumed[name].to_dict()) == numbers(whole[name].to_dict()), name


def test_head_lr_scale_and_layer_decay_reach_the_optimiser(tmp_path):
    suite = build_suite({"methods": "cut-full", "datasets": "synthetic:4x12", "backbones": "test_resnet",
                         "weights": "random", "epochs": 1, "resolution": 32, "batch_size": 8,
                         "method_config": {"cut-full": {"head_lr_scale": 10, "layer_decay": 0.5}}})  # fmt: skip
    seen = {}
    import finebench.benchmark.runner as runner

    original = runner.StepLoop.step

    def step(self, x, y):
        original(self, x, y)
        names = {id(p): n for n, p in self.model.named_parameters()}
        seen.update({names[id(p)]: g["lr"] / self.lr for g in self.optimizer.param_groups for p in g["params"]})

    runner.StepLoop.step = step
    try:
        assert not run_suite(suite, tmp_path, None, "cpu", Reporter(quiet=True)).failed
    finally:
        runner.StepLoop.step = original
    head = stage_map(timm.create_model("test_resnet", num_classes=4)).head
    assert all(seen[n] == pytest.approx(10.0) for n in head)  # the head's layer has scale 1, times 10
    assert seen["conv1.0.weight"] == pytest.approx(min(seen.values()))  # the stem: the smallest rate
    assert seen["conv1.0.weight"] < 0.5**2 and math.isfinite(seen["conv1.0.weight"])
    record = next(iter(ResultStore(tmp_path).records()))
    assert record.spec["method_config"]["head_lr_scale"] == 10.0 and record.spec["method_config"]["layer_decay"] == 0.5


def test_the_report_has_the_near_twins_table_and_the_parameters_figure(whole_out, tmp_path):
    from finebench.methods.catalogue import MethodCatalogue
    from finebench.reports import catalogue, write_report

    catalogue.use(MethodCatalogue())
    report = write_report(whole_out, tmp_path / "rep", "md", pdf=False)
    text = report.markdown
    assert "### Near twins of filter attention: synthetic:4x12 · test_resnet" in text
    table = text.split("### Near twins of filter attention")[1].split("\n\n###")[0]
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in table.splitlines() if line.startswith("| ")
    }
    assert {"bitfit", "bn-only", "ssf", "lora"} <= set(rows)
    assert "cut-stage (stage=2)" not in rows and "lp-ft" not in rows  # only the twins (and the two cut ends)
    records = {r.spec["method"]: r for r in ResultStore(whole_out).records()}
    for name in ("ssf", "lora"):
        p = records[name].params
        assert rows[name][-1].strip(" |") == "0 (merged)"
        assert rows[name][2] == f"{100 * p['trainable'] / p['plain']:.2f} %"  # the share of the plain network
    assert rows["bitfit"][-1].strip(" |") == "0"
    assert rows["bitfit"][3] == "batch (its parameters train)" and rows["ssf"][3] == rows["lora"][3] == (
        "moving (frozen)")  # fmt: skip
    figure = tmp_path / "rep" / "figures" / f"params-synthetic_4x12-test_resnet-{budget(records['ssf'])}.png"
    assert figure.is_file() and figure.stat().st_size > 10_000
    alone = write_report(whole_out, tmp_path / "one", "md", methods=["ssf", "cut-stage"], pdf=False)
    assert "Near twins" not in alone.markdown  # one twin is no comparison


def budget(record):
    from finebench.reports.frame import budget_key

    return budget_key(record.spec)


def test_learning_rate_options_are_refused_for_a_method_that_trains_nothing(tmp_path, capsys):
    code = main(["run", "--methods", "semantic-pruning", "--dataset", "synthetic:4x4", "--backbone", "test_resnet",
                 "--weights", "random", "--epochs", "1", "--out", str(tmp_path),
                 "method_config.semantic-pruning.head_lr_scale=10"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "semantic-pruning trains nothing itself" in err and "Traceback" not in err
