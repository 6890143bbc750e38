"""Learning without Forgetting (Li, Hoiem: Learning without Forgetting, ECCV 2016 / TPAMI 2018).

The network keeps its original classifier (the pretrained weights' own head, ImageNet's 1000 classes for the shipped
EfficientNet-Lite weights) beside the new one, both reading the same pooled features, and is trained on the target
images with

    lambda_o * L_old(Y_o, Yhat_o) + L_new(Y_n, Yhat_n)

L_new the cross-entropy of the new head; L_old the paper's knowledge-distillation cross-entropy between the
original network's responses Y_o and the old head's current ones, both softened with the temperature T:
L_old = -sum_i y'_o(i) log yhat'_o(i), y'(i) = y(i)^(1/T) / sum_j y(j)^(1/T) = softmax(logits / T)(i), averaged over
the batch, without a T^2 factor (the authors' code: its gradient is (softmax - target) / T). Defaults as the paper:
T = 2, lambda_o = 1; the shared trunk, the old head and the new head all train (the R term is the suite's weight
decay). The paper first trains the new head alone with everything else frozen (its warm-up step), then everything:
`warmup_epochs` of the budget go to the warm-up (`auto`, the default: one epoch when the budget has two or more).

Y_o: the paper records the original network's responses once, before training, on the target images. Here a frozen
copy of the original network computes them on each training batch as it is seen (the same images the heads see; a
flip of the image changes them a little); its forward is part of every training step, so its FLOPs and time are in
the run's training cost, as a teacher's are. Deployed model: the network with the new head only (the old head is
removed by `finalize`; the record's deployed parameter count excludes it).

TLlib's `lwf.py` differs: T = 3, trade-off 4, the old head frozen, no warm-up (`temperature=3 lam=4
train_source_head=false warmup_epochs=0` here), and its targets are recorded once, on one augmented view of each image
(not offered: here they come from the image each step sees).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finebench.core.space import log
from finebench.methods.base import Context, Stage
from finebench.methods.pretrained import (
    SOURCE_HEAD,
    SourceHeadMethod,
    attach_source_head,
    check_source_head,
    original_network,
)
from finebench.methods.registry import register_method


def lwf_loss(old_logits: Tensor, recorded_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """L_old: -sum_i y'_o(i) log yhat'_o(i) with y' = softmax(logits / T), averaged over the batch."""
    target = F.softmax(recorded_logits.float() / temperature, dim=1)
    return -(target * F.log_softmax(old_logits.float() / temperature, dim=1)).sum(1).mean()


@dataclass(frozen=True)
class LwFConfig:
    temperature: float = 2.0  # T of both the recorded and the current old-head responses
    lam: float = 1.0  # lambda_o, the weight of L_old
    # epochs of the paper's warm-up (the new head alone) before everything trains; auto: 1 if the budget has >= 2
    warmup_epochs: int | str = "auto"
    train_source_head: bool = True  # the old head trains with the trunk (the paper); false keeps it fixed (TLlib)


@register_method
class LwF(SourceHeadMethod):
    """Fine-tuning that keeps the original head's outputs close to the pretrained network's on the target images."""

    name = "lwf"
    tune_key = "lam"
    tune_range = log(0.1, 10.0)  # lambda_o: the paper uses 1
    citation = "Li, Hoiem: Learning without Forgetting, ECCV 2016 / TPAMI 2018, arXiv:1606.09282"
    Config = LwFConfig

    def __init__(self, config: LwFConfig) -> None:
        super().__init__(config)
        c = config
        if not isinstance(c.temperature, (int, float)) or c.temperature <= 0:
            raise ValueError(f"method_config.lwf.temperature must be > 0, got {c.temperature!r}")
        if not isinstance(c.lam, (int, float)) or c.lam < 0:
            raise ValueError(f"method_config.lwf.lam must be >= 0, got {c.lam!r}")
        if c.warmup_epochs != "auto" and (not isinstance(c.warmup_epochs, int) or c.warmup_epochs < 0):
            raise ValueError(
                f"method_config.lwf.warmup_epochs must be auto or an integer >= 0, got {c.warmup_epochs!r}"
            )
        if not isinstance(c.train_source_head, bool):
            raise ValueError(f"method_config.lwf.train_source_head must be true or false, got {c.train_source_head!r}")

    @classmethod
    def note(cls, config: dict[str, Any]) -> str | None:
        if config.get("warmup_epochs") == 0 and config.get("train_source_head") is False:
            return "TLlib's setting (no warm-up, old head fixed)"
        return None

    def preflight(self, spec, structure) -> None:
        check_source_head(spec, self.name)
        if self.warmup(spec.train.epochs) >= spec.train.epochs:
            n = spec.train.epochs
            raise ValueError(f"method_config.lwf.warmup_epochs={self.config.warmup_epochs} leaves no epoch of the "
                             f"budget ({n}) to train the whole network; use 0..{n - 1}")  # fmt: skip

    def warmup(self, epochs: int) -> int:
        """Epochs of the warm-up within a budget of `epochs`."""
        if self.config.warmup_epochs == "auto":
            return 1 if epochs >= 2 else 0
        return self.config.warmup_epochs

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        self.original = original_network(model, ctx.spec, ctx.device)
        attach_source_head(model, copy.deepcopy(self.original.get_classifier()).requires_grad_(True))
        self.trunk_param = ctx.stages.body[0]
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        source = {f"{SOURCE_HEAD}.{n}" for n, _ in self.original.get_classifier().named_parameters()}
        every = frozenset(ctx.stages.body + ctx.stages.head) | (source if self.config.train_source_head else set())
        epochs = ctx.spec.train.epochs
        warmup = self.warmup(epochs)
        stages = [Stage("warm-up", warmup, frozenset(ctx.stages.head))] if warmup else []
        return [*stages, Stage(self.name, epochs - warmup, every)]

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        x, y = batch
        if not any(p.requires_grad for p in getattr(model, SOURCE_HEAD).parameters()) and not self.trunk_trains(model):
            return {"ce": F.cross_entropy(out.logits, y)}  # the warm-up: L_old is constant, nothing to compute
        with torch.no_grad():
            recorded = self.original(x)
        return {
            "ce": F.cross_entropy(out.logits, y),
            "lwf": self.config.lam * lwf_loss(out.source_logits, recorded, self.config.temperature),
        }

    def trunk_trains(self, model: nn.Module) -> bool:
        return model.get_parameter(self.trunk_param).requires_grad

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        return {"source_head": {"classes": int(self.original.get_classifier().out_features),
                                "module": SOURCE_HEAD, "removed_for_deployment": True}}  # fmt: skip
