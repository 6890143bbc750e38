"""Filter pruning shared by the filter-attention and semantic-pruning methods (the rankings: `ranking.py`).

Zeroing a conv filter's weights is not pruning when an eval-mode BatchNorm follows: BN turns the zero into the
constant beta - gamma * mean / sqrt(var + eps). So a pruned channel here gets its conv weights (and bias) AND the
affine of the BatchNorm that consumes the conv's output set to zero, and its running mean to zero: the channel is
exactly 0 after BN, and after any activation with act(0) = 0 (ReLU, ReLU6, SiLU, GELU).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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
    forward_once(model, example, hooks)
    return pairs


def forward_once(model: nn.Module, example: Tensor, hooks: list) -> None:
    """One eval-mode, no-grad forward of `example` for the given hooks; removes them and restores the mode."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def zero_channels(module: nn.Module, idx: Tensor) -> None:
    """Channels `idx` of a conv (its filters and bias) or a BatchNorm (affine and running mean) set to zero, so an
    eval-mode BatchNorm maps them to exactly 0."""
    if isinstance(module, nn.Conv2d):
        module.weight[idx] = 0
        if module.bias is not None:
            module.bias[idx] = 0
    elif isinstance(module, _BatchNorm):
        if module.affine:
            module.weight[idx] = 0
            module.bias[idx] = 0
        if module.running_mean is not None:
            module.running_mean[idx] = 0


def prune_channels(model: nn.Module, pruned: dict[str, Iterable[int]], pairs: dict[str, str | None]) -> int:
    """Zero the listed output channels of each conv and of the BatchNorm that reads it (`conv_bn_pairs`): the
    fallback for models that cannot be traced into chains. In place; returns the number of channels pruned."""
    chains = {conv: Chain((bn,) if bn else (), None, exact=False) for conv, bn in pairs.items()}
    return mask_channels(model, pruned, chains)


# Modules a channel passes through one to one, with f(0) = 0 for the activations, so a zeroed channel stays zero.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)
PASS_THROUGH = (_BatchNorm, nn.Identity, nn.Dropout, *ACTIVATIONS)


@dataclass(frozen=True)
class Chain:
    """Where a conv's output channels go: through these modules one to one (BatchNorms, activations, identities,
    depthwise convs, global pooling), then into `consumer`, a groups=1 conv or a linear layer that is their only
    reader (None: they reach an add, a gate, a concatenation or anything else, so they cannot be removed
    physically). `exact`: a channel zeroed along the chain contributes nothing downstream (it ends in a consumer or
    in a residual add); False for gates (an SE block's sigmoid(0) = 0.5) and anything unknown."""

    through: tuple[str, ...]
    consumer: str | None
    exact: bool = True


POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten)


def _passes_through(module: nn.Module) -> bool:
    if isinstance(module, _BatchNorm):  # timm's BatchNormAct2d carries an activation (and dropout) inside
        act = getattr(module, "act", None)
        return act is None or isinstance(act, (nn.Identity, *ACTIVATIONS))
    return isinstance(module, (*PASS_THROUGH, *POOLS)) or type(module).__name__ == "DropPath"


def _function_passes_through(node) -> bool:
    """Functional dropout and flattening keep channels one to one."""
    import torch.nn.functional as F

    return node.op == "call_function" and node.target in (F.dropout, torch.flatten)


def _is_add(node) -> bool:
    import operator

    return (node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add)) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels


def trace_graph(model: nn.Module):
    """torch.fx graph of `model`, with timm's own untraceable modules and functions kept as leaves."""
    import torch.fx as fx
    from timm.layers._fx import get_notrace_functions, get_notrace_modules

    leaves = tuple(get_notrace_modules())

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    return Tracer(autowrap_functions=tuple(get_notrace_functions())).trace(model)


def channel_chains(model: nn.Module) -> dict[str, Chain]:
    """For every conv that is fed from outside a chain: its Chain (see above), read from the fx graph."""
    graph = trace_graph(model)
    modules = dict(model.named_modules())
    chains: dict[str, Chain] = {}
    inner: set[str] = set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        through, consumer, exact, cur = [], None, False, node
        while len(cur.users) == 1:
            (user,) = cur.users
            if _function_passes_through(user):
                cur = user
                continue
            if _is_add(user):
                exact = True  # a zero channel adds nothing to the residual stream
                break
            if user.op != "call_module":
                break
            m = modules[user.target]
            if _depthwise(m) or (not isinstance(m, nn.Conv2d) and _passes_through(m)):
                through.append(user.target)
                cur = user
                continue
            if (isinstance(m, nn.Conv2d) and m.groups == 1) or isinstance(m, nn.Linear):
                consumer, exact = user.target, True
            break
        chains[node.target] = Chain(tuple(through), consumer, exact)
        inner.update(t for t in through if isinstance(modules[t], nn.Conv2d))
    return {k: v for k, v in chains.items() if k not in inner}


