"""Suite and run specifications: frozen dataclasses, YAML + key=value overrides, strict validation.

A suite is the cross product methods x datasets x backbones x seeds under one `TrainConfig`, so every method of a
comparison gets the same data split, preprocessing, weights and epoch budget. A run's id is a hash of its resolved
spec: the same spec always maps to the same record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from finebench.benchmark.presets import PRESETS
from finebench.core.labels import LATER_FIELDS, identity_train, spec_label, tuned_identity  # noqa: F401 - the spec's API

SPEC_VERSION = 1

CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adamw", "adam"),
    "scheduler": ("cosine", "constant"),
    "resize": ("center-crop", "squash"),
    "augment": ("flip", "rrc", "none"),
    "sampler": ("uniform", "balanced"),
    "select_metric": ("top1", "top3", "mean_class"),
    "amp": ("off", "bf16", "fp16"),
    "cudnn": ("benchmark", "deterministic"),
}


@dataclass(frozen=True)
class TrainConfig:
    """What every method of a suite shares: the budget, the optimiser defaults and the data pipeline."""

    weights: str = "default"  # default (shipped or hub) | random | a path to a state dict
    epochs: int = 10  # the primary budget: every method sees epochs x |train| samples
    batch_size: int = 32
    eval_batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # per optimiser step, over the run's whole budget
    resolution: int | None = None  # None: the backbone's pretrained input size
    resize: str = "center-crop"  # center-crop: shorter side to resolution, then crop; squash: no crop
    augment: str = "flip"  # flip: horizontal flips; rrc: random-resized crops (area 35-100 %) + flips; none
    sampler: str = "uniform"  # uniform: each train item once per epoch; balanced: classes equally likely
    split_seed: int | str = 0  # the split's seed, the same for every run; "seed": each run's seed (resampled splits)
    split: tuple[float, ...] = (0.7, 0.15, 0.15)  # train / val / test fractions, stratified by class
    train_per_class: int | None = None  # cap on train images per class (quick runs and tests); None: all
    select_metric: str = "top1"  # val metric that picks the best epoch
    time_budget: float | None = None  # optional wall-clock cap per run, seconds
    skip_bad_images: bool = False  # leave unreadable images out (counted in the record) instead of refusing the data
    # How the arithmetic runs. Part of the spec (and of the run id when not the default), so that a table never
    # pools runs that differ in them.
    amp: str = "off"  # mixed precision: off (fp32) | bf16 (autocast) | fp16 (autocast with a gradient scaler)
    channels_last: bool = False  # model and batches in NHWC memory format (faster convolutions on tensor cores)
    compile: bool = False  # torch.compile the model's forward (first steps slower while it compiles)
    cudnn: str = "benchmark"  # benchmark: cuDNN times its algorithms and keeps the fastest (not bit-reproducible);
    # deterministic: deterministic algorithms only (torch.use_deterministic_algorithms), slower. No effect on CPU.


def identity_config(method: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A method's resolved config without the later fields at their legacy value (see `Method.LATER`): what
    identifies the run, the same for a spec written before those fields existed and one written after."""
    from finebench.methods import METHODS

    return METHODS.get(method).identity(dict(config)) if method in METHODS else dict(config)


