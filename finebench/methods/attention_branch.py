"""Attention Branch Network (Fukui et al., CVPR 2019) for any timm CNN that exposes stages.

The backbone is split after its second-to-last stage (timm `feature_info`) into a trunk g = trunk(x) and its last
stage. Attention branch: a stride-1 copy of the last stage -> BN -> 1x1 conv to K classes -> BN -> ReLU, then
  (a) 1x1 conv K -> K -> global average pooling: the attention-branch logits;
  (b) conv K -> 1 (3x3 as the authors' code, 1x1 as the paper's figure: `map_kernel`) -> BN -> sigmoid: the
      attention map M (B, 1, h, w).
Perception branch: (1 + M) * g (`mechanism=residual`, the paper's default) or M * g (`multiply`) -> the original
last stage -> the backbone's own head (pooling, classifier). Loss = CE(attention logits) + CE(perception logits);
accuracy comes from the perception logits. Pooling is adaptive, so any input size works.

The branch's stage copy starts from the pretrained last stage (`branch_init=pretrained`, default) or from a random
initialisation as in the authors' code (`random`), a choice whose effect the benchmark can measure.

The split is checked, not assumed: the trunk, last stage and head chained together must reproduce the backbone's
output, else the backbone is refused with the reason.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.backbones.stages import StageMap, module_of_param, stage_map
from finebench.methods.base import Context, Method
from finebench.methods.registry import register_method

MECHANISMS = ("residual", "multiply")
INITS = ("pretrained", "random")


class ABNOutput(NamedTuple):
    logits: Tensor  # perception branch (B, K)
    attention_logits: Tensor  # attention branch (B, K)
    attention: Tensor  # M (B, 1, h, w), in (0, 1)


def ordered_children(model: nn.Module, boundary: str) -> list[tuple[str, nn.Module]]:
    """The model's children in registration order, with every nn.Sequential that contains `boundary` opened up,
    so that `boundary` is one of the returned names."""
    out: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = prefix + name
            if boundary.startswith(full + "."):
                if not isinstance(child, nn.Sequential):
                    raise ValueError(f"stage boundary {boundary!r} lies inside {full!r}, which is not sequential")
                walk(child, full + ".")
            else:
                out.append((full, child))

    walk(model, "")
    return out


def split_backbone(model: nn.Module, stages: StageMap) -> tuple[list[str], list[str]]:
    """(trunk, last stage) module names: the trunk ends at the second-to-last `feature_info` stage; the last stage
    runs from there up to the global pooling / classifier."""
    if len(stages.stage_modules) < 2:
        raise ValueError("the backbone exposes fewer than two stages; the attention branch needs two")
    boundary = stages.stage_modules[-2]
    children = ordered_children(model, boundary)
    names = [n for n, _ in children]
    if boundary not in names:
        raise ValueError(f"stage boundary {boundary!r} is not a module in forward order of {type(model).__name__}")
    cut = names.index(boundary) + 1
    classifier = model.get_classifier()
    pool = getattr(model, "global_pool", None)
    last: list[str] = []
    for name, module in children[cut:]:
        if module is pool or module is classifier or any(m is classifier for m in module.modules()):
            break
        last.append(name)
    owners = {module_of_param(p) for p in stages.stages[-1]}
    if not last or not any(any(o == n or o.startswith(n + ".") for n in last) for o in owners):
        raise ValueError(f"no last-stage modules found after {boundary!r} in {type(model).__name__}")
    return names[:cut], last


def stride_one(stage: nn.Module) -> nn.Module:
    """In place: every strided convolution gets stride 1 and every strided pooling becomes the identity, so the
    stage keeps its input's spatial size."""
    for name, module in list(stage.named_modules()):
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)
        elif isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)) and module.stride not in (1, (1, 1)):
            parent, _, child = name.rpartition(".")
            setattr(stage.get_submodule(parent) if parent else stage, child, nn.Identity())
    return stage


def reinitialise(module: nn.Module) -> None:
    """He-normal convolutions (fan-out), BatchNorm to identity with fresh statistics: the authors' init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _BatchNorm):
            m.reset_parameters()


def apply_attention(g: Tensor, m: Tensor, mechanism: str) -> Tensor:
    """The perception branch's input: (1 + M) * g (residual) or M * g (multiply); M broadcasts over channels."""
    if mechanism == "residual":
        return g * (1.0 + m)
    if mechanism == "multiply":
        return g * m
    raise ValueError(f"ABN mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")


def abn_loss(out: ABNOutput, y: Tensor) -> dict[str, Tensor]:
    """The paper's loss, as two logged terms whose sum is trained: CE of the perception and attention logits."""
    return {"ce": F.cross_entropy(out.logits, y), "ce_attention": F.cross_entropy(out.attention_logits, y)}