def _chain_of(conv: str, chains: dict[str, Chain]) -> tuple[str, Chain] | None:
    """The root conv whose chain contains `conv` (a depthwise conv inside it), or `conv` itself."""
    if conv in chains:
        return conv, chains[conv]
    for root, chain in chains.items():
        if conv in chain.through:
            return root, Chain(chain.through[chain.through.index(conv) + 1 :], chain.consumer)
    return None


def mask_channels(model: nn.Module, pruned: dict[str, Iterable[int]], chains: dict[str, Chain]) -> int:
    """Zero the listed output channels of each conv along their whole chain (conv rows, every BatchNorm's affine and
    mean, every depthwise conv's filter), so each channel is exactly 0 where its chain ends. In place."""
    modules = dict(model.named_modules())
    total = 0
    with torch.no_grad():
        for conv_name, channels in pruned.items():
            idx = torch.as_tensor(sorted(set(channels)), dtype=torch.long)
            if idx.numel() == 0:
                continue
            found = _chain_of(conv_name, chains)
            for name in (conv_name, *(found[1].through if found else ())):
                zero_channels(modules[name], idx)
            total += idx.numel()
    return total


def _exclusive(group, root: str, chain: Chain, names: dict[int, str]) -> bool:
    """True when a Torch-Pruning group touches only `root`'s own chain: its rows, the chain's BatchNorms and
    depthwise convs, and the consumer's input columns. A group that reaches any other layer (channels coupled
    through a residual add or a concatenation) would prune more than the chosen filters."""
    allowed = {root, *chain.through, chain.consumer}
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Module) and id(module) in names and names[id(module)] not in allowed:
            return False
    return True


def remove_channels(
    model: nn.Module, pruned: dict[str, Iterable[int]], chains: dict[str, Chain], example: Tensor
) -> dict[str, int]:
    """Physically remove pruned channels where they end in a conv or linear layer that alone reads them (a really
    smaller network), through Torch-Pruning's dependency graph; mask the rest (channels coupled with other layers
    through an add, and a layer whose every filter was chosen: a layer cannot vanish). Channels chosen in a
    depthwise conv of a chain are removed with the root's. In place; returns counts of removed and masked filters."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    per_root: dict[str, set[int]] = {}
    masked: dict[str, list[int]] = {}
    for conv_name, channels in pruned.items():
        found = _chain_of(conv_name, chains)
        root = found[0] if found else None
        if root is not None and chains[root].consumer is not None and modules[root].groups == 1:
            per_root.setdefault(root, set()).update(channels)
        elif channels:
            masked[conv_name] = list(channels)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example) if per_root else None
    removed = 0
    for root, channels in per_root.items():
        conv = modules[root]
        if not channels:
            continue
        group = None
        if len(channels) < conv.out_channels:
            group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=sorted(channels))
        if group is None or not _exclusive(group, root, chains[root], names):
            masked[root] = sorted(channels)
            continue
        group.prune()
        removed += len(channels)
    mask_channels(model, masked, chains)
    return {"removed": removed, "masked": sum(len(v) for v in masked.values())}


def layer_flops(model: nn.Module, example: Tensor) -> dict[str, float]:
    """Forward FLOPs of each conv and linear layer for one image of `example`'s size, counted as torch's flop
    counter does (2 per multiply-add), so that they sum to `forward_flops` of a CNN."""
    flops: dict[str, float] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            hooks.append(module.register_forward_hook(
                lambda m, i, o, n=name, k=per_out: flops.__setitem__(n, 2.0 * k * o[0].numel())))  # fmt: skip
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, n=name: flops.__setitem__(n, 2.0 * m.in_features * o[0].numel())))  # fmt: skip
    forward_once(model, example[:1], hooks)
    return flops


def dead_channels(pruned: dict[str, Iterable[int]], chains: dict[str, Chain] | None, pairs: dict | None) -> tuple:
    """(dead outputs, dead inputs) per module: the channels a selection kills along each chain (the root's rows,
    its BatchNorms and depthwise convs) and the consumer's input channels that read them."""
    out: dict[str, set[int]] = {}
    inp: dict[str, set[int]] = {}
    if chains is None:
        for conv, channels in pruned.items():
            for name in (conv, (pairs or {}).get(conv)):
                if name and channels:
                    out.setdefault(name, set()).update(channels)
        return out, inp
    for root, chain in chains.items():
        dead = set(pruned.get(root, []))
        for name in chain.through:
            dead |= set(pruned.get(name, []))
        if not dead:
            continue
        for name in (root, *chain.through):
            out[name] = dead
        if chain.consumer is not None:
            inp[chain.consumer] = dead
    return out, inp


