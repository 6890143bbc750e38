"""SSF (Lian, Zhou, Feng, Wang: Scaling & Shifting Your Features, NeurIPS 2022): the pretrained network stays
frozen; after its operations a per-channel scale gamma and shift beta are learnt,

    y = gamma * x + beta                                           (eq. 1; gamma init N(1, 0.02), beta N(0, 0.02))

and after training they are merged into the preceding linear operation (eq. 2-3: w' = gamma * w, b' = gamma * b +
beta), so the deployed network is the plain one, with no extra parameter or time.

Where, in a CNN: after every BatchNorm layer's affine step (before its activation: timm's BatchNormAct2d keeps its
activation after) and after every convolution or linear layer with a bias of its own (squeeze-excitation's, say),
the new classifier excepted (it trains whole). A convolution without a bias is followed by BatchNorm in these
networks; a per-channel scale and shift after it would compose with the BatchNorm's into one per-channel affine
map, which the SSF after the BatchNorm already is, so it is not repeated. With frozen BatchNorm statistics (the
default `bn=eval`: the backbone is frozen, statistics included) each SSF after a BatchNorm merges exactly into its
gamma and beta:

    gamma_s * (gamma_bn * x_hat + beta_bn) + beta_s = (gamma_s * gamma_bn) * x_hat + (gamma_s * beta_bn + beta_s)

The SSF parameters live on the layers they follow (`<layer>.ssf_scale`, `<layer>.ssf_shift`), so the backbone's
own parameter names, stages and checkpoint keys are unchanged; `finalize` merges them and gives the layers back
their own classes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import register_method

BN_MODES = ("eval", "auto", "train")


def ssf(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """Eq. 1: y = scale * x + shift per channel (dim 1 of an image batch, the last dim of features)."""
    shape = (1, -1) + (1,) * (x.dim() - 2) if x.dim() > 2 else (1, -1)
    return x * scale.view(shape) + shift.view(shape)


def merge_affine(weight: Tensor, bias: Tensor, scale: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 2-3: an operation with per-output-channel weight `weight` (first dim) and bias `bias`, followed by
    SSF, as one operation: (scale * weight, scale * bias + shift)."""
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return weight * scale.view(shape), bias * scale + shift


def ssf_norm(x: Tensor, bn: _BatchNorm) -> Tensor:
    """BatchNorm then SSF (before any activation), as one BatchNorm with gamma * scale and beta * scale + shift."""
    weight = bn.weight if bn.weight is not None else torch.ones_like(bn.ssf_scale)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(bn.ssf_shift)
    w, b = merge_affine(weight, bias, bn.ssf_scale, bn.ssf_shift)
    use_batch = bn.training or bn.running_mean is None
    factor = 0.0
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(x, bn.running_mean, bn.running_var, w, b, use_batch, factor, bn.eps)


@functools.cache
def ssf_class(cls: type) -> type:
    """A subclass of `cls` (a BatchNorm, convolution or linear class) with SSF after its affine step."""
    if issubclass(cls, _BatchNorm):

        def forward(self, x: Tensor) -> Tensor:
            z = ssf_norm(x, self)
            for extra in ("drop", "act"):  # timm's BatchNormAct2d: dropout and activation after the normalisation
                if isinstance(getattr(self, extra, None), nn.Module):
                    z = getattr(self, extra)(z)
            return z

    else:

        def forward(self, x: Tensor) -> Tensor:
            return ssf(cls.forward(self, x), self.ssf_scale, self.ssf_shift)

    return type(f"SSF{cls.__name__}", (cls,), {"forward": forward, "plain_class": cls})


def ssf_targets(model: nn.Module, head: set[str]) -> list[str]:
    """Names of the modules SSF follows: every BatchNorm, every convolution or linear layer with a bias, the
    modules holding `head`'s parameters excepted."""
    out = []
    for name, m in model.named_modules():
        if any(p.startswith(name + ".") for p in head) and name:
            continue
        if isinstance(m, _BatchNorm) or (isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None):
            out.append(name)
    return out


