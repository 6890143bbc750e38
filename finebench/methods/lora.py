"""LoRA (Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen: LoRA: Low-Rank Adaptation of Large Language Models,
ICLR 2022) on a CNN, through the `peft` library's LoRA layers (its Conv2d for convolutions):

    h = W0 x + (alpha / r) * B A x                                 (eq. 3; A random, B = 0: the start is W0)

W0 stays frozen; A and B of rank r train with the new classifier. For a k x k convolution peft's A is a k x k
convolution to r channels and B a 1 x 1 convolution back, so B A is a k x k kernel of rank <= r. After training the
update is merged, W = W0 + (alpha / r) B A (peft's `merge`), and the deployed network is the plain one.

Targets: every ungrouped convolution and every linear layer but the new classifier (`targets=conv,linear`), or kinds /
module-name patterns of the user's. Depthwise (grouped) convolutions are not adapted: peft requires the rank to be a
multiple of the groups (a depthwise layer has as many groups as channels) and cannot merge grouped convolutions, so
adapting them would leave extra layers in the deployed network; dilated convolutions are not adapted either (peft's A
would not keep the dilation, and its output would not match the layer's). BatchNorm layers stay frozen with their
pretrained statistics (`bn=auto`: none of their parameters trains). The paper sets alpha to the first rank it tries and
does not tune it: alpha = r = 8 here (scale 1)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

from torch import nn

from finebench.core.space import choice
from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import register_method

KINDS = ("conv", "pointwise", "linear")


def lora_targets(model: nn.Module, targets: tuple[str, ...], head: set[str]) -> list[str]:
    """Names of the modules that get LoRA: `conv` every ungrouped, undilated Conv2d, `pointwise` the 1 x 1 ones of
    those, `linear` every Linear; any other entry is a regular expression a module's full name must match (the
    module must be such a Conv2d or a Linear). The modules holding `head`'s parameters are never targets."""
    out = []
    for name, m in model.named_modules():
        if not name or any(p.startswith(name + ".") for p in head):
            continue
        # peft's A copies kernel, stride and padding but not dilation: a dilated convolution cannot be adapted
        conv = isinstance(m, nn.Conv2d) and m.groups == 1 and tuple(m.dilation) == (1, 1)
        linear = isinstance(m, nn.Linear)
        for t in targets:
            if t == "conv":
                hit = conv
            elif t == "pointwise":
                hit = conv and tuple(m.kernel_size) == (1, 1)
            elif t == "linear":
                hit = linear
            else:
                hit = (conv or linear) and re.fullmatch(t, name) is not None
            if hit:
                out.append(name)
                break
    return out


def add_lora(model: nn.Module, names: list[str], rank: int, alpha: float, dropout: float) -> nn.Module:
    """peft's LoRA layers on the named modules, in place (their base weights frozen by peft; B = 0, so outputs are
    unchanged at the start)."""
    from peft import LoraConfig, inject_adapter_in_model

    # one full-match pattern of exactly these names (a list would also match every module whose name ends in one)
    pattern = "(?:" + "|".join(re.escape(n) for n in names) + ")"
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    with warnings.catch_warnings():  # peft warns that the model is no transformers model: it needs none
        warnings.simplefilter("ignore")
        return inject_adapter_in_model(config, model)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA update into its base layer (peft's `merge`, checked for non-finite weights) and put the base
    layer back in its place: the plain network, with the same outputs within float rounding."""
    from peft.tuners.lora import LoraLayer

    for name, m in list(model.named_modules()):
        if isinstance(m, LoraLayer):
            m.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, m.get_base_layer())
    return model


def lora_parameters(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if ".lora_" in n]


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8  # r, the rank of each update B A
    alpha: float = 8.0  # the update is scaled by alpha / r (the paper: alpha = the first r tried, not tuned)
    dropout: float = 0.0  # dropout on the LoRA branch's input (peft's lora_dropout)
    # which modules get LoRA: conv (every ungrouped convolution), pointwise (ungrouped 1 x 1 only), linear, or
    # regular expressions matched against full module names (e.g. blocks\.6\..*)
    targets: tuple[str, ...] = ("conv", "linear")
    bn: str = "auto"  # BatchNorm statistics: auto (frozen: none of their parameters trains), eval, train


@register_method
class LoRA(Method):
    """Freeze the network; train low-rank updates of its convolutions (peft's LoRA) and the classifier; merged."""

    name = "lora"
    tune_key = "rank"
    tune_range = choice(2, 4, 8, 16, 32)  # alpha stays at its value, so the update scales by alpha / r
    citation = (
        "Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen: LoRA: Low-Rank Adaptation of Large Language Models, "
        "ICLR 2022, arXiv:2106.09685"
    )
    Config = LoRAConfig

    def __init__(self, config: LoRAConfig) -> None:
        super().__init__(config)
        c = config
        if not isinstance(c.rank, int) or isinstance(c.rank, bool) or c.rank < 1:
            raise ValueError(f"method_config.lora.rank must be an integer >= 1, got {c.rank!r}")
        if not isinstance(c.alpha, int | float) or c.alpha <= 0:
            raise ValueError(f"method_config.lora.alpha must be a positive number, got {c.alpha!r}")
        if not isinstance(c.dropout, int | float) or not 0 <= c.dropout < 1:
            raise ValueError(f"method_config.lora.dropout must be in [0, 1), got {c.dropout!r}")
        if c.bn not in ("auto", "eval", "train"):
            raise ValueError(f"method_config.lora.bn: {c.bn!r} is not one of auto, eval, train")
        for t in c.targets:
            if t not in KINDS:
                try:
                    re.compile(t)
                except re.error as e:
                    raise ValueError(f"method_config.lora.targets: {t!r} is neither one of {', '.join(KINDS)} nor "
                                     f"a regular expression ({e})") from e  # fmt: skip

    @classmethod
    def bn_statistics(cls, config: dict) -> str | None:
        return "batch" if config.get("bn", "auto") == "train" else "moving (frozen)"

    def targets(self, model: nn.Module, head) -> list[str]:
        return lora_targets(model, tuple(self.config.targets), set(head))

    def preflight(self, spec, structure) -> None:
        from finebench.backbones.stages import stage_map

        model = structure(spec.backbone)
        if not self.targets(model, stage_map(model).head):
            raise ValueError(f"method_config.lora.targets={','.join(self.config.targets)}: no ungrouped convolution "
                             f"or linear layer of {spec.backbone} (the classifier excepted) matches")  # fmt: skip

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        names = self.targets(model, ctx.stages.head)
        model = add_lora(model, names, self.config.rank, float(self.config.alpha), float(self.config.dropout))
        self.layers = len(names)
        self.trainable = frozenset(lora_parameters(model) + list(ctx.stages.head))
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        return [Stage("lora", ctx.spec.train.epochs, self.trainable, bn=self.config.bn)]

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return merge_lora(model)

    def extras(self, model: nn.Module, ctx: Context) -> dict:
        return {"lora": {"layers": self.layers, "rank": self.config.rank}}
