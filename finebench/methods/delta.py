"""DELTA (Li, Xiong, Wang, Zhang, Zhu, Huan, Huang: DELTA: DEep Learning Transfer using Feature Map with Attention
for Convolutional Networks, ICLR 2019): fine-tuning of the whole network with the weight decay replaced by

    alpha * sum_l sum_j W_lj * ||FM_lj(w, x) - FM_lj(w*, x)||^2  +  beta/2 * ||w_head||^2

FM_lj the j-th channel of layer l's output for the network being trained (w) and for the frozen pretrained network
(w*), on the same batch. As the authors' code (and TLlib) compute it, the squared distance of a channel is averaged
over its h*w positions, multiplied by the channel count C_l (so that the weights average 1) and by 1/2, and summed
over the channels and the layers. alpha = beta = 0.01, the authors' defaults; no weight decay besides these terms.

Over the batch's images the term is averaged (`reduction=mean`): the paper adds the regulariser to each example's
loss, and the cross-entropy is a mean over the batch. The authors' code sums it over the batch (`reduction=sum`),
which multiplies its weight by the batch size (32 here): on Flowers-17 with Lite0 at 112 px, lr 0.01, that run
diverged in its second epoch (the term 1.8e5 in the first epoch, 2.6e24 in the second; val top-1 6 %).

The reference network's BatchNorm layers normalise with the batch's statistics, as the trained network's do in
training (their moving statistics stay fixed), so the term measures how far the weights have moved (it is 0 at the
start). The authors' code runs the reference with its moving (ImageNet) statistics instead (`reference_bn=moving`),
which makes the term measure the gap between batch and moving statistics as well. On Flowers-17 with the shipped
EfficientNet-Lite0 weights that gap alone, before any training, is 456 per image at 112 px and 319 at 224 px (the
sum over the four tapped convolutions, uniform weights): alpha * 32 images * 456 = 146 against a cross-entropy of
2.8. Tapping the groups' outputs instead, the gap was 3,480 per image and training collapsed (val top-1 6 % after
one epoch, against 22 % for cut-full at the same budget).

Layers: the last convolution of each of the backbone's groups (its stages after the stride-2 stem), i.e. the output
of the group's last block before its BatchNorm and residual sum, as the authors' code taps ResNet's
layer1..layer4[-1].conv3 (EfficientNet: the last block's conv_pwl); `taps=output` takes the groups' outputs instead.

Channel weights W_l = softmax(z_l / 5), z_l the standardised (z-scored over layer l's channels) increase of the
cross-entropy when channel j of layer l is set to zero (the authors' code zeroes the filter; these convolutions
have no bias, so it is the same): computed once before training, as the authors' code does,
on the frozen pretrained network with a linear classifier first fitted to its features for `head_epochs` = 10 epochs
(SGD, lr 0.01, momentum 0.9, weight decay 1e-4, the lr times 0.1 over 6 epochs), on `attention_batches` = 4 seeded
batches of the training split at the suite's batch size. Here the classifier is fitted on the pooled features of the
unaugmented training images, computed once, and each zeroed channel is propagated from the block that holds it on
only (the network's tail from there; checked to reproduce the network's output). That whole pass is charged as the
phase `channel-attention` (its seconds, images and FLOPs, counted by torch's flop counter), and its weights are kept in
`ctx.state` for a resumed run. `attention=none` drops the weights (TLlib's `feature_map`: 1/2 * the plain sum of
squared differences, no averaging).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.core.space import Space, log
from finebench.methods.attention_branch import ordered_children
from finebench.methods.attention_transfer import FeatureTap
from finebench.methods.base import Context, Method, Stage
from finebench.methods.cost import flop_counter
from finebench.methods.l2_sp import l2
from finebench.methods.pretrained import Timer, frozen_copy, pooled_features
from finebench.methods.registry import register_method

ATTENTION = ("channel", "none")
TAPS = ("conv", "output")
REDUCTIONS = ("mean", "sum")
REFERENCE_BN = ("batch", "moving")


def weighted_feature_distance(fs: Tensor, ft: Tensor, weights: Tensor, reduction: str = "sum") -> Tensor:
    """1/2 * sum_c C * W_c * ||fs_bc - ft_bc||^2 / (h*w) of each image b, summed (or averaged) over the batch: the
    attention-weighted distance of one layer."""
    d = (fs.float() - ft.float()).pow(2).mean(dim=(2, 3))  # (B, C): per-channel mean over positions
    per_image = 0.5 * (d * weights.to(d.device).float() * fs.shape[1]).sum(1)
    return per_image.mean() if reduction == "mean" else per_image.sum()


def feature_distance(fs: Tensor, ft: Tensor, reduction: str = "sum") -> Tensor:
    """1/2 * ||fs_b - ft_b||^2 of each image b (no attention), summed (or averaged) over the batch."""
    per_image = 0.5 * (fs.float() - ft.float()).pow(2).flatten(1).sum(1)
    return per_image.mean() if reduction == "mean" else per_image.sum()


def channel_weights(increase: Tensor, temperature: float = 5.0) -> Tensor:
    """softmax(z / T) over a layer's channels, z the z-scored loss increases (uniform when they are all equal)."""
    std = increase.std(unbiased=False) if increase.numel() > 1 else torch.zeros(())
    z = (increase - increase.mean()) / std if std > 0 else torch.zeros_like(increase)
    return F.softmax(z / temperature, dim=0)


