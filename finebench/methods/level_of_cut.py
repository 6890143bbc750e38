"""Level of cut: classic fine-tuning where only the layers after a cut point train (the baseline family).

`fc` trains the classifier only, `last` the last stage + classifier, `last2` the last two stages + classifier,
`full` everything; `cut-stage` trains exactly one stage k and the classifier (surgical fine-tuning, Lee et al.,
ICLR 2023), for any k, so that one can ask which single block matters. Stages come from the backbone's timm
`feature_info` (see finebench.backbones.stages; `bench list backbones -v` lists them). Frozen
layers keep BatchNorm in eval mode; `freeze_bn=True` keeps every BatchNorm in eval mode, and `freeze_stages=N` keeps
the first N stages (the stem counts as one) frozen whatever the cut: the attention-transfer paper's CUB setting
(Table 4: BN fixed, the first group frozen) is `freeze_stages=2 freeze_bn=true`, for the student baseline and, passed
through a distillation method's `teacher_config`, for its teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from finebench.backbones.stages import StageMap, stage_map
from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import register_method

CUTS = {"fc": 0, "last": 1, "last2": 2}


def cut_parameters(stages: StageMap, level: str, freeze_stages: int = 0) -> frozenset[str]:
    """Parameter names that train at a cut level: the head plus the last N stages (all of them for `full`), less
    the first `freeze_stages` stages."""
    if level not in (*CUTS, "full"):
        raise ValueError(f"unknown cut level {level!r}; known: {', '.join([*CUTS, 'full'])}")
    if not 0 <= freeze_stages < len(stages.stages):
        raise ValueError(f"freeze_stages={freeze_stages}: the backbone has {len(stages.stages)} stages; "
                         f"use 0..{len(stages.stages) - 1}")  # fmt: skip
    n = len(stages.stages) if level == "full" else CUTS[level]
    return frozenset(stages.last(min(n, len(stages.stages) - freeze_stages)) + stages.head)


@dataclass(frozen=True)
class CutConfig:
    freeze_bn: bool = False  # every BatchNorm in eval mode, trained ones included
    freeze_stages: int = 0  # the first N stages (the stem counts as one) stay frozen (AT paper's CUB setting: 2)


class LevelOfCut(Method):
    citation = (
        "Yosinski, Clune, Bengio, Lipson: How transferable are features in deep neural networks? NeurIPS "
        "2014, arXiv:1411.1792"
    )
    Config = CutConfig
    LATER = {"freeze_stages": 0}
    level: ClassVar[str] = "full"

    def __init__(self, config: CutConfig) -> None:
        super().__init__(config)
        if not isinstance(config.freeze_stages, int) or config.freeze_stages < 0:
            raise ValueError(f"method_config.{self.name}.freeze_stages must be an integer >= 0, "
                             f"got {config.freeze_stages!r}")  # fmt: skip
        if not isinstance(config.freeze_bn, bool):
            raise ValueError(f"method_config.{self.name}.freeze_bn must be true or false, got {config.freeze_bn!r}")

    @classmethod
    def bn_statistics(cls, config: dict) -> str | None:
        if config.get("freeze_bn") or cls.level == "fc":
            return "moving (frozen)"
        return "batch" if cls.level == "full" and not config.get("freeze_stages") else "batch in the trained stages"

    def preflight(self, spec, structure) -> None:
        try:
            cut_parameters(stage_map(structure(spec.backbone)), self.level, self.config.freeze_stages)
        except ValueError as e:
            raise ValueError(f"method_config.{self.name}.{e} ({spec.backbone})") from e

    def schedule(self, ctx: Context) -> list[Stage]:
        bn = "eval" if self.config.freeze_bn else "auto"
        trainable = cut_parameters(ctx.stages, self.level, self.config.freeze_stages)
        return [Stage(f"cut-{self.level}", ctx.spec.train.epochs, trainable, bn=bn)]


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


@dataclass(frozen=True)
class StageConfig:
    # the one stage that trains with the classifier: 0 the first (the stem's), -1 the last (`bench list backbones
    # -v` shows each backbone's); Lee et al. find the first block best for input-level shifts, the last for
    # output-level ones
    stage: int = 1
    freeze_bn: bool = False  # every BatchNorm in eval mode, the trained stage's included


def stage_parameters(stages: StageMap, k: int) -> frozenset[str]:
    """Parameter names that train when only stage k (negative: from the end) and the head train."""
    n = len(stages.stages)
    if not -n <= k < n:
        raise ValueError(f"stage={k}: the backbone has {n} stages; use 0..{n - 1} (or -{n}..-1 from the end)")
    return frozenset(stages.stages[k] + stages.head)


@register_method
class CutStage(Method):
    """Fine-tune exactly one stage (any k) and the classifier; the rest stays frozen, its BatchNorm in eval mode."""

    name = "cut-stage"
    citation = (
        "Lee, Chen, Tajwar, Kumar, Yao, Liang, Finn: Surgical Fine-Tuning Improves Adaptation to Distribution "
        "Shifts, ICLR 2023, arXiv:2210.11466"
    )
    Config = StageConfig

    def __init__(self, config: StageConfig) -> None:
        super().__init__(config)
        if not isinstance(config.stage, int) or isinstance(config.stage, bool):
            raise ValueError(f"method_config.cut-stage.stage must be an integer, got {config.stage!r}")
        if not isinstance(config.freeze_bn, bool):
            raise ValueError(f"method_config.cut-stage.freeze_bn must be true or false, got {config.freeze_bn!r}")

    @classmethod
    def note(cls, config: dict) -> str | None:
        stage = config.get("stage", StageConfig.stage)
        return f"trains stage {stage} + classifier" if stage == StageConfig.stage else None  # else in the label

    def preflight(self, spec, structure) -> None:
        try:
            stage_parameters(stage_map(structure(spec.backbone)), self.config.stage)
        except ValueError as e:
            raise ValueError(f"method_config.cut-stage.{e} ({spec.backbone})") from e

    def schedule(self, ctx: Context) -> list[Stage]:
        trainable = stage_parameters(ctx.stages, self.config.stage)
        bn = "eval" if self.config.freeze_bn else "auto"
        return [Stage(f"stage-{self.config.stage}", ctx.spec.train.epochs, trainable, bn=bn)]
