"""The plain functions of one step and one evaluation, against hand-computed values."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from finebench.benchmark.data import Batches
from finebench.benchmark.train import evaluate, lr_factor
from finebench.methods.base import Method


class FixedLogits(nn.Module):
    """Returns the logits stored for each input id (x[:, 0, 0, 0])."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float)

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def test_evaluate_top1_top3_mean_class_by_hand():
    table = [
        [9, 1, 0, 0],  # label 0: top-1 hit
        [0, 1, 9, 2],  # label 0: ranked 4th -> miss in top-3
        [1, 9, 0, 0],  # label 1: top-1 hit
        [9, 0, 5, 1],  # label 2: ranked 2nd -> top-3 hit
    ]
    labels = torch.tensor([0, 0, 1, 2])
    x = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 3, 2, 2)
    batches = [(x[:3], labels[:3]), (x[3:], labels[3:])]
    m = evaluate(Method(None), FixedLogits(table), batches, num_classes=4)
    assert m["n"] == 4
    assert m["top1"] == pytest.approx(50.0)  # 2 of 4
    assert m["top3"] == pytest.approx(75.0)  # all but the second
    assert m["mean_class"] == pytest.approx((50.0 + 100.0 + 0.0) / 3)  # class 3 has no items: not averaged
    ce = torch.nn.functional.cross_entropy(torch.tensor(table, dtype=torch.float), labels).item()
    assert m["loss"] == pytest.approx(ce)


def test_cosine_and_constant_schedules():
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0)
    assert lr_factor("cosine", 25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("constant", 77, 100) == 1.0


def make_batches(n, bs, **kw):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, 1).repeat(2, 2).repeat(2, 3)
    return Batches(images, np.arange(n) % 3, np.arange(n), bs, (0.0,) * 3, (1 / 255,) * 3, torch.device("cpu"), **kw)


def test_batches_see_every_sample_once_and_never_train_on_one():
    b = make_batches(9, 4, shuffle=True, seed=3)
    sizes = [len(y) for _, y in b]
    assert sizes == [4, 5] and len(b) == 2  # the lone ninth sample joins the last batch
    seen = torch.cat([x[:, 0, 0, 0] for x, _ in b]).long().sort().values
    assert seen.tolist() == list(range(9))
    assert [len(y) for _, y in make_batches(8, 4)] == [4, 4]
    assert [len(y) for _, y in make_batches(1, 4)] == [1]


def test_batch_order_and_flips_depend_only_on_seed_and_epoch():
    def first_ids(seed, epoch):
        b = make_batches(12, 12, shuffle=True, flip=True, seed=seed)
        b.set_epoch(epoch)
        return [x[:, 0, 0, 0].tolist() for x, _ in b]

    assert first_ids(0, 1) == first_ids(0, 1)
    assert first_ids(0, 1) != first_ids(0, 2) and first_ids(0, 1) != first_ids(1, 1)
