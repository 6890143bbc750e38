"""Two schedules of plain fine-tuning that start from a linear probe.

- LP-FT (Kumar, Raghunathan, Jones, Ma, Liang: Fine-Tuning can Distort Pretrained Features and Underperform
  Out-of-Distribution, ICLR 2022): train the new classifier on frozen features first (the linear probe: the
  backbone and its BatchNorm statistics frozen), then fine-tune everything from there, so that the features are not
  distorted by gradients through a random head. Both phases fit in the suite's one budget: the probe takes
  `probe_fraction` of the epochs, the fine-tuning the rest, each with the suite's schedule over its own epochs (two
  trainings, as in the paper; `restart_schedule=false` runs one schedule over the whole budget) and its own
  optimiser.
- WiSE-FT (Wortsman, Ilharco, Kim, Li, Kornblith, Roelofs, Gontijo-Lopes, Hajishirzi, Farhadi, Namkoong, Schmidt:
  Robust fine-tuning of zero-shot models, CVPR 2022): the same two phases, then the weights are interpolated
  between the probe's model theta_0 and the fine-tuned one theta_1,

      theta_alpha = (1 - alpha) * theta_0 + alpha * theta_1                                     (eq. 1)

  every floating-point entry of the state (BatchNorm's moving statistics included), with alpha chosen on val only
  from a grid (the paper's 0, 0.1, ..., 1). A CNN has no zero-shot head, so the probe's model stands in for the
  paper's zero-shot one (the paper's own linear-classifier variant). The probe's weights are kept in the run's
  method state (every checkpoint has them); the search over alpha is charged as `alpha-search` (its seconds, the
  val images it ran and their forward FLOPs). The fine-tuned end is the suite's best-val epoch; when that epoch is
  in the probe phase (or a time budget ended training there) there is nothing to interpolate, the selected model is
  deployed as it is and `extras.wise_ft.skipped` says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from finebench.core.space import uniform
from finebench.methods.base import Context, Method, Stage
from finebench.methods.registry import register_method


def probe_epochs(epochs: int, fraction: float) -> int:
    """Epochs of the probe: round(fraction * epochs), at least 1, leaving at least 1 to fine-tune."""
    if epochs < 2:
        raise ValueError(f"a linear probe then fine-tuning needs a budget of at least 2 epochs, got {epochs}")
    return min(max(round(fraction * epochs), 1), epochs - 1)


def interpolate(theta_0: dict[str, Tensor], theta_1: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """Eq. 1: (1 - alpha) theta_0 + alpha theta_1 for floating-point entries; others (counters) from theta_1."""
    out = {}
    for k, v1 in theta_1.items():
        v0 = theta_0[k].to(v1.device)
        out[k] = torch.lerp(v0, v1, alpha) if v1.is_floating_point() else v1.clone()
    return out


def choose_alpha(scores: dict[float, dict], metric: str) -> float:
    """The alpha with the best val `metric`; ties go to the lower val loss, then to the larger alpha."""
    return max(scores, key=lambda a: (scores[a][metric], -scores[a]["loss"], a))


@dataclass(frozen=True)
class LPFTConfig:
    probe_fraction: float = 0.5  # share of the epochs that train the classifier alone (rounded; >= 1 epoch each)
    # each phase runs the suite's schedule (cosine) over its own epochs; false: one schedule over the whole budget
    restart_schedule: bool = True


class ProbeThenTune(Method):
    Config = LPFTConfig

    def __init__(self, config: LPFTConfig) -> None:
        super().__init__(config)
        if not isinstance(config.probe_fraction, int | float) or not 0 < config.probe_fraction < 1:
            raise ValueError(f"method_config.{self.name}.probe_fraction must be in (0, 1), got "
                             f"{config.probe_fraction!r}")  # fmt: skip
        if not isinstance(config.restart_schedule, bool):
            raise ValueError(f"method_config.{self.name}.restart_schedule must be true or false, got "
                             f"{config.restart_schedule!r}")  # fmt: skip

    def preflight(self, spec, structure) -> None:
        try:
            probe_epochs(spec.train.epochs, self.config.probe_fraction)
        except ValueError as e:
            raise ValueError(f"method {self.name!r}: {e}") from e

    def schedule(self, ctx: Context) -> list[Stage]:
        epochs = ctx.spec.train.epochs
        k = probe_epochs(epochs, self.config.probe_fraction)
        own = self.config.restart_schedule
        self.probe_end = k
        return [Stage("probe", k, frozenset(ctx.stages.head), own_schedule=own),
                Stage("fine-tune", epochs - k, None, own_schedule=own)]  # fmt: skip


@register_method
class LPFT(ProbeThenTune):
    """Train the classifier on frozen features, then fine-tune the whole network from there (one budget)."""

    name = "lp-ft"
    tune_key = "probe_fraction"
    tune_range = uniform(0.2, 0.8)
    citation = (
        "Kumar, Raghunathan, Jones, Ma, Liang: Fine-Tuning can Distort Pretrained Features and Underperform "
        "Out-of-Distribution, ICLR 2022, arXiv:2202.10054"
    )


@dataclass(frozen=True)
class WiseFTConfig(LPFTConfig):
    # the mixing weights tried on val (0: the probe's model, 1: the fine-tuned one)
    alphas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@register_method
class WiseFT(ProbeThenTune):
    """LP-FT, then the weights interpolated between the probe's and the fine-tuned model, the mix chosen on val."""

    name = "wise-ft"
    tune_key = "probe_fraction"
    tune_range = uniform(0.2, 0.8)
    citation = (
        "Wortsman, Ilharco, Kim, Li, Kornblith, Roelofs, Gontijo-Lopes, Hajishirzi, Farhadi, Namkoong, Schmidt: "
        "Robust fine-tuning of zero-shot models, CVPR 2022, arXiv:2109.01903"
    )
    Config = WiseFTConfig

    def __init__(self, config: WiseFTConfig) -> None:
        super().__init__(config)
        if not config.alphas or any(not isinstance(a, int | float) or not 0 <= a <= 1 for a in config.alphas):
            raise ValueError(f"method_config.wise-ft.alphas must be numbers in [0, 1], got {config.alphas!r}")

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: Context) -> None:
        if epoch + 1 == self.probe_end:  # the probe's model: theta_0
            ctx.state["probe_weights"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        self.alpha, self.scores, self.skipped = None, {}, None
        theta_0 = ctx.state.get("probe_weights")
        theta_1 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        head = {n.rsplit(".", 1)[0] for n in ctx.stages.head}
        if theta_0 is None:  # a time budget stopped training within the probe
            self.skipped = "training stopped before the probe phase ended: no fine-tuned model to interpolate with"
        elif all(torch.equal(theta_0[k], v.cpu()) for k, v in theta_1.items() if k.rsplit(".", 1)[0] not in head):
            self.skipped = "the best val epoch is in the probe phase: the selected model is the probe's own"
        if self.skipped:
            if ctx.log:
                ctx.log(f"  wise-ft: no interpolation ({self.skipped})")
            return model
        metric = ctx.spec.train.select_metric
        t0 = time.perf_counter()
        scores, images = {}, 0
        for alpha in sorted(set(float(a) for a in self.config.alphas)):
            model.load_state_dict(interpolate(theta_0, theta_1, alpha))
            scores[alpha] = ctx.validate(model)
            images += scores[alpha]["n"]
        self.alpha = choose_alpha(scores, metric)
        model.load_state_dict(interpolate(theta_0, theta_1, self.alpha))
        flops = images * (ctx.budget.flops_per_image or 0.0)
        ctx.budget.charge("alpha-search", seconds=time.perf_counter() - t0, samples=images, flops=flops)
        self.scores = {a: round(s[metric], 4) for a, s in scores.items()}
        return model

    def extras(self, model: nn.Module, ctx: Context) -> dict:
        out = {"alpha": self.alpha, "val": {str(a): v for a, v in self.scores.items()}}
        return {"wise_ft": out | ({"skipped": self.skipped} if self.skipped else {})}
