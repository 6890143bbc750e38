"""Filter attention ("Pay Attention to Convolution Filters", Mo, Cheng, Fang 2019).

Every convolution gets a trainable attention tensor `a`, initialised to 1 and multiplied into its frozen pretrained
weight: conv(x, W * a). Shapes: `full` = (out, in/groups, 1, 1), one scalar per filter and input channel; `out` =
(out, 1, 1, 1), one scalar per filter. With a = 1 the wrapped network computes exactly what the original does.
The weight is reparametrised in place (torch.nn.utils.parametrize), so every conv subclass keeps its own forward
(timm's TF-"same" padding, grouped and depthwise convs included).

Schedules are letter strings, one letter per epoch: F trains the classifier, A the attention, B the normalisation
affine parameters (every BatchNorm in train mode), E everything except attention. `schedule="paper"` fits the paper's
pattern (FF, then AAAB repeated: FFAAABAAABAA for 12 epochs) to the suite's epoch budget, so the method competes
at equal epochs. The authors' code uses a fresh Adam (lr 1e-3, constant, no weight decay) per letter: those are
the defaults; `fresh_optimizer=False` keeps one optimiser for the schedule, `constant_lr=False` applies the suite's
cosine schedule, `optimizer="suite"` uses the suite's optimiser and learning rate.

Penalties (lambda * term, logged as `attention_penalty`; a = all attention tensors, a_j the attention of filter j):
  diverge -sum over layers of mean(min((a_l - 1)^2, bound)): the authors' code's "l2", the penalty behind the
          paper's headline rows (every result of its Tables 1-4 uses a penalty, §2.4; the authors' retraining script
          asserts one, with lambda = 1). Their code leaves it unbounded below, which rewards driving attention to
          infinity; here each weight's reward stops at |a - 1| = sqrt(bound). THE DEFAULT, with lambda = 1.
  l2      sum over filters j of ||a_j||_2: the paper's eq. 2 inside eq. 4, a group norm per filter (for shape `out`,
          one scalar per filter, it is sum |a_j|)
  l1sum   sum of |a| over all attention weights: the un-normalised L1 of the paper's eq. 3
  l1      mean |a| over all attention weights: the authors' code's "l1" (eq. 3 divided by the number of weights;
          the un-normalised sum collapses training at the code's lambda)
  bimodal sum over layers of sum(min((a_l - 2)^2, a_l^2)) / (number of attention weights)
  none    no penalty: the paper's ablation (§2.4), labelled so in the tables

After training, attention ranks filters (the mean attention over a filter's input channels): the lowest-ranked are
pruned network-wise and per layer, with the same prunability rules as semantic pruning (only filters whose removal is
exact), ties broken by the filter's weight magnitude, then by its position in the network, and each result shown
beside the same number of filters pruned at random (`control_draws` draws) and by weight magnitude (the L1 norm of
the deployed filter), evaluated on test: without those, "attention ranks filters" cannot be judged.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from finebench.core.space import Space, log
from finebench.methods.base import Context, Method, Stage
from finebench.methods.pruning import Pruner
from finebench.methods.ranking import Controls, count, filter_magnitude, key, lowest_fraction
from finebench.methods.registry import register_method

SHAPES = ("full", "out")
LETTERS = {"F": "head", "A": "attention", "B": "normalisation affine", "E": "everything except attention"}
# B trains these layers' affine parameters (BatchNorm for the seed papers' CNNs; GroupNorm/LayerNorm elsewhere)
NORMS = (_BatchNorm, nn.GroupNorm, nn.LayerNorm)
PENALTIES = ("none", "l1", "l1sum", "l2", "diverge", "bimodal")


class FilterScale(nn.Module):
    """The parametrisation W -> W * attention of one convolution's weight."""

    def __init__(self, weight_shape: torch.Size, shape: str) -> None:
        super().__init__()
        if shape not in SHAPES:
            raise ValueError(f"attention shape {shape!r} is not one of {', '.join(SHAPES)}")
        dims = (weight_shape[0], weight_shape[1]) if shape == "full" else (weight_shape[0], 1)
        self.attention = nn.Parameter(torch.ones(*dims, *([1] * (len(weight_shape) - 2))))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.attention


