"""Co-Tuning (You, Kou, Long, Wang: Co-Tuning for Transfer Learning, NeurIPS 2020).

Two steps. (1) Category relationship: the pretrained network (its own classifier, ImageNet's 1000 classes for the
shipped weights) scores every image of the training split, unaugmented, and p(y_s | y_t = c) is the mean of its
softmax over the training images of target class c (the paper's direct approach). That pass runs before training
and is charged as the phase `relationship` (its seconds, images and forward FLOPs). (2) Training: the original head
is kept beside the new one on the shared features and both train with the trunk:

    CE(y_t, C_t(F(x))) + lambda * CE(p(y_s | y_t), C_s(F(x)))       lambda = 2.3

the second term a cross-entropy against the soft source label p(y_s | y_t) of each image's target class, averaged over
the batch (logged as `co_tuning`). The relationship matrix is kept in `ctx.state`, so a resumed run uses the one it
began with. Deployed model: the network with the new head only (`finalize` removes the source head).

The authors' code estimates the relationship by the paper's reverse approach instead: a multinomial logistic
regression from the source probabilities to the target labels, its regularisation chosen and its temperature fitted on
a held-out split, inverted with Bayes' rule. That needs a calibration split that is neither val (which selects the
epoch here) nor the training images, so it is not offered; the direct approach is TLlib's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finebench.core.space import log
from finebench.methods.base import Context
from finebench.methods.cost import forward_flops
from finebench.methods.pretrained import (
    SOURCE_HEAD,
    SourceHeadMethod,
    Timer,
    attach_source_head,
    check_source_head,
    original_network,
)
from finebench.methods.registry import register_method


def category_relationship(source_probs: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """(C_t, C_s): row c is the mean of the source probabilities over the images of target class c (the direct
    approach); a class without images gets the mean over all images."""
    rel = torch.zeros(num_classes, source_probs.shape[1], dtype=torch.float64)
    rel.index_add_(0, labels.long(), source_probs.double())
    counts = torch.bincount(labels.long(), minlength=num_classes).double()
    rel = rel / counts.clamp(min=1)[:, None]
    rel[counts == 0] = source_probs.double().mean(0)
    return rel.float()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """mean over the batch of -sum_j target_j * log softmax(logits)_j."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


@dataclass(frozen=True)
class CoTuningConfig:
    lam: float = 2.3  # weight of the source-head term (the paper's and TLlib's trade-off)


@register_method
class CoTuning(SourceHeadMethod):
    """Fine-tuning that also trains the original head on target labels translated into source-class probabilities."""

    name = "co-tuning"
    tune_key = "lam"
    tune_range = log(0.1, 10.0)  # the paper's 2.3 inside
    citation = "You, Kou, Long, Wang: Co-Tuning for Transfer Learning, NeurIPS 2020 (github.com/thuml/CoTuning)"
    Config = CoTuningConfig

    def __init__(self, config: CoTuningConfig) -> None:
        super().__init__(config)
        if not isinstance(config.lam, (int, float)) or config.lam < 0:
            raise ValueError(f"method_config.co-tuning.lam must be a number >= 0, got {config.lam!r}")

    def preflight(self, spec, structure) -> None:
        check_source_head(spec, self.name)

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        original = original_network(model, ctx.spec, ctx.device)
        if "relationship" not in ctx.state:  # a resumed run has it already
            self.relationship(original, ctx)
        attach_source_head(model, copy.deepcopy(original.get_classifier()).requires_grad_(True))
        self.source_classes = int(ctx.state["relationship"].shape[1])
        return model

    def relationship(self, original: nn.Module, ctx: Context) -> None:
        """p(y_s | y_t) into ctx.state, charged as `relationship`."""
        loader = ctx.loaders["calibration"]
        with Timer() as t, torch.no_grad():
            probs, labels = [], []
            for x, y in loader:
                probs.append(F.softmax(original(x).float(), dim=1).cpu())
                labels.append(y.cpu())
        n = loader.num_samples
        flops = forward_flops(original, ctx.spec.train.resolution, ctx.device) * n
        ctx.budget.charge("relationship", seconds=t.seconds, samples=n, flops=flops)
        ctx.state["relationship"] = category_relationship(torch.cat(probs), torch.cat(labels), ctx.num_classes)

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        y = batch[1]
        rel = ctx.state["relationship"]
        if rel.device != y.device:
            rel = ctx.state["relationship"] = rel.to(y.device)
        return {
            "ce": F.cross_entropy(out.logits, y),
            "co_tuning": self.config.lam * soft_cross_entropy(out.source_logits, rel[y]),
        }

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        rel = ctx.state["relationship"].cpu()
        top = rel.argmax(1).tolist()
        return {"relationship": {"source_classes": self.source_classes, "module": SOURCE_HEAD,
                                 "top_source_class": top, "top_probability": rel.max(1).values.tolist()}}  # fmt: skip
