"""L2-SP (Li, Grandvalet, Davoine: Explicit Inductive Bias for Transfer Learning with Convolutional Networks, ICML
2018): fine-tuning of the whole network with the weight decay replaced by a pull towards the pretrained weights.

    Omega(w) = alpha/2 * ||w_S - w0_S||^2 + beta/2 * ||w_Sbar||^2        (the paper's eq. 4 form of L2-SP)

w_S are the convolution and linear kernels of the pretrained part (the authors' code regularises the tensors named
`weights`: not biases, not BatchNorm's gamma and beta), w0_S their pretrained values (the run's starting point), w_Sbar
the new head's kernel. The suite's weight decay is switched off for this method (the two terms are its weight
decay); each term is logged (`l2_sp`, `l2_head`). The starting point is a detached copy, never trained and not in the
optimiser; it is rebuilt from the same weights on resume.

Defaults: alpha = 0.1, beta = 0.01, the authors' setting. TLlib (`delta.py --regularization-type l2_sp`) pulls every
parameter of the backbone (biases and BatchNorm's too) and puts L2 on the whole head, with alpha = beta = 0.01 (its
DELTA defaults): `scope=all alpha=0.01 beta=0.01` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finebench.core.space import Space, log
from finebench.methods.base import Context, Method, Stage
from finebench.methods.pretrained import starting_point
from finebench.methods.registry import register_method


def l2_sp(params: dict[str, Tensor], start: dict[str, Tensor]) -> Tensor:
    """||w_S - w0_S||^2 over the pretrained parameters (before alpha/2)."""
    return sum(((params[n] - w0).float().pow(2).sum() for n, w0 in start.items()), torch.zeros(()))


def l2(params: list[Tensor]) -> Tensor:
    """||w||^2 (before beta/2)."""
    return sum((p.float().pow(2).sum() for p in params), torch.zeros(()))


def kernels(model: nn.Module, names: list[str]) -> list[str]:
    """Of `names`, the weights of convolutions and linear layers."""
    modules = dict(model.named_modules())
    out = []
    for name in names:
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and isinstance(modules.get(owner), (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out.append(name)
    return out


SCOPES = ("kernels", "all")


@dataclass(frozen=True)
class L2SPConfig:
    alpha: float = 0.1  # weight of the pull towards the pretrained weights: alpha/2 * ||w_S - w0_S||^2
    beta: float = 0.01  # weight of the new head's L2 norm: beta/2 * ||w_Sbar||^2
    scope: str = "kernels"  # kernels: conv and linear weights only (the authors' code) | all: every parameter (TLlib)


@register_method
class L2SP(Method):
    """Fine-tuning with an L2 pull towards the pretrained weights (and L2 on the new head) instead of weight decay."""

    name = "l2-sp"
    tune_key = "alpha"
    tune_range = log(1e-3, 1.0)  # the paper's cross-validation grid spans 0.001..1
    citation = (
        "Li, Grandvalet, Davoine: Explicit Inductive Bias for Transfer Learning with Convolutional Networks, ICML "
        "2018, arXiv:1802.01483"
    )
    Config = L2SPConfig

    def __init__(self, config: L2SPConfig) -> None:
        super().__init__(config)
        for key in ("alpha", "beta"):
            v = getattr(config, key)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"method_config.{self.name}.{key} must be a number >= 0, got {v!r}")
        if config.scope not in SCOPES:
            raise ValueError(f"method_config.{self.name}.scope {config.scope!r} is not one of {', '.join(SCOPES)}")

    @classmethod
    def search_space(cls, config: Mapping[str, Any]) -> dict[str, Space]:
        """The learning rate and alpha: the pull replaces weight decay (its stage trains with none)."""
        return {k: v for k, v in super().search_space(config).items() if k != "weight_decay"}

    @classmethod
    def note(cls, config: dict[str, Any]) -> str | None:
        return "TLlib's scope: every parameter" if config.get("scope") == "all" else None

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        body, head = list(ctx.stages.body), list(ctx.stages.head)
        if self.config.scope == "kernels":
            body, head = kernels(model, body), kernels(model, head)
        self.start = starting_point(model, body)
        self.head = head
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        return [Stage(self.name, ctx.spec.train.epochs, None, weight_decay=0.0)]

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        params = dict(model.named_parameters())
        if self.start and next(iter(self.start.values())).device != out.device:  # prepare saw the model on the CPU
            self.start = {n: w.to(out.device) for n, w in self.start.items()}
        return {
            "ce": F.cross_entropy(out, batch[1]),
            "l2_sp": self.config.alpha / 2 * l2_sp(params, self.start),
            "l2_head": self.config.beta / 2 * l2([params[n] for n in self.head]),
        }
