"""The Method plugin contract. Hooks do nothing special by default; a method overrides only what it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from finebench.core.space import Space, log

if TYPE_CHECKING:
    from finebench.backbones.stages import StageMap
    from finebench.methods.cost import BudgetMeter


class RunSpec(Protocol):
    """What a method reads of its run's spec (the benchmark's RunSpec): methods never import the benchmark."""

    method: str
    method_config: Mapping[str, Any]
    dataset: str
    backbone: str
    seed: int
    train: Any  # the suite's TrainConfig: epochs, resolution, weights, split_seed, ...


@dataclass(frozen=True)
class Stage:
    """A span of epochs with one set of trainable parameters and one optimiser.

    trainable: parameter names (from `named_parameters()`) that receive gradients; all others are frozen.
    bn: "auto" puts BatchNorm layers whose parameters are frozen in eval mode (running statistics stay fixed) and
        the others in train mode; "eval" keeps every BatchNorm in eval mode; "train" keeps every one training.
    lr: the stage's base learning rate (None: the suite's); lr_scale multiplies it. The suite's schedule (cosine
        over the whole budget) applies on top.
    fresh_optimizer: a new optimiser at the stage start; False continues the previous one (its state kept), adding
        any newly trained parameters to it, so one optimiser can serve a whole schedule.
    """

    name: str
    epochs: int
    trainable: frozenset[str] | None  # None: every parameter of the prepared model
    bn: str = "auto"
    lr: float | None = None
    lr_scale: float = 1.0
    weight_decay: float | None = None  # None: the suite's
    constant_lr: bool = False  # True: the stage's lr throughout, not the suite's schedule
    fresh_optimizer: bool = True
    optimizer: str | None = None  # None: the suite's optimiser
    own_schedule: bool = False  # True: the suite's schedule (cosine) runs over this stage's epochs, restarting


@dataclass
class Context:
    """What a method may see of its run."""

    spec: RunSpec
    num_classes: int
    stages: StageMap  # the backbone's stage/head parameter names
    budget: BudgetMeter
    device: torch.device
    # train (shuffled, augmented), calibration (the train split in order, unaugmented) and val; never test
    loaders: dict[str, Any] = field(default_factory=dict)
    # the method's own state across steps and epochs: plain values and tensors only, as it is saved in every
    # epoch's checkpoint and restored on resume (state kept on the method object itself is not)
    state: dict[str, Any] = field(default_factory=dict)
    # Set by the runner after selection, for `extras` analyses only (e.g. accuracy of a pruned copy):
    # evaluate(model, split) -> metrics, split "val" or "test". Never available while training or selecting.
    evaluate: Any = None
    # source_model(Source) -> (model, run id): the best-val model of another run (see Source) on the same data and
    # budget, loaded when recorded or trained now; its whole cost is charged to this run as "<role>:<method>" and its
    # run id kept in the record's `sources[role]`. A method lists its Sources in `sources(spec)`.
    source_model: Any = None
    # Set for `extras` only: sample(split, n) -> (x, y, uint8 pixels, dataset indices), a fixed sample of val or
    # test images (the same for every method); save_arrays(name, **arrays) -> path of an .npz artifact beside the
    # record (attention maps for figures, say).
    sample: Any = None
    save_arrays: Any = None
    # Set during `finalize` only: validate(model) -> val metrics (as the runner computes them), for a choice a method
    # makes on val after selection (WiSE-FT's mixing weight). Test is never reachable through it.
    validate: Any = None
    # log(text): a line on the run's output (an estimate before a long analysis, say); None: nowhere
    log: Any = None


def config_keys(config_cls: type) -> list[tuple[str, Any, str]]:
    """(key, default, meaning) of a method's config dataclass; the meaning is the comment on the field's line, or
    the comment line(s) just above it, read from the source (inherited fields first)."""
    import dataclasses
    import inspect
    import re

    meanings: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines[1:]:
            text = line.strip()
            if text.startswith("#"):
                above.append(text.lstrip("# "))
                continue
            m = re.match(r"^(\w+)\s*:[^#]*?(?:#\s*(.*))?$", text)
            if m and not text.startswith(("def ", "@")):
                meanings[m.group(1)] = m.group(2) or " ".join(above)
            above = []
    out = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, default, meanings.get(f.name, "")))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, reading JSON lists as the tuples a config holds."""

    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return norm(a) == norm(b)


@dataclass(frozen=True)
class Source:
    """A model a method takes from another run (a teacher, a model to prune): that run's method with its default
    config updated by `config`, on this run's data and budget; backbone, weights and seed default to this run's.
    The suite lists these runs before training (`bench run --dry-run`) and ctx.source_model gets them."""

    role: str
    method: str
    backbone: str | None = None
    weights: str | None = None
    seed: int | None = None
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class NoConfig:
    pass


@dataclass(frozen=True)
class OptimOptions:
    """Learning-rate options every method accepts beside its own config (`method_config.<method>.<key>`): part of
    the run's spec, of its id (when not the default) and of its table label. The runner applies them to whatever
    each stage trains."""

    # learning rate of the new classifier (the backbone's head) times this (TLlib's fine-tuning recipes: 10)
    head_lr_scale: float = 1.0
    # layer-wise learning-rate decay: the layer l steps before the output trains at lr x layer_decay^l, the layers
    # as timm's `param_groups_layer_decay` groups them (the model's own `group_matcher`); 1: off
    layer_decay: float = 1.0


