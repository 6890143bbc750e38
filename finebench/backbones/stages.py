"""Which parameter belongs to which stage of a timm CNN, from the model's own `feature_info` and classifier.

Stage i ends at the module of `feature_info[i]` (the points where the network changes resolution); modules
between two such points belong to the later stage, and modules after the last one (e.g. EfficientNet's
conv_head/bn2) belong to the last stage. The classifier returned by `get_classifier()` is the head.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class StageMap:
    stages: tuple[tuple[str, ...], ...]  # parameter names per stage, input to output
    head: tuple[str, ...]  # classifier parameter names
    stage_modules: tuple[str, ...]  # the feature_info module that ends each stage
    reductions: tuple[int, ...] = ()  # each stage's output stride (feature_info "reduction")

    @property
    def groups(self) -> tuple[int, ...]:
        """Indices of the stages after the stride-2 stem: ResNet layer1..layer4, EfficientNet blocks.1..blocks.6
        (the "groups" of the attention-transfer paper)."""
        return tuple(i for i, r in enumerate(self.reductions) if r >= 4) or tuple(range(len(self.stages)))

    def last(self, n: int) -> tuple[str, ...]:
        """Parameter names of the last `n` stages."""
        if not 0 <= n <= len(self.stages):
            raise ValueError(f"cannot take the last {n} stages of a network with {len(self.stages)}")
        return tuple(name for stage in self.stages[len(self.stages) - n :] for name in stage)

    @property
    def body(self) -> tuple[str, ...]:
        return self.last(len(self.stages))


def module_of_param(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def stage_map(model: nn.Module) -> StageMap:
    feature_info = getattr(model, "feature_info", None)
    if not feature_info or not hasattr(model, "get_classifier"):
        raise ValueError(
            f"{type(model).__name__} exposes no timm feature_info/get_classifier; stages cannot be located"
        )
    classifier = model.get_classifier()
    head_prefixes = [n for n, m in model.named_modules() if m is classifier and n]
    if not head_prefixes:
        raise ValueError(f"{type(model).__name__}: classifier module not found among named modules")
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    stage_modules = tuple(f["module"] for f in feature_info)
    ends = []
    for mod in stage_modules:
        if mod not in order:
            raise ValueError(f"feature_info names module {mod!r}, which the model does not have")
        descendants = [i for n, i in order.items() if n == mod or n.startswith(mod + ".")]
        ends.append(max(descendants))
    if ends != sorted(ends):
        raise ValueError(f"feature_info modules are not in forward order: {stage_modules}")
    stages: list[list[str]] = [[] for _ in stage_modules]
    head: list[str] = []
    for name, _ in model.named_parameters():
        mod = module_of_param(name)
        if any(mod == h or mod.startswith(h + ".") for h in head_prefixes):
            head.append(name)
            continue
        idx = min(bisect.bisect_left(ends, order[mod]), len(ends) - 1)
        stages[idx].append(name)
    reductions = tuple(int(f.get("reduction", 0)) for f in feature_info)
    return StageMap(tuple(tuple(s) for s in stages), tuple(head), stage_modules, reductions)
