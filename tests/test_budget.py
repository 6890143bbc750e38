import pytest
import torch
from torch import nn

from finebench.methods.cost import BudgetMeter, forward_flops


def test_meter_counts_steps_samples_and_charges():
    meter = BudgetMeter(epochs=3, samples_per_epoch=10)
    for bs in (4, 4, 2):
        meter.step(bs, 0.5)
    meter.charge("teacher", seconds=12.0, samples=30, flops=1e9)
    meter.charge("teacher", seconds=3.0)
    s = meter.summary()
    assert s["samples"] == 10 and s["steps"] == 3 and s["train_seconds"] == pytest.approx(1.5)
    assert s["samples_budget"] == 30
    assert s["charges"]["teacher"] == {"seconds": 15.0, "samples": 30, "flops": 1e9}
    assert s["charged_seconds"] == 15.0
    with pytest.raises(ValueError, match="costs must be >= 0"):
        meter.charge("calibration", seconds=-1)


def test_time_budget_marks_capped():
    meter = BudgetMeter(epochs=1, samples_per_epoch=1, time_budget=1e-9)
    meter.start()
    assert meter.over_time() and meter.summary()["capped"]
    assert not BudgetMeter(epochs=1, samples_per_epoch=1).over_time()


def test_forward_flops_match_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 5))
    # conv: 2 * (3*3*3) MACs per output * 8 channels * 16*16 positions; linear: 2 * 2048 * 5
    expected = 2 * 27 * 8 * 256 + 2 * 2048 * 5
    assert forward_flops(model, 16, torch.device("cpu")) == expected


def test_step_flops_by_hand_counts_the_backward_that_runs():
    """conv (3->8, 3x3, no bias) -> flatten -> linear (2048->5) on 16x16: forward = 2*27*8*256 + 2*2048*5 per image.
    Training only the linear layer: its weight gradient (2*2048*5) and no gradient into the conv's output; training
    everything adds the linear's input gradient (2*2048*5) and the conv's weight gradient (2*27*8*256), but still no
    gradient for the image."""
    from finebench.methods.cost import step_flops

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 16 * 16, 5))
    batch = (torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))
    conv, lin = 2 * 27 * 8 * 256, 2 * 2048 * 5

    def step(b):
        torch.nn.functional.cross_entropy(model(b[0]), b[1]).backward()

    model[0].requires_grad_(False)
    assert step_flops(step, batch) == conv + lin + lin
    model[0].requires_grad_(True)
    assert step_flops(step, batch) == conv + lin + lin + lin + conv


def test_training_flops_are_measured_per_stage_and_ordered_by_cut(tmp_path):
    """Through the runner: cut-fc < cut-last < cut-last2 < cut-full in measured training FLOPs; a full fine-tune is
    under 3x the forward FLOPs (no gradient for the image); filter attention's F epochs cost a head fine-tune and
    its A epochs a full backward."""
    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.runner import Run
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand, pick_device

    methods = "cut-fc,cut-last,cut-last2,cut-full,filter-attention"
    layer = {"datasets": "synthetic:4x12", "backbones": "test_resnet", "weights": "random", "epochs": 3,
             "resolution": 32, "batch_size": 8, "methods": methods}  # fmt: skip
    runs = {
        s.method: Run(s, None, tmp_path, pick_device("cpu"), Reporter(quiet=True)) for s in expand(build_suite(layer))
    }
    records = {m: run.execute() for m, run in runs.items()}
    for m, run in runs.items():  # what a resume from a checkpoint without the count rebuilds from the history
        assert run.flops_of(records[m].epochs) == pytest.approx(records[m].cost["train_flops"])
    flops = {m: r.cost["train_flops"] for m, r in records.items()}
    assert flops["cut-fc"] < flops["cut-last"] < flops["cut-last2"] < flops["cut-full"]
    full = records["cut-full"].cost
    assert (
        2 * full["flops_per_image"] * full["samples"]
        < flops["cut-full"]
        < 3 * full["flops_per_image"] * full["samples"]
    )
    fc = records["cut-fc"].cost
    assert flops["cut-fc"] < 1.01 * fc["flops_per_image"] * fc["samples"]  # the head's backward is tiny
    fa = records["filter-attention"].cost["train_flops_per_sample"]
    assert list(fa) == ["1:F", "2:A", "3:A"]
    assert records["filter-attention"].extras["schedule"] == "FAA"  # the record carries the schedule it trained
    assert fa["1:F"] == pytest.approx(fc["train_flops_per_sample"]["cut-fc"], rel=0.01)
    assert fa["2:A"] > 2 * full["flops_per_image"]


def test_grouped_and_depthwise_convolutions_backward_is_counted_as_grouped():
    """A 64-channel depthwise 3x3 conv on 16x16, batch 2: forward 2 * 2*64*9*256; its backward computes the input
    gradient and the weight gradient, each as many multiply-adds as the forward (torch's own formula counts the
    weight gradient as if the conv were dense: 64x). A whole depthwise network's step then stays within 3x its
    forward, as for any CNN."""
    from finebench.backbones import create_backbone
    from finebench.methods.cost import flop_counter, step_flops

    conv = nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    forward = 2 * 2 * 64 * 9 * 256
    counter = flop_counter()
    with counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward
    lite0 = create_backbone("efficientnet_lite0", 5, "random").model.train()
    per_image = forward_flops(lite0, 64, torch.device("cpu"))
    batch = (torch.zeros(2, 3, 64, 64), torch.tensor([0, 1]))
    lite0.train()
    step = step_flops(lambda b: torch.nn.functional.cross_entropy(lite0(b[0]), b[1]).backward(), batch)
    assert 2 * per_image < step < 3 * per_image


def test_gradient_attention_transfer_shows_its_double_backward_in_the_measured_flops(tmp_path):
    """Gradient AT differentiates the input gradient of the loss (a double backward through student and teacher),
    so its measured step costs more than activation AT's with the same teacher, which costs more than cut-full."""
    from finebench.benchmark.progress import Reporter
    from finebench.benchmark.runner import Run
    from finebench.benchmark.spec import build_suite
    from finebench.benchmark.suite import expand, pick_device

    def per_sample(method, config):
        layer = {"datasets": "synthetic:4x12", "backbones": "test_resnet", "weights": "random", "epochs": 1,
                 "resolution": 32, "batch_size": 8, "methods": method, "method_config": {method: config}}  # fmt: skip
        (spec,) = expand(build_suite(layer))
        record = Run(spec, None, tmp_path, pick_device("cpu"), Reporter(quiet=True)).execute()
        return next(iter(record.cost["train_flops_per_sample"].values()))

    teacher = {"teacher": "test_resnet"}
    full = per_sample("cut-full", {})
    activation = per_sample("attention-transfer", teacher)
    gradient = per_sample("attention-transfer", {**teacher, "kind": "gradient"})
    assert full < activation < gradient
    assert gradient > 1.5 * activation  # the second backward is of the order of a whole training step
