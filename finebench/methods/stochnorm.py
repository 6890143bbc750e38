"""StochNorm (Kou, You, Long, Wang: Stochastic Normalization, NeurIPS 2020): every BatchNorm layer of the network,
while training, normalises each channel with the mini-batch's statistics (with probability p) or with its moving
statistics (probability 1 - p), drawn afresh per channel at every forward pass and shared by the batch:

    z = (1 - s) * BN_moving(x) + s * BN_batch(x),   s ~ Bernoulli(p) per channel, p = 0.5

(the paper's two-branch normalisation, as the authors' code computes it; both branches share gamma and beta). The
moving branch uses the statistics from before this batch; the moving statistics are then updated from the batch's at
every training forward whatever s is, as in plain BatchNorm, and they start from the pretrained ones. At evaluation
a StochNorm layer is the plain BatchNorm with moving statistics, so the deployed network is the plain network
(`finalize` turns the layers back into the backbone's own classes; outputs unchanged). The layers keep their class's
extras (timm's BatchNormAct2d: its activation after the normalisation), their parameters and their state-dict keys.

Everything else is plain fine-tuning of the whole network at the suite's optimiser and schedule. The mask is drawn
from torch's generator, which every checkpoint keeps, so a resumed run draws the same masks.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.core.space import uniform
from finebench.methods.base import Context, Method
from finebench.methods.registry import register_method


def stoch_batch_norm(x: Tensor, bn: _BatchNorm, mask: Tensor) -> Tensor:
    """Per channel c, BN with the batch's statistics where mask[c] = 1, with the moving ones (from before this batch)
    where it is 0; the moving statistics are updated from the batch's as in plain BatchNorm (training mode)."""
    factor = 0.0
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    # copies: the batch branch updates the moving statistics in place, and the moving branch's backward must see the
    # statistics its forward used
    moving = F.batch_norm(x, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias, False, 0.0, bn.eps)
    batch = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, True, factor, bn.eps)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    s = mask.to(moving.dtype).view(shape)
    return (1 - s) * moving + s * batch


def draw_mask(channels: int, p: float, device: torch.device) -> Tensor:
    """s ~ Bernoulli(p) per channel (1: the batch's statistics)."""
    return torch.bernoulli(torch.full((channels,), p, device=device))


@functools.cache
def stochastic_class(cls: type) -> type:
    """A subclass of BatchNorm class `cls` that normalises stochastically while training (see the module doc)."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.track_running_stats and self.running_mean is not None):
            return cls.forward(self, x)
        z = stoch_batch_norm(x, self, draw_mask(self.num_features, self.stoch_p, x.device))
        for extra in ("drop", "act"):  # timm's BatchNormAct2d: dropout and activation after the normalisation
            if isinstance(getattr(self, extra, None), nn.Module):
                z = getattr(self, extra)(z)
        return z

    return type(f"Stoch{cls.__name__}", (cls,), {"forward": forward, "plain_class": cls})


def make_stochastic(model: nn.Module, p: float) -> int:
    """Turn every BatchNorm layer of `model` into its stochastic twin (in place); returns how many."""
    n = 0
    for m in model.modules():
        if isinstance(m, _BatchNorm) and not hasattr(type(m), "plain_class"):
            m.__class__ = stochastic_class(type(m))
            m.stoch_p = p
            n += 1
    return n


def make_plain(model: nn.Module) -> nn.Module:
    """Undo `make_stochastic`: the layers' own classes again (evaluation is unchanged: moving statistics)."""
    for m in model.modules():
        if hasattr(type(m), "plain_class"):
            m.__class__ = type(m).plain_class
            del m.stoch_p
    return model


@dataclass(frozen=True)
class StochNormConfig:
    p: float = 0.5  # probability of normalising a channel with the batch's statistics (else the moving ones)


@register_method
class StochNorm(Method):
    """Fine-tuning with every BatchNorm layer normalising by batch or moving statistics at random per channel."""

    name = "stochnorm"
    tune_key = "p"
    tune_range = uniform(0.1, 0.9)
    citation = "Kou, You, Long, Wang: Stochastic Normalization, NeurIPS 2020 (github.com/thuml/StochNorm)"
    Config = StochNormConfig

    def __init__(self, config: StochNormConfig) -> None:
        super().__init__(config)
        if not isinstance(config.p, (int, float)) or not 0 <= config.p <= 1:
            raise ValueError(f"method_config.stochnorm.p must be a probability in [0, 1], got {config.p!r}")

    def preflight(self, spec, structure) -> None:
        if not any(isinstance(m, _BatchNorm) for m in structure(spec.backbone).modules()):
            raise ValueError(f"method 'stochnorm': {spec.backbone} has no BatchNorm layer to make stochastic")

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        self.layers = make_stochastic(model, float(self.config.p))
        return model

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return make_plain(model)

    def extras(self, model: nn.Module, ctx: Context) -> dict:
        return {"stochnorm": {"layers": self.layers, "p": self.config.p}}
