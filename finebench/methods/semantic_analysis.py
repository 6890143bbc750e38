"""Semantic pruning's analysis after selection: every class and setting pruned, evaluated on val and test, beside
its random and weight-magnitude controls, with its costs, measured residual pruning and the per-class theta chosen
on val. The maths is in `semantic_pruning.py`; this module only runs it and writes the findings down."""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from finebench.methods.base import Context
from finebench.methods.cost import forward_flops
from finebench.methods.pruning import Pruner, latency_ms, removed_cost
from finebench.methods.ranking import Controls, Selection, count, filter_magnitude, key
from finebench.methods.semantic_pruning import (
    CLASS_IMAGES,
    DISCRETE,
    accumulated_response,
    choose_theta,
    overlaps,
    select_filters,
    single_class_scores,
)

if TYPE_CHECKING:
    from finebench.methods.semantic_pruning import SemanticPruning


def class_images(loader, classes: list[int], cap: int) -> dict[int, Tensor]:
    """Up to `cap` calibration images of each class, in the loader's (fixed) order."""
    kept: dict[int, list[Tensor]] = {c: [] for c in classes}
    for x, y in loader:
        for c in classes:
            have = sum(len(t) for t in kept[c])
            if have < cap and bool((y == c).any()):
                kept[c].append(x[y == c][: cap - have])
    return {c: torch.cat(v) for c, v in kept.items() if v}


def responses_of(model: nn.Module, x: Tensor, c: int, points: dict[str, str], signed: bool) -> dict[str, Tensor]:
    """Each filter's accumulated response to the images `x` of class c (layer -> (filters,))."""
    y = torch.full((len(x),), c, dtype=torch.long, device=x.device)
    return {k: v[c] for k, v in accumulated_response(model, [(x, y)], c + 1, points=points, signed=signed).items()}


def measured_residual(before: dict[str, Tensor], after: dict[str, Tensor], chosen: Selection) -> int:
    """Filters left unpruned whose accumulated response on the class's images became zero after direct pruning
    (and was not zero before): the paper's residual pruning (§3.1.1)."""
    total = 0
    for layer, values in after.items():
        dead = (values == 0) & (before[layer] != 0)
        if chosen.get(layer):
            dead[torch.as_tensor(chosen[layer], dtype=torch.long)] = False
        total += int(dead.sum())
    return total


def scores(metrics: dict[str, Any], c: int) -> dict[str, Any]:
    return {"single_class": single_class_scores(metrics["pred"], metrics["target"], c), "multi_class": metrics["top1"]}


class Analysis:
    """One source model's pruning analysis; evaluations are memoised by the filter set they prune."""

    def __init__(self, method: SemanticPruning, model: nn.Module, ctx: Context) -> None:
        self.method, self.model, self.ctx, self.cfg = method, model, ctx, method.config
        self.pruner = Pruner(model, method.example)
        prunable = self.pruner.prunable()
        self.gamma = {k: v for k, v in method.gamma.items() if k in prunable}
        self.magnitude = filter_magnitude(model, list(self.gamma))
        self.controls = Controls.build(model, list(self.gamma), self.cfg.control_draws, ctx.spec.seed)
        self.signed = self.cfg.accumulate == "signed"
        self.total_params = sum(p.numel() for p in model.parameters())
        res = ctx.spec.train.resolution
        self.batch = torch.zeros(min(32, ctx.spec.train.eval_batch_size), 3, res, res, device=ctx.device)
        self.pruned: dict[tuple, dict[str, Any]] = {}  # (class, filter set) -> its evaluation
        self.controlled: dict[tuple, dict[str, Any]] = {}  # filter set -> its test predictions

    def pruned_copy(self, chosen: Selection) -> nn.Module:
        pruned = copy.deepcopy(self.model)
        self.pruner.mask(pruned, chosen)
        return pruned

    def evaluate(self, c: int, chosen: Selection, images: Tensor | None, before: dict, timed: bool) -> dict:
        """The pruned network for class c on val and test, its costs and its measured residual pruning."""
        k = (c, key(chosen))
        if k not in self.pruned:
            pruned = self.pruned_copy(chosen)
            metrics = {split: self.ctx.evaluate(pruned, split, predictions=True) for split in ("val", "test")}
            residual = None
            if images is not None:
                after = responses_of(pruned, images, c, self.method.points, self.signed)
                residual = measured_residual(before, after, chosen)
            removed = removed_cost(self.model, chosen, self.pruner)
            self.pruned[k] = {
                "metrics": metrics,
                "residual": residual,
                "params_removed": removed["params"] / self.total_params,
                "flops_removed": removed["flops"] / self.method.flops_per_image,
                "physical": self.physical(chosen, timed),
            }
        return self.pruned[k]

    def physical(self, chosen: Selection, timed: bool) -> dict[str, Any]:
        """The really smaller network (Torch-Pruning where the architecture allows, masks elsewhere): its
        parameters and FLOPs, the shares removed, and its latency when `timed`."""
        small = copy.deepcopy(self.model)
        counts = self.pruner.remove(small, chosen)
        res = self.method.example.shape[-1]
        out = {**counts, "params": sum(p.numel() for p in small.parameters())}
        out["flops_per_image"] = forward_flops(small, res, self.method.example.device)
        out["params_removed"] = 1 - out["params"] / self.total_params
        out["flops_removed"] = 1 - out["flops_per_image"] / self.method.flops_per_image
        if timed:
            out["latency_ms"] = latency_ms(small, self.batch)
        return out

    def control(self, chosen: Selection, c: int) -> dict[str, Any]:
        """A control's single-class and multi-class scores for class c on test (its evaluation shared by every
        class that controls the same number of filters)."""
        if key(chosen) not in self.controlled:
            removed = removed_cost(self.model, chosen, self.pruner)  # as many filters need not remove as much
            self.controlled[key(chosen)] = {
                "metrics": self.ctx.evaluate(self.pruned_copy(chosen), "test", predictions=True),
                "params_removed": removed["params"] / self.total_params,
                "flops_removed": removed["flops"] / self.method.flops_per_image,
            }
        known = self.controlled[key(chosen)]
        return scores(known["metrics"], c) | {"filters": count(chosen), "params_removed": known["params_removed"],
                                               "flops_removed": known["flops_removed"]}  # fmt: skip