def network_tail(model: nn.Module, boundary: str):
    """x -> pooled features, starting from the output of module `boundary` (the modules after it, then the head's
    pooling), or None when the model's children do not chain that way."""
    try:
        children = ordered_children(model, boundary)
    except ValueError:
        return None
    names = [n for n, _ in children]
    if boundary not in names:
        return None
    classifier, pool = model.get_classifier(), getattr(model, "global_pool", None)
    rest = []
    for _, module in children[names.index(boundary) + 1 :]:
        if module is pool or module is classifier:
            break
        rest.append(module)
    seq = nn.Sequential(*rest)
    return lambda g: model.forward_head(seq(g), pre_logits=True)


def last_conv(model: nn.Module, group: str) -> str:
    """The last convolution registered under module `group`: its last block's last convolution, whose output is that
    block's before its BatchNorm and residual sum (ResNet layerN[-1].conv3 or .conv2, EfficientNet conv_pwl)."""
    convs = [n for n, m in model.named_modules() if n.startswith(group + ".") and isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"group {group!r} has no convolution to tap")
    return convs[-1]


def chain_start(model: nn.Module, tap: str) -> str | None:
    """The module whose output a tail of the network can start from, so that `tap` is that module itself or inside
    the tail: `tap` when it ends a link of the network's chain of children, else the link before the block that
    holds it; None when the network is not such a chain."""
    if network_tail(model, tap) is not None:
        return tap
    parts = tap.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        block = ".".join(parts[:depth])
        try:
            names = [n for n, _ in ordered_children(model, block)]
        except ValueError:
            continue
        if block in names and names.index(block) > 0:
            return names[names.index(block) - 1]
    return None


def zero_channels(o: Tensor, js: list[int], rows: int) -> Tensor:
    """A copy of `o` with channel js[k] zeroed in rows k*rows .. (k+1)*rows - 1."""
    o = o.clone()
    for k, j in enumerate(js):
        o[k * rows : (k + 1) * rows, j] = 0
    return o


