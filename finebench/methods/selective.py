"""Parameter-efficient fine-tuning by choosing which existing parameters train (the rest stays at its pretrained
value); nothing is added, so the deployed network is the plain one.

- BitFit (Ben Zaken, Ravfogel, Goldberg, ACL 2022): every bias term (convolution and linear biases, BatchNorm's
  beta) plus the new classifier. In the timm CNNs here convolutions followed by BatchNorm have no bias, so BitFit
  trains BatchNorm's beta (and the biases of the convolutions that have one, such as squeeze-excitation's).
- BN-only (Frankle, Schwab, Morcos: Training BatchNorm and Only BatchNorm, ICLR 2021): BatchNorm's gamma and beta
  plus the new classifier. The paper trains them from a random network; here they are fine-tuned from the pretrained
  one, the use the parameter-efficient literature makes of it.

BatchNorm statistics follow the suite's rule for layers whose own parameters train (`bn=auto`): such a layer
normalises with the batch's statistics while training and updates its moving ones; `bn=eval` keeps every layer on
its pretrained moving statistics (the backbone's statistics frozen, as SSF and LoRA run), `bn=train` every layer on
the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import register_method

BN_MODES = ("auto", "eval", "train")


def bias_parameters(model: nn.Module) -> list[str]:
    """Names of every bias term: parameters named `bias` of any module (convolution, linear, BatchNorm's beta)."""
    return [f"{m}.{n}" if m else n for m, mod in model.named_modules() for n, _ in mod.named_parameters(recurse=False)
            if n == "bias"]  # fmt: skip


def norm_parameters(model: nn.Module) -> list[str]:
    """Names of every BatchNorm layer's affine parameters (gamma = `weight`, beta = `bias`)."""
    return [f"{m}.{n}" if m else n for m, mod in model.named_modules() if isinstance(mod, _BatchNorm)
            for n, _ in mod.named_parameters(recurse=False)]  # fmt: skip


@dataclass(frozen=True)
class SelectiveConfig:
    # BatchNorm statistics while training: auto (layers whose parameters train use the batch's, the others their
    # moving ones), eval (every layer its pretrained moving statistics), train (every layer the batch's)
    bn: str = "auto"


class Selective(Method):
    Config = SelectiveConfig

    def __init__(self, config: SelectiveConfig) -> None:
        super().__init__(config)
        if config.bn not in BN_MODES:
            raise ValueError(f"method_config.{self.name}.bn: {config.bn!r} is not one of {', '.join(BN_MODES)}")

    def chosen(self, model: nn.Module) -> list[str]:
        raise NotImplementedError

    @classmethod
    def bn_statistics(cls, config: dict) -> str | None:
        return {"auto": "batch (its parameters train)", "eval": "moving (frozen)", "train": "batch"}.get(
            config.get("bn", "auto")
        )

    def preflight(self, spec, structure) -> None:
        from finebench.backbones.stages import stage_map

        model = structure(spec.backbone)
        head = set(stage_map(model).head)
        if not [n for n in self.chosen(model) if n not in head]:  # else it would be cut-fc under another name
            raise ValueError(f"method {self.name!r}: {spec.backbone} has no parameter this method trains besides the "
                             "classifier")  # fmt: skip

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        head = set(ctx.stages.head)
        self.trainable = frozenset([n for n in self.chosen(model) if n not in head] + list(ctx.stages.head))
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        return [Stage(self.name, ctx.spec.train.epochs, self.trainable, bn=self.config.bn)]


@register_method
class BitFit(Selective):
    """Fine-tune every bias term (BatchNorm's beta included) and the classifier; all weights stay pretrained."""

    name = "bitfit"
    citation = (
        "Ben Zaken, Ravfogel, Goldberg: BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked "
        "Language-models, ACL 2022, arXiv:2106.10199"
    )

    def chosen(self, model: nn.Module) -> list[str]:
        return bias_parameters(model)


@register_method
class BNOnly(Selective):
    """Fine-tune BatchNorm's gamma and beta and the classifier; all other weights stay pretrained."""

    name = "bn-only"
    citation = (
        "Frankle, Schwab, Morcos: Training BatchNorm and Only BatchNorm: On the Expressive Power of Random Features "
        "in CNNs, ICLR 2021, arXiv:2003.00152"
    )

    def chosen(self, model: nn.Module) -> list[str]:
        return norm_parameters(model)
