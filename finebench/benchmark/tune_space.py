"""`bench tune`'s search spaces applied to runs: which setting a space key names (the method's own or the suite's),
the user's `space.…` overrides, a trial's values set into its run spec (checked as a spec), and the distributions
Optuna samples from."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from finebench.benchmark.spec import RunSpec, SpecError, TrainConfig
from finebench.core.space import Space, SpaceError, parse_space
from finebench.methods import METHODS
from finebench.methods.base import OPTIM_DEFAULTS

TRAIN_KEYS = ("lr", "weight_decay", "momentum")  # the suite's keys a trial may vary (never the budget)


def target(method: str, key: str, config: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """('method' | 'train', field) a space key sets: a field of the method's config, else the suite's lr,
    weight_decay or momentum ('train.lr' always the suite's; a method's own field the method does not use under
    `config`, as filter attention's lr with optimizer=suite, means the suite's)."""
    cls = METHODS.get(method)
    own = [f.name for f in dataclasses.fields(cls.Config)] + list(OPTIM_DEFAULTS)
    if key.startswith("train."):
        name = key.removeprefix("train.")
        if name in TRAIN_KEYS:
            return "train", name
    elif key in own:
        if config is not None and key in TRAIN_KEYS and f"train.{key}" in cls.search_space(config):
            return "train", key  # its own field is unused under this config: the suite's is the one that acts
        return "method", key
    elif key in TRAIN_KEYS:
        return "train", key
    budget = " (the budget is the same for every trial and method)" if key in ("epochs", "batch_size") else ""
    suite = [f"train.{k}" if k in own else k for k in TRAIN_KEYS]
    raise SpecError(f"space.{method}.{key}: not a setting {method} can be tuned on{budget}; valid: its own "
                    f"{', '.join(own)}; the suite's {', '.join(suite)}")  # fmt: skip


def resolve_spaces(method: str, config: Mapping[str, Any], given: Mapping[str, Mapping[str, Any]]) -> dict[str, Space]:
    """The method's space: its declared default, then `space.KEY` (every method) and `space.METHOD.KEY` overrides;
    `default` as a value drops a dimension (the key keeps its configured value)."""
    cls = METHODS.get(method)
    space = dict(cls.search_space(config))
    for scope in ("*", method):
        for key, text in (given.get(scope) or {}).items():
            kind, name = target(method, key, config)  # a key the method cannot take is named now
            key = f"train.{name}" if kind == "train" and f"train.{name}" in space else key
            where = f"space.{key}" if scope == "*" else f"space.{method}.{key}"
            if str(text).strip().lower() == "default":
                space.pop(key, None)
                continue
            try:
                space[key] = parse_space(text, where)
            except SpaceError as e:
                raise SpecError(str(e)) from None
    return space


def split_space_overrides(overrides: dict[str, Any]) -> tuple[dict, dict[str, dict[str, Any]]]:
    """Take `space.…` out of parsed key=value overrides: {'*': {key: text}, method: {key: text}}."""
    overrides = dict(overrides)
    raw = overrides.pop("space", {}) or {}
    if not isinstance(raw, dict):
        raise SpecError("space: give space.KEY=SPACE or space.METHOD.KEY=SPACE, e.g. space.lr=log:1e-4:1e-1")
    out: dict[str, dict[str, Any]] = {"*": {}}

    def flat(section: dict[str, Any], where: str) -> dict[str, Any]:  # space.train.lr -> "train.lr"
        keys = {}
        for key, value in section.items():
            if isinstance(value, dict):
                if key != "train":
                    raise SpecError(f"{where}.{key}: expected {where}.KEY=SPACE (KEY a setting, or train.lr)")
                keys |= {f"train.{k}": v for k, v in value.items()}
            else:
                keys[key] = value
        return keys

    for key, value in raw.items():
        if isinstance(value, dict) and key != "train":
            if key not in METHODS:
                raise SpecError(f"space.{key}: {METHODS.unknown_message(key)}")
            out.setdefault(key, {}).update(flat(value, f"space.{key}"))
        else:
            out["*"].update(flat({key: value}, "space"))
    return overrides, out


def apply(run: RunSpec, values: Mapping[str, Any]) -> RunSpec:
    """`run` with `values` (space keys -> values) set in its train config and method config, checked as a spec."""
    from finebench.benchmark.spec import validate_train
    from finebench.benchmark.suite import method_config

    train_values, method_values = {}, {}
    for key, value in values.items():
        kind, name = target(run.method, key, run.method_config)
        (train_values if kind == "train" else method_values)[name] = value
    train = run.train
    if train_values:
        from finebench.benchmark.spec import coerce

        hints = typing.get_type_hints(TrainConfig)
        train = dataclasses.replace(train, **{k: coerce(k, v, hints[k]) for k, v in train_values.items()})
        validate_train(train)
    config = method_config(run.method, {run.method: {**run.method_config, **method_values}})
    return dataclasses.replace(run, train=train, method_config=config)


def distributions(space: Mapping[str, Space]):
    """Optuna distributions of the searched dimensions; a one-value space is fixed, not searched."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, s in space.items():
        if s.fixed:
            continue
        if s.kind == "choice":
            out[key] = CategoricalDistribution(list(s.choices))
        elif s.kind == "int":
            out[key] = IntDistribution(int(s.low), int(s.high))
        else:
            out[key] = FloatDistribution(s.low, s.high, log=s.kind == "log")
    return out


def check_space(run: RunSpec, space: Mapping[str, Space]) -> None:
    """Every end of every dimension must make a valid run (types, ranges, the method's own checks) before any
    trial starts; a grid needs lists."""
    from finebench.benchmark.runner import build_method

    for key, s in space.items():
        ends = s.choices if s.kind == "choice" else (s.low, s.high)
        if s.kind == "int":
            ends = tuple(int(v) for v in ends)
        for value in ends:
            try:
                build_method(apply(run, {key: value}))
            except (ValueError, TypeError) as e:
                raise SpecError(f"space.{run.method}.{key}={s.text()}: the value {value!r} is not valid ({e})") from e


def replaced(run: RunSpec, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The suite's values that `values` replace in `run`: {'base': train keys, 'base_config': method keys}."""
    base: dict[str, Any] = {}
    config: dict[str, Any] = {}
    for key in values:
        kind, name = target(run.method, key, run.method_config)
        if kind == "train":
            base[name] = getattr(run.train, name)
        else:
            config[name] = run.method_config.get(name)
    return {"base": base, "base_config": config}


def fixed_values(space: Mapping[str, Space]) -> dict[str, Any]:
    return {k: s.choices[0] for k, s in space.items() if s.fixed}
