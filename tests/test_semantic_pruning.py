"""Semantic pruning's plain functions against hand-computed values, and its use of the suite's cut-full model."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from finebench.methods.semantic_pruning import (
    accumulated_response,
    jaccard,
    one_vs_rest,
    response_points,
    select_filters,
)


def toy():
    """conv (2 filters: +x and -x, no bias) -> BatchNorm (identity in eval) -> ReLU."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    return nn.Sequential(conv, nn.BatchNorm2d(2), nn.ReLU()).eval()


def test_response_point_is_after_batchnorm_and_activation():
    model = toy()
    assert response_points(model, torch.zeros(1, 1, 2, 2)) == {"0": "2"}
    assert response_points(model, torch.zeros(1, 1, 2, 2), raw=True) == {"0": "0"}


def test_accumulated_response_by_hand():
    model = toy()
    eps = model[1].eps
    scale = 1 / (1 + eps) ** 0.5  # eval BatchNorm with mean 0, var 1
    # images are constant 2x2 planes; class 0: values 1 and 3; class 1: value -2
    x = torch.tensor([1.0, 3.0, -2.0]).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    y = torch.tensor([0, 0, 1])
    loader = [(x[:2], y[:2]), (x[2:], y[2:])]  # accumulated over both batches
    gamma = accumulated_response(model, loader, num_classes=3)
    expected = torch.tensor([[4 * (1 + 3), 0.0], [0.0, 4 * 2], [0.0, 0.0]], dtype=torch.float64) * scale
    assert torch.allclose(gamma["0"], expected)
    raw = accumulated_response(model, loader, num_classes=3, raw=True)
    # Defs. 2-3: the signed sum; raw conv outputs can be negative (class 0: 4 x (1 + 3) for +x, minus that for -x)
    assert torch.allclose(raw["0"], torch.tensor([[16.0, -16.0], [-8.0, 8.0], [0, 0]], dtype=torch.float64))
    magnitude = accumulated_response(model, loader, num_classes=3, raw=True, signed=False)  # the named option
    assert torch.allclose(magnitude["0"], torch.tensor([[16.0, 16.0], [8.0, 8.0], [0, 0]], dtype=torch.float64))
    # gamma <= 0 prunes what it says: with signed sums, class 0 prunes the -x filter, class 1 the +x filter
    assert select_filters({"0": raw["0"][0]}, "zero", "nwp") == {"0": [1]}
    assert select_filters({"0": raw["0"][1]}, "zero", "nwp") == {"0": [0]}
    assert select_filters({"0": magnitude["0"][0]}, "zero", "nwp") == {"0": []}


def test_lwp_and_nwp_selection_by_hand():
    gamma = {"a": torch.tensor([0.0, 5.0, 1.0, 9.0]), "b": torch.tensor([100.0, 200.0])}
    assert select_filters(gamma, "zero", "nwp") == {"a": [0], "b": []}
    assert select_filters(gamma, "median", "lwp") == {"a": [0, 2], "b": [0]}
    assert select_filters(gamma, "median", "nwp") == {"a": [0, 1, 2], "b": []}  # 3 lowest of 6 overall
    # per-layer normalisation lets the big layer compete: b / mean(b) = [0.67, 1.33], a / mean(a) = [0, 1.33, .27, 2.4]
    assert select_filters(gamma, "median", "nwp", normalise=True) == {"a": [0, 2], "b": [0]}
    assert select_filters(gamma, 0.2, "nwp") == {"a": [0], "b": []}
    with pytest.raises(ValueError, match="pruning setting '50%' is not one of zero, 33%, 66%, median"):
        select_filters(gamma, "50%", "nwp")
    with pytest.raises(ValueError, match="pruning mode 'xwp'"):
        select_filters(gamma, "zero", "xwp")


def test_single_class_accuracy_and_overlap_by_hand():
    pred, target = [0, 1, 1, 2], [0, 1, 2, 2]
    assert one_vs_rest(pred, target, 1) == 75.0  # the third image is called 1 but is 2
    assert one_vs_rest(pred, target, 0) == 100.0
    assert jaccard({"a": [1, 2], "b": [0]}, {"a": [2], "b": [0, 1]}) == pytest.approx(2 / 4)