def removed_cost(model: nn.Module, pruned: dict[str, Iterable[int]], pruner: Pruner) -> dict[str, float]:
    """Parameters and forward FLOPs (per image) that the selection takes out of the network, whether its filters
    are removed physically or only masked: every pruned filter's weights and bias, its channel's BatchNorm affine
    and depthwise filter, and the consumer's input columns that read it; FLOPs likewise, layer by layer. A fully
    pruned layer counts in full, so the figures grow with the share pruned."""
    modules = dict(model.named_modules())
    dead_out, dead_in = dead_channels(pruned, pruner.chains, pruner.pairs)
    params = flops = 0.0
    for name in set(dead_out) | set(dead_in):
        m = modules[name]
        d_out, d_in = len(dead_out.get(name, ())), len(dead_in.get(name, ()))
        if isinstance(m, _BatchNorm):
            params += 2 * d_out if m.affine else 0
            continue
        if not isinstance(m, nn.Conv2d | nn.Linear):  # activations, identities, pooling: nothing to count
            continue
        n_out = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        n_in = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        if isinstance(m, nn.Conv2d) and m.groups > 1:  # depthwise (or grouped): a filter reads its own group only
            alive = 1 - d_out / n_out
        else:
            alive = (1 - d_out / n_out) * (1 - d_in / n_in)
        params += m.weight.numel() * (1 - alive) + (d_out if m.bias is not None else 0)
        flops += pruner.flops.get(name, 0.0) * (1 - alive)
    return {"params": params, "flops": flops}


class Pruner:
    """Masks or physically removes filters of one architecture. Chains come from the fx graph; where a model cannot
    be traced, masking falls back to each conv's consuming BatchNorm (found by running `example`) and nothing is
    removed physically."""

    def __init__(self, model: nn.Module, example: Tensor) -> None:
        try:
            self.chains: dict[str, Chain] | None = channel_chains(model)
            self.pairs = None
        except Exception:  # noqa: BLE001 - fx raises many types on untraceable code
            self.chains, self.pairs = None, conv_bn_pairs(model, example)
        self.example = example[:1]
        self.flops = layer_flops(model, self.example)  # per conv / linear layer, for `removed_cost`
        self.widths = {
            n: m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d | nn.Linear)
        }

    @property
    def physical(self) -> bool:
        return self.chains is not None

    def prunable(self) -> set[str]:
        """Convs whose filters can be pruned exactly (their zeroed channel contributes nothing downstream); the
        others (an SE block's expansion, whose sigmoid(0) = 0.5 gate still scales its channel) are left alone."""
        if self.chains is None:
            return set(self.pairs)
        out = set()
        for root, chain in self.chains.items():
            if chain.exact:
                out.add(root)
                out.update(t for t in chain.through if t in self.widths)  # its depthwise convs
        return out

    def residual(self, pruned: dict[str, Iterable[int]]) -> int:
        """Filters not chosen whose whole input is a pruned channel: the depthwise filters of a pruned channel's
        chain, and every filter of a consumer all of whose input channels were pruned."""
        if self.chains is None:
            return 0
        count = 0
        for root, chain in self.chains.items():
            dead = set(pruned.get(root, []))
            for name in chain.through:
                if name not in self.widths:  # BatchNorms, activations: not filters
                    continue
                if name in pruned or dead:
                    chosen = set(pruned.get(name, []))
                    count += len(dead - chosen)
                    dead |= chosen
            width = self.widths.get(root, 0)
            if chain.consumer is not None and width and len(dead) == width:
                count += self.widths.get(chain.consumer, 0) - len(set(pruned.get(chain.consumer, [])))
        return count

    def mask(self, model: nn.Module, pruned: dict[str, Iterable[int]]) -> int:
        if self.chains is not None:
            return mask_channels(model, pruned, self.chains)
        return prune_channels(model, pruned, self.pairs)

    def remove(self, model: nn.Module, pruned: dict[str, Iterable[int]]) -> dict[str, int]:
        if self.chains is None:
            return {"removed": 0, "masked": self.mask(model, pruned)}
        return remove_channels(model, pruned, self.chains, self.example)


def latency_ms(model: nn.Module, x: Tensor, repeats: int = 7) -> float:
    """Median wall-clock of one forward of batch `x`, in milliseconds (after two warm-up runs)."""
    import statistics
    import time

    times = []
    model.eval()
    with torch.no_grad():
        for i in range(repeats + 2):
            if x.is_cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if x.is_cuda:
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)
