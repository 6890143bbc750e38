"""Level of cut: classic fine-tuning where only the layers after a cut point train (the baseline family).

`fc` trains the classifier only, `last` the last stage + classifier, `last2` the last two stages + classifier,
`full` everything. Stages come from the backbone's timm `feature_info` (see finebench.backbones.stages). Frozen
layers keep BatchNorm in eval mode; `freeze_bn=True` keeps every BatchNorm in eval mode (the attention-transfer
paper's CUB setting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from finebench.backbones.stages import StageMap
from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import register_method

CUTS = {"fc": 0, "last": 1, "last2": 2}


def cut_parameters(stages: StageMap, level: str) -> frozenset[str]:
    """Parameter names that train at a cut level: the head plus the last N stages (all of them for `full`)."""
    if level == "full":
        return frozenset(stages.body + stages.head)
    if level not in CUTS:
        raise ValueError(f"unknown cut level {level!r}; known: {', '.join([*CUTS, 'full'])}")
    return frozenset(stages.last(CUTS[level]) + stages.head)


@dataclass(frozen=True)
class CutConfig:
    freeze_bn: bool = False  # every BatchNorm in eval mode, trained ones included


class LevelOfCut(Method):
    Config = CutConfig
    level: ClassVar[str] = "full"

    def schedule(self, ctx: Context) -> list[Stage]:
        bn = "eval" if self.config.freeze_bn else "auto"
        return [Stage(f"cut-{self.level}", ctx.spec.train.epochs, cut_parameters(ctx.stages, self.level), bn=bn)]


@register_method
class CutFC(LevelOfCut):
    """Fine-tune the classifier only (frozen features)."""

    name = "cut-fc"
    level = "fc"


@register_method
class CutLast(LevelOfCut):
    """Fine-tune the last stage and the classifier."""

    name = "cut-last"
    level = "last"


@register_method
class CutLast2(LevelOfCut):
    """Fine-tune the last two stages and the classifier."""

    name = "cut-last2"
    level = "last2"


@register_method
class CutFull(LevelOfCut):
    """Fine-tune the whole network."""

    name = "cut-full"
    level = "full"
    keep_model = True  # the source that semantic pruning prunes and the teachers of distillation methods
