"""Semantic pruning by activation magnitude ("Semantic Pruning for Single Class Interpretability", ICLR 2020 sub.).

For a trained classifier and a class c, the accumulated response of filter k in layer l is (the paper's Defs. 2-3)
gamma_c[l, k] = sum over class-c calibration images of sum_{h,w} R_{l,k}, the signed sum of the filter's response R
after its BatchNorm and activation (the default) or of the raw conv output (`response="raw"`). Where R can be
negative (the raw output, a linear bottleneck's BatchNorm without an activation) the sum stays signed, as the paper
defines it; `accumulate="abs"` sums |R| instead (a named option: "lowest = least active in magnitude").
Pruning for c removes the filters with the lowest gamma_c: layer-wise (LWP, a ratio of each layer) or network-wise
(NWP, one global ranking, optionally with each layer normalised by its mean response; the paper uses none). Settings:
gamma <= 0 (exactly the filters whose accumulated response is not positive), 33 %, 66 %, median, and the paper's
sweep of theta (0.05, then 0.1 to 0.6 in steps of 0.1), for LWP and NWP both. No retraining. Ties in a ranking are
broken by the filter's weight magnitude, then by its position in the network.

The pruned network is evaluated as in the paper, on val and on test: as a single-class classifier for c ("is it c?"
answered by argmax == c) against the unpruned network, plus the multi-class accuracy. A per-class theta is chosen on
val (the largest of the sweep that keeps the val single-class balanced accuracy) and reported on test. Beside every
result: the same number of filters chosen at random (`control_draws` draws) and by weight magnitude (the L1 norm of
the filter), evaluated on test. Costs: the parameters and FLOPs the pruned filters take out (every pruned filter,
masked or removed), the physically smaller network where the architecture allows (Torch-Pruning), and its measured
latency. Residual pruning is measured as the paper does (§3.1.1): filters left unpruned whose accumulated response
on the class's calibration images becomes zero after direct pruning (while it was not before); the structural count
(filters whose whole input was pruned) is kept beside it. The overlap (Jaccard) of the pruned sets of different
classes is recorded per setting.

The classifier is the `cut-full` model of the same suite, seed and budget (reused when recorded, else trained
here); its whole cost and the calibration pass are charged to this method. The analysis (classes x settings x val
and test images) is reported apart from the training cost, timed per class and setting; by default it covers as many
classes (at least two, sampled with the split's seed, so every seed of a suite analyses the same ones) as keep it,
controls included, within `analysis_fraction` of the source model's training FLOPs, and an estimate is printed
before it starts. Evaluation uses masks: each pruned channel is zeroed along its whole chain (conv rows, BatchNorm
affine and mean, depthwise filters; see finebench.methods.pruning), so it is exactly 0 where the chain ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.methods.base import Context, Method, Source
from finebench.methods.cost import forward_flops
from finebench.methods.pruning import ACTIVATIONS, forward_once
from finebench.methods.ranking import lowest_fraction
from finebench.methods.registry import register_method

DISCRETE = ("zero", "33%", "66%", "median")
_RATIO = {"33%": 1 / 3, "66%": 2 / 3, "median": 0.5}


def _trace(model: nn.Module, example: Tensor) -> tuple[list[tuple], dict[str, int]]:
    """(module name, (id, version) of its input before the call, (id, version) of its output after it) of every
    module call of one forward, and calls per module. Versions tell a tensor changed in place (a residual `+=`)
    from the same tensor untouched (an in-place activation reads exactly what the BatchNorm wrote)."""
    calls: list[tuple] = []
    count: dict[str, int] = {}
    alive: list[Tensor] = []  # every traced tensor stays alive until the end, so no id() is reused
    pending: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, _BatchNorm, *ACTIVATIONS)):

            def pre(m, inputs, name=name):
                alive.append(inputs[0])
                pending[name] = (id(inputs[0]), inputs[0]._version)

            def hook(m, inputs, output, name=name):
                alive.append(output)
                calls.append((name, pending.pop(name), (id(output), output._version)))
                count[name] = count.get(name, 0) + 1

            hooks.append(module.register_forward_pre_hook(pre))
            hooks.append(module.register_forward_hook(hook))
    forward_once(model, example, hooks)
    return calls, count


def response_points(model: nn.Module, example: Tensor, raw: bool = False) -> dict[str, str]:
    """Conv name -> the module whose output is that conv's filter response: the conv itself (raw), else the end of
    the chain conv -> BatchNorm -> activation that consumes it. A module called more than once per forward (a
    shared activation) ends the chain before it, since its output would mix several convs."""
    calls, count = _trace(model, example)
    modules = dict(model.named_modules())
    points = {}
    for i, (name, _, out_id) in enumerate(calls):
        if not isinstance(modules[name], nn.Conv2d):
            continue
        end, current, seen = name, out_id, {name}
        if not raw:
            for later, in_id, later_out in calls[i + 1 :]:
                if in_id == current and later not in seen and count[later] == 1:
                    if isinstance(modules[later], (_BatchNorm, *ACTIVATIONS)):
                        end, current = later, later_out
                        seen.add(later)
        points[name] = end
    return points


@torch.no_grad()
def accumulated_response(
    model: nn.Module,
    loader,
    num_classes: int,
    raw: bool = False,
    points: dict[str, str] | None = None,
    signed: bool = True,
) -> dict[str, Tensor]:
    """Conv layer name -> (num_classes, filters) tensor: per class, the sum over its images and over positions of
    each filter's response R (float64; |R| when not `signed`), accumulated over every batch of `loader` ((x, y)
    batches)."""
    batches = iter(loader)
    first = next(batches, None)
    if first is None:
        raise ValueError("accumulated_response: the calibration loader yields no batch")
    if points is None:
        points = response_points(model, first[0][:1], raw)
    modules = dict(model.named_modules())
    sums: dict[str, Tensor] = {}
    labels: list[Tensor] = []
    hooks = []
    for conv_name, module_name in points.items():
        channels = modules[conv_name].out_channels
        sums[conv_name] = torch.zeros(num_classes, channels, dtype=torch.float64)

        def hook(m, inputs, output, conv_name=conv_name):
            response = output.detach().double()
            per_image = (response if signed else response.abs()).sum(dim=(2, 3)).cpu()
            sums[conv_name].index_add_(0, labels[0], per_image)

        hooks.append(modules[module_name].register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for x, y in [first, *batches]:
            labels[:] = [y.cpu()]
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return sums


def select_filters(
    gamma: dict[str, Tensor],
    setting: str | float,
    mode: str,
    normalise: bool = False,
    tiebreak: dict[str, Tensor] | None = None,
) -> dict[str, list[int]]:
    """Filters to prune for one class: gamma is layer -> (filters,) accumulated response of that class.
    setting: "zero" (gamma <= 0), "33%", "66%", "median" or a ratio theta in (0, 1); mode: "lwp" or "nwp".
    Ties are broken by `tiebreak` (e.g. the filters' weight magnitude), then by position in the network."""
    if mode not in ("lwp", "nwp"):
        raise ValueError(f"pruning mode {mode!r} is not one of lwp, nwp")
    if normalise and mode == "nwp":
        gamma = {k: v / v.abs().mean().clamp_min(1e-12) for k, v in gamma.items()}
    if setting == "zero":
        return {k: (v <= 0).nonzero().flatten().tolist() for k, v in gamma.items()}
    ratio = _RATIO.get(setting, setting) if isinstance(setting, str) else setting
    if not isinstance(ratio, float | int) or not 0 < ratio < 1:
        raise ValueError(f"pruning setting {setting!r} is not one of {', '.join(DISCRETE)} or a ratio in (0, 1)")
    return lowest_fraction(gamma, float(ratio), per_layer=mode == "lwp", tiebreak=tiebreak)


def one_vs_rest(pred: list[int], target: list[int], c: int) -> float:
    """Accuracy (%) of the single-class classifier "is it c?" (argmax == c) on every image."""
    hits = sum((p == c) == (t == c) for p, t in zip(pred, target, strict=True))
    return 100.0 * hits / max(len(target), 1)


def jaccard(a: dict[str, list[int]], b: dict[str, list[int]]) -> float:
    """|A & B| / |A | B| of two pruned filter sets; NaN when both are empty (undefined, not "identical")."""
    sa = {(k, i) for k, v in a.items() for i in v}
    sb = {(k, i) for k, v in b.items() for i in v}
    return len(sa & sb) / len(sa | sb) if sa | sb else float("nan")


def single_class_scores(pred: list[int], target: list[int], c: int) -> dict[str, float]:
    """The single-class classifier "is it c?" (argmax == c): accuracy over every image (the paper's figure, which
    negatives dominate), recall on c, specificity on the rest, and balanced accuracy (their mean), all in %."""
    tp = sum(p == c and t == c for p, t in zip(pred, target, strict=True))
    pos = sum(t == c for t in target)
    tn = sum(p != c and t != c for p, t in zip(pred, target, strict=True))
    neg = len(target) - pos
    recall = 100.0 * tp / pos if pos else float("nan")
    specificity = 100.0 * tn / neg if neg else float("nan")
    return {
        "accuracy": one_vs_rest(pred, target, c),
        "recall": recall,
        "specificity": specificity,
        "balanced": (recall + specificity) / 2,
    }


def overlaps(pruned_sets: dict, modes: tuple[str, ...], classes: list[int]) -> dict[str, Any]:
    """Jaccard overlap of the pruned filter sets of every pair of classes, per mode and discrete setting; pairs
    where both sets are empty are undefined (NaN, left out of the mean)."""
    out = {}
    for mode in modes:
        for s in DISCRETE:
            matrix = [[jaccard(pruned_sets[(mode, s, a)], pruned_sets[(mode, s, b)]) for b in classes]
                      for a in classes]  # fmt: skip
            off = [matrix[i][j] for i in range(len(classes)) for j in range(len(classes)) if i != j]
            off = [v for v in off if v == v]
            out[f"{mode}:{s}"] = {"mean": sum(off) / len(off) if off else float("nan"), "matrix": matrix}
    return out


def choose_theta(val: dict[float, float], unpruned: float) -> float:
    """The per-class theta chosen on val: the largest of the sweep whose val score (single-class balanced accuracy)
    is not below the unpruned network's; 0 (no pruning) when none keeps it."""
    kept = [theta for theta, score in val.items() if score >= unpruned]
    return max(kept, default=0.0)


def analysed_classes(num_classes: int, count: int, seed: int) -> list[int]:
    """`count` of the classes, sampled with `seed` (all of them when count >= num_classes), sorted."""
    if count >= num_classes:
        return list(range(num_classes))
    order = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


def auto_class_count(budget_forwards: float, per_class_forwards: float, num_classes: int) -> int:
    """How many classes an analysis of `per_class_forwards` image forwards per class can cover within
    `budget_forwards`: at least 2 (the overlap between classes needs a pair), at most all."""
    fit = int(budget_forwards // max(per_class_forwards, 1.0))
    return max(2, min(num_classes, fit))


CLASSES = ("auto", "all")


@dataclass(frozen=True)
class SemanticPruningConfig:
    source: str = "cut-full"  # the method whose trained model is pruned (same suite, seed and budget)
    response: str = "post"  # post: after BatchNorm and activation; raw: the conv output
    accumulate: str = "signed"  # signed: the sum of responses (Defs. 2-3); abs: the sum of |R|
    modes: tuple[str, ...] = ("nwp", "lwp")  # nwp: the lowest over the whole network; lwp: the lowest within each layer
    normalise: bool = False  # NWP with each layer divided by its mean response (the paper uses none)
    sweep: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)  # the paper's theta sweep, for every mode
    classes: int | str = "auto"  # auto: within analysis_fraction of the source's training; all; or a number
    analysis_fraction: float = 1.0  # auto classes: analysis forwards <= this x the source's training FLOPs
    control_draws: int = 3  # random-choice controls per result (plus one by weight magnitude)


@register_method
class SemanticPruning(Method):
    """Semantic pruning: per class, prune the filters with the lowest accumulated response; no retraining."""

    name = "semantic-pruning"
    citation = (
        "Semantic Pruning for Single Class Interpretability, ICLR 2020 submission (anonymous), OpenReview rkxXNR4tvH"
    )
    Config = SemanticPruningConfig
    LATER = {"accumulate": "abs", "analysis_fraction": 1.0, "control_draws": 3}  # records before: sums of |R|
    trains = False

    def __init__(self, config: SemanticPruningConfig) -> None:
        super().__init__(config)
        where = "method_config.semantic-pruning"
        if config.response not in ("post", "raw"):
            raise ValueError(f"semantic-pruning response {config.response!r} is not one of post, raw")
        if config.accumulate not in ("signed", "abs"):
            raise ValueError(f"{where}.accumulate {config.accumulate!r} is not one of signed, abs")
        if not config.modes or any(m not in ("nwp", "lwp") for m in config.modes):
            raise ValueError(f"semantic-pruning modes {config.modes!r}: each must be nwp or lwp")
        if any(not 0 < t < 1 for t in config.sweep):
            raise ValueError(f"semantic-pruning sweep ratios must lie in (0, 1), got {config.sweep}")
        if isinstance(config.classes, str) and config.classes not in CLASSES:
            raise ValueError(f"{where}.classes {config.classes!r}: use auto, all or a number of classes >= 1")
        if isinstance(config.classes, int) and config.classes < 1:
            raise ValueError(f"{where}.classes must be >= 1 (or auto, all), got {config.classes}")
        if config.analysis_fraction <= 0 or config.control_draws < 0:
            raise ValueError(f"{where}: analysis_fraction must be > 0 and control_draws >= 0, got "
                             f"{config.analysis_fraction}, {config.control_draws}")  # fmt: skip

    def sources(self, spec) -> list[Source]:
        return [Source("source", self.config.source)]

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Get the trained source model, accumulate responses over the train split (charged), and choose the
        classes to analyse."""
        (source,) = self.sources(ctx.spec)
        model, self.source_run = ctx.source_model(source)
        res = ctx.spec.train.resolution
        self.example = torch.zeros(1, 3, res, res, device=ctx.device)
        raw = self.config.response == "raw"
        self.points = response_points(model, self.example, raw)
        t0 = time.perf_counter()
        calibration = ctx.loaders["calibration"]
        signed = self.config.accumulate == "signed"
        self.gamma = accumulated_response(model, calibration, ctx.num_classes, raw, self.points, signed)
        seconds = time.perf_counter() - t0
        n = calibration.num_samples
        self.flops_per_image = forward_flops(model, res, ctx.device)
        ctx.budget.charge("calibration", seconds=seconds, samples=n, flops=n * self.flops_per_image)
        self.plan = plan_of(self.config, ctx, self.flops_per_image)
        return model

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        if ctx.evaluate is None:
            return {}
        from finebench.methods.semantic_analysis import analyse

        return {"source_run": self.source_run, **analyse(self, model, ctx)}


def plan_of(config: SemanticPruningConfig, ctx: Context, flops_per_image: float) -> dict[str, Any]:
    """Which classes the analysis covers and what it will cost, in image forwards: per class, every setting's
    pruned network on val and test plus the residual pass over the class's calibration images; the source
    model's training in the same unit (its charged FLOPs over the forward FLOPs of one image)."""
    spec = ctx.spec
    n_val = ctx.loaders["val"].num_samples
    n_test = round(n_val * spec.train.split[2] / spec.train.split[1])  # the test split's size (methods never see it)
    per_image_class = ctx.loaders["calibration"].num_samples / ctx.num_classes
    settings = len(config.modes) * (len(DISCRETE) + len(config.sweep))
    draws = 1 + config.control_draws
    # per class: every setting pruned, on val and test, and its residual pass; the gamma <= 0 setting's controls
    # (their number of filters differs per class); the ratio settings' controls are shared by the classes
    per_class = settings * (n_val + n_test + min(per_image_class, CLASS_IMAGES)) + len(config.modes) * draws * n_test
    controls = len(config.modes) * (len(DISCRETE) - 1 + len(config.sweep)) * draws * n_test
    source = ctx.budget.charges.get(f"source:{config.source}")
    source_forwards = source.flops / flops_per_image if source is not None and flops_per_image else 0.0
    if config.classes == "all":
        count = ctx.num_classes
    elif config.classes == "auto":
        budget = config.analysis_fraction * source_forwards - controls
        count = auto_class_count(budget, per_class, ctx.num_classes)
    else:
        count = min(int(config.classes), ctx.num_classes)
    # the classes follow the split: with one split for every seed, every seed analyses the same classes (their
    # spread over seeds is then the seeds', not which classes were drawn)
    seed = spec.seed if spec.train.split_seed == "seed" else int(spec.train.split_seed)
    return {
        "classes": analysed_classes(ctx.num_classes, count, seed),
        "of": ctx.num_classes,
        "chosen_by": config.classes,
        "sampled_with_seed": seed,
        "settings_per_class": settings,
        "forwards_per_class": per_class,
        "forwards_controls": controls,
        "source_training_forwards": source_forwards,
        "analysis_fraction": config.analysis_fraction,
    }


CLASS_IMAGES = 64  # calibration images of a class used to measure residual pruning (all of them up to this many)
