"""What the regularised fine-tuning methods share: the pretrained starting point (its weights, a frozen copy, its own
classifier), the pooled features before the classifier, and a second head kept beside the new one (LwF, Co-Tuning).

A frozen copy holds no trainable parameters and is not part of the trained model, so it is never in the optimiser,
in the parameter counts or in a checkpoint (it is rebuilt from the same weights by `prepare` on resume); its forward
runs inside the training step, so its FLOPs are in the step's measured training FLOPs and its time is train time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from finebench.backbones import create_pretrained
from finebench.methods.base import Method

SOURCE_HEAD = "source_head"  # the module name of the original classifier kept beside the new one


class TwoHeads(NamedTuple):
    logits: Tensor  # the new (target) head's class scores: what accuracy is measured on
    source_logits: Tensor  # the original (source) head's class scores
    features: Tensor  # the pooled features both heads read


def pooled_features(model: nn.Module, x: Tensor) -> Tensor:
    """(B, D): the features the classifier of a timm CNN reads (after global pooling)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def frozen(model: nn.Module) -> nn.Module:
    """`model` in eval mode with every parameter frozen (a fixed reference network)."""
    model.eval()
    model.requires_grad_(False)
    return model


def frozen_copy(model: nn.Module) -> nn.Module:
    return frozen(copy.deepcopy(model))


def starting_point(model: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    """Detached copies of the named parameters (w0: where fine-tuning starts)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in names}


def original_network(model: nn.Module, spec, device: torch.device) -> nn.Module:
    """The original network, frozen, on `device`: `model` as it is now (the pretrained starting point, before any
    training) with the pretrained weights' own classifier (see `create_pretrained`) in place of the new one."""
    head = create_pretrained(spec.backbone, spec.train.weights).model.get_classifier()
    original = frozen_copy(model)
    original.reset_classifier(head.out_features)
    original.get_classifier().load_state_dict(head.state_dict())
    return frozen(original.to(device))


def check_source_head(spec, name: str) -> None:
    """Raise ValueError before any training when the run's weights have no classifier of their own."""
    from finebench.backbones.weights import WeightsError

    try:
        if spec.train.weights != "random":
            create_pretrained(spec.backbone, spec.train.weights)
    except WeightsError as e:
        raise ValueError(f"method {name!r}: {e}") from e


def attach_source_head(model: nn.Module, head: nn.Module) -> None:
    """Keep `head` (trainable) beside the model's new classifier, as `model.source_head`."""
    model.add_module(SOURCE_HEAD, head)


def remove_source_head(model: nn.Module) -> nn.Module:
    """The deployed model: the original head was needed for training only."""
    if hasattr(model, SOURCE_HEAD):
        delattr(model, SOURCE_HEAD)
    return model


def two_heads(model: nn.Module, x: Tensor) -> TwoHeads | Tensor:
    """Both heads' outputs while the source head is attached; the plain model's output once it is removed."""
    if not hasattr(model, SOURCE_HEAD):
        return model(x)
    f = pooled_features(model, x)
    return TwoHeads(model.get_classifier()(f), getattr(model, SOURCE_HEAD)(f), f)


class SourceHeadMethod(Method):
    """A method that trains the original head beside the new one (`prepare` attaches it): both heads' outputs while
    training, accuracy from the new head, the original removed for deployment."""

    def forward(self, model: nn.Module, x: Tensor) -> Any:
        return two_heads(model, x)

    def logits(self, out: Any) -> Tensor:
        return out.logits if isinstance(out, tuple) else out

    def finalize(self, model: nn.Module, ctx) -> nn.Module:
        return remove_source_head(model)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *args):
        self.seconds = time.perf_counter() - self.t0