def wrap_convs(model: nn.Module, shape: str = "full") -> nn.Module:
    """Give every Conv2d of `model` an attention tensor (all ones, so the outputs are unchanged). In place.
    A conv classifier (timm's get_classifier()) is left alone: it is the head, which trains as such."""
    if shape not in SHAPES:
        raise ValueError(f"attention shape {shape!r} is not one of {', '.join(SHAPES)}")
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_convs = {id(m) for m in head.modules()} if isinstance(head, nn.Module) else set()
    convs = [
        m
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and not parametrize.is_parametrized(m, "weight") and id(m) not in head_convs
    ]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d to wrap")
    standardised = sorted({type(m).__name__ for m in convs if "StdConv" in type(m).__name__})
    if shape == "out" and standardised:
        raise ValueError(
            f"attention shape 'out' has no effect on weight-standardised convs ({', '.join(standardised)}): they "
            "normalise each filter, cancelling a per-filter scale; use shape=full"
        )
    for conv in convs:
        scale = FilterScale(conv.weight.shape, shape).to(conv.weight.device, conv.weight.dtype)
        parametrize.register_parametrization(conv, "weight", scale)
    return model


def attention_layers(model: nn.Module) -> dict[str, Tensor]:
    """Conv module name -> its attention tensor, in forward order."""
    out = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations.weight:
                if isinstance(p, FilterScale):
                    out[name] = p.attention
    return out


