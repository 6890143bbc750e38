"""Named starting points for `bench run --preset NAME`: the demo budget, and one preset per seed paper that sets up
its headline experiment (methods, dataset, backbone, the paper's own settings) and says what to compare with.

A preset is the first layer of a suite: a spec file, flags and key=value override it, so
`bench run --preset paper-attention-transfer --weights random --dataset synthetic` runs its configuration offline.
Where a paper's training schedule is not known or not the point (its learning rate, its number of epochs), the
budget here is ours and the preset says so: a comparison under one budget for every method is what finebench
measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The attention-transfer paper's CUB setting (Table 4): BatchNorm fixed and the first group of blocks frozen, for
# the student baseline, the AT student and the teacher alike (stages count the stem: stem + first group = 2).
CUB_FREEZE = {"freeze_stages": 2, "freeze_bn": True}


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    values: dict[str, Any]
    source: str = ""  # the paper, and the section or table the preset reproduces
    compare: str = ""  # the figures to compare with
    budget: str = ""  # where the budget is ours rather than the paper's, what it is and why
    notes: tuple[str, ...] = field(default=())


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "quick",
            "the demo budget: every method in minutes on two CPU cores (3 epochs at 80 px, 10 training "
            "images per class, lighter pruning analyses); numbers well above chance, not the methods' best",
            {
                "epochs": 3,
                "resolution": 80,
                "batch_size": 32,
                "lr": 0.03,
                "train_per_class": 10,
                "split": [0.8, 0.1, 0.1],
                "method_config": {
                    "semantic-pruning": {"classes": 1, "modes": "nwp", "sweep": [0.3], "control_draws": 0},
                    "filter-attention": {"prune_ratios": [0.05], "control_draws": 1},
                    "delta": {"attention_batches": 1, "head_epochs": 2},
                },
            },
            budget="measured on a 2-core AMD EPYC (AVX2) with the 17 methods of that time: the run 6 min 48 s and "
            "the report 24 s for flowers17 with EfficientNet-Lite0 (the 8 parameter-efficient and schedule baselines "
            "added since are not in that figure); 80 px and 10 images per class keep every method within that, lr 0.03 "
            "lets 18 SGD steps get somewhere, and a 10 % val / test split halves the evaluation; the pruning analyses "
            "run on one class, one theta and one random draw beside the weight-magnitude control, DELTA's channel "
            "attention on one batch",
        ),
        Preset(
            "paper-filter-attention",
            "filter attention on iNat-2018 amphibians: ResNet-50, 12 epochs FFAAABAAABAA, the paper's penalty, "
            "class-balanced sampler, beside the head-only (F) baseline",
            {
                "methods": ["cut-fc", "filter-attention"],
                "datasets": ["inat-amphibia"],
                "backbones": ["resnet50"],
                "epochs": 12,
                "resolution": 224,
                "resize": "squash",  # the paper reshapes without cropping
                "sampler": "balanced",
                "optimizer": "adam",  # the authors' code: Adam at 1e-3, constant, for every phase
                "lr": 1e-3,
                "scheduler": "constant",
                "weight_decay": 0.0,
                "method_config": {"filter-attention": {"schedule": "FFAAABAAABAA", "penalty": "diverge", "lam": 1.0}},
            },
            source="Mo, Cheng, Fang 2019, Pay Attention to Convolution Filters (arXiv 1906.04950): §2.4 and the "
            "headline rows of its Tables 1-4",
            compare="val top-1 / top-3 (ResNet-50, iNat amphibians), with the class-balanced sampler as here: "
            "FC+Att 50.5 / 70.0; without it (sampler=uniform): FC x10 28.9 / 46.6 and FC+Att, 12 epochs, 42.7 / 63.4",
            budget="the paper's: 12 epochs, Adam 1e-3 without decay; the F-only baseline trains 12 epochs here "
            "(the paper's FC x10 trained 10)",
        ),
        Preset(
            "paper-attention-transfer",
            "attention transfer on CUB-200 (bounding-box crops): ResNet-18 student, ResNet-34 teacher, BatchNorm "
            "fixed and the first group frozen for the student baseline, the AT student and the teacher",
            {
                "methods": ["cut-full", "attention-transfer"],
                "datasets": ["cub200:bbox"],
                "backbones": ["resnet18"],
                "resolution": 224,
                "epochs": 30,
                "method_config": {
                    "cut-full": dict(CUB_FREEZE),
                    "attention-transfer": {**CUB_FREEZE, "teacher": "resnet34", "teacher_config": dict(CUB_FREEZE)},
                },
            },
            source="Zagoruyko & Komodakis 2017, Paying More Attention to Attention (ICLR, arXiv 1612.03928): §4.2, "
            "Table 4 (fine-grained)",
            compare="CUB top-1 error: ResNet-18 student 28.5, AT 27.0, ResNet-34 teacher 26.5",
            budget="ours: 30 epochs of SGD 0.01 with a cosine schedule at 224 px (the paper's schedule for CUB is "
            "not published with its code)",
            notes=(
                "beta = 1000 with the paper's beta/2 (eq. 2); the authors' code weighs beta x sum: beta=2000 gives "
                "theirs",
            ),  # fmt: skip
        ),
        Preset(
            "paper-abn",
            "Attention Branch Network against fine-tuning on a fine-grained dataset of your choice (--dataset): "
            "ResNet-101, (1 + M) * g, the authors' 3x3 map conv",
            {"methods": ["cut-full", "abn"], "backbones": ["resnet101"], "resolution": 224, "epochs": 30},
            source="Fukui et al. 2019, Attention Branch Network (CVPR, arXiv 1812.10025): §4.3, fine-grained "
            "recognition (CompCars)",
            compare="CompCars car-model top-1: ResNet-101 90.2, ABN 97.1 (on another dataset, the gain over "
            "fine-tuning)",
            budget="ours: 30 epochs of SGD 0.01, cosine, at 224 px",
        ),
        Preset(
            "paper-semantic-pruning",
            "semantic pruning of the fine-tuned model: every class, gamma <= 0 / 33 % / 66 % / median and the theta "
            "sweep, LWP and NWP, against random and weight-magnitude choices",
            {
                "methods": ["cut-full", "semantic-pruning"],
                "method_config": {"semantic-pruning": {"classes": "all"}},
            },
            source="Semantic Pruning for Single Class Interpretability (ICLR 2020 submission, OpenReview "
            "rkxXNR4tvH): Defs. 2-3 and §3 (theta from 0.05 to 0.6)",
            compare="per class, the largest theta that keeps or improves its single-class accuracy, LWP vs NWP; "
            "the paper reports them per class",
            budget="the suite's (pass --epochs, --dataset, --backbone); the analysis covers every class",
        ),
    )
}


def describe(preset: Preset) -> list[str]:
    """Lines for `bench list presets`."""
    lines = [f"{preset.name}: {preset.summary}"]
    for label, text in (("paper", preset.source), ("compare", preset.compare), ("budget", preset.budget)):
        if text:
            lines.append(f"    {label}: {text}")
    lines += [f"    note: {n}" for n in preset.notes]
    settings = " ".join(f"{k}={v}" for k, v in preset.values.items() if k != "method_config")
    lines.append(f"    sets: {settings}")
    for method, cfg in preset.values.get("method_config", {}).items():
        lines.append(f"          method_config.{method}: {cfg}")
    return lines
