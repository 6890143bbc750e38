"""Batch Spectral Shrinkage (Chen, Wang, Fu, Long, Wang: Catastrophic Forgetting Meets Negative Transfer: Batch
Spectral Shrinkage for Safe Transfer Learning, NeurIPS 2019).

Fine-tuning of the whole network with a penalty on the smallest singular values of each batch's feature matrix F
(B x D: the pooled features the classifier reads), which carry the least transferable directions:

    L_bss(F) = eta * sum_{i=1..k} sigma_{-i}^2      (the paper's eq. 5; k = 1, eta = 0.001)

sigma_{-i} being the i-th smallest of F's min(B, D) singular values. Total loss: CE + L_bss (logged as `bss`). The
singular values are computed in float32 (torch.linalg.svdvals, differentiable). An epoch's short last batch gets no
penalty (the authors' code and TLlib drop it: the smallest singular values of a few images are not those of a batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finebench.core.space import log
from finebench.methods.base import Context, Method
from finebench.methods.pretrained import pooled_features
from finebench.methods.registry import register_method


def bss_penalty(features: Tensor, k: int = 1) -> Tensor:
    """sum of the k smallest squared singular values of the (B, D) feature matrix (eq. 5, before eta)."""
    s = torch.linalg.svdvals(features.float())  # descending
    return s[len(s) - k :].pow(2).sum()


@dataclass(frozen=True)
class BSSConfig:
    eta: float = 0.001  # the penalty's weight (the paper's eta)
    k: int = 1  # how many of the smallest singular values are shrunk


@register_method
class BSS(Method):
    """Fine-tuning with the k smallest squared singular values of each batch's features penalised."""

    name = "bss"
    tune_key = "eta"
    tune_range = log(1e-4, 1e-1)  # the paper's 1e-3 (eta), a decade either way and one more up
    citation = (
        "Chen, Wang, Fu, Long, Wang: Catastrophic Forgetting Meets Negative Transfer: Batch Spectral Shrinkage for "
        "Safe Transfer Learning, NeurIPS 2019"
    )
    Config = BSSConfig

    def __init__(self, config: BSSConfig) -> None:
        super().__init__(config)
        if not isinstance(config.k, int) or config.k < 1:
            raise ValueError(f"method_config.bss.k must be an integer >= 1, got {config.k!r}")
        if not isinstance(config.eta, (int, float)) or config.eta < 0:
            raise ValueError(f"method_config.bss.eta must be a number >= 0, got {config.eta!r}")

    def preflight(self, spec, structure) -> None:
        if self.config.k > spec.train.batch_size:
            raise ValueError(f"method_config.bss.k={self.config.k}: a batch of {spec.train.batch_size} has at most "
                             f"{spec.train.batch_size} singular values")  # fmt: skip

    def forward(self, model: nn.Module, x: Tensor) -> Any:
        f = pooled_features(model, x)
        return model.get_classifier()(f), f

    def logits(self, out: Any) -> Tensor:
        return out[0]

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        logits, f = out
        ce = F.cross_entropy(logits, batch[1])
        if len(f) < ctx.spec.train.batch_size:  # an epoch's short last batch: its smallest singular values are others
            return {"ce": ce, "bss": f.sum() * 0.0}
        return {"ce": ce, "bss": self.config.eta * bss_penalty(f, self.config.k)}
