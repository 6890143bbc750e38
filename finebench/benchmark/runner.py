"""ONE training loop for every method: stages -> parameters and modes -> loss dict -> eval -> best tracking.

The runner owns optimisers, the learning-rate schedule, evaluation, timing and the record; a method only says
what trains when (`schedule`) and what the loss terms are (`losses`). The best epoch is chosen on val; test is
evaluated once at the best-val state and once at the last state, never used for selection.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finebench.backbones import create_backbone
from finebench.backbones.stages import stage_map
from finebench.backbones.weights import load_state_dict
from finebench.benchmark.checkpoint import Checkpoints, recorded, rng_state, set_rng_state
from finebench.benchmark.data import Batches
from finebench.benchmark.env import environment, git_commit
from finebench.benchmark.precision import FP32, Precision, cudnn_state, make_precision, set_cudnn, to_memory_format
from finebench.benchmark.progress import Reporter, Stopwatch, epoch_line
from finebench.benchmark.spec import RunSpec
from finebench.benchmark.train import (
    apply_modes,
    evaluate,
    lr_factor,
    lr_groups,
    make_optimizer,
    set_trainable,
    train_step,
)
from finebench.core.atomic import atomic_write
from finebench.datasets import build_dataset
from finebench.datasets.cache import cached_images
from finebench.datasets.split import cap_per_class, make_split
from finebench.methods import METHODS, Context, Method, Source, Stage
from finebench.methods.base import optim_options, own_config
from finebench.methods.cost import BudgetMeter, forward_flops, reset_peak_memory, step_flops
from finebench.results import predictions
from finebench.results.faults import crash_point
from finebench.results.lock import RunLock
from finebench.results.record import RunRecord


class Diverged(RuntimeError):
    """A run whose loss (or val loss) stopped being finite; carries the epoch and the last good epoch's entry."""

    def __init__(self, epoch: int, losses: dict[str, float], last_good: dict[str, Any] | None) -> None:
        super().__init__(f"loss not finite at epoch {epoch}: {losses}")
        self.epoch, self.losses, self.last_good = epoch, losses, last_good

    def __reduce__(self):  # crosses process boundaries (a --devices worker's error)
        return Diverged, (self.epoch, self.losses, self.last_good)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def preserved_rng():
    """Python's, NumPy's and torch's (CPU and CUDA) random states are restored on exit, so a nested run (a teacher
    trained on the way) leaves its caller's random stream as if it had been loaded instead."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_method(spec: RunSpec) -> Method:
    cls = METHODS.get(spec.method)
    return cls(cls.Config(**own_config(spec.method_config)))


def source_spec(run: RunSpec, source: Source) -> RunSpec:
    """The run whose model `source` asks for, on `run`'s data and budget (a source of another seed trains on `run`'s
    split when seeds resample the split)."""
    cls = METHODS.get(source.method)
    if not cls.keep_model:
        raise ValueError(f"method {source.method!r} does not keep its model, so it cannot serve as a source")
    train = run.train
    if run.tuned:  # a tuned run's (or trial's) values are its own: its teacher trains under the suite's settings
        train = dataclasses.replace(train, **run.tuned.get("base", {}))
    train = train if source.weights is None else dataclasses.replace(train, weights=source.weights)
    seed = run.seed if source.seed is None else source.seed
    if train.split_seed == "seed" and seed != run.seed:
        train = dataclasses.replace(train, split_seed=run.seed)
    given = source.config or {}
    config = dataclasses.asdict(cls.Config(**own_config(given))) | dataclasses.asdict(optim_options(given))
    return RunSpec(source.method, config, run.dataset, source.backbone or run.backbone, seed, train)


def stage_of_epoch(stages: list[Stage], epoch: int) -> Stage:
    """The stage that owns 0-based `epoch`."""
    end = 0
    for stage in stages:
        end += stage.epochs
        if epoch < end:
            return stage
    raise IndexError(f"epoch {epoch} is past the schedule ({end} epochs)")


def check_schedule(stages: list[Stage], spec: RunSpec) -> None:
    total = sum(s.epochs for s in stages)
    if total != spec.train.epochs or any(s.epochs < 1 for s in stages):
        raise ValueError(
            f"method {spec.method!r}: its schedule spans {total} epochs ({[(s.name, s.epochs) for s in stages]}) "
            f"but the suite's budget is {spec.train.epochs}; every method must train exactly the budget"
        )


def train_flops(cost: dict[str, Any]) -> float:
    """A recorded run's training FLOPs: measured (`train_flops`), or, for records written before they were measured,
    the old 3 x forward estimate."""
    return cost.get("train_flops", cost.get("train_flops_estimate")) or 0.0


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class StepLoop:
    """The runner's per-step work: stage switches, the learning-rate schedule, the method's step, loss sums and
    the budget meter. Kept apart so that its overhead over a bare PyTorch loop can be benchmarked."""

    def __init__(
        self,
        method: Method,
        model: torch.nn.Module,
        ctx: Context,
        total_steps: int,
        precision: Precision = FP32,
        flops: dict[Stage, float] | None = None,
        stages: list[Stage] | None = None,
    ) -> None:
        self.method, self.model, self.ctx, self.total_steps = method, model, ctx, total_steps
        self.precision = precision
        self.flops = flops or {}  # each stage's measured training FLOPs per sample
        self.cfg = ctx.spec.train
        self.stage: Stage | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps = 0
        self.options = optim_options(ctx.spec.method_config)  # head_lr_scale, layer_decay
        self.stages = stages or []  # the whole schedule: where a stage with its own lr schedule starts
        self.lr = ctx.spec.train.lr  # the base learning rate of the last step (before any group's lr_scale)
        self.sums: dict[str, torch.Tensor] = {}
        self.seen = 0

    def begin_stage(self, stage: Stage) -> None:
        """Set trainable parameters and an optimiser for `stage` (no-op when it is already the current one)."""
        if stage is not self.stage:
            params = set_trainable(self.model, stage)
            wd = self.cfg.weight_decay if stage.weight_decay is None else stage.weight_decay
            head, (ld, hs) = self.ctx.stages.head, (self.options.layer_decay, self.options.head_lr_scale)
            if self.optimizer is None or stage.fresh_optimizer:
                name = stage.optimizer or self.cfg.optimizer
                groups = lr_groups(self.model, params, head, ld, hs, wd)
                self.optimizer = make_optimizer(name, groups, self.cfg.lr, self.cfg.momentum, wd)
            else:  # continue: frozen parameters get no gradient, so the optimiser skips them
                known = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
                new = [p for p in params if id(p) not in known]
                for group in lr_groups(self.model, new, head, ld, hs, wd) if new else []:
                    self.optimizer.add_param_group(group)
            self.stage = stage
        apply_modes(self.model, stage)

    def begin_epoch(self) -> None:
        self.sums, self.seen = {}, 0
        self.watch = Stopwatch()

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        base = self.stage.lr if self.stage.lr is not None else self.cfg.lr
        factor = 1.0 if self.stage.constant_lr else lr_factor(self.cfg.scheduler, *self.schedule_position())
        lr = self.lr = base * self.stage.lr_scale * factor
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        terms = train_step(self.method, self.model, (x, y), self.optimizer, self.ctx, self.precision)
        n = len(y)
        for k, v in terms.items():
            self.sums[k] = self.sums[k] + v * n if k in self.sums else v * n
        self.seen += n
        self.steps += 1
        self.ctx.budget.step(n, self.watch.lap(), self.flops.get(self.stage, 0.0))

    def schedule_position(self) -> tuple[int, int]:
        """(step, steps) of the suite's learning-rate schedule: over the whole run, or over the current stage's own
        epochs when it restarts the schedule (`Stage.own_schedule`)."""
        if not self.stage.own_schedule:
            return self.steps, self.total_steps
        per_epoch = self.total_steps // max(self.cfg.epochs, 1)
        start = 0
        for s in self.stages:
            if s is self.stage:
                return self.steps - start, s.epochs * per_epoch
            start += s.epochs * per_epoch
        raise ValueError(f"stage {self.stage.name!r} with its own schedule is not in the run's schedule")

    def epoch_losses(self) -> dict[str, float]:
        """Sample-weighted mean of each loss term over the epoch (one device sync per epoch, not per step)."""
        return {k: float(v) / max(self.seen, 1) for k, v in self.sums.items()}


class Run:
    """One (method, dataset, backbone, seed) run; `execute()` returns its RunRecord."""

    def __init__(
        self, spec: RunSpec, data_root: str | None, out_dir: Path, device: torch.device, reporter: Reporter,
        trial: Any = None, store_dir: Path | None = None,
    ) -> None:  # fmt: skip
        """`trial`: a `bench tune` trial (see tune.py): the run builds no test loader, reports its val curve to the
        trial after every epoch and stops when the trial says so (pruned), and `execute` returns the trial's outcome
        instead of a record. `store_dir`: the store whose recorded runs serve as teachers / sources (default
        `out_dir`; a trial's checkpoints live in a work folder of its own)."""
        self.spec, self.data_root, self.out_dir, self.device, self.reporter = spec, data_root, out_dir, device, reporter
        self.trial = trial
        self.store_dir = Path(store_dir) if store_dir is not None else Path(out_dir)
        self.sources: dict[str, str] = {}
        self.artifacts: dict[str, str] = {}
        self.nested_seconds = 0.0  # wall time of source runs trained during this run's set-up
        self.imported_seconds = 0.0  # recorded costs of source models charged to this run
        self.resumes: list[dict[str, Any]] = []  # each continuation from a checkpoint

    def setup(self) -> None:
        spec, cfg = self.spec, self.spec.train
        seed_everything(spec.seed)
        set_cudnn(cfg.cudnn)
        self.precision = make_precision(cfg.amp, self.device)
        t0 = time.perf_counter()
        data = build_dataset(spec.dataset, self.data_root)
        backbone = create_backbone(spec.backbone, data.info.num_classes, cfg.weights)
        images, self.bad_images = cached_images(
            data, cfg.resolution, cfg.resize, backbone.interpolation, progress=self.reporter.counter("caching images"),
            skip_bad=cfg.skip_bad_images,
        )  # fmt: skip
        keep = np.setdiff1d(np.arange(len(data)), self.bad_images)
        self.split_seed = spec.seed if cfg.split_seed == "seed" else cfg.split_seed
        split = make_split(data.subset(keep) if self.bad_images else data, cfg.split, self.split_seed,
                           self.out_dir / "splits")  # fmt: skip
        if self.bad_images:  # the split is of the readable items; map it back to positions in the full set
            split = dataclasses.replace(split, train=keep[split.train], val=keep[split.val], test=keep[split.test])
        train_idx = cap_per_class(split.train, data.labels, cfg.train_per_class)

        def batches(idx, bs, train):
            return Batches(
                images, data.labels, idx, bs, backbone.mean, backbone.std, self.device,
                shuffle=train, flip=train and cfg.augment in ("flip", "rrc"), seed=spec.seed,
                balanced=train and cfg.sampler == "balanced", crop=train and cfg.augment == "rrc",
                channels_last=cfg.channels_last,
            )  # fmt: skip

        loaders = {
            "train": batches(train_idx, cfg.batch_size, True),
            "calibration": batches(train_idx, cfg.eval_batch_size, False),
            "val": batches(split.val, cfg.eval_batch_size, False),
        }
        # never shown to the method; a tuning trial never builds it (selection there is on val only)
        self.test_loader = None if self.trial is not None else batches(split.test, cfg.eval_batch_size, False)
        self.method = build_method(spec)
        budget = BudgetMeter(cfg.epochs, len(train_idx), cfg.time_budget)
        self.ctx = Context(spec, data.info.num_classes, stage_map(backbone.model), budget, self.device, loaders)
        self.ctx.source_model = self.source_model
        self.ctx.log = self.reporter.print
        # the run's last checkpoint, read once: `resume` continues from it, and the method's state (a relationship,
        # channel weights, queues) is there before `prepare`, which then need not compute it again
        self.saved = Checkpoints(self.out_dir, spec.run_id).load() if self.method.trains else None
        if self.saved is not None:
            self.ctx.state.update(self.saved[0]["method_state"])
        # the plain network (backbone and new classifier), against which a method's deployed parameters are extra
        self.plain_params = sum(p.numel() for p in backbone.model.parameters())
        self.model = to_memory_format(self.charged_prepare(backbone.model).to(self.device), cfg.channels_last)
        budget.flops_per_image = forward_flops(self.model, cfg.resolution, self.device)
        self.stages = self.method.schedule(self.ctx) if self.method.trains else []
        if self.method.trains:
            check_schedule(self.stages, spec)
        self.stage_flops = self.measure_step_flops()
        if cfg.compile:  # in place: parameter names, hooks and state dicts stay those of the model
            self.model.compile()
        self.data, self.split, self.backbone, self.loaders = data, split, backbone, loaders
        self.setup_seconds = time.perf_counter() - t0 - self.nested_seconds

    def measure_step_flops(self) -> dict[Stage, float]:
        """Each stage's training FLOPs per sample, counted on one real step of the method (its forward, loss terms
        and backward, with the stage's parameters trainable and modules in its modes) on a batch of two blank
        images; the model's buffers (BatchNorm statistics), gradients, the method's `ctx.state` and the random
        streams are left as they were. Frozen parts need no weight gradients, so cut-fc costs less than cut-full;
        a double backward or a teacher's forward inside the step is counted where a method has one."""
        model, method, ctx, res = self.model, self.method, self.ctx, self.spec.train.resolution
        batch = (torch.zeros(2, 3, res, res, device=self.device), torch.arange(2, device=self.device) % ctx.num_classes)
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}  # non-persistent ones included
        trainable = {k: p.requires_grad for k, p in model.named_parameters()}
        state = copy.deepcopy(ctx.state)

        def step(b):
            terms = method.losses(model, b, method.forward(model, b[0]), ctx)
            sum(terms.values()).backward()

        measured: dict[tuple, float] = {}
        with preserved_rng():
            for stage in self.stages:
                if (stage.trainable, stage.bn) not in measured:
                    set_trainable(model, stage)
                    apply_modes(model, stage)
                    measured[stage.trainable, stage.bn] = step_flops(step, batch)
                    model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(buffers[k])
        for k, p in model.named_parameters():
            p.requires_grad_(trainable[k])
        ctx.state.clear()
        ctx.state.update(state)
        return {stage: measured[stage.trainable, stage.bn] for stage in self.stages}

    def flops_of(self, history: list[dict[str, Any]]) -> float:
        """The training FLOPs of the recorded epochs (their samples times their stage's FLOPs per sample)."""
        total, seen = 0.0, 0
        for entry in history:
            stage = stage_of_epoch(self.stages, entry["epoch"] - 1)
            total += (entry["samples"] - seen) * self.stage_flops.get(stage, 0.0)
            seen = entry["samples"]
        return total

    def charged_prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Run the method's `prepare` and charge its wall-clock time, less what it charged itself (a teacher's
        training, say), so that no preparation happens off the books."""
        budget = self.ctx.budget
        charged_before = sum(c.seconds for c in budget.charges.values())
        imported_before, nested_before = self.imported_seconds, self.nested_seconds
        t0 = time.perf_counter()
        model = self.method.prepare(model, self.ctx)
        wall = time.perf_counter() - t0 - (self.nested_seconds - nested_before)  # a source trained now is not prep
        # charges made during prepare for time spent now (a calibration pass), not a source's recorded cost
        live = sum(c.seconds for c in budget.charges.values()) - charged_before
        live -= self.imported_seconds - imported_before
        budget.charge("prepare", seconds=max(0.0, wall - live))
        return model

    def source_model(self, source: Source) -> tuple[torch.nn.Module, str]:
        """The best-val model of the run `source` names (see `source_spec`): loaded from the store when that run is
        recorded with its model, else trained now and recorded. Either way its full cost is charged to this run as
        `<role>:<method>` and its run id is kept in the record's `sources[role]`."""
        from finebench.results.store import ResultStore

        role, method_name = source.role, source.method
        spec = source_spec(self.spec, source)
        store = ResultStore(self.store_dir)
        t0 = time.perf_counter()
        with RunLock(self.store_dir, spec.run_id):  # another process training the same source: wait for it
            if moved := store.set_aside_if_damaged(spec.run_id):
                self.reporter.print(f"  damaged record {store.path(spec.run_id)} ({moved[0]}): moved to {moved[1]}")
            record = store.get(spec.run_id)
            if record is None or not (self.store_dir / record.artifacts.get("model", "-")).exists():
                self.reporter.print(f"  {role} model: training {spec.label} (run {spec.run_id})")
                with preserved_rng():
                    record = Run(spec, self.data_root, self.store_dir, self.device, self.reporter).execute()
                if not store.has(spec.run_id):
                    store.append(record)
                recorded(store, spec.run_id)
                reset_peak_memory()  # this run's peak GPU memory is its own, not the source's training
            else:
                self.reporter.print(f"  {role} model: reusing {spec.label} (run {spec.run_id}), its cost charged again")
        self.nested_seconds += time.perf_counter() - t0  # charged below as the record's cost, as when loaded
        model = create_backbone(spec.backbone, self.ctx.num_classes, "random").model
        model.load_state_dict(load_state_dict(self.store_dir / record.artifacts["model"]))
        cost = record.cost
        seconds = cost["total_seconds"] + cost.get("charged_seconds", 0.0)
        self.imported_seconds += seconds
        charges = cost.get("charges", {}).values()  # what the source itself was charged (its own teacher...)
        self.ctx.budget.charge(
            f"{role}:{method_name}",
            seconds=seconds,
            samples=cost["samples"] + sum(c.get("samples", 0) for c in charges),
            flops=train_flops(cost) + sum(c.get("flops", 0.0) for c in charges),
        )
        self.sources[role] = spec.run_id
        return model.to(self.device), spec.run_id

    def save_arrays(self, name: str, **arrays: np.ndarray) -> str:
        """An .npz artifact beside the record (written atomically); returns its path relative to the store."""
        rel = f"artifacts/{self.spec.run_id}/{name}.npz"
        atomic_write(self.out_dir / rel, lambda f: np.savez_compressed(f, **arrays))
        self.artifacts[name] = rel
        return rel

    def save_model(self, state: dict[str, torch.Tensor]) -> str:
        """Write the best-val state beside the record (atomically); returns its path relative to the store."""
        rel = f"models/{self.spec.run_id}.pt"
        atomic_write(self.out_dir / rel, lambda f: torch.save(state, f))
        return rel

    def execute(self) -> RunRecord:
        started = now()
        reset_peak_memory()
        self.setup()
        spec, cfg, ctx, model, method = self.spec, self.spec.train, self.ctx, self.model, self.method
        train = self.loaders["train"]
        total_steps = cfg.epochs * len(train)
        budget = ctx.budget
        budget.start()
        history: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        best_state = None
        loop = StepLoop(method, model, ctx, total_steps, self.precision, self.stage_flops, self.stages)
        checkpoints = Checkpoints(self.out_dir, spec.run_id)
        if method.trains and (resumed := self.resume(checkpoints, loop)) is not None:
            history, best, best_state, started = resumed
            if self.trial is not None:
                self.trial.restored(history)  # the epochs trained before the interruption, as the trial's curve
        todo = range(len(history), cfg.epochs) if method.trains and not budget.capped else range(0)
        for epoch in todo:
            data_seconds = self.train_epoch(loop, epoch)
            method.on_epoch_end(model, epoch, ctx)
            train_seconds = budget.train_seconds - sum(h["train_seconds"] for h in history)
            t_eval = time.perf_counter()
            val = self.evaluate(model, self.loaders["val"])
            budget.eval_seconds += time.perf_counter() - t_eval
            losses, seen, stage = loop.epoch_losses(), loop.seen, loop.stage
            if not all(np.isfinite(v) for v in [*losses.values(), val["loss"]]):
                raise Diverged(epoch + 1, losses | {"val_loss": val["loss"]}, history[-1] if history else None)
            entry = {
                "epoch": epoch + 1,
                "stage": stage.name,
                "losses": losses,
                "val": val,
                "lr": loop.lr,  # the base rate of the epoch's last step (groups may scale it: layer_decay...)
                "samples": budget.samples,
                "train_seconds": train_seconds,
                "elapsed": budget.elapsed(),
                "images_per_second": seen / max(train_seconds, 1e-9),
                "data_stall": data_seconds / max(train_seconds, 1e-9),
                "partial": budget.capped,
            }
            history.append(entry)
            improved = best is None or val[cfg.select_metric] > best["val"][cfg.select_metric]
            if improved:
                best = {"epoch": epoch + 1, "val": val, "seconds_to_best": entry["elapsed"]}
                best_state = cpu_state(model)
            eta = entry["elapsed"] / (epoch + 1) * (cfg.epochs - epoch - 1)
            mark = "  *best" if improved else ""
            ips = entry["images_per_second"]
            self.reporter.end_epoch(epoch_line(epoch + 1, cfg.epochs, losses, val, ips, eta, mark,
                                                  entry["data_stall"]))  # fmt: skip
            state = {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": loop.optimizer.state_dict(),
                     "steps": loop.steps, "budget": budget.state(), "rng": rng_state(), "history": history,
                     "best": best, "started": started, "setup_seconds": self.setup_seconds,
                     "resumes": self.resumes, "method_state": ctx.state, "commit": git_commit(),
                     "scaler": self.precision.state()}  # fmt: skip
            checkpoints.save(state, best["epoch"], best_state if improved else None)
            if self.trial is not None and self.trial.epoch_end(entry):
                self.reporter.print(f"  pruned after epoch {epoch + 1}: its val curve is below the other trials'")
                self.pruned = True
                break
            if budget.capped:
                self.reporter.print(f"  time budget of {cfg.time_budget:.0f}s spent: stopped after epoch {epoch + 1}")
                break
        if not method.trains:  # nothing to train: the prepared model is evaluated as it is
            t_eval = time.perf_counter()
            val = self.evaluate(model, self.loaders["val"])
            budget.eval_seconds += time.perf_counter() - t_eval
            best, best_state = {"epoch": 0, "val": val, "seconds_to_best": budget.elapsed()}, cpu_state(model)
        if self.trial is not None:
            return self.finish_trial(history, best, best_state)
        return self.finish(started, history, best, best_state)

    pruned = False  # a tuning trial stopped by its pruner

    def finish_trial(self, history, best, best_state) -> dict[str, Any]:
        """A tuning trial's outcome, from val only: the best-val epoch (after the method's `finalize`, which may
        itself choose on val, unless the trial was pruned), the val curve and what the trial cost. No test."""
        t_eval = time.perf_counter()
        self.model.load_state_dict(best_state)
        after = {} if self.pruned else self.finalize_selected(self.model, best)[1]
        self.charged_after = sum(after.values())  # a phase finalize charged (WiSE-FT's search): not own seconds
        self.ctx.budget.eval_seconds += time.perf_counter() - t_eval - self.charged_after
        return {"history": history, "best": best, "pruned": self.pruned, "cost": self.trial_cost(),
                "sources": dict(self.sources)}  # fmt: skip

    charged_after = 0.0

    def trial_cost(self) -> dict[str, Any]:
        """What this run (a trial) has cost so far, counted as a run's record counts it: its own training and
        evaluation (seconds, samples, training FLOPs; not the set-up, which `bench run` leaves out too) and each
        charged phase by name (its preparation, a teacher's recorded cost, WiSE-FT's search)."""
        budget = getattr(getattr(self, "ctx", None), "budget", None)
        if budget is None:  # failed in set-up, before its meter existed
            return {"seconds": 0.0, "samples": 0, "flops": 0.0, "charges": {}}
        return {"seconds": budget.elapsed() - self.charged_after, "samples": budget.samples,
                "flops": budget.train_flops, "charges": budget.charges_dict()}  # fmt: skip

    def evaluate(self, model: torch.nn.Module, loader: Batches, predictions: bool = False) -> dict[str, Any]:
        """The method's metrics of `model` on `loader`, under the run's arithmetic."""
        return evaluate(self.method, model, loader, self.ctx.num_classes, keep_predictions=predictions,
                        precision=self.precision)  # fmt: skip

    def train_epoch(self, loop: StepLoop, epoch: int) -> float:
        """Train 0-based `epoch` (its stage, its batches; stops early when the time budget is spent); returns the
        seconds the loop spent waiting for data."""
        train, budget = self.loaders["train"], self.ctx.budget
        loop.begin_stage(stage_of_epoch(self.stages, epoch))
        train.set_epoch(epoch)
        loop.begin_epoch()
        self.reporter.start_epoch(f"{self.spec.method} e{epoch + 1}/{self.spec.train.epochs}", len(train))
        data_before = train.data_seconds
        for x, y in train:
            loop.step(x, y)
            self.reporter.step()
            crash_point("step")  # fault injection: a kill in the middle of an epoch
            if budget.over_time():
                break
        if self.device.type == "cuda":  # the queued kernels are this epoch's training time
            torch.cuda.synchronize(self.device)
            budget.train_seconds += loop.watch.lap()
        data_seconds = train.data_seconds - data_before
        budget.data_seconds += data_seconds
        return data_seconds

    def resume(self, checkpoints: Checkpoints, loop: StepLoop) -> tuple | None:
        """Continue from the run's last checkpoint, if it has one: the stages and optimisers of the finished
        epochs are set up again (so the optimiser's parameter groups match), then the model, optimiser, step count,
        budget meter and random states are loaded. Returns (history, best, best weights, started) or None."""
        loaded = self.saved  # read by `setup`
        if loaded is None:
            return None
        state, best_state = loaded
        done = state["epoch"]
        for epoch in range(done):
            loop.begin_stage(stage_of_epoch(self.stages, epoch))
        try:
            self.model.load_state_dict(state["model"])
            loop.optimizer.load_state_dict(state["optimizer"])
            self.ctx.budget.load_state(state["budget"])
            if "train_flops" not in state["budget"]:  # a checkpoint written before FLOPs were measured
                self.ctx.budget.train_flops = self.flops_of(state["history"])
            self.precision.load_state(state.get("scaler"))
            set_rng_state(state["rng"])  # after building the model and optimisers, which may draw random numbers
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(
                f"checkpoint {checkpoints.last} does not fit this run ({type(e).__name__}: {str(e)[:300]}); was the "
                f"code changed since it was written? Delete {checkpoints.dir} to start the run from its beginning"
            ) from e
        loop.steps = state["steps"]
        self.ctx.state.clear()
        self.ctx.state.update(state["method_state"])
        commit = git_commit()
        if state["commit"] != commit or commit.get("dirty"):  # uncommitted changes may differ too: cannot tell

            def code(c: dict) -> str:
                return f"{(c.get('commit') or 'unknown')[:10]}{' with uncommitted changes' if c.get('dirty') else ''}"

            self.reporter.print(f"  note: the checkpoint was written by code {code(state['commit'])}, this is "
                                f"{code(commit)}; the run continues with this code")  # fmt: skip
        # the interrupted epoch's work is lost, not counted; each resume and its set-up time is listed in the cost
        self.resumes = [*state["resumes"], {"after_epoch": done, "at": now(), "setup_seconds": self.setup_seconds,
                                            "commit": commit, "checkpoint_commit": state["commit"]}]  # fmt: skip
        self.setup_seconds = state["setup_seconds"]
        self.reporter.print(f"  resuming after epoch {done} of {self.spec.train.epochs} ({checkpoints.last})")
        return state["history"], state["best"], best_state, state["started"]

    def finish(self, started: str, history, best, best_state) -> RunRecord:
        """Test once at the last state and once at the best-val state (after the method's `finalize`, which
        applies to the selected model only; its val accuracy after finalize is recorded as `val_finalized`)."""
        ctx, model, method = self.ctx, self.model, self.method
        t_eval = time.perf_counter()
        last = {"epoch": history[-1]["epoch"], "val": history[-1]["val"]} if history else dict(best)
        last["test"] = self.evaluate(model, self.test_loader)
        model.load_state_dict(best_state)
        params = self.param_counts()
        if method.keep_model:
            self.artifacts["model"] = self.save_model(best_state)
        # a phase finalize charged itself (WiSE-FT's search on val) is in the charges, not in the own seconds too
        model, after = self.finalize_selected(model, best)
        finalize_charged = sum(after.values())
        test = self.evaluate(model, self.test_loader, predictions=True)
        best["test_predictions"] = predictions.encode(test.pop("pred"), test.pop("target"), test.pop("top3_hit"))
        best["test"] = test
        self.model = model
        params["deployed"] = sum(p.numel() for p in model.parameters())  # after finalize (folding, pruning)
        params["plain"] = self.plain_params
        ctx.budget.eval_seconds += time.perf_counter() - t_eval - finalize_charged
        test_loader = self.test_loader

        def post_selection_eval(m: torch.nn.Module, split: str, predictions: bool = False) -> dict[str, Any]:
            loader = {"val": self.loaders["val"], "test": test_loader}[split]
            return self.evaluate(m, loader, predictions)

        def sample(split: str, n: int):
            return {"val": self.loaders["val"], "test": test_loader}[split].sample(n)

        total_seconds = ctx.budget.elapsed() - finalize_charged  # training, evaluation and finalize
        ctx.evaluate, ctx.sample, ctx.save_arrays = post_selection_eval, sample, self.save_arrays
        t_analysis = time.perf_counter()
        extras = method.extras(model, ctx)
        ctx.evaluate = ctx.sample = ctx.save_arrays = None
        cost = ctx.budget.summary()
        # post-selection analyses (pruning sweeps...) are reported apart: they are not part of producing the model
        cost.update(setup_seconds=self.setup_seconds, total_seconds=total_seconds,
                    analysis_seconds=time.perf_counter() - t_analysis)  # fmt: skip
        cost["train_flops_per_sample"] = {stage.name: flops for stage, flops in self.stage_flops.items()}
        if after:  # charged phases that came after training (WiSE-FT's search on val), by name
            cost["charged_after_training"] = sorted(after)
        if self.resumes:
            cost["resumes"] = self.resumes
        return RunRecord(
            run_id=self.spec.run_id,
            spec=self.spec.to_dict(),
            dataset=self.dataset_info(),
            backbone=self.backbone_info(),
            env=environment(self.device) | cudnn_state(),
            epochs=history,
            best=best,
            last=last,
            cost=cost,
            params=params,
            extras=extras,
            artifacts=dict(self.artifacts),
            sources=dict(self.sources),
            started=started,
            finished=now(),
        )

    def finalize_selected(self, model: torch.nn.Module, best: dict[str, Any]) -> tuple[torch.nn.Module, dict]:
        """The method's `finalize` on the selected model, with `ctx.validate` on val for the choices it makes there;
        its val metrics go to best['val_finalized']. Returns the model and the seconds of each phase finalize charged
        (phases after training: not before the best epoch)."""
        ctx, method = self.ctx, self.method
        charged_before = {k: c.seconds for k, c in ctx.budget.charges.items()}
        if type(method).finalize is not Method.finalize:
            ctx.validate = lambda m: self.evaluate(m, self.loaders["val"])
            try:
                model = method.finalize(model, ctx)
            finally:
                ctx.validate = None
            best["val_finalized"] = self.evaluate(model, self.loaders["val"])
        after = {k: c.seconds - charged_before.get(k, 0.0) for k, c in ctx.budget.charges.items()}
        return model, {k: v for k, v in after.items() if v > 0}

    def param_counts(self) -> dict[str, int]:
        """Trainable = parameters any stage trains; total = all parameters of the trained model (before finalize)."""
        names = dict(self.model.named_parameters())
        trained: set[str] = set()
        for stage in self.stages:
            trained |= set(names) if stage.trainable is None else set(stage.trainable)
        return {"trainable": sum(names[n].numel() for n in trained), "total": sum(p.numel() for p in names.values())}

    def dataset_info(self) -> dict[str, Any]:
        info = self.data.info
        return {
            "name": info.name,
            "num_classes": info.num_classes,
            "class_names": list(info.classes),
            "manifest_hash": info.manifest_hash,
            "source": info.source,
            "license": info.license,
            "root": info.root,
            "split_hash": self.split.hash,
            "split_seed": self.split_seed,
            "split_policy": self.split.policy,
            "skipped_bad_images": len(self.bad_images),
            "split_file": str(self.split.path.relative_to(self.out_dir)) if self.split.path else None,
            "sizes": {
                "train": self.loaders["train"].num_samples,
                "val": self.loaders["val"].num_samples,
                "test": self.test_loader.num_samples,
            },
        }

    def backbone_info(self) -> dict[str, Any]:
        b = self.backbone
        return {
            "arch": b.arch,
            "weights": b.weights,
            "weights_sha256": b.weights_sha256,
            "mean": list(b.mean),
            "std": list(b.std),
        }