CHUNK = 16  # classes whose calibration images are held at once (for the residual pass)


def analyse(method: SemanticPruning, model: nn.Module, ctx: Context) -> dict[str, Any]:
    cfg, plan = method.config, method.plan
    classes = plan["classes"]
    a = Analysis(method, model, ctx)
    unpruned_cost = {"params": a.total_params, "flops_per_image": method.flops_per_image,
                     "latency_ms": latency_ms(model, a.batch), "latency_batch": a.batch.shape[0]}  # fmt: skip
    t0 = time.perf_counter()
    base = {split: ctx.evaluate(model, split, predictions=True) for split in ("val", "test")}
    per_eval = time.perf_counter() - t0  # one evaluation of val and test: the unit of the estimate
    estimate = announce(plan, ctx, per_eval, len(base["val"]["target"]) + len(base["test"]["target"]))
    entries, pruned_sets, selected, held = [], {}, [], {}
    t_analysis = time.perf_counter()
    for start in range(0, len(classes), CHUNK):  # calibration images of a few classes at a time
        images = class_images(ctx.loaders["calibration"], classes[start : start + CHUNK], CLASS_IMAGES)
        held.update({c: len(v) for c, v in images.items()})
        for c in classes[start : start + CHUNK]:
            unpruned = {split: scores(base[split], c) for split in ("val", "test")}
            new = analyse_class(a, c, images.get(c), unpruned, timed=c == classes[0])
            entries += new
            pruned_sets.update({(e["mode"], e["setting"], c): e.pop("_chosen") for e in new})
            selected += [theta_on_val(entries, c, mode, unpruned) for mode in cfg.modes]
    return {
        "response": cfg.response,
        "accumulate": cfg.accumulate,
        "removal": (
            "physical (Torch-Pruning) where a filter's channels end in a conv or linear layer that alone reads them, "
            "masks elsewhere" if a.pruner.physical else "masks only (the model could not be traced)"
        ),
        "excluded_layers": sorted(set(method.gamma) - set(a.gamma)),  # e.g. SE expansions: zero is not removal
        "unpruned_cost": unpruned_cost,
        "unpruned": {"multi_class": base["test"]["top1"], "multi_class_val": base["val"]["top1"],
                     "single_class": {c: scores(base["test"], c)["single_class"] for c in classes},
                     "single_class_val": {c: scores(base["val"], c)["single_class"] for c in classes}},  # fmt: skip
        "pruning": entries,
        "selected": selected,
        "overlap": overlaps({k: v for k, v in pruned_sets.items() if k[1] in DISCRETE}, cfg.modes, classes),
        "layers": {k: int(v.shape[1]) for k, v in method.gamma.items()},
        "analysis": {**plan, "seconds": time.perf_counter() - t_analysis, "estimated_seconds": estimate,
                     "seconds_per_evaluation": per_eval, "class_images": held},
    }  # fmt: skip


