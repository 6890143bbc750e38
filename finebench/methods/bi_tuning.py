"""Bi-Tuning (Zhong, Wang, Kou, Wang, Long: Bi-tuning of Pre-trained Representations, 2020, arXiv:2011.06182), as
its authors' implementation in TLlib computes it.

The network gets a projector (one linear layer, pooled features D -> 128) beside its new classifier. A momentum key
encoder (a copy of network + classifier + projector, theta_k <- m * theta_k + (1 - m) * theta_q before each step,
m = 0.999, never trained by gradients) encodes a second view of each training image, and per-class queues keep the
last K = 40 keys of every class: h (the pooled features with a constant 1 appended, L2-normalised) and z (the
normalised projection). Loss = CE + trade_off * (CCL + CCE), trade_off = 1, T = 0.07:

- CCL (categorical contrastive, on the projections): for query z_q of class c, the logits [z_q.z_k, z_q.Z_c (the K
  queued keys of class c), z_q.Z_c' (the (C-1)K keys of the other classes)] / T, against the target that puts
  1/(K+1) on the key of the same image and on each queued key of class c, 0 elsewhere (KL divergence, batch mean).
  The queue is read before this batch's keys are added.
- CCE (contrastive cross-entropy, on the classifier): the anchor is class c's normalised weight-and-bias row w_c
  (no gradient), the logits [h_q.w_c, H_c.w_c, H_c'.w_c] / T with the same target; the queue is read after this
  batch's keys are added (as the implementation does), so only h_q.w_c carries a gradient (into the trunk).

The key view: an independent random horizontal flip of each (already augmented) training image and, under the
suite's `augment=rrc`, an independent random-resized crop of it (the implementation draws two augmentations of the
source image). The queues start as random unit vectors. The key encoder's weights and BatchNorm statistics and the
queues are kept in `ctx.state`, so a resumed run continues with them; its forward is part of each training step
(counted in the training FLOPs and time). Deployed model: the network with its classifier (`finalize` removes the
projector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from finebench.core.augment import crop_boxes, resized_crops
from finebench.core.space import log
from finebench.methods.base import Context, Method
from finebench.methods.pretrained import pooled_features
from finebench.methods.registry import register_method

PROJECTOR = "projector"


class BiOut(NamedTuple):
    logits: Tensor
    h: Tensor  # pooled features (B, D)
    z: Tensor  # normalised projection (B, P)


def with_one(h: Tensor) -> Tensor:
    """[h, 1] L2-normalised: features that meet a classifier row [w, b]."""
    return F.normalize(torch.cat([h, torch.ones_like(h[:, :1])], dim=1), dim=1)


def queue_logits(current: Tensor, scores: Tensor, y: Tensor, temperature: float) -> Tensor:
    """[current, the K same-class queue scores, the (C-1)K other-class scores] / T per row.
    current: (N,); scores: (N, C, K) of each row's anchor against every queued key; y: (N,) classes."""
    n, c, k = scores.shape
    same = scores[torch.arange(n, device=y.device), y]  # (N, K)
    others = scores[F.one_hot(y, c) == 0].view(n, (c - 1) * k)
    return torch.cat([current[:, None], same, others], dim=1) / temperature


def uniform_kl(logits: Tensor, k: int) -> Tensor:
    """KL(t || softmax(logits)) averaged over rows, t = 1/(K+1) on the first K+1 entries of each row, 0 after."""
    logp = F.log_softmax(logits.float(), dim=1)[:, : k + 1]
    return (-math.log(k + 1) - logp.mean(1)).mean()