@torch.no_grad()
def loss_increases(network: nn.Module, head: nn.Module, tap: str, x: Tensor, y: Tensor, chunk: int = 256) -> Tensor:
    """(C,): CE(after zeroing channel j of module `tap`'s output) - CE(as is), for every channel j, on (x, y). Each
    zeroed channel is propagated from the nearest link of the network's chain before it (checked once to reproduce
    the whole network), the channels in chunks of `chunk` images; else through the whole network."""
    module = dict(network.named_modules())[tap]
    start = chain_start(network, tap)
    names = [tap] if start in (None, tap) else [tap, start]
    taps = FeatureTap(network, names)
    try:
        whole = pooled_features(network, x)
        channels = taps.outputs[tap].shape[1]
        g = taps.outputs[start] if start is not None else None
    finally:
        taps.remove()
    tail = network_tail(network, start) if start is not None else None
    if tail is not None and not torch.allclose(tail(g), whole, rtol=1e-3, atol=1e-4):
        tail = None
    out = torch.empty(channels)
    if tail is None:  # the whole network, one channel at a time
        base = F.cross_entropy(head(whole), y)
        for j in range(channels):
            handle = module.register_forward_hook(lambda m, a, o, j=j: zero_channels(o, [j], len(o)))
            try:
                out[j] = F.cross_entropy(head(pooled_features(network, x)), y) - base
            finally:
                handle.remove()
        return out
    base = F.cross_entropy(head(tail(g)), y)  # the same path as the ablated losses
    per = max(1, chunk // len(x))  # channels per forward: a batch of per * len(x) images
    for first in range(0, channels, per):
        js = list(range(first, min(first + per, channels)))
        if start == tap:
            handle, inputs = None, zero_channels(g.repeat(len(js), 1, 1, 1), js, len(x))
        else:
            handle = module.register_forward_hook(lambda m, a, o, js=js: zero_channels(o, js, len(x)))
            inputs = g.repeat(len(js), 1, 1, 1)
        try:
            losses = F.cross_entropy(head(tail(inputs)), y.repeat(len(js)), reduction="none").view(len(js), len(x))
        finally:
            if handle is not None:
                handle.remove()
        out[first : first + len(js)] = (losses.mean(1) - base).cpu()
    return out


def batch_statistics(network: nn.Module) -> None:
    """Every BatchNorm of `network` normalises with the batch's statistics and leaves its moving ones as they are."""
    for m in network.modules():
        if isinstance(m, _BatchNorm):
            m.train()
            m.momentum = 0.0


def fit_linear_head(features: Tensor, labels: Tensor, num_classes: int, epochs: int, batch_size: int,
                    generator: torch.Generator) -> nn.Linear:  # fmt: skip
    """A linear classifier on fixed features: SGD lr 0.01, momentum 0.9, weight decay 1e-4, lr x 0.1 over 6 epochs."""
    head = nn.Linear(features.shape[1], num_classes).to(features.device)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    gamma = 0.1 ** (1 / 6)
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = 0.01 * gamma**epoch
        order = torch.randperm(len(features), generator=generator).to(features.device)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(head(features[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


@dataclass(frozen=True)
class DeltaConfig:
    alpha: float = 0.01  # weight of the attention-weighted feature-map distance
    beta: float = 0.01  # weight of the new head's L2 norm: beta/2 * ||w_head||^2
    attention: str = "channel"  # channel (the paper's behaviour weights) | none (unweighted: TLlib's feature_map)
    attention_batches: int = 4  # training batches on which each channel's removal is measured (authors' code: 4)
    head_epochs: int = 10  # epochs of the linear classifier fitted to the pretrained features for that measure
    reference_bn: str = "batch"  # the reference's BatchNorm: batch statistics (as the student) | moving (authors' code)
    taps: str = "conv"  # conv: each group's last convolution, before BatchNorm (authors' code) | output: group outputs
    reduction: str = "mean"  # over the batch's images: mean (the paper's per-example term) | sum (the authors' code)


@register_method
class Delta(Method):
    """Fine-tuning with an attention-weighted pull of feature maps towards the pretrained network's."""

    name = "delta"
    tune_key = "alpha"
    tune_range = log(1e-3, 1.0)

    @classmethod
    def search_space(cls, config: Mapping[str, Any]) -> dict[str, Space]:
        """The learning rate and alpha: the head's L2 (beta) replaces weight decay (its stage trains with none)."""
        return {k: v for k, v in super().search_space(config).items() if k != "weight_decay"}

    citation = (
        "Li, Xiong, Wang, Zhang, Zhu, Huan, Huang: DELTA: DEep Learning Transfer using Feature Map with Attention for "
        "Convolutional Networks, ICLR 2019, arXiv:1901.09229"
    )
    Config = DeltaConfig

    def __init__(self, config: DeltaConfig) -> None:
        super().__init__(config)
        c = config
        for key in ("alpha", "beta"):
            v = getattr(c, key)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"method_config.delta.{key} must be a number >= 0, got {v!r}")
        if c.reference_bn not in REFERENCE_BN:
            raise ValueError(f"method_config.delta.reference_bn {c.reference_bn!r} is not one of "
                             f"{', '.join(REFERENCE_BN)}")  # fmt: skip
        if c.reduction not in REDUCTIONS:
            raise ValueError(f"method_config.delta.reduction {c.reduction!r} is not one of {', '.join(REDUCTIONS)}")
        if c.taps not in TAPS:
            raise ValueError(f"method_config.delta.taps {c.taps!r} is not one of {', '.join(TAPS)}")
        if c.attention not in ATTENTION:
            raise ValueError(f"method_config.delta.attention {c.attention!r} is not one of {', '.join(ATTENTION)}")
        for key in ("attention_batches", "head_epochs"):
            v = getattr(c, key)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"method_config.delta.{key} must be an integer >= 1, got {v!r}")

    @classmethod
    def note(cls, config: dict[str, Any]) -> str | None:
        notes = []
        if config.get("attention") == "none":
            notes.append("TLlib's feature_map: no channel attention")
        if config.get("reduction") == "sum":
            notes.append("the authors' sum over the batch")
        if config.get("taps") == "output":
            notes.append("the groups' outputs tapped")
        if config.get("reference_bn") == "moving":
            notes.append("the authors' reference with moving BatchNorm statistics")
        return "; ".join(notes) or None

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        self.reference = frozen_copy(model).to(ctx.device)
        groups = [ctx.stages.stage_modules[i] for i in ctx.stages.groups]
        self.layers = [last_conv(model, g) for g in groups] if self.config.taps == "conv" else groups
        self.head = list(ctx.stages.head)
        if self.config.attention == "channel" and "channel_attention" not in ctx.state:
            ctx.state["channel_attention"] = self.channel_attention(ctx)
        if self.config.reference_bn == "batch":
            batch_statistics(self.reference)
        self.student_tap = FeatureTap(model, self.layers)
        self.reference_tap = FeatureTap(self.reference, self.layers)
        return model

    def channel_attention(self, ctx: Context) -> dict[str, Tensor]:
        """The behaviour weights of every layer (see the module doc), charged as `channel-attention`."""
        cfg, net, loader = self.config, self.reference, ctx.loaders["calibration"]
        gen = torch.Generator().manual_seed(ctx.spec.seed)
        bs = ctx.spec.train.batch_size
        wanted = set(torch.randperm(loader.num_samples, generator=gen)[: cfg.attention_batches * bs].tolist())
        counter = flop_counter()
        with Timer() as t, counter, torch.no_grad():
            feats, labels, xs, ys, seen = [], [], [], [], 0
            for x, y in loader:
                feats.append(pooled_features(net, x))
                labels.append(y)
                keep = [i for i in range(len(y)) if seen + i in wanted]
                xs.append(x[keep])
                ys.append(y[keep])
                seen += len(y)
            with torch.enable_grad():
                head = fit_linear_head(torch.cat(feats), torch.cat(labels), ctx.num_classes, cfg.head_epochs, bs, gen)
            x_all, y_all = torch.cat(xs), torch.cat(ys)
            perm = torch.randperm(len(y_all), generator=gen).to(x_all.device)
            x_all, y_all = x_all[perm], y_all[perm]
            weights = {}
            for layer in self.layers:
                parts = [loss_increases(net, head, layer, x_all[i : i + bs], y_all[i : i + bs])
                         for i in range(0, len(y_all), bs)]  # fmt: skip
                weights[layer] = channel_weights(torch.stack(parts).mean(0))
        # images through the network: the features pass, then each ablation (the classifier's epochs reuse features)
        samples = loader.num_samples + len(y_all) * sum(len(w) + 1 for w in weights.values())
        ctx.budget.charge("channel-attention", seconds=t.seconds, samples=samples,
                          flops=float(counter.get_total_flops()))  # fmt: skip
        return weights

    def schedule(self, ctx: Context) -> list[Stage]:
        return [Stage(self.name, ctx.spec.train.epochs, None, weight_decay=0.0)]

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        x, y = batch
        with torch.no_grad():
            self.reference(x)
        s, t = self.student_tap.outputs, self.reference_tap.outputs
        if self.config.attention == "channel":
            w = ctx.state["channel_attention"]
            dist = sum(weighted_feature_distance(s[n], t[n], w[n], self.config.reduction) for n in self.layers)
        else:
            dist = sum(feature_distance(s[n], t[n], self.config.reduction) for n in self.layers)
        params = dict(model.named_parameters())
        return {
            "ce": F.cross_entropy(out, y),
            "delta": self.config.alpha * dist,
            "l2_head": self.config.beta / 2 * l2([params[n] for n in self.head]),
        }

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {"layers": self.layers}
        if self.config.attention == "channel":
            w = ctx.state["channel_attention"]
            out["channel_attention"] = {n: {"channels": len(w[n]), "max_weight": float(w[n].max()),
                                            "entropy_ratio": float(-(w[n] * w[n].clamp(min=1e-12).log()).sum()
                                                                   / math.log(len(w[n])))}
                                        for n in self.layers}  # fmt: skip
        return out