def announce(plan: dict[str, Any], ctx: Context, per_eval: float, n_eval: int) -> float:
    """Print the plan and its estimated time before the analysis starts; returns the estimate in seconds."""
    classes = plan["classes"]
    forwards = len(classes) * plan["forwards_per_class"] + plan["forwards_controls"]
    estimate = forwards / n_eval * per_eval
    how = f"sampled with seed {plan['sampled_with_seed']}" if len(classes) < plan["of"] else "all"
    source = plan["source_training_forwards"]
    over = ""
    if plan["chosen_by"] == "auto" and forwards > plan["analysis_fraction"] * source:
        over = f"; more than analysis_fraction={plan['analysis_fraction']:g} of it: two classes are the least"
    if ctx.log:
        ctx.log(f"  semantic pruning: {len(classes)} of {plan['of']} classes ({how}; classes=all for every class), "
                f"{plan['settings_per_class']} settings each: about {forwards:,.0f} image forwards, "
                f"~{estimate / 60:.1f} min here (the source model's training: {source:,.0f} forwards' worth"
                f"{over})")  # fmt: skip
    return estimate


def analyse_class(a: Analysis, c: int, images: Tensor | None, unpruned: dict, timed: bool) -> list[dict[str, Any]]:
    """Every setting of class c: the pruned network on val and test beside its controls, its costs and residual
    pruning, and the seconds it took (about 0 where another setting chose the same filters)."""
    cfg, method = a.cfg, a.method
    before = responses_of(a.model, images, c, method.points, a.signed) if images is not None else None
    gamma_c = {k: v[c] for k, v in a.gamma.items()}
    entries = []
    for mode in cfg.modes:
        for setting in (*DISCRETE, *cfg.sweep):
            t = time.perf_counter()
            chosen = select_filters(gamma_c, setting, mode, cfg.normalise, tiebreak=a.magnitude)
            ev = a.evaluate(c, chosen, images, before, timed and setting in DISCRETE)  # latency: discrete settings
            picks = a.controls.choose(chosen, per_layer=mode == "lwp")
            controls = {"magnitude": a.control(picks["magnitude"], c),
                        "random": [a.control(r, c) for r in picks["random"]]}  # fmt: skip
            test, val = scores(ev["metrics"]["test"], c), scores(ev["metrics"]["val"], c)
            entries.append({
                "class": c, "mode": mode, "setting": setting, "direct": count(chosen),
                "residual": ev["residual"], "residual_structural": a.pruner.residual(chosen),
                "params_removed": ev["params_removed"], "flops_removed": ev["flops_removed"],
                "physical": ev["physical"], "single_class": test["single_class"], "multi_class": test["multi_class"],
                "single_class_unpruned": unpruned["test"]["single_class"],
                "val": {"single_class": val["single_class"], "multi_class": val["multi_class"],
                        "single_class_unpruned": unpruned["val"]["single_class"]},
                "controls": controls, "seconds": time.perf_counter() - t, "_chosen": chosen,
            })  # fmt: skip
    return entries


def theta_on_val(entries: list[dict], c: int, mode: str, unpruned: dict) -> dict[str, Any]:
    """Class c's theta chosen on val among the sweep (see `choose_theta`), reported on test with its controls."""
    sweep = {e["setting"]: e for e in entries
             if e["class"] == c and e["mode"] == mode and not isinstance(e["setting"], str)}  # fmt: skip
    reference = unpruned["val"]["single_class"]["balanced"]
    if reference != reference:  # NaN: the class has no val images (or val holds nothing else)
        return {"class": c, "mode": mode, "theta": None, "why": "no val score to choose on"}
    theta = choose_theta({t: e["val"]["single_class"]["balanced"] for t, e in sweep.items()}, reference)
    chosen = sweep.get(theta)
    test = chosen["single_class"] if chosen else unpruned["test"]["single_class"]
    out = {"class": c, "mode": mode, "theta": theta, "test": test["balanced"],
           "test_unpruned": unpruned["test"]["single_class"]["balanced"],
           "val": chosen["val"]["single_class"]["balanced"] if chosen else unpruned["val"]["single_class"]["balanced"],
           "val_unpruned": unpruned["val"]["single_class"]["balanced"]}  # fmt: skip
    if chosen:
        ctrl = chosen["controls"]
        out["controls"] = {"magnitude": ctrl["magnitude"]["single_class"]["balanced"],
                           "random": [r["single_class"]["balanced"] for r in ctrl["random"]]}  # fmt: skip
    return out