def ccl_loss(z_q: Tensor, z_k: Tensor, queue_z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Categorical contrastive loss on the projections; queue_z (P, C, K)."""
    scores = torch.einsum("np,pck->nck", z_q, queue_z)
    return uniform_kl(queue_logits((z_q * z_k).sum(1), scores, y, temperature), queue_z.shape[2])


def cce_loss(h_q: Tensor, weight: Tensor, bias: Tensor, queue_h: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Contrastive cross-entropy on the classifier: anchors are the normalised rows [w_c, b_c] (no gradient);
    h_q: (N, D) pooled features; queue_h (D+1, C, K) normalised [h, 1] keys."""
    w = F.normalize(torch.cat([weight, bias[:, None]], dim=1).detach(), dim=1)[y]  # (N, D+1)
    scores = torch.einsum("nd,dck->nck", w, queue_h)
    return uniform_kl(queue_logits((with_one(h_q) * w).sum(1), scores, y, temperature), queue_h.shape[2])


@torch.no_grad()
def enqueue(queues: list[Tensor], pointer: Tensor, keys: list[Tensor], y: Tensor) -> None:
    """Each image's keys, in batch order, into the next slot of its class's ring, the same slot in every queue
    (queues (D_i, C, K), keys (N, D_i), pointer (C,) the next slot per class)."""
    k = queues[0].shape[2]
    slots = pointer.tolist()
    for i, c in enumerate(y.tolist()):
        for queue, key in zip(queues, keys, strict=True):
            queue[:, c, slots[c]] = key[i]
        slots[c] = (slots[c] + 1) % k
    pointer.copy_(torch.tensor(slots, dtype=pointer.dtype))


@torch.no_grad()
def momentum_update(key: dict[str, Tensor], query: dict[str, Tensor], m: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for every parameter."""
    for name, q in query.items():
        key[name].mul_(m).add_(q.detach(), alpha=1 - m)


class Encoder(nn.Module):
    """(h, z) of the model: pooled features and normalised projection (called with the key encoder's weights)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = pooled_features(self.model, x)
        return h, F.normalize(getattr(self.model, PROJECTOR)(h), dim=1)


@dataclass(frozen=True)
class BiTuningConfig:
    queue_size: int = 40  # K: keys kept per class
    momentum: float = 0.999  # m of the key encoder's update
    temperature: float = 0.07  # T of both contrastive terms
    projection_dim: int = 128  # the projector's output size
    trade_off: float = 1.0  # weight of each contrastive term (CCL and CCE)


@register_method
class BiTuning(Method):
    """Fine-tuning with contrastive terms on the classifier and a projector against momentum-encoded class queues."""

    name = "bi-tuning"
    tune_key = "trade_off"
    tune_range = log(0.1, 10.0)
    citation = (
        "Zhong, Wang, Kou, Wang, Long: Bi-tuning of Pre-trained Representations, 2020, arXiv:2011.06182 "
        "(implementation: TLlib)"
    )
    Config = BiTuningConfig

    def __init__(self, config: BiTuningConfig) -> None:
        super().__init__(config)
        c = config
        for key in ("queue_size", "projection_dim"):
            v = getattr(c, key)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"method_config.bi-tuning.{key} must be an integer >= 1, got {v!r}")
        if not isinstance(c.momentum, (int, float)) or not 0 <= c.momentum < 1:
            raise ValueError(f"method_config.bi-tuning.momentum must be in [0, 1), got {c.momentum!r}")
        for key in ("temperature", "trade_off"):
            v = getattr(c, key)
            if not isinstance(v, (int, float)) or v < 0 or (key == "temperature" and v == 0):
                bound = "> 0" if key == "temperature" else ">= 0"
                raise ValueError(f"method_config.bi-tuning.{key} must be a number {bound}, got {v!r}")

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        dim = model.get_classifier().in_features  # the pooled features' width (num_features may differ)
        model.add_module(PROJECTOR, nn.Linear(dim, self.config.projection_dim))
        self.encoder = Encoder(model)
        c, k, p = ctx.num_classes, self.config.queue_size, self.config.projection_dim
        ctx.state["key"] = {n: t.detach().clone() for n, t in self.encoder.state_dict().items()}
        ctx.state["queue_h"] = F.normalize(torch.randn(dim + 1, c, k), dim=0)
        ctx.state["queue_z"] = F.normalize(torch.randn(p, c, k), dim=0)
        ctx.state["queue_pointer"] = torch.zeros(c, dtype=torch.long)
        self.rrc = ctx.spec.train.augment == "rrc"
        return model

    def forward(self, model: nn.Module, x: Tensor) -> Any:
        if not hasattr(model, PROJECTOR):
            return model(x)
        h = pooled_features(model, x)
        return BiOut(model.get_classifier()(h), h, F.normalize(getattr(model, PROJECTOR)(h), dim=1))

    def logits(self, out: Any) -> Tensor:
        return out.logits if isinstance(out, tuple) else out

    def key_view(self, x: Tensor) -> Tensor:
        flip = torch.rand(len(x)) < 0.5
        xk = torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)
        if self.rrc:
            gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            xk = resized_crops(xk, crop_boxes(len(x), x.shape[-1], gen).to(x.device))
        return xk

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        x, y = batch
        st, cfg = ctx.state, self.config
        for name in ("key", "queue_h", "queue_z", "queue_pointer"):  # prepare saw the model on the CPU
            value = st[name]
            if isinstance(value, dict) and next(iter(value.values())).device != x.device:
                st[name] = {n: t.to(x.device) for n, t in value.items()}
            elif isinstance(value, Tensor) and value.device != x.device:
                st[name] = value.to(x.device)
        query = dict(self.encoder.named_parameters())
        momentum_update(st["key"], query, cfg.momentum)
        with torch.no_grad():
            h_k, z_k = functional_call(self.encoder, st["key"], (self.key_view(x),))
        ccl = ccl_loss(out.z, z_k, st["queue_z"].clone(), y, cfg.temperature)  # the queue before this batch
        enqueue([st["queue_z"], st["queue_h"]], st["queue_pointer"], [z_k.float(), with_one(h_k.float())], y)
        head = model.get_classifier()
        cce = cce_loss(out.h.float(), head.weight.float(), head.bias.float(), st["queue_h"].clone(), y,
                       cfg.temperature)  # fmt: skip
        return {"ce": F.cross_entropy(out.logits, y), "ccl": cfg.trade_off * ccl, "cce": cfg.trade_off * cce}

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        if hasattr(model, PROJECTOR):
            delattr(model, PROJECTOR)
        return model

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        return {"bi_tuning": {"queue_size": self.config.queue_size, "projector": PROJECTOR,
                              "removed_for_deployment": True}}  # fmt: skip
