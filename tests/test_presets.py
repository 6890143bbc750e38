"""Presets: `bench list presets` describes each, and every seed paper's preset runs end to end with random weights
on generated data (its methods, backbones and the paper's settings, offline)."""

import json
import subprocess
import sys

import pytest

from finebench.benchmark.presets import PRESETS
from finebench.benchmark.spec import build_suite
from finebench.benchmark.suite import expand

PAPERS = [name for name in PRESETS if name.startswith("paper-")]


def bench(*args, cwd):
    return subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_list_presets_names_each_papers_source_and_what_to_compare_with(tmp_path):
    out = bench("list", "presets", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(PAPERS) == 4 and "quick: the demo budget" in out.stdout
    for name in PAPERS:
        block = out.stdout.split(f"{name}: ", 1)[1].split("\n\n")[0]
        assert "    paper: " in block and "    compare: " in block and "    sets: " in block, name
    assert "Table 4" in out.stdout and "28.5" in out.stdout and "42.7 / 63.4" in out.stdout


def test_the_papers_settings_resolve_into_the_runs():
    fa = expand(build_suite({"preset": "paper-filter-attention"}))
    assert [(r.method, r.dataset, r.backbone) for r in fa] == [
        ("cut-fc", "inat-amphibia", "resnet50"), ("filter-attention", "inat-amphibia", "resnet50")]  # fmt: skip
    assert fa[1].method_config["schedule"] == "FFAAABAAABAA" and fa[1].method_config["penalty"] == "diverge"
    assert fa[0].train.sampler == "balanced" and fa[0].train.epochs == 12 and fa[0].train.optimizer == "adam"
    at = {r.method: r for r in expand(build_suite({"preset": "paper-attention-transfer"}))}
    frozen = {"freeze_stages": 2, "freeze_bn": True}
    assert at["cut-full"].method_config == frozen | {"head_lr_scale": 1.0, "layer_decay": 1.0}
    assert at["attention-transfer"].backbone == "resnet18"
    assert at["attention-transfer"].method_config["teacher_config"] == frozen
    assert {k: at["attention-transfer"].method_config[k] for k in frozen} == frozen
    # a later layer wins over the preset, key by key
    over = expand(build_suite({"preset": "paper-attention-transfer"}, {"epochs": 3},
                              {"method_config": {"cut-full": {"freeze_bn": False}}}))  # fmt: skip
    assert over[0].train.epochs == 3
    assert over[0].method_config == {"freeze_stages": 2, "freeze_bn": False, "head_lr_scale": 1.0, "layer_decay": 1.0}


# tiny offline versions: random weights, a generated dataset, small images; the methods, backbones and settings
# are the presets' own (filter attention keeps its 12-letter schedule, so 12 epochs)
OFFLINE = ["--weights", "random", "--dataset", "synthetic:3x8", "--resolution", "32", "batch_size=4", "--quiet"]
EPOCHS = {"paper-filter-attention": "12", "paper-attention-transfer": "2", "paper-abn": "1",
          "paper-semantic-pruning": "2"}  # fmt: skip
LIGHTER = {"paper-filter-attention": ["method_config.filter-attention.prune_ratios=0.05",
                                      "method_config.filter-attention.control_draws=1"],
           "paper-semantic-pruning": ["method_config.semantic-pruning.control_draws=1",
                                      "method_config.semantic-pruning.sweep=0.5"]}  # fmt: skip


@pytest.mark.parametrize("name", PAPERS)
def test_each_paper_preset_dry_runs_and_runs_offline_with_random_weights(name, tmp_path):
    dry = bench("run", "--preset", name, *OFFLINE, "--dry-run", "--out", "res", cwd=tmp_path)
    teacher = name == "paper-attention-transfer"  # the dry run lists the teacher run it adds
    assert dry.returncode == 0 and dry.stdout.count("  todo  ") == 2 + teacher, dry.stdout + dry.stderr
    if PRESETS[name].values.get("datasets") == ["inat-amphibia"]:  # data that is not here: listed, then refused
        absent = bench("run", "--preset", name, "--dry-run", "--data-root", "nowhere", cwd=tmp_path)
        assert absent.returncode == 2 and absent.stdout.count("  todo  ") == 2 and "inat-amphibia" in absent.stderr
    done = bench("run", "--preset", name, *OFFLINE, "--epochs", EPOCHS[name], *LIGHTER.get(name, []), "--out", "res",
                 cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "runs").glob("*.json")]
    preset = PRESETS[name].values
    assert {r["spec"]["method"] for r in records} >= set(preset["methods"])
    for r in records:
        if r["spec"]["method"] in preset.get("method_config", {}):
            assert preset["method_config"][r["spec"]["method"]].items() <= r["spec"]["method_config"].items()
    if name == "paper-attention-transfer":  # the teacher (ResNet-34) trained with the paper's freezing too
        teacher = next(r for r in records if r["spec"]["backbone"] == "resnet34")
        assert teacher["spec"]["method_config"] == {"freeze_stages": 2, "freeze_bn": True, "head_lr_scale": 1.0,
                                                    "layer_decay": 1.0}  # fmt: skip