@dataclass(frozen=True)
class SuiteSpec:
    methods: tuple[str, ...] = ("all",)
    datasets: tuple[str, ...] = ("flowers17",)
    backbones: tuple[str, ...] = ("efficientnet_lite0",)
    seeds: tuple[int, ...] = (0,)
    method_config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    # `bench run --tuned STUDY`: (study name, storage URL, results folder): every run at its method's values chosen
    # in that study
    tuned: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class RunSpec:
    method: str
    method_config: Mapping[str, Any]
    dataset: str
    backbone: str
    seed: int
    train: TrainConfig
    # a final run at values `bench tune` chose (`bench run --tuned STUDY`): the study, its trials and the values
    # (applied to `train` and `method_config` above), the suite's values they replaced, and the tuning's cost and
    # trials for the record; None: the suite's own settings
    tuned: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method_config"] = dict(self.method_config)
        d["train"]["split"] = list(self.train.split)
        if self.tuned is None:  # a spec without tuning reads as every spec written before tuning existed
            del d["tuned"]
        return d

    @property
    def run_id(self) -> str:
        spec = self.to_dict()
        if "tuned" in spec:  # which tuning chose the values identifies the run, not its cost or storage
            spec["tuned"] = tuned_identity(spec["tuned"])
        spec["train"] = identity_train(spec["train"])
        spec["method_config"] = identity_config(self.method, spec["method_config"])
        payload = json.dumps({"v": SPEC_VERSION, **spec}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return spec_label(vars(self))


SUITE_KEYS = ("methods", "datasets", "backbones", "seeds", "method_config")
ALIASES = {"method": "methods", "dataset": "datasets", "backbone": "backbones", "seed": "seeds"}
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig))


class SpecError(ValueError):
    """A spec value, key or file that cannot be used; the message names it and what would be valid."""