def test_residual_pruning_is_counted_apart(tmp_path):
    """conv1 has 2 filters; conv2's first filter reads only conv1's first: pruning that kills both."""
    from finebench.methods.pruning import conv_bn_pairs, prune_channels

    c1, c2 = nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        c1.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        c2.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
    model = nn.Sequential(c1, nn.ReLU(), c2, nn.ReLU()).eval()
    x, y = torch.ones(2, 1, 2, 2), torch.tensor([0, 0])
    before = accumulated_response(model, [(x, y)], 1)
    prune_channels(model, {"0": [0]}, conv_bn_pairs(model, x))
    after = accumulated_response(model, [(x, y)], 1)
    assert before["2"][0].tolist() == [8.0, 16.0] and after["2"][0].tolist() == [0.0, 16.0]


def test_semantic_pruning_reuses_the_suites_cut_full_and_charges_it(tmp_path):
    args = ["run", "--methods", "cut-full,semantic-pruning", "--dataset", "synthetic:3x12", "--backbone",
            "test_resnet", "--weights", "random", "--epochs", "2", "--resolution", "40", "batch_size=8",
            "--out", "res"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    recs = {r["spec"]["method"]: r for r in map(json.loads, (p.read_text() for p in (tmp_path / "res/runs").glob("*")))}
    full, sp = recs["cut-full"], recs["semantic-pruning"]
    assert (tmp_path / "res" / full["artifacts"]["model"]).exists()
    assert sp["extras"]["source_run"] == full["run_id"]
    charged = sp["cost"]["charges"]["source:cut-full"]
    assert charged["samples"] == full["cost"]["samples"] and charged["seconds"] > 0
    assert sp["cost"]["charges"]["calibration"]["samples"] == full["dataset"]["sizes"]["train"]
    assert sp["best"]["test"] == full["best"]["test"]  # the unpruned source model, evaluated again
    # the analysis: classes sampled with the seed within the budget (at least two), an estimate printed first
    plan = sp["extras"]["analysis"]
    assert plan["chosen_by"] == "auto" and len(plan["classes"]) == 2 and plan["of"] == 3
    assert "semantic pruning: 2 of 3 classes (sampled with seed 0" in done.stdout
    assert plan["estimated_seconds"] > 0 and plan["seconds"] > 0 and plan["settings_per_class"] == 22
    rows = sp["extras"]["pruning"]
    assert {(r["mode"], r["setting"]) for r in rows} == {
        (m, s) for m in ("nwp", "lwp") for s in ("zero", "33%", "66%", "median", 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    }
    assert len([r for r in rows if r["mode"] == "lwp" and r["setting"] == "33%"]) == 2  # one per analysed class
    for r in rows:
        assert "balanced" in r["single_class_unpruned"] and "balanced" in r["val"]["single_class"]  # val and test
        assert isinstance(r["residual"], int) and isinstance(r["residual_structural"], int) and r["seconds"] >= 0
        controls = r["controls"]  # as many filters at random (3 draws) and by weight magnitude, on test
        assert controls["magnitude"]["filters"] == r["direct"] and len(controls["random"]) == 3
        assert all(c["filters"] == r["direct"] and "balanced" in c["single_class"] for c in controls["random"])
        assert all(0 <= c["params_removed"] <= 1 for c in [controls["magnitude"], *controls["random"]])
    for c in plan["classes"]:  # every pruned filter counts: parameters and FLOPs removed grow with theta
        for mode in ("nwp", "lwp"):
            sweep = sorted((r["setting"], r["params_removed"], r["flops_removed"]) for r in rows
                           if r["class"] == c and r["mode"] == mode and not isinstance(r["setting"], str))  # fmt: skip
            assert all(a[1] < b[1] and a[2] < b[2] for a, b in zip(sweep, sweep[1:], strict=False)), sweep
    unpruned_params = sp["extras"]["unpruned_cost"]["params"]
    for r in rows:
        if r["setting"] == "66%":  # two thirds of the filters gone: a really smaller network
            assert r["physical"]["params"] < unpruned_params and r["params_removed"] > 0.1
            assert r["physical"]["removed"] > 0 and r["direct"] > 0
            assert 0 < r["physical"]["params_removed"] <= r["params_removed"] + 1e-9  # masks remove nothing real
    assert "latency_ms" in rows[0]["physical"] and sp["extras"]["unpruned_cost"]["latency_ms"] > 0
    selected = sp["extras"]["selected"]  # theta per class and mode, chosen on val
    assert len(selected) == 4 and all(s["theta"] in (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6) for s in selected)
    for s in selected:
        assert s["val"] >= s["val_unpruned"]  # the chosen theta keeps the val score, by construction
    assert set(sp["extras"]["overlap"]) == {
        f"{m}:{s}" for m in ("nwp", "lwp") for s in ("zero", "33%", "66%", "median")
    }


def test_theta_is_chosen_on_val_and_classes_are_sampled_with_the_seed():
    from finebench.methods.semantic_pruning import analysed_classes, auto_class_count, choose_theta

    assert choose_theta({0.1: 80.0, 0.2: 81.0, 0.3: 79.0, 0.4: 80.5}, 80.0) == 0.4  # the largest that keeps it
    assert choose_theta({0.1: 70.0}, 80.0) == 0.0  # none keeps it: no pruning
    assert analysed_classes(17, 4, seed=0) == analysed_classes(17, 4, seed=0) != analysed_classes(17, 4, seed=1)
    assert len(analysed_classes(17, 4, seed=0)) == 4 and analysed_classes(3, 5, seed=0) == [0, 1, 2]
    assert auto_class_count(10_000, 3_000, 17) == 3 and auto_class_count(100, 3_000, 17) == 2  # never below a pair
    assert auto_class_count(1e9, 3_000, 17) == 17
    from finebench.methods.semantic_analysis import theta_on_val

    nan = {"single_class": {"balanced": float("nan")}}
    assert theta_on_val([], 0, "nwp", {"val": nan, "test": nan})["theta"] is None  # nothing to choose on: said so


def test_measured_residual_pruning_by_hand():
    """conv1 (2 filters) -> ReLU -> conv2 (filter 0 reads only conv1's filter 0) -> ReLU: pruning conv1's filter 0
    zeroes conv2's filter 0 on these images: one residual filter; conv1's own pruned filter is not counted."""
    from finebench.methods.semantic_analysis import measured_residual, responses_of

    c1, c2 = nn.Conv2d(1, 2, 1, bias=False), nn.Conv2d(2, 2, 1, bias=False)
    with torch.no_grad():
        c1.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
        c2.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 2, 1, 1))
    model = nn.Sequential(c1, nn.ReLU(), c2, nn.ReLU()).eval()
    points = response_points(model, torch.zeros(1, 1, 2, 2))
    x = torch.ones(2, 1, 2, 2)
    before = responses_of(model, x, 0, points, signed=True)
    assert before["0"].tolist() == [8.0, 16.0] and before["2"].tolist() == [8.0, 16.0]
    with torch.no_grad():
        c1.weight[0] = 0
    after = responses_of(model, x, 0, points, signed=True)
    assert measured_residual(before, after, {"0": [0]}) == 1
    assert measured_residual(before, after, {"0": [0], "2": [0]}) == 0  # chosen directly: not residual


def test_resnet_bottleneck_response_stops_before_the_residual_add():
    """conv3 -> bn3 -> (+= shortcut) -> act3: the response of conv3 is bn3's output, not the sum; conv1's ends
    after its in-place activation."""
    from finebench.backbones import create_backbone

    model = create_backbone("resnet50", num_classes=3, weights="random").model
    points = response_points(model, torch.zeros(1, 3, 64, 64))
    assert points["layer1.0.conv3"] == "layer1.0.bn3"
    assert points["layer1.0.conv1"] == "layer1.0.act1"
    assert points["layer1.0.downsample.0"] == "layer1.0.downsample.1"