def fold_attention(model: nn.Module) -> nn.Module:
    """Multiply each attention into its conv weight and drop it: plain convs, no extra parameters or time."""
    for _, module in list(model.named_modules()):
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, FilterScale) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def parse_schedule(text: str, epochs: int) -> str:
    """A letter schedule for `epochs` epochs: `paper` fits FF + AAAB... to the budget; a string must match it."""
    if text == "paper":
        n_head = min(2, max(1, epochs // 5))
        return "F" * n_head + ("AAAB" * epochs)[: epochs - n_head]
    bad = sorted(set(text) - set(LETTERS))
    if bad or not text:
        valid = ", ".join(f"{k} ({v})" for k, v in LETTERS.items())
        raise ValueError(f"filter-attention schedule {text!r}: unknown letter(s) {bad or '(empty)'}; valid: {valid}")
    if len(text) != epochs:
        raise ValueError(
            f"filter-attention schedule {text!r} has {len(text)} letters (one per epoch) but the budget is {epochs} "
            "epochs; give a schedule of that length or schedule=paper"
        )
    return text


def attention_penalty(attentions: list[Tensor], kind: str, bound: float = 1.0) -> Tensor:
    """The penalty term (before lambda) over a list of attention tensors; see the module docstring."""
    if kind == "l1":
        return torch.cat([a.abs().flatten() for a in attentions]).mean()
    if kind == "l1sum":
        return sum(a.abs().sum() for a in attentions)
    if kind == "l2":  # one L2 norm per filter (the row of its input-channel scalars), summed over filters
        return sum(a.flatten(1).norm(p=2, dim=1).sum() for a in attentions)
    if kind == "diverge":
        return -sum(((a - 1) ** 2).clamp(max=bound).mean() for a in attentions)
    if kind == "bimodal":
        count = sum(a.numel() for a in attentions)
        return sum(torch.minimum((a - 2) ** 2, a**2).sum() for a in attentions) / count
    raise ValueError(f"attention penalty {kind!r} is not one of {', '.join(PENALTIES)}")


def filter_scores(attention: Tensor) -> Tensor:
    """One magnitude per output filter: the mean attention over its input channels (itself for shape `out`)."""
    return attention.detach().flatten(1).mean(1)


def attention_stats(model: nn.Module, bins: int = 40) -> dict[str, Any]:
    """Histogram data per layer (the paper's Figure 2), per-layer and global filter rankings, amplified fraction."""
    layers = attention_layers(model)
    if not layers:
        return {}
    flat = torch.cat([a.detach().flatten() for a in layers.values()]).float()
    lo, hi = float(flat.min()), float(flat.max())
    hi = hi if hi > lo else lo + 1e-6
    per_layer, ranking = {}, []
    for name, a in layers.items():
        values = a.detach().flatten().float()
        scores = filter_scores(a)
        per_layer[name] = {
            "shape": list(a.shape),
            "mean": float(values.mean()),
            "std": float(values.std()) if values.numel() > 1 else 0.0,
            "min": float(values.min()),
            "max": float(values.max()),
            "amplified": float((values > 1).float().mean()),
            "suppressed": float((values < 1).float().mean()),
            "histogram": torch.histc(values, bins=bins, min=lo, max=hi).int().tolist(),
            "filter_order": scores.argsort().tolist(),  # lowest-ranked filter first
            "filter_scores": [round(float(s), 5) for s in scores],
        }
        ranking += [(float(s), name, i) for i, s in enumerate(scores)]
    ranking.sort()
    return {
        "histogram_edges": torch.linspace(lo, hi, bins + 1).tolist(),
        "amplified": float((flat > 1).float().mean()),
        "suppressed": float((flat < 1).float().mean()),
        "unchanged": float((flat == 1).float().mean()),
        "layers": per_layer,
        "global_lowest": [[n, i, round(s, 5)] for s, n, i in ranking[:50]],
        "global_highest": [[n, i, round(s, 5)] for s, n, i in ranking[-50:][::-1]],
    }


@dataclass(frozen=True)
class FilterAttentionConfig:
    schedule: str = "paper"  # letters F/A/B/E, one per epoch, or "paper" (FF + AAAB..., fitted to the budget)
    shape: str = "full"  # full: (out, in/groups) scalars per conv; out: one per filter
    penalty: str = "diverge"  # diverge (the authors' "l2") | l2 (eq. 2) | l1sum (eq. 3) | l1 | bimodal | none
    lam: float = 1.0  # penalty weight lambda (the authors' retraining script: 1)
    diverge_bound: float = 1.0  # the diverge reward stops once (a - 1)^2 reaches this
    optimizer: str = "adam"  # adam (the authors' code) | sgd | adamw | suite
    lr: float = 1e-3  # base learning rate of every letter (the suite's cosine schedule applies on top)
    fresh_optimizer: bool = True  # a new optimiser per letter (the authors' code) or one for the whole schedule
    weight_decay: float = 0.0  # the authors' Adam has none; a decay would pull attention towards 0, not 1
    constant_lr: bool = True  # each letter at `lr` (the authors' code); False: the suite's cosine on top
    # attention-guided pruning evaluated after training, network-wise and layer-wise (no retraining: small ratios)
    prune_ratios: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
    control_draws: int = 3  # random-choice controls per pruning result (plus one by weight magnitude)


@register_method
class FilterAttention(Method):
    """Filter attention: a trainable scalar per conv filter (and input channel), letter schedules (FFAAAB...)."""

    name = "filter-attention"
    tune_key = "lam"
    tune_range = log(0.01, 10.0)  # the penalty weight, two decades around the authors' 1

    @classmethod
    def search_space(cls, config: Mapping[str, Any]) -> dict[str, Space]:
        """Its own Adam's learning rate (1e-5..1e-2 around the authors' 1e-3) and lambda; no weight decay (the authors'
        has none, and a decay pulls attention towards 0). With `optimizer=suite` the suite's learning rate."""
        lr = {"train.lr": log(1e-4, 1e-1)} if config.get("optimizer") == "suite" else {"lr": log(1e-5, 1e-2)}
        return lr | {cls.tune_key: cls.tune_range}

    citation = (
        "Mo, Cheng, Fang: Pay Attention to Convolution Filters: Towards Fast and Accurate Fine-Grained "
        "Transfer Learning, 2019, arXiv:1906.04950"
    )
    Config = FilterAttentionConfig
    LATER = {"control_draws": 3}

    def __init__(self, config: FilterAttentionConfig) -> None:
        super().__init__(config)
        if config.penalty not in PENALTIES:
            raise ValueError(f"filter-attention penalty {config.penalty!r} is not one of {', '.join(PENALTIES)}")
        if config.lam < 0 or config.diverge_bound <= 0:
            raise ValueError(f"filter-attention: lam must be >= 0 and diverge_bound > 0, got {config}")
        if config.optimizer not in ("adam", "sgd", "adamw", "suite"):
            raise ValueError(f"filter-attention optimizer {config.optimizer!r} is not one of adam, sgd, adamw, suite")
        if config.shape not in SHAPES:
            raise ValueError(f"filter-attention shape {config.shape!r} is not one of {', '.join(SHAPES)}")
        if config.control_draws < 0:
            raise ValueError(f"filter-attention control_draws must be >= 0, got {config.control_draws}")
        if any(not 0 < r < 1 for r in config.prune_ratios):
            raise ValueError(f"filter-attention prune_ratios must lie in (0, 1), got {config.prune_ratios}")
        if config.schedule != "paper":
            parse_schedule(config.schedule, len(config.schedule))  # letters checked before any training

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        self.model = wrap_convs(model, self.config.shape)
        return self.model

    def groups(self) -> dict[str, frozenset[str]]:
        """Parameter names per letter, chosen by module type: FilterScale, BatchNorm, the timm classifier."""
        names = dict(self.model.named_parameters())
        ids = {id(a) for a in attention_layers(self.model).values()}
        attention = {n for n, p in names.items() if id(p) in ids}
        classifier = self.model.get_classifier()
        head_prefix = next(n for n, m in self.model.named_modules() if m is classifier)
        head = {n for n in names if n.startswith(head_prefix + ".")}
        bn = {f"{mn}.{pn}" for mn, m in self.model.named_modules() if isinstance(m, NORMS)
              for pn, _ in m.named_parameters(recurse=False)}  # fmt: skip
        return {
            "F": frozenset(head),
            "A": frozenset(attention),
            "B": frozenset(bn),
            "E": frozenset(set(names) - attention),
        }

    def schedule(self, ctx: Context) -> list[Stage]:
        letters = parse_schedule(self.config.schedule, ctx.spec.train.epochs)
        groups = self.groups()
        if "B" in letters and not groups["B"]:
            raise ValueError(
                f"filter-attention schedule {letters!r} has B (normalisation affine) epochs, but "
                f"{ctx.spec.backbone!r} has no normalisation layers with affine parameters; use F/A/E letters"
            )
        opt = None if self.config.optimizer == "suite" else self.config.optimizer
        lr = None if self.config.optimizer == "suite" else self.config.lr
        return [
            Stage(
                f"{i + 1}:{letter}",
                1,
                groups[letter],
                bn="train" if letter == "B" else "auto",
                lr=lr,
                optimizer=opt,
                fresh_optimizer=self.config.fresh_optimizer,
                weight_decay=self.config.weight_decay,
                constant_lr=self.config.constant_lr,
            )
            for i, letter in enumerate(letters)
        ]

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        terms = super().losses(model, batch, out, ctx)
        if self.config.penalty != "none" and self.config.lam > 0:
            atts = list(attention_layers(model).values())
            terms["attention_penalty"] = self.config.lam * attention_penalty(
                atts, self.config.penalty, self.config.diverge_bound
            )
        return terms

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        """Keep the attention findings, then fold attention into the weights (the deployed model)."""
        self.stats = attention_stats(model)
        self.attentions = {k: v.detach().clone() for k, v in attention_layers(model).items()}
        return fold_attention(model)

    @classmethod
    def bn_statistics(cls, config: dict[str, Any]) -> str | None:
        letters = str(config.get("schedule", "paper"))
        if letters == "paper":
            return "batch in B epochs, else moving"
        trained = "/".join(x for x in "BE" if x in letters)  # B trains the affine parameters, E everything else
        return f"batch in {trained} epochs, else moving" if trained else "moving (frozen)"

    @classmethod
    def note(cls, config: dict[str, Any]) -> str | None:
        if config.get("penalty") == "none" or config.get("lam") == 0:
            return "the paper's ablation: attention without a penalty"
        return None

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        """Attention statistics and rankings; attention-guided pruning (the lowest-ranked prunable filters,
        network-wise (nwp) or of each layer (lwp), masked, no retraining) evaluated on val and test after selection,
        each beside its controls (random and weight-magnitude choices of as many filters)."""
        out: dict[str, Any] = {"attention": self.stats, "attention_pruning": []}
        out["schedule"] = parse_schedule(self.config.schedule, ctx.spec.train.epochs)  # as trained, for reports
        if note := self.note(dataclasses.asdict(self.config)):
            out["variant"] = note
        if ctx.evaluate is None or not self.config.prune_ratios:
            return out
        res = ctx.spec.train.resolution
        pruner = Pruner(model, torch.zeros(1, 3, res, res, device=next(model.parameters()).device))
        prunable = pruner.prunable()
        scores = {name: filter_scores(a) for name, a in self.attentions.items() if name in prunable}
        magnitude = filter_magnitude(model, list(scores))
        controls = Controls.build(model, list(scores), self.config.control_draws, ctx.spec.seed)
        memo: dict[tuple, dict[str, Any]] = {}

        def evaluate(chosen: dict[str, list[int]], splits: tuple[str, ...]) -> dict[str, Any]:
            """The network with `chosen` pruned on `splits` (each selection evaluated once)."""
            known = memo.setdefault(key(chosen), {"filters": count(chosen)})
            pruned = None
            for split in splits:
                if split not in known:
                    if pruned is None:
                        pruned = copy.deepcopy(model)
                        pruner.mask(pruned, chosen)
                    known[split] = ctx.evaluate(pruned, split)
            return {k: v for k, v in known.items() if k in ("filters", *splits)}

        for mode in ("nwp", "lwp"):
            for ratio in self.config.prune_ratios:
                chosen = lowest_fraction(scores, ratio, per_layer=mode == "lwp", tiebreak=magnitude)
                picks = controls.choose(chosen, per_layer=mode == "lwp")
                out["attention_pruning"].append({
                    "mode": mode, "ratio": ratio, **evaluate(chosen, ("val", "test")),
                    "controls": {"magnitude": evaluate(picks["magnitude"], ("test",)),  # controls: test only
                                 "random": [evaluate(r, ("test",)) for r in picks["random"]]},
                })  # fmt: skip
        out["excluded_layers"] = sorted(set(self.attentions) - prunable)
        out["prunable_filters"] = sum(len(v) for v in scores.values())
        return out