def parse_duration(value: Any, key: str = "time_budget") -> float | None:
    """'90s', '10m', '1.5h' or a number of seconds -> seconds."""
    if value is None or value == "" or value == "none":
        return None
    if isinstance(value, bool):
        raise SpecError(f"{key}: expected a duration such as 90s, 10m or 1.5h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
        if not m:
            raise SpecError(f"{key}: expected a duration such as 90s, 10m or 1.5h, got {value!r}")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds <= 0:
        raise SpecError(f"{key}: must be positive, got {value!r}")
    return seconds


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp` (int, float, str, bool, X | None, tuple[X, ...])."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, value, arg)
            except SpecError as e:
                errors.append(str(e))
        raise SpecError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is dict or tp is dict:  # a mapping passed through (e.g. a teacher's config): k=v,k=v on the CLI
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise SpecError(f"{key}: expected a mapping (key: value in YAML, k=v,k=v here), got {value!r}")
            value = {k.strip(): _scalar(v.strip()) for k, v in (p.split("=", 1) for p in pairs)}
        if not isinstance(value, Mapping):
            raise SpecError(f"{key}: expected a mapping of keys to values, got {value!r} ({type(value).__name__})")
        return dict(value)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        elif not isinstance(value, list | tuple):
            value = [value]
        out = tuple(coerce(key, _scalar(v), inner) for v in value)
        if not out:
            raise SpecError(f"{key}: expected at least one value")
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise SpecError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, str):
            value = _scalar(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SpecError(f"{key}: expected an integer, got {value!r} ({type(value).__name__})")
    if tp is float:
        if isinstance(value, str):
            value = _scalar(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise SpecError(f"{key}: expected a number, got {value!r} ({type(value).__name__})")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise SpecError(f"{key}: expected a string, got {value!r} ({type(value).__name__})")
    raise SpecError(f"{key}: unsupported type {_type_name(tp)}")


def _scalar(text: Any) -> Any:
    """Parse one CLI/YAML scalar the way YAML would ('3' -> 3, '1e-3' -> 0.001, 'true' -> True)."""
    if not isinstance(text, str):
        return text
    if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", text.strip()):
        return float(text)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def build_config(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Instantiate frozen dataclass `cls` from `values`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise SpecError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(known) or '(none)'}")
    kwargs = {k: coerce(f"{where}.{k}" if where else k, v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


def validate_train(cfg: TrainConfig) -> TrainConfig:
    for key, choices in CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise SpecError(f"{key}: {getattr(cfg, key)!r} is not one of {', '.join(choices)}")
    positive_ints = ("epochs", "batch_size", "eval_batch_size")
    for key in positive_ints:
        if getattr(cfg, key) < 1:
            raise SpecError(f"{key}: must be >= 1, got {getattr(cfg, key)}")
    for key in ("lr", "weight_decay", "momentum"):
        if not math.isfinite(getattr(cfg, key)):
            raise SpecError(f"{key}: must be a finite number, got {getattr(cfg, key)}")
    if cfg.lr <= 0:
        raise SpecError(f"lr: must be > 0, got {cfg.lr}")
    if cfg.weight_decay < 0:
        raise SpecError(f"weight_decay: must be >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.momentum < 1:
        raise SpecError(f"momentum: must be in [0, 1), got {cfg.momentum}")
    if cfg.resolution is not None and cfg.resolution < 16:
        raise SpecError(f"resolution: must be >= 16 pixels, got {cfg.resolution}")
    if cfg.train_per_class is not None and cfg.train_per_class < 1:
        raise SpecError(f"train_per_class: must be >= 1, got {cfg.train_per_class}")
    if len(cfg.split) != 3 or any(f <= 0 for f in cfg.split) or abs(sum(cfg.split) - 1) > 1e-6:
        raise SpecError(f"split: expected three positive train/val/test fractions summing to 1, got {list(cfg.split)}")
    if isinstance(cfg.split_seed, str) and cfg.split_seed != "seed":
        raise SpecError(f"split_seed: expected an integer or 'seed' (each run's own seed), got {cfg.split_seed!r}")
    if cfg.time_budget is not None and cfg.time_budget <= 0:
        raise SpecError(f"time_budget: must be positive, got {cfg.time_budget}")
    return cfg


class DuplicateKey(yaml.YAMLError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML itself keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it is no key of its own
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                                   "give it once")  # fmt: skip
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read spec file {path}: {e.strerror}") from e
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a safe loader that refuses duplicate keys
    except DuplicateKey as e:
        raise SpecError(f"spec file {path}: {e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"spec file {path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['epochs=5', 'method_config.cut-full.freeze_bn=true'] -> nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SpecError(f"override {item!r}: expected key=value (e.g. epochs=5)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if any(not p for p in parts):
            raise SpecError(f"override {item!r}: empty key part")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SpecError(f"override {item!r}: {p!r} is both a value and a section")
        node[parts[-1]] = _scalar(value.strip())
    return out


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        k = ALIASES.get(k, k)
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def build_suite(*layers: Mapping[str, Any]) -> SuiteSpec:
    """Merge layers (later wins: preset < spec file < flags < key=value) into a validated SuiteSpec."""
    raw: dict[str, Any] = {}
    preset_names = [layer.get("preset") for layer in layers if layer.get("preset")]
    for name in preset_names:
        if name not in PRESETS:
            raise SpecError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        raw = merge(raw, PRESETS[name].values)
    for layer in layers:
        raw = merge(raw, {k: v for k, v in layer.items() if k != "preset"})
    unknown = [k for k in raw if k not in SUITE_KEYS and k not in TRAIN_KEYS]
    if unknown:
        valid = ", ".join(("preset",) + SUITE_KEYS + TRAIN_KEYS)
        raise SpecError(f"unknown key {unknown[0]!r}; valid keys: {valid}")
    if "time_budget" in raw:
        raw["time_budget"] = parse_duration(raw["time_budget"])
    if raw.get("amp") is False:  # YAML reads an unquoted `off` as false
        raw["amp"] = "off"
    train = validate_train(build_config(TrainConfig, {k: v for k, v in raw.items() if k in TRAIN_KEYS}, ""))
    hints = typing.get_type_hints(SuiteSpec)
    lists = {k: coerce(k, raw[k], hints[k]) for k in ("methods", "datasets", "backbones", "seeds") if k in raw}
    for key, values in lists.items():
        dupes = sorted({v for v in values if values.count(v) > 1}, key=str)
        if dupes:
            raise SpecError(f"{key}: {', '.join(map(str, dupes))} given twice; give each once")
    if any(s < 0 for s in lists.get("seeds", ())):
        raise SpecError(f"seeds: must be integers >= 0, got {', '.join(map(str, lists['seeds']))}")
    mc = raw.get("method_config", {}) or {}
    if not isinstance(mc, Mapping) or not all(isinstance(v, Mapping) for v in mc.values()):
        raise SpecError("method_config: expected a mapping of method name -> {key: value}")
    return SuiteSpec(**lists, method_config={k: dict(v) for k, v in mc.items()}, train=train)
