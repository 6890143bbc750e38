"""Ranking filters and choosing which to prune, shared by filter attention and semantic pruning, with the controls a
reviewer asks for first: the same number of filters chosen at random and by weight magnitude.

Scores are dicts layer -> one value per filter, in the network's forward order. A ranking puts the lowest score
first; ties are broken by a second value per filter (`tiebreak`, e.g. the filter's weight magnitude), then by the
layer's position in the network and the filter's index, never by the layers' names (alphabetical order would put
`blocks.10` before `blocks.2` and favour whichever layer happens to sort first).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

Selection = dict[str, list[int]]  # layer -> indices of the filters chosen (sorted)


def ranked_filters(
    scores: dict[str, Tensor], tiebreak: dict[str, Tensor] | None = None
) -> list[tuple[float, str, int]]:
    """(score, layer, filter) for every filter, lowest first (a global, network-wise ranking); see the module
    docstring for the order of ties."""
    entries = []
    for position, (name, layer) in enumerate(scores.items()):
        values = layer.detach().flatten().double().tolist()
        second = tiebreak[name].detach().flatten().double().tolist() if tiebreak else [0.0] * len(values)
        entries += [(v, s, position, i, name) for i, (v, s) in enumerate(zip(values, second, strict=True))]
    entries.sort(key=lambda e: e[:4])
    return [(e[0], e[4], e[3]) for e in entries]


def lowest_count(
    scores: dict[str, Tensor], counts: int | dict[str, int], tiebreak: dict[str, Tensor] | None = None
) -> Selection:
    """The lowest-scoring filters: `counts` of them network-wide (an int: one global ranking) or `counts[layer]` of
    each layer (a dict)."""
    chosen: Selection = {name: [] for name in scores}
    if isinstance(counts, dict):
        for name, layer in scores.items():
            one = ranked_filters({name: layer}, {name: tiebreak[name]} if tiebreak else None)
            chosen[name] = sorted(i for _, _, i in one[: counts.get(name, 0)])
        return chosen
    for _, name, i in ranked_filters(scores, tiebreak)[:counts]:
        chosen[name].append(i)
    return {k: sorted(v) for k, v in chosen.items()}


def lowest_fraction(
    scores: dict[str, Tensor], ratio: float, per_layer: bool = False, tiebreak: dict[str, Tensor] | None = None
) -> Selection:
    """The `ratio` lowest-scoring filters: network-wise (one global ranking) or layer-wise (ratio of each layer,
    rounded per layer)."""
    if per_layer:
        return lowest_count(scores, {n: int(round(ratio * s.numel())) for n, s in scores.items()}, tiebreak)
    return lowest_count(scores, int(round(ratio * sum(s.numel() for s in scores.values()))), tiebreak)


def matched(chosen: Selection, scores: dict[str, Tensor], per_layer: bool) -> Selection:
    """As many filters as `chosen` holds, the lowest by `scores`: the same number in each layer (layer-wise) or in
    all (network-wise). The controls of a pruning result are matched this way."""
    if per_layer:
        return lowest_count(scores, {n: len(v) for n, v in chosen.items()})
    return lowest_count(scores, sum(len(v) for v in chosen.values()))


def count(selection: Selection) -> int:
    return sum(len(v) for v in selection.values())


def key(selection: Selection) -> tuple:
    """A hashable identity of a selection (layers with nothing chosen left out), to evaluate each set once."""
    return tuple((k, tuple(v)) for k, v in sorted(selection.items()) if v)


def filter_magnitude(model: nn.Module, layers: list[str]) -> dict[str, Tensor]:
    """Layer -> the L1 norm of each filter's weights (one value per output channel): the weight-magnitude criterion."""
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().abs().flatten(1).sum(1).double().cpu() for n in layers}


@dataclass
class Controls:
    """The controls of one model's pruning results: filters chosen by weight magnitude (the lowest L1 norms) and at
    random (`draws` independent draws, each a fixed random score per filter drawn with `seed`), each matched in
    number to the selection it controls (see `matched`)."""

    magnitude: dict[str, Tensor]
    draws: list[dict[str, Tensor]]

    @classmethod
    def build(cls, model: nn.Module, layers: list[str], draws: int, seed: int) -> Controls:
        magnitude = filter_magnitude(model, layers)
        gen = torch.Generator().manual_seed(seed)
        random = [{n: torch.rand(len(m), generator=gen, dtype=torch.float64) for n, m in magnitude.items()}
                  for _ in range(draws)]  # fmt: skip
        return cls(magnitude, random)

    def choose(self, chosen: Selection, per_layer: bool) -> dict[str, Selection | list[Selection]]:
        return {
            "magnitude": matched(chosen, self.magnitude, per_layer),
            "random": [matched(chosen, draw, per_layer) for draw in self.draws],
        }
