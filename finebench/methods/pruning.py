"""Filter ranking and pruning shared by the filter-attention and semantic-pruning methods.

Zeroing a conv filter's weights is not pruning when an eval-mode BatchNorm follows: BN turns the zero into the
constant beta - gamma * mean / sqrt(var + eps). So a pruned channel here gets its conv weights (and bias) AND the
affine of the BatchNorm that consumes the conv's output set to zero, and its running mean to zero: the channel is
exactly 0 after BN, and after any activation with act(0) = 0 (ReLU, ReLU6, SiLU, GELU).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def conv_bn_pairs(model: nn.Module, example: Tensor) -> dict[str, str | None]:
    """Conv name -> the name of the BatchNorm whose input is exactly that conv's output (None if none), found by
    running `example` once and matching tensors, so it holds for any architecture."""
    produced: dict[int, str] = {}
    alive: list[Tensor] = []  # keeps every conv output alive during the trace, so no id() is reused
    pairs: dict[str, str | None] = {}
    hooks = []

    def conv_hook(m, i, o, name):
        alive.append(o)
        produced[id(o)] = name

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            pairs[name] = None
            hooks.append(module.register_forward_hook(lambda m, i, o, n=name: conv_hook(m, i, o, n)))
        elif isinstance(module, _BatchNorm):
            hooks.append(
                module.register_forward_pre_hook(
                    lambda m, i, n=name: pairs.__setitem__(produced[id(i[0])], n) if id(i[0]) in produced else None
                )
            )
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return pairs


def ranked_filters(scores: dict[str, Tensor]) -> list[tuple[float, str, int]]:
    """(score, layer, filter) for every filter, lowest first (a global, network-wise ranking)."""
    entries = [(float(s), name, i) for name, layer in scores.items() for i, s in enumerate(layer.flatten())]
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    return entries


def lowest_fraction(scores: dict[str, Tensor], ratio: float, per_layer: bool = False) -> dict[str, list[int]]:
    """The `ratio` lowest-scoring filters: network-wise (one global ranking) or layer-wise (ratio of each layer)."""
    chosen: dict[str, list[int]] = {name: [] for name in scores}
    if per_layer:
        for name, layer in scores.items():
            count = int(round(ratio * layer.numel()))
            chosen[name] = sorted(layer.flatten().argsort()[:count].tolist())
        return chosen
    entries = ranked_filters(scores)
    for _, name, i in entries[: int(round(ratio * len(entries)))]:
        chosen[name].append(i)
    return {k: sorted(v) for k, v in chosen.items()}


def prune_channels(model: nn.Module, pruned: dict[str, Iterable[int]], pairs: dict[str, str | None]) -> int:
    """Remove the listed output channels' contribution for real (see the module docstring). In place; returns the
    number of channels pruned."""
    modules = dict(model.named_modules())
    total = 0
    with torch.no_grad():
        for conv_name, channels in pruned.items():
            idx = torch.as_tensor(sorted(set(channels)), dtype=torch.long)
            if idx.numel() == 0:
                continue
            conv = modules[conv_name]
            conv.weight[idx] = 0
            if conv.bias is not None:
                conv.bias[idx] = 0
            bn_name = pairs.get(conv_name)
            if bn_name is not None:
                bn = modules[bn_name]
                if bn.affine:
                    bn.weight[idx] = 0
                    bn.bias[idx] = 0
                if bn.running_mean is not None:
                    bn.running_mean[idx] = 0
            total += idx.numel()
    return total