OPTIM_DEFAULTS: dict[str, Any] = {"head_lr_scale": 1.0, "layer_decay": 1.0}


def optim_options(config: Mapping[str, Any]) -> OptimOptions:
    """The learning-rate options of a resolved method config (their defaults where it has none)."""
    return OptimOptions(**{k: config[k] for k in OPTIM_DEFAULTS if k in config})


def own_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved method config without the learning-rate options: what the method's own Config takes."""
    return {k: v for k, v in config.items() if k not in OPTIM_DEFAULTS}


class Method:
    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""  # authors: title, venue year, arXiv/DOI (shown by `bench list methods -v`)
    Config: ClassVar[type] = NoConfig
    # False: the method trains nothing itself (it analyses or transforms a model it gets in `prepare`, e.g. from
    # ctx.source_model); the runner then skips the training loop and evaluates the prepared model once.
    trains: ClassVar[bool] = True
    # True: the runner keeps the best-val model as <out>/models/<run id>.pt, so other methods can reuse it
    # (as a source to prune, or as a teacher) through ctx.source_model.
    keep_model: ClassVar[bool] = False

    # Config fields added after records were written, each with the value that reproduces what those records did
    # (their "legacy" value). A run's id leaves such a field out while it holds that value, so adding a field never
    # changes the id of a run whose behaviour it does not change; a record that lacks it reads as that value.
    LATER: ClassVar[dict[str, Any]] = {}

    # `bench tune`: the hyperparameter that sets this method apart (AT's beta, L2-SP's alpha, LoRA's rank), searched
    # beside the learning rate and drawn on the sensitivity figure; None: the method has none to tune
    tune_key: ClassVar[str | None] = None
    # its default range (the papers' grids or a decade or two around their defaults); the user overrides any one
    tune_range: ClassVar[Space | None] = None

    def __init__(self, config: Any) -> None:
        self.config = config

    @classmethod
    def identity(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The part of a resolved config that identifies a run (its run id): later fields at their legacy value
        are left out."""
        later = {**OPTIM_DEFAULTS, **cls.LATER}  # the learning-rate options came later than every method
        return {k: v for k, v in config.items() if not (k in later and _same(v, later[k]))}

    @classmethod
    def legacy(cls, config: dict[str, Any]) -> dict[str, Any]:
        """A recorded config with the fields it predates filled in with what its run did (their legacy value)."""
        later = {**OPTIM_DEFAULTS, **cls.LATER}
        return {**{k: v for k, v in later.items() if k not in config}, **config}

    @classmethod
    def search_space(cls, config: Mapping[str, Any]) -> dict[str, Space]:
        """`bench tune`'s default space for this method under `config`: key -> Space. A key names a field of the
        method's Config, or else the suite's `lr`, `weight_decay` or `momentum`. Default: the suite's learning rate
        (log-uniform over 1e-4..1e-1, the range Li et al. 2020 search for fine-tuning with SGD), the suite's weight
        decay (1e-6..1e-2; VPT's grid 0..1e-2) and the method's `tune_key`. Methods that train nothing have none."""
        if not cls.trains:
            return {}
        space = {"lr": log(1e-4, 1e-1), "weight_decay": log(1e-6, 1e-2)}
        if cls.tune_key is not None and cls.tune_range is not None:
            space[cls.tune_key] = cls.tune_range
        return space

    @classmethod
    def note(cls, config: dict[str, Any]) -> str | None:
        """A word on this configuration for its table row (e.g. that it is a paper's ablation), from the config."""
        return None

    @classmethod
    def bn_statistics(cls, config: dict[str, Any]) -> str | None:
        """What the BatchNorm layers normalise with while training under `config` (the batch's statistics or their
        moving ones), for tables that compare methods whose difference may lie there; None: not said."""
        return None

    def sources(self, spec: RunSpec) -> list[Source]:
        """The runs whose models this method takes (`ctx.source_model(source)` in prepare), known before training."""
        return []

    def extra_backbones(self, spec: RunSpec) -> list[tuple[str, str]]:
        """(backbone, weights) pairs the method builds besides the run's own (a teacher, say), so that the suite's
        preflight can check them before any training."""
        return []

    def preflight(self, spec: RunSpec, structure: Any) -> None:
        """Check settings that depend on the network's structure before any training; raise ValueError naming the
        setting. structure(backbone) -> a model of that backbone with random weights (shared: do not modify)."""
        return None

    def prepare(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model

    def schedule(self, ctx: Context) -> list[Stage]:
        """Default: the whole network trains for the whole budget."""
        return [Stage("all", ctx.spec.train.epochs, None)]

    def forward(self, model: nn.Module, x: Tensor) -> Any:
        return model(x)

    def logits(self, out: Any) -> Tensor:
        """The class scores used for accuracy, from whatever `forward` returned."""
        return out

    def losses(self, model: nn.Module, batch: tuple[Tensor, Tensor], out: Any, ctx: Context) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(self.logits(out), batch[1])}

    def on_epoch_end(self, model: nn.Module, epoch: int, ctx: Context) -> None:
        return None

    def finalize(self, model: nn.Module, ctx: Context) -> nn.Module:
        return model

    def extras(self, model: nn.Module, ctx: Context) -> dict[str, Any]:
        return {}
