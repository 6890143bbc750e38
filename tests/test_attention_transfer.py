"""Attention transfer and KD: the maths against hand-computed values, and the teacher's management end to end."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finebench.methods.attention_transfer import (
    at_loss,
    attention_map,
    gradient_at_loss,
    kd_loss,
    parse_pairs,
    spatial_attention,
)


def feats(*channels):
    """(1, C, 1, W) from per-channel lists."""
    return torch.tensor([[[c] for c in channels]], dtype=torch.float32)


def test_attention_map_modes_by_hand():
    x = feats([1.0, -2.0], [2.0, 0.0])  # two channels, two positions
    r41, r13 = math.sqrt(41), math.sqrt(13)
    assert attention_map(x).tolist()[0] == pytest.approx([5 / r41, 4 / r41])  # sum |a|^2 = [1+4, 4+0]
    assert attention_map(x, mode="sum").tolist()[0] == pytest.approx([3 / r13, 2 / r13])  # sum |a| = [3, 2]
    assert attention_map(x, mode="max^p").tolist()[0] == pytest.approx([1 / math.sqrt(2)] * 2)  # max |a|^2 = [4, 4]
    assert attention_map(x, p=1).tolist()[0] == pytest.approx(attention_map(x, mode="sum").tolist()[0])
    assert spatial_attention(x, p=3).tolist()[0][0] == pytest.approx([1 + 8, 8 + 0])
    with pytest.raises(ValueError, match="sum\\^p"):
        attention_map(x, mode="mean")


def test_attention_map_is_normalised_per_sample_and_flattened():
    x = torch.randn(3, 4, 5, 6)
    x[1] *= 100.0  # a sample's scale does not matter
    maps = attention_map(x)
    assert maps.shape == (3, 30)
    assert maps.norm(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    scaled = attention_map(torch.cat([x[:1], 7 * x[:1]]))
    assert torch.allclose(scaled[0], scaled[1], atol=1e-6)


def test_at_loss_by_hand():
    s = feats([1.0, -2.0], [2.0, 0.0])  # map [5, 4] / sqrt(41)
    t = feats([3.0, 0.0], [0.0, 0.0])  # map [9, 0] -> [1, 0]
    a, b = 5 / math.sqrt(41), 4 / math.sqrt(41)
    assert at_loss(s, t).item() == pytest.approx(((a - 1) ** 2 + b**2) / 2, rel=1e-6)
    assert at_loss(s, s).item() == pytest.approx(0.0, abs=1e-12)
    batch = torch.cat([s, s])  # the mean runs over B * H * W
    assert at_loss(batch, torch.cat([t, s])).item() == pytest.approx(((a - 1) ** 2 + b**2) / 4, rel=1e-6)


def test_at_loss_interpolates_the_smaller_map():
    s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])  # (1, 1, 2, 2): map [1, 0, 0, 0]
    t = torch.ones(1, 3, 1, 1)  # 1x1 map, resized to a constant 2x2 map -> [.5, .5, .5, .5]
    assert at_loss(s, t).item() == pytest.approx((0.25 + 3 * 0.25) / 4)
    assert at_loss(t, s).item() == pytest.approx(at_loss(s, t).item())  # the larger map sets the size either way
    # bilinear, align_corners=False: [1, 3] over 2 -> 4 positions is [1, 1.5, 2.5, 3] (p = 1, one channel)
    small = torch.tensor([[[[1.0, 3.0]]]])
    big = torch.tensor([[[[1.0, 1.5, 2.5, 3.0]]]])
    assert at_loss(big, small, p=1, mode="sum").item() == pytest.approx(0.0, abs=1e-12)
    other = torch.tensor([[[[3.0, 2.5, 1.5, 1.0]]]])
    r = np.array([1, 1.5, 2.5, 3]) / np.linalg.norm([1, 1.5, 2.5, 3])
    assert at_loss(other, small, p=1, mode="sum").item() == pytest.approx(((r[::-1] - r) ** 2).mean(), rel=1e-6)


def test_kd_loss_by_hand():
    s = torch.zeros(1, 2)  # softmax [0.5, 0.5]
    t = torch.tensor([[math.log(3.0), 0.0]])  # softmax [0.75, 0.25]
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t, temperature=1).item() == pytest.approx(kl, rel=1e-6)
    # T scales logits down and the loss up by T^2
    assert kd_loss(4 * s, 4 * t, temperature=4).item() == pytest.approx(16 * kl, rel=1e-6)
    # summed over classes, averaged over the batch: a second, identical pair adds nothing
    assert kd_loss(torch.cat([s, t]), torch.cat([t, t]), 1).item() == pytest.approx(kl / 2, rel=1e-5)


def test_gradient_at_loss_compares_directions():
    j = torch.randn(2, 3, 4, 4)
    assert gradient_at_loss(j, 5 * j).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_at_loss(j, -j).item() == pytest.approx(4 / j[0].numel(), rel=1e-5)  # |u - (-u)|^2 = 4


def test_stage_pairs_among_groups():
    from finebench.backbones.stages import stage_map

    five = (1, 2, 3, 4)  # a network whose stage 0 is the stride-2 stem
    assert parse_pairs("last2", five, five) == [(3, 3), (4, 4)]
    assert parse_pairs("last", five, five) == [(4, 4)]
    assert parse_pairs("all", five, five) == [(1, 1), (2, 2), (3, 3), (4, 4)]  # the stem is not a group
    assert parse_pairs("all", (1, 2, 3), five) == [(1, 2), (2, 3), (3, 4)]  # aligned from the end
    assert parse_pairs("0,3", five, five) == [(1, 1), (4, 4)]  # group indices
    with pytest.raises(ValueError, match="last1..last3"):
        parse_pairs("last4", (1, 2, 3), five)
    with pytest.raises(ValueError, match="no teacher partner"):
        parse_pairs("0,1", five, (3, 4))
    with pytest.raises(ValueError, match="lastK"):
        parse_pairs("first2", five, five)
    import timm

    resnet = stage_map(timm.create_model("resnet18"))
    assert [resnet.stage_modules[i] for i in resnet.groups] == ["layer1", "layer2", "layer3", "layer4"]
    lite = stage_map(timm.create_model("tf_efficientnet_lite0"))
    assert [lite.stage_modules[i] for i in lite.groups] == ["blocks.1", "blocks.2", "blocks.4", "blocks.6"]


def tiny_distillation(name, prepare=True, **config):
    """A method instance with a prepared student and teacher (test_efficientnet <- test_resnet, random weights)."""
    from finebench.backbones import create_backbone
    from finebench.backbones.stages import stage_map
    from finebench.benchmark.runner import build_method
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand
    from finebench.methods import Context
    from finebench.methods.cost import BudgetMeter

    suite = {"methods": name, "backbones": "test_efficientnet", "datasets": "synthetic:4x12", "resolution": 32,
             "weights": "random", "method_config": {name: {"teacher": "test_resnet", **config}}}  # fmt: skip
    spec = expand(build_suite(suite))[0]
    torch.manual_seed(0)
    student = create_backbone("test_efficientnet", 4, "random").model
    teacher = create_backbone("test_resnet", 4, "random").model
    ctx = Context(spec, 4, stage_map(student), BudgetMeter(1, 8), torch.device("cpu"))
    ctx.source_model = lambda *a, **k: (teacher, "teacher-run")
    method = build_method(spec)
    return method, method.prepare(student, ctx) if prepare else student, teacher, ctx


def teacher_input(x):
    """What the teacher must see: the student's batch re-normalised with the teacher's mean and std (test_resnet's
    differ from test_efficientnet's), computed by hand."""
    from finebench.backbones import data_config

    s_cfg, t_cfg = data_config("test_efficientnet"), data_config("test_resnet")
    assert s_cfg["mean"] != t_cfg["mean"]

    def col(v):
        return torch.tensor(v).view(1, 3, 1, 1)

    pixels = x * col(s_cfg["std"]) + col(s_cfg["mean"])
    return (pixels - col(t_cfg["mean"])) / col(t_cfg["std"])


def test_kd_and_at_terms_compose_the_loss():
    x, y = torch.randn(6, 3, 32, 32), torch.arange(6) % 4
    method, student, teacher, ctx = tiny_distillation("at+kd", alpha=0.7, temperature=2.0, beta=10.0)
    seen = {}
    handle = teacher.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    out = method.forward(student, x)
    terms = method.losses(student, (x, y), out, ctx)
    handle.remove()
    xt = teacher_input(x)
    assert torch.allclose(seen["x"], xt, atol=1e-5)
    with torch.no_grad():
        t_logits = teacher(xt)
    assert terms["ce_weighted"].item() == pytest.approx(0.3 * F.cross_entropy(out, y).item(), rel=1e-5)
    assert terms["kd"].item() == pytest.approx(0.7 * kd_loss(out, t_logits, 2.0).item(), rel=1e-5)
    s_maps, t_maps = {}, {}
    for store, model, inputs in ((s_maps, student, x), (t_maps, teacher, xt)):
        hooks = [dict(model.named_modules())[n].register_forward_hook(lambda m, a, o, n=n, d=store: d.update({n: o}))
                 for n in [p for pair in method.pairs for p in pair] if n in dict(model.named_modules())]  # fmt: skip
        with torch.no_grad():
            model(inputs)
        for h in hooks:
            h.remove()
    assert method.pairs == [("blocks.3", "layer3"), ("blocks.4", "layer4")]  # the last two groups of each
    expected = 5.0 * sum(at_loss(s_maps[s], t_maps[t]).item() for s, t in method.pairs)
    assert terms["at"].item() == pytest.approx(expected, rel=1e-4)
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_student_freezing_follows_the_config():
    method, student, _, ctx = tiny_distillation("kd", freeze_stages=2, freeze_bn=True)
    (stage,) = method.schedule(ctx)
    assert stage.bn == "eval" and stage.epochs == ctx.spec.train.epochs
    frozen = set(ctx.stages.stages[0] + ctx.stages.stages[1])
    assert frozen and not frozen & stage.trainable
    assert stage.trainable == set(ctx.stages.last(len(ctx.stages.stages) - 2) + ctx.stages.head)


def test_gradient_attention_transfer_trains_by_double_backprop():
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4) % 4
    method, student, _, ctx = tiny_distillation("attention-transfer", kind="gradient")
    before = [p.detach().clone() for p in student.parameters()]
    out = method.forward(student, x)
    terms = method.losses(student, (x, y), out, ctx)
    assert set(terms) == {"ce", "at"} and terms["at"].item() > 0
    terms["at"].backward()  # the AT term alone must reach the student's weights: a second-order graph
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_bad_settings_are_named():
    from finebench.benchmark.runner import build_method
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand

    def make(name, **cfg):
        suite = {"methods": name, "datasets": "synthetic", "method_config": {name: cfg}}
        return build_method(expand(build_suite(suite))[0])

    with pytest.raises(ValueError, match="mode 'mean' is not one of sum, sum\\^p, max\\^p"):
        make("attention-transfer", mode="mean")
    with pytest.raises(ValueError, match="alpha in \\[0, 1\\]"):
        make("kd", alpha=2.0)
    with pytest.raises(ValueError, match="teacher_checkpoint: no such file"):
        make("kd", teacher_checkpoint="/nope.pt")
    m = make("kd")
    with pytest.raises(ValueError, match="no default teacher for backbone 'efficientnet_lite2'.*teacher=NAME"):
        m.teacher_backbone("efficientnet_lite2")
    assert m.teacher_backbone("test_resnet") == "test_efficientnet"  # the offline smoke pairing
    assert m.teacher_backbone("efficientnet_lite0") == "efficientnet_lite2"
    assert m.teacher_backbone("resnet18") == "resnet34"