class AttentionBranchNet(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        stages: StageMap,
        num_classes: int,
        map_kernel: int = 3,
        mechanism: str = "residual",
        branch_init: str = "pretrained",
    ) -> None:
        super().__init__()
        if mechanism not in MECHANISMS:
            raise ValueError(f"ABN mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")
        if branch_init not in INITS:
            raise ValueError(f"ABN branch_init {branch_init!r} is not one of {', '.join(INITS)}")
        if map_kernel not in (1, 3):
            raise ValueError(f"ABN map_kernel must be 1 (the paper) or 3 (the authors' code), got {map_kernel}")
        self.backbone, self.mechanism = backbone, mechanism
        self.trunk_names, self.last_names = split_backbone(backbone, stages)
        stage = stride_one(copy.deepcopy(nn.Sequential(*(backbone.get_submodule(n) for n in self.last_names))))
        if branch_init == "random":
            reinitialise(stage)
        channels = self.probe_channels(stage)
        k = num_classes
        self.branch = nn.Sequential(
            stage,
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, k, 1, bias=False),
            nn.BatchNorm2d(k),
            nn.ReLU(inplace=True),
        )
        self.attention_head = nn.Conv2d(k, k, 1, bias=False)
        self.map_conv = nn.Conv2d(k, 1, map_kernel, padding=map_kernel // 2, bias=False)
        self.map_bn = nn.BatchNorm2d(1)
        for m in (*self.branch[1:], self.attention_head, self.map_conv, self.map_bn):
            reinitialise(m)

    def probe_channels(self, stage: nn.Module) -> int:
        """Check the split reproduces the backbone and the stride-1 stage keeps g's size; return its channels."""
        was_training = self.backbone.training
        self.backbone.eval()
        stage.eval()
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        x = x.to(next(self.backbone.parameters()).device)
        with torch.no_grad():
            g = self.trunk(x)
            chained = self.backbone.forward_head(self.last(g))
            direct = self.backbone(x)
            a = stage(g)
        self.backbone.train(was_training)
        stage.train(was_training)
        if chained.shape != direct.shape or not torch.allclose(chained, direct, rtol=1e-4, atol=1e-4):
            raise ValueError(
                f"{type(self.backbone).__name__}: its modules in order (trunk {self.trunk_names[-1]!r}, last stage "
                f"{self.last_names}) do not reproduce its forward pass, so no attention branch can be inserted"
            )
        if a.shape[-2:] != g.shape[-2:]:
            raise ValueError(f"the stride-1 copy of the last stage maps {tuple(g.shape[-2:])} to {tuple(a.shape[-2:])}")
        return a.shape[1]

    def trunk(self, x: Tensor) -> Tensor:
        for name in self.trunk_names:
            x = self.backbone.get_submodule(name)(x)
        return x

    def last(self, g: Tensor) -> Tensor:
        for name in self.last_names:
            g = self.backbone.get_submodule(name)(g)
        return g

    def forward(self, x: Tensor) -> ABNOutput:
        g = self.trunk(x)
        a = self.branch(g)
        attention_logits = self.attention_head(a).mean((2, 3))
        m = torch.sigmoid(self.map_bn(self.map_conv(a)))
        logits = self.backbone.forward_head(self.last(apply_attention(g, m, self.mechanism)))
        return ABNOutput(logits, attention_logits, m)


class AttentionLogits(nn.Module):
    """The attention branch's logits as a model's output (to evaluate that branch alone)."""

    def __init__(self, net: AttentionBranchNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).attention_logits


@dataclass(frozen=True)
class ABNConfig:
    map_kernel: int = 3  # the attention map's conv: 3 (the authors' code) or 1 (the paper's figure)
    mechanism: str = "residual"  # residual: (1 + M) * g; multiply: M * g
    branch_init: str = "pretrained"  # the branch's stage copy: pretrained last stage, or random (the authors' code)


@register_method
class AttentionBranch(Method):
    """Attention Branch Network: an attention branch whose map M reweights the last stage's input, (1 + M) * g."""

    name = "abn"
    citation = (
        "Fukui, Hirakawa, Yamashita, Fujiyoshi: Attention Branch Network: Learning of Attention Mechanism for"
        " Visual Explanation, CVPR 2019, arXiv:1812.10025"
    )
    Config = ABNConfig
    figure_images = 8

    def __init__(self, config: ABNConfig) -> None:
        super().__init__(config)
        if config.mechanism not in MECHANISMS or config.branch_init not in INITS or config.map_kernel not in (1, 3):
            raise ValueError(
                f"method_config.abn: mechanism {config.mechanism!r} (one of {', '.join(MECHANISMS)}), branch_init "
                f"{config.branch_init!r} (one of {', '.join(INITS)}), map_kernel {config.map_kernel} (1 or 3)"
            )

    def preflight(self, spec, structure) -> None:
        """The branch must fit the backbone (a verified split) before any training."""
        model = structure(spec.backbone)
        try:
            AttentionBranchNet(model, stage_map(model), 2, self.config.map_kernel)
        except ValueError as e:
            raise ValueError(f"method abn cannot use backbone {spec.backbone!r}: {e}") from e

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        c = self.config
        return AttentionBranchNet(model, ctx.stages, ctx.num_classes, c.map_kernel, c.mechanism, c.branch_init)

    def logits(self, out: Any) -> Tensor:
        return out.logits if isinstance(out, ABNOutput) else out

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        return abn_loss(out, batch[1])

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        if ctx.evaluate is None:
            return {}
        branch = ctx.evaluate(AttentionLogits(model), "test")
        x, y, pixels, rows = ctx.sample("test", self.figure_images)
        model.eval()
        with torch.no_grad():
            out = model(x)
        m = out.attention[:, 0]
        ctx.save_arrays(
            "attention_maps",
            images=pixels,
            labels=y.cpu().numpy(),
            pred=out.logits.argmax(1).cpu().numpy(),
            index=rows,
            **{"attention M": m.cpu().numpy().astype(np.float16)},
        )
        return {
            "attention_branch_test": {k: branch[k] for k in ("top1", "top3", "mean_class")},
            "attention_map_mean_test_sample": float(m.mean()),
            "attention_map_size": list(m.shape[-2:]),
        }
