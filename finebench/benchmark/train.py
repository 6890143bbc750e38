"""The maths of one step and one evaluation, as plain functions the runner and the benchmarks share."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.benchmark.precision import FP32, Precision
from finebench.methods.base import Context, Method, Stage


def train_step(
    method: Method,
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    optimizer: torch.optim.Optimizer,
    ctx: Context,
    precision: Precision = FP32,
) -> dict[str, Tensor]:
    """Forward and the method's loss terms (under the run's autocast), their sum backward, one optimiser step
    (through the gradient scaler under fp16). Returns the detached terms."""
    with precision.autocast():
        out = method.forward(model, batch[0])
        terms = method.losses(model, batch, out, ctx)
        total = sum(terms.values())
    optimizer.zero_grad(set_to_none=True)
    precision.backward_step(total, optimizer)
    return {k: v.detach().float() for k, v in terms.items()}


@torch.no_grad()
def evaluate(
    method: Method,
    model: nn.Module,
    batches: Iterable,
    num_classes: int,
    keep_predictions: bool = False,
    precision: Precision = FP32,
) -> dict[str, Any]:
    """top-1, top-3, mean per-class accuracy (%) and mean cross-entropy over all batches (forward under the run's
    autocast, metrics in fp32); with keep_predictions, also the top-1 predictions, the targets and whether each
    target was among the top three, in batch order."""
    was_training = model.training
    model.eval()
    k = min(3, num_classes)
    correct1 = correct3 = n = 0
    loss = 0.0
    per_class_hit = torch.zeros(num_classes)
    per_class_n = torch.zeros(num_classes)
    preds, targets, top3 = [], [], []
    for x, y in batches:
        with precision.autocast():
            logits = method.logits(method.forward(model, x)).float()
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        topk = logits.topk(k, dim=1).indices
        hit1 = (topk[:, 0] == y).cpu()
        if keep_predictions:
            preds += topk[:, 0].tolist()
            targets += y.tolist()
            top3 += (topk == y[:, None]).any(1).tolist()
        correct1 += int(hit1.sum())
        correct3 += int((topk == y[:, None]).any(1).sum())
        yc = y.cpu()
        per_class_hit.index_add_(0, yc, hit1.float())
        per_class_n.index_add_(0, yc, torch.ones_like(yc, dtype=torch.float))
        n += len(y)
    model.train(was_training)
    seen = per_class_n > 0
    extra = {"pred": preds, "target": targets, "top3_hit": top3} if keep_predictions else {}
    return extra | {
        "top1": 100.0 * correct1 / max(n, 1),
        "top3": 100.0 * correct3 / max(n, 1),
        "mean_class": float(100.0 * (per_class_hit[seen] / per_class_n[seen]).mean()) if seen.any() else 0.0,
        "loss": loss / max(n, 1),
        "n": n,
    }


def set_trainable(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """requires_grad on exactly the stage's parameters (all of them when `trainable` is None)."""
    names = dict(model.named_parameters())
    if stage.trainable is not None:
        unknown = sorted(set(stage.trainable) - set(names))
        if unknown:
            raise ValueError(f"stage {stage.name!r} names parameters the model does not have: {unknown[:5]}")
    chosen = []
    for name, p in names.items():
        p.requires_grad_(stage.trainable is None or name in stage.trainable)
        if p.requires_grad:
            chosen.append(p)
    if not chosen:
        raise ValueError(f"stage {stage.name!r} trains no parameters")
    return chosen


def apply_modes(model: nn.Module, stage: Stage) -> None:
    """model.train(), then eval() for every frozen part (all its parameters frozen) and per `stage.bn` for BN."""
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        frozen = bool(params) and not any(p.requires_grad for p in params)
        if isinstance(module, _BatchNorm):
            if stage.bn == "eval" or (stage.bn == "auto" and (frozen or not params)):
                module.eval()
        elif frozen and stage.bn != "train":
            module.eval()


def lr_groups(
    model: nn.Module,
    params: list[nn.Parameter],
    head: Iterable[str],
    layer_decay: float = 1.0,
    head_lr_scale: float = 1.0,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups of `params`, each with an `lr_scale` that the runner multiplies into the learning
    rate: layer l steps before the output at layer_decay^l, the layers as timm's `param_groups_layer_decay` finds
    them (the model's `group_matcher`); the parameters named in `head` (the new classifier) at head_lr_scale times
    their layer's scale. Every group keeps the suite's weight decay (timm's helper would drop it for biases and
    normalisation weights). Parameters of equal scale share a group: one group, in `params` order, when both
    options are off (the layout of checkpoints written before these options existed)."""
    head = set(head)
    chosen = {id(p) for p in params}
    names = {id(p): n for n, p in model.named_parameters()}
    if layer_decay == 1.0:
        layers = [(1.0, list(params))]
    else:
        if not hasattr(model, "group_matcher"):
            raise ValueError(f"layer_decay needs a timm model with a group_matcher; {type(model).__name__} has none")
        from timm.optim import param_groups_layer_decay

        # timm's helper groups the parameters that require gradients (set by `set_trainable`); keep `params` of them
        timm_groups = param_groups_layer_decay(
            model, weight_decay=weight_decay, layer_decay=layer_decay, weight_decay_exclude_1d=False
        )
        merged: dict[float, list[nn.Parameter]] = {}
        for g in timm_groups:
            merged.setdefault(float(g["lr_scale"]), []).extend(p for p in g["params"] if id(p) in chosen)
        if sum(map(len, merged.values())) != len(chosen):
            raise ValueError("layer_decay: every parameter to group must require gradients (set_trainable first)")
        layers = sorted(merged.items())
    by_scale: dict[float, list[nn.Parameter]] = {}  # one group per distinct scale, in the order first met
    for scale, group in layers:
        for p in group:
            by_scale.setdefault(scale * (head_lr_scale if names[id(p)] in head else 1.0), []).append(p)
    return [{"params": ps, "lr_scale": scale} for scale, ps in by_scale.items()]


def make_optimizer(name: str, params: list, lr: float, momentum: float, wd: float):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, adamw, adam")


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based) of `total_steps`."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ValueError(f"unknown scheduler {schedule!r}; known: cosine, constant")
