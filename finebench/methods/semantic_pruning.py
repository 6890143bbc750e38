"""Semantic pruning by activation magnitude ("Semantic Pruning for Single Class Interpretability", ICLR 2020 sub.).

For a trained classifier and a class c, the accumulated response of filter k in layer l is
gamma_c[l, k] = sum over class-c calibration images of sum_{h,w} |R_{l,k}|, where R is the filter's response after
its BatchNorm and activation (the default) or the raw conv output (`response="raw"`). After a ReLU R >= 0, so this
is the paper's sum of R; the magnitude keeps the ranking meaningful where R can be negative (linear bottlenecks).
Pruning for c removes the filters with the lowest gamma_c: layer-wise (LWP, a ratio of each layer) or network-wise
(NWP, one global ranking, optionally with each layer normalised by its mean response; the paper uses none).
Settings: gamma <= 0, 33 %, 66 %, median, and a continuous sweep of the ratio theta. No retraining.

The pruned network is evaluated as in the paper: as a single-class classifier for c (one-vs-rest accuracy on test:
"is it c?" answered by argmax == c) against the unpruned network, plus the multi-class accuracy, the parameters and
FLOPs of the pruned filters, "residual" pruning (filters not pruned whose response on class-c images became zero)
counted apart from direct pruning, and the overlap (Jaccard) of the pruned sets of different classes.

The classifier is the `cut-full` model of the same suite, seed and budget (reused when recorded, else trained
here); its whole cost and the calibration pass are charged to this method. Evaluation uses masks: each pruned
channel is zeroed along its whole chain (conv rows, BatchNorm affine and mean, depthwise filters; see
finebench.methods.pruning), so it is exactly 0 where the chain ends. For every discrete setting the filters are also
removed physically where the architecture allows (the channels end in a conv that alone reads them): the record
gives that really smaller network's parameters and FLOPs, and for the first class its measured latency next to the
unpruned model's; what could only be masked is counted apart.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from finebench.benchmark.budget import forward_flops
from finebench.methods.base import Context, Method
from finebench.methods.pruning import ACTIVATIONS, Pruner, forward_once, latency_ms
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
    model: nn.Module, loader, num_classes: int, raw: bool = False, points: dict[str, str] | None = None
) -> dict[str, Tensor]:
    """Conv layer name -> (num_classes, filters) tensor: per class, the sum over its images and over positions of
    each filter's response magnitude |R| (float64), accumulated over every batch of `loader` ((x, y) batches).
    After a ReLU-family activation R >= 0 and this is the paper's sum of R; where the response can be negative (a
    linear bottleneck, the raw conv output) the magnitude keeps "lowest = least active" true."""
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
            per_image = output.detach().abs().sum(dim=(2, 3)).double().cpu()
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


def select_filters(gamma: dict[str, Tensor], setting: str | float, mode: str, normalise: bool = False) -> dict:
    """Filters to prune for one class: gamma is layer -> (filters,) accumulated response of that class.
    setting: "zero" (gamma <= 0), "33%", "66%", "median" or a ratio theta in (0, 1); mode: "lwp" or "nwp"."""
    if mode not in ("lwp", "nwp"):
        raise ValueError(f"pruning mode {mode!r} is not one of lwp, nwp")
    if normalise and mode == "nwp":
        gamma = {k: v / v.abs().mean().clamp_min(1e-12) for k, v in gamma.items()}
    if setting == "zero":
        return {k: (v <= 0).nonzero().flatten().tolist() for k, v in gamma.items()}
    ratio = _RATIO.get(setting, setting) if isinstance(setting, str) else setting
    if not isinstance(ratio, float | int) or not 0 < ratio < 1:
        raise ValueError(f"pruning setting {setting!r} is not one of {', '.join(DISCRETE)} or a ratio in (0, 1)")
    return lowest_fraction({k: v.float() for k, v in gamma.items()}, float(ratio), per_layer=mode == "lwp")


def one_vs_rest(pred: list[int], target: list[int], c: int) -> float:
    """Accuracy (%) of the single-class classifier "is it c?" (argmax == c) on every image."""
    hits = sum((p == c) == (t == c) for p, t in zip(pred, target, strict=True))
    return 100.0 * hits / max(len(target), 1)


def jaccard(a: dict[str, list[int]], b: dict[str, list[int]]) -> float:
    """|A & B| / |A | B| of two pruned filter sets; NaN when both are empty (undefined, not "identical")."""
    sa = {(k, i) for k, v in a.items() for i in v}
    sb = {(k, i) for k, v in b.items() for i in v}
    return len(sa & sb) / len(sa | sb) if sa | sb else float("nan")


@dataclass(frozen=True)
class SemanticPruningConfig:
    source: str = "cut-full"  # the method whose trained model is pruned (same suite, seed and budget)
    response: str = "post"  # post: after BatchNorm and activation; raw: the conv output
    modes: tuple[str, ...] = ("nwp", "lwp")
    normalise: bool = False  # NWP with each layer divided by its mean response (the paper uses none)
    sweep: tuple[float, ...] = (0.25, 0.5, 0.75)  # continuous theta sweep (NWP), besides the discrete ones
    classes: int | None = None  # evaluate the first N classes only (None: all)


@register_method
class SemanticPruning(Method):
    """Semantic pruning: per class, prune the filters with the lowest accumulated response; no retraining."""

    name = "semantic-pruning"
    Config = SemanticPruningConfig
    trains = False

    def __init__(self, config: SemanticPruningConfig) -> None:
        super().__init__(config)
        if config.response not in ("post", "raw"):
            raise ValueError(f"semantic-pruning response {config.response!r} is not one of post, raw")
        if not config.modes or any(m not in ("nwp", "lwp") for m in config.modes):
            raise ValueError(f"semantic-pruning modes {config.modes!r}: each must be nwp or lwp")
        if any(not 0 < t < 1 for t in config.sweep):
            raise ValueError(f"semantic-pruning sweep ratios must lie in (0, 1), got {config.sweep}")
        if config.classes is not None and config.classes < 1:
            raise ValueError(f"semantic-pruning classes must be >= 1 or null, got {config.classes}")

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Get the trained source model, then accumulate responses over the train split (charged)."""
        model, self.source_run = ctx.source_model(self.config.source)
        res = ctx.spec.train.resolution
        self.example = torch.zeros(1, 3, res, res, device=ctx.device)
        raw = self.config.response == "raw"
        self.points = response_points(model, self.example, raw)
        t0 = time.perf_counter()
        self.gamma = accumulated_response(model, ctx.loaders["calibration"], ctx.num_classes, raw, self.points)
        seconds = time.perf_counter() - t0
        n = ctx.loaders["calibration"].num_samples
        flops = n * forward_flops(model, res, ctx.device)
        ctx.budget.charge("calibration", seconds=seconds, samples=n, flops=flops)
        return model

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        if ctx.evaluate is None:
            return {}
        cfg = self.config
        classes = list(range(min(cfg.classes or ctx.num_classes, ctx.num_classes)))
        pruner = Pruner(model, self.example)
        prunable = pruner.prunable()
        res = ctx.spec.train.resolution
        batch = torch.zeros(min(32, ctx.spec.train.eval_batch_size), 3, res, res, device=ctx.device)
        unpruned_cost = {
            "params": sum(p.numel() for p in model.parameters()),
            "flops_per_image": forward_flops(model, res, ctx.device),
            "latency_ms": latency_ms(model, batch),
            "latency_batch": batch.shape[0],
        }
        base = ctx.evaluate(model, "test", predictions=True)
        unpruned = {c: single_class_scores(base["pred"], base["target"], c) for c in classes}
        results, pruned_sets, memo = [], {}, {}
        plan = [(mode, s) for mode in cfg.modes for s in DISCRETE] + [("nwp", t) for t in cfg.sweep]
        for mode, setting in plan:
            for c in classes:
                gamma_c = {k: v[c] for k, v in self.gamma.items() if k in prunable}
                chosen = select_filters(gamma_c, setting, mode, cfg.normalise)
                key = (c, tuple((k, tuple(v)) for k, v in sorted(chosen.items())))
                if key not in memo:  # LWP and NWP can choose the same filters (gamma <= 0): evaluate once
                    pruned = copy.deepcopy(model)
                    direct = pruner.mask(pruned, chosen)
                    metrics = ctx.evaluate(pruned, "test", predictions=True)
                    small = self.physical(model, chosen, pruner, batch if c == classes[0] else None)
                    memo[key] = {
                        "direct": direct,
                        "residual": pruner.residual(chosen),
                        "params_removed": 1 - small["params"] / unpruned_cost["params"],
                        "flops_removed": 1 - small["flops_per_image"] / unpruned_cost["flops_per_image"],
                        "physical": small,
                        "single_class": single_class_scores(metrics["pred"], metrics["target"], c),
                        "multi_class": metrics["top1"],
                    }
                results.append({"class": c, "mode": mode, "setting": setting, **memo[key],
                                "single_class_unpruned": unpruned[c]})  # fmt: skip
                pruned_sets[(mode, setting, c)] = chosen
        return {
            "source_run": self.source_run,
            "response": cfg.response,
            "removal": (
                "physical where a filter's channels end in a conv or linear layer that alone reads them, masks "
                "elsewhere"
                if pruner.physical
                else "masks only (the model could not be traced)"
            ),
            "excluded_layers": sorted(set(self.gamma) - prunable),  # e.g. SE expansions: zero is not removal
            "unpruned_cost": unpruned_cost,
            "unpruned": {"multi_class": base["top1"], "single_class": unpruned},
            "pruning": results,
            "overlap": overlaps(pruned_sets, cfg.modes, classes),
            "layers": {k: int(v.shape[1]) for k, v in self.gamma.items()},
        }

    def physical(self, model: nn.Module, chosen: dict, pruner: Pruner, batch: Tensor | None) -> dict[str, Any]:
        """The really smaller network: its parameters and FLOPs, and its latency when `batch` is given."""
        small = copy.deepcopy(model)
        counts = pruner.remove(small, chosen)
        res = self.example.shape[-1]
        out = {**counts, "params": sum(p.numel() for p in small.parameters())}
        out["flops_per_image"] = forward_flops(small, res, self.example.device)
        if batch is not None:
            out["latency_ms"] = latency_ms(small, batch)
        return out


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