def add_ssf(model: nn.Module, targets: list[str], init_std: float, generator: torch.Generator) -> list[str]:
    """Give each target module SSF parameters (scale ~ N(1, init_std), shift ~ N(0, init_std)) and its SSF class,
    in place; returns the new parameters' names."""
    modules = dict(model.named_modules())
    names = []
    for name in targets:
        m = modules[name]
        channels = m.num_features if isinstance(m, _BatchNorm) else m.out_channels if isinstance(m, nn.Conv2d) else (
            m.out_features)  # fmt: skip
        ref = next(m.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
        scale = 1.0 + init_std * torch.randn(channels, generator=generator)
        shift = init_std * torch.randn(channels, generator=generator)
        m.register_parameter("ssf_scale", nn.Parameter(scale.to(device)))
        m.register_parameter("ssf_shift", nn.Parameter(shift.to(device)))
        m.__class__ = ssf_class(type(m))
        names += [f"{name}.ssf_scale", f"{name}.ssf_shift"]
    return names


@torch.no_grad()
def merge_ssf(model: nn.Module) -> nn.Module:
    """Fold every SSF into the layer it follows (eq. 2-3) and give the layer its own class back: the plain network,
    computing the same outputs at evaluation (within float rounding)."""
    for m in model.modules():
        if not hasattr(type(m), "plain_class"):
            continue
        scale, shift = m.ssf_scale.detach(), m.ssf_shift.detach()
        if m.weight is None:  # a BatchNorm without affine parameters gets them: the merged gamma and beta
            m.weight, m.bias = nn.Parameter(torch.ones_like(scale)), nn.Parameter(torch.zeros_like(shift))
        w, b = merge_affine(m.weight.detach(), m.bias.detach(), scale, shift)
        m.weight.copy_(w)
        m.bias.copy_(b)
        del m.ssf_scale, m.ssf_shift
        m.__class__ = type(m).plain_class
    return model


@dataclass(frozen=True)
class SSFConfig:
    init_std: float = 0.02  # SSF's init: scale ~ N(1, init_std), shift ~ N(0, init_std) (the authors' code)
    # BatchNorm statistics while training: eval (frozen with the backbone; SSF then merges exactly into each layer's
    # moving-statistics form), auto or train (the layers followed by SSF use the batch's and update their moving ones)
    bn: str = "eval"


@register_method
class SSF(Method):
    """Freeze the network; learn a per-channel scale and shift after every BatchNorm (and biased conv), merged away."""

    name = "ssf"
    citation = (
        "Lian, Zhou, Feng, Wang: Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning, "
        "NeurIPS 2022, arXiv:2210.08823"
    )
    Config = SSFConfig

    def __init__(self, config: SSFConfig) -> None:
        super().__init__(config)
        if not isinstance(config.init_std, int | float) or not 0 <= config.init_std < 1:
            raise ValueError(f"method_config.ssf.init_std must be a number in [0, 1), got {config.init_std!r}")
        if config.bn not in BN_MODES:
            raise ValueError(f"method_config.ssf.bn: {config.bn!r} is not one of {', '.join(BN_MODES)}")

    @classmethod
    def bn_statistics(cls, config: dict) -> str | None:
        return "moving (frozen)" if config.get("bn", "eval") == "eval" else "batch"

    def preflight(self, spec, structure) -> None:
        model = structure(spec.backbone)
        others = sorted({type(m).__name__ for m in model.modules()
                         if isinstance(m, nn.LayerNorm | nn.GroupNorm) and m.weight is not None})  # fmt: skip
        if others:
            raise ValueError(f"method 'ssf': {spec.backbone} normalises with {', '.join(others)}; SSF here handles "
                             "BatchNorm networks (CNNs) only")  # fmt: skip
        from finebench.backbones.stages import stage_map

        if not ssf_targets(model, set(stage_map(model).head)):  # else it would be cut-fc under another name
            raise ValueError(f"method 'ssf': {spec.backbone} has no BatchNorm layer and no biased convolution or "
                             "linear layer to follow with a scale and shift")  # fmt: skip

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        generator = torch.Generator().manual_seed(ctx.spec.seed)
        added = add_ssf(model, ssf_targets(model, set(ctx.stages.head)), float(self.config.init_std), generator)
        self.trainable = frozenset(added + list(ctx.stages.head))
        self.layers = len(added) // 2
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        return [Stage("ssf", ctx.spec.train.epochs, self.trainable, bn=self.config.bn)]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return merge_ssf(model)

    def extras(self, model: nn.Module, ctx: Context) -> dict:
        return {"ssf": {"layers": self.layers}}
