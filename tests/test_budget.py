import pytest
import torch
from torch import nn

from finebench.benchmark.budget import BudgetMeter, forward_flops


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
