"""Expand a SuiteSpec into RunSpecs, check every name before any training, run what is not yet recorded."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finebench.backbones import backbone_info, create_backbone, default_resolution
from finebench.benchmark.env import git_commit
from finebench.benchmark.progress import Reporter, fmt_seconds
from finebench.benchmark.spec import RunSpec, SpecError, SuiteSpec, build_config
from finebench.datasets import build_dataset, check_name
from finebench.methods import METHODS
from finebench.results.store import ResultStore


def resolve_methods(names: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for name in names:
        for n in METHODS.names() if name == "all" else [name]:
            METHODS.entry(n)  # raises with the known names
            if n not in out:
                out.append(n)
    return out


def method_config(name: str, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    cls = METHODS.get(name)
    cfg = build_config(cls.Config, overrides.get(name, {}), f"method_config.{name}")
    return dataclasses.asdict(cfg)


def expand(suite: SuiteSpec) -> list[RunSpec]:
    """Every (seed, dataset, backbone, method) run, seed-major so that whole comparisons finish early."""
    methods = resolve_methods(suite.methods)
    for name in suite.method_config:
        if name not in methods:
            raise SpecError(f"method_config names {name!r}, which is not among the suite's methods {methods}")
    for name in suite.datasets:
        check_name(name)
    for name in suite.backbones:
        backbone_info(name)
    configs = {m: method_config(m, suite.method_config) for m in methods}
    runs = []
    for seed in suite.seeds:
        for dataset in suite.datasets:
            for backbone in suite.backbones:
                train = suite.train
                if train.resolution is None:
                    train = dataclasses.replace(train, resolution=default_resolution(backbone))
                runs += [RunSpec(m, configs[m], dataset, backbone, seed, train) for m in methods]
    return runs


@dataclass
class SuiteResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # teacher / source runs trained on the way (recorded too)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SpecError(f"device {name!r}: {e}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {name!r}: CUDA is not available on this machine; use --device cpu")
    return device


def preflight(runs: list[RunSpec], data_root: str | None, device: torch.device) -> None:
    """Fail before any training: every dataset present, every backbone built with its weights and run once at
    its resolution."""
    from finebench.benchmark.runner import build_method

    classes = {name: build_dataset(name, data_root).info.num_classes for name in dict.fromkeys(r.dataset for r in runs)}
    needed = []
    for r in runs:
        needed.append((r.dataset, r.backbone, r.train.weights, r.train.resolution))
        extra = build_method(r).extra_backbones(r)  # a teacher, say: checked now, not after hours of training
        needed += [(r.dataset, b, w, r.train.resolution) for b, w in extra]
    models: dict[tuple[str, int], torch.nn.Module] = {}

    def structure_for(dataset: str):
        def structure(backbone: str) -> torch.nn.Module:
            key = (backbone, classes[dataset])
            if key not in models:
                models[key] = create_backbone(backbone, classes[dataset], "random").model.eval()
            return models[key]

        return structure

    for r in runs:  # settings that depend on the networks' structure (stage counts, an insertable branch...)
        build_method(r).preflight(r, structure_for(r.dataset))
    for dataset, backbone, weights, res in dict.fromkeys(needed):
        model = create_backbone(backbone, classes[dataset], weights).model.to(device).eval()
        try:
            with torch.no_grad():
                model(torch.zeros(2, 3, res, res, device=device))
        except RuntimeError as e:
            raise SpecError(f"backbone {backbone!r} cannot run at resolution {res} px ({e}); use a larger one") from e


def run_suite(
    suite: SuiteSpec, out: Path, data_root: str | None, device: str = "auto", reporter: Reporter | None = None
) -> SuiteResult:
    from finebench.benchmark.runner import Run

    reporter = reporter or Reporter()
    git_commit()  # pin the commit of the code this process runs, before the checkout can change under it
    runs = expand(suite)
    dev = pick_device(device)
    preflight(runs, data_root, dev)
    store = ResultStore(out)
    result = SuiteResult()
    todo = [r for r in runs if not store.has(r.run_id)]
    result.skipped = [r.run_id for r in runs if store.has(r.run_id)]
    todo_ids = {r.run_id for r in todo} | set(result.skipped)
    reporter.print(f"suite: {len(runs)} runs ({len(result.skipped)} already recorded in {store.runs}), device {dev}")
    for i, spec in enumerate(todo, 1):
        if store.has(spec.run_id):  # trained meanwhile as another run's teacher or source model
            reporter.print(f"[{i}/{len(todo)}] {spec.label}  (run {spec.run_id}): recorded meanwhile as a source")
            result.skipped.append(spec.run_id)
            continue
        reporter.print(f"[{i}/{len(todo)}] {spec.label}  (run {spec.run_id})")
        t0 = time.perf_counter()
        record = Run(spec, data_root, out, dev, reporter).execute()
        path = store.append(record)
        known = {*result.sources, *result.done, *todo_ids}
        result.sources += [rid for rid in record.sources.values() if rid not in known]
        best = record.best
        reporter.print(
            f"  best epoch {best['epoch']}: val top1 {best['val']['top1']:.1f}, test top1 {best['test']['top1']:.1f}"
            f" top3 {best['test']['top3']:.1f}  ({fmt_seconds(time.perf_counter() - t0)}) -> {path}"
        )
        result.done.append(spec.run_id)
    return result