RUN = ["run", "--dataset", "synthetic:4x12", "--backbone", "test_efficientnet", "--weights", "random",
       "--epochs", "2", "--resolution", "40", "batch_size=8", "--quiet",
       "method_config.kd.teacher=test_resnet", "method_config.attention-transfer.teacher=test_resnet"]  # fmt: skip


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_teacher_is_trained_once_reused_and_charged_to_every_student(tmp_path):
    first = bench(*RUN, "--methods", "kd,attention-transfer", "--seeds", "0,1", "--out", "res", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    records = {}
    for p in (tmp_path / "res" / "runs").glob("*.json"):
        r = json.loads(p.read_text())
        records[r["run_id"]] = r
    teachers = [r for r in records.values() if r["spec"]["backbone"] == "test_resnet"]
    assert len(teachers) == 1  # one teacher for both methods and both seeds (teacher_seed 0)
    teacher = teachers[0]
    assert teacher["spec"]["method"] == "cut-full" and teacher["spec"]["seed"] == 0
    assert (tmp_path / "res" / teacher["artifacts"]["model"]).exists()
    students = [r for r in records.values() if r["spec"]["backbone"] == "test_efficientnet"]
    assert sorted((r["spec"]["method"], r["spec"]["seed"]) for r in students) == [
        ("attention-transfer", 0), ("attention-transfer", 1), ("kd", 0), ("kd", 1)]  # fmt: skip
    teacher_cost = teacher["cost"]["total_seconds"] + teacher["cost"]["charged_seconds"]
    for r in students:
        assert r["sources"] == {"teacher": teacher["run_id"]}
        charge = r["cost"]["charges"]["teacher:cut-full"]
        assert charge["seconds"] == pytest.approx(teacher_cost) and charge["samples"] == teacher["cost"]["samples"]
        # the measured step holds the student's forward and backward and the teacher's forward on every sample
        per_sample = r["cost"]["flops_per_image"] + r["extras"]["teacher"]["flops_per_image"]
        assert r["cost"]["train_flops"] > r["cost"]["samples"] * per_sample and "teacher_forward" not in r["cost"]
        assert r["extras"]["teacher"]["run_id"] == teacher["run_id"]
        assert r["cost"]["samples"] == 2 * r["dataset"]["sizes"]["train"]  # the student's budget is untouched
    at = next(r for r in students if r["spec"]["method"] == "attention-transfer")
    with np.load(tmp_path / "res" / at["artifacts"]["attention_maps"]) as maps:
        assert maps["images"].shape[0] == 8 and maps["images"].dtype == np.uint8
        assert maps["labels"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # round-robin over the classes
        assert {"student blocks.3", "teacher layer3", "student blocks.4", "teacher layer4"} <= set(maps.files)
        assert 0.0 <= maps["student blocks.4"].min() and maps["student blocks.4"].max() <= 1.0

    rep = bench("report", "--results", "res", "--out", "rep", "--wide", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    md = (tmp_path / "rep" / "results.md").read_text()
    table = md.split("### ")[2] if "test_efficientnet" in md.split("### ")[2] else md.split("### ")[1]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "teacher: cut-full (test_resnet)" in rows  # the teacher sits in the students' table, once
    header = [c.strip() for c in rows["method"].split("|")]
    own, incl = header.index("own time (s)"), header.index("time incl. teacher/source (s)")
    kd = [c.strip().split(" ")[0] for c in rows["kd (teacher=test_resnet)"].split("|")]  # means of two seeds
    kd_records = [r for r in students if r["spec"]["method"] == "kd"]
    own_mean = sum(r["cost"]["total_seconds"] for r in kd_records) / 2
    incl_mean = sum(r["cost"]["total_seconds"] + r["cost"]["charged_seconds"] for r in kd_records) / 2
    assert float(kd[own]) == pytest.approx(own_mean, abs=0.051)  # printed to 0.1 s
    assert float(kd[incl]) == pytest.approx(incl_mean, abs=0.051) and incl_mean >= own_mean + teacher_cost
    assert (tmp_path / "rep" / "figures").is_dir() and "## Attention maps" in md


def test_a_teacher_trained_on_the_way_leaves_the_students_random_stream_as_a_loaded_one(tmp_path):
    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.runner import Run
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand

    suite = {"methods": "kd", "backbones": "test_efficientnet", "datasets": "synthetic:4x12", "resolution": 32,
             "weights": "random", "epochs": 1, "batch_size": 8,
             "method_config": {"kd": {"teacher": "test_resnet"}}}  # fmt: skip
    spec = expand(build_suite(suite))[0]

    def stream_after_setup():
        run = Run(spec, None, tmp_path, torch.device("cpu"), Reporter(quiet=True))
        run.setup()
        return run.sources["teacher"], torch.rand(4), np.random.rand(2)

    trained = stream_after_setup()  # trains and records the teacher inside the student's setup
    loaded = stream_after_setup()  # loads it from the store
    assert trained[0] == loaded[0]
    assert torch.equal(trained[1], loaded[1]) and np.array_equal(trained[2], loaded[2])


def test_teacher_from_a_checkpoint_is_used_as_is_and_not_charged(tmp_path):
    from finebench.backbones import create_backbone
    from finebench.backbones.weights import WeightsError

    torch.manual_seed(1)
    given = create_backbone("test_resnet", 4, "random").model
    good = tmp_path / "teacher.pt"
    torch.save(given.state_dict(), good)
    method, _, _, ctx = tiny_distillation("kd", prepare=False, teacher_checkpoint=str(good))
    ctx.source_model = None  # must not be asked
    teacher = method.load_teacher(ctx)
    pairs = zip(teacher.state_dict().values(), given.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert method.teacher_info["checkpoint"] == str(good.resolve()) and "not charged" in method.teacher_info["cost"]
    assert not ctx.budget.charges
    wrong = tmp_path / "wrong.pt"
    torch.save(create_backbone("test_resnet", 7, "random").model.state_dict(), wrong)
    method, _, _, ctx = tiny_distillation("kd", prepare=False, teacher_checkpoint=str(wrong))
    with pytest.raises(WeightsError, match="wrong.pt: not a state dict of test_resnet with 4 classes"):
        method.load_teacher(ctx)


def test_structure_dependent_settings_fail_before_any_training(tmp_path):
    base = ["run", "--dataset", "synthetic:4x12", "--backbone", "test_efficientnet", "--weights", "random",
            "--epochs", "1", "--resolution", "32", "--out", "res"]  # fmt: skip
    cases = {
        "method_config.attention-transfer.pairs=last9": "method_config.attention-transfer.pairs='last9'",
        "method_config.kd.freeze_stages=9": "method_config.kd.freeze_stages=9: test_efficientnet has 5 stages",
        "method_config.cut-full.freeze_stages=9": "method_config.cut-full.freeze_stages=9: the backbone has 5 stages",
        "method_config.kd.teacher_weights=defualt": "teacher_weights='defualt': not suite, default, random",
        "method_config.kd.teacher=resnet3": "method_config.kd.teacher='resnet3': unknown backbone",
    }
    for override, message in cases.items():
        method = override.split(".")[1]
        extra = (
            [] if "teacher=" in override or method == "cut-full" else [f"method_config.{method}.teacher=test_resnet"]
        )
        out = bench(*base, "--methods", method, override, *extra, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr, (override, out.stderr)
        assert not (tmp_path / "res" / "runs").exists()  # nothing trained, not even the teacher


def real_batch(res: int = 96):
    """Four real photographs (scikit-image's samples), centre-cropped, at `res` px, normalised as Lite0 wants."""
    from skimage import data

    images = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    out = []
    for im in images:
        t = torch.tensor(im).permute(2, 0, 1).float()[None] / 255
        side = min(t.shape[-2:])
        top, left = (t.shape[-2] - side) // 2, (t.shape[-1] - side) // 2
        t = F.interpolate(t[..., top : top + side, left : left + side], size=(res, res), mode="bilinear")
        out.append((t[0] - 0.5) / 0.5)
    return torch.stack(out), torch.tensor([0, 1, 2, 3])


def test_gradient_at_term_is_not_negligible_against_ce_with_its_default_weight():
    """Real ImageNet Lite0 student and Lite2 teacher on real photographs: the gradient-AT term's parameter gradient
    must be of the order of CE's (with beta = 1000, as activation AT's default, it was about 1/1000 of it)."""
    from finebench.backbones import create_backbone
    from finebench.backbones.stages import stage_map
    from finebench.benchmark.runner import build_method
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand
    from finebench.methods import Context
    from finebench.methods.cost import BudgetMeter

    x, y = real_batch()
    suite = {"methods": "attention-transfer", "backbones": "efficientnet_lite0", "datasets": "synthetic:4x12",
             "resolution": 96, "method_config": {"attention-transfer": {"kind": "gradient"}}}  # fmt: skip
    spec = expand(build_suite(suite))[0]
    torch.manual_seed(0)
    student = create_backbone("efficientnet_lite0", 4).model
    teacher = create_backbone("efficientnet_lite2", 4).model
    ctx = Context(spec, 4, stage_map(student), BudgetMeter(1, 8), torch.device("cpu"))
    ctx.source_model = lambda *a, **k: (teacher, "teacher-run")
    method = build_method(spec)
    student = method.prepare(student, ctx)
    terms = method.losses(student, (x, y), method.forward(student, x), ctx)
    params = [p for p in student.parameters()]

    def grad_norm(term):
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))

    ce, at = grad_norm(terms["ce"]), grad_norm(terms["at"])
    assert at > 0.1 * ce, (at, ce)
    assert method.at_weight() == 1e6 and method.config.beta == 1000.0
    extras = method.extras(student, ctx)
    assert extras["at"] == {"kind": "gradient", "weight": 1e6, "pairs": []}


def test_cut_freeze_stages_and_the_teacher_config_reach_the_teacher_run():
    from finebench.methods.level_of_cut import cut_parameters

    teacher_config = {"freeze_stages": 2, "freeze_bn": True}
    method, student, teacher, ctx = tiny_distillation(
        "attention-transfer", prepare=False, freeze_stages=2, teacher_config=teacher_config
    )
    asked = {}

    def source_model(source):
        asked.update(vars(source))
        return teacher, "teacher-run"

    ctx.source_model = source_model
    method.prepare(student, ctx)
    assert asked["config"] == {"freeze_stages": 2, "freeze_bn": True} and asked["role"] == "teacher"
    assert asked["method"] == "cut-full" and asked["seed"] == 0
    smap = ctx.stages
    assert cut_parameters(smap, "full", 2) == set(smap.last(len(smap.stages) - 2) + smap.head)
    assert cut_parameters(smap, "last", 2) == set(smap.last(1) + smap.head)  # freezing spares the cut's stages
    assert cut_parameters(smap, "full", 0) == set(smap.body + smap.head)
    with pytest.raises(ValueError, match="teacher_config: unknown key 'freeze'; valid keys: freeze_bn, freeze_stages"):
        tiny_distillation("kd", prepare=False, teacher_config={"freeze": 1})
    with pytest.raises(ValueError, match="freeze_stages must be an integer >= 0"):
        tiny_distillation("kd", prepare=False, teacher_config={"freeze_stages": -1})


def test_teacher_config_on_the_command_line_trains_the_teacher_with_it(tmp_path):
    out = bench(*RUN[:-1], "--methods", "cut-full,kd", "--epochs", "1", "--out", "res",
                "method_config.cut-full.freeze_stages=2", "method_config.cut-full.freeze_bn=true",
                "method_config.kd.freeze_stages=2", "method_config.kd.freeze_bn=true",
                "method_config.kd.teacher_config=freeze_stages=2,freeze_bn=true", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    kd = next(r for r in records if r["spec"]["method"] == "kd")
    teacher = next(r for r in records if r["run_id"] == kd["sources"]["teacher"])
    assert teacher["spec"]["backbone"] == "test_resnet"
    config = teacher["spec"]["method_config"]
    assert config == {"freeze_bn": True, "freeze_stages": 2, "head_lr_scale": 1.0, "layer_decay": 1.0}
    base = next(
        r for r in records if r["spec"]["method"] == "cut-full" and r["spec"]["backbone"] == "test_efficientnet"
    )
    assert base["params"]["trainable"] == kd["params"]["trainable"] < base["params"]["total"]
    bad = bench(*RUN[:-1], "--methods", "kd", "--out", "res2", "method_config.kd.teacher_config=freeze_stages=9",
                cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "method_config.kd.teacher_config.freeze_stages=9" in bad.stderr, bad.stderr
