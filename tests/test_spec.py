import pytest

from finebench.benchmark.spec import SpecError, build_suite, load_yaml, parse_duration, parse_overrides
from finebench.benchmark.suite import expand


def test_flags_yaml_and_overrides_give_the_same_runs(tmp_path):
    spec = tmp_path / "suite.yaml"
    spec.write_text(
        "methods: [cut-fc, cut-full]\ndatasets: [synthetic]\nbackbones: [test_resnet]\nseeds: [0, 1]\n"
        "epochs: 4\nlr: 0.05\nweights: random\nmethod_config:\n  cut-full: {freeze_bn: true}\n"
    )
    from_yaml = expand(build_suite(load_yaml(spec)))
    from_flags = expand(
        build_suite(
            {"methods": "cut-fc,cut-full", "datasets": "synthetic", "backbones": "test_resnet", "seeds": "0,1"},
            {"epochs": 4, "lr": 0.05, "weights": "random"},
            parse_overrides(["method_config.cut-full.freeze_bn=true"]),
        )
    )
    from_overrides = expand(
        build_suite(
            parse_overrides(
                ["methods=cut-fc,cut-full", "dataset=synthetic", "backbone=test_resnet", "seeds=0,1", "epochs=4"]
                + ["lr=5e-2", "weights=random", "method_config.cut-full.freeze_bn=yes"]
            )
        )
    )
    ids = [r.run_id for r in from_yaml]
    assert len(ids) == 4 and len(set(ids)) == 4
    assert ids == [r.run_id for r in from_flags] == [r.run_id for r in from_overrides]
    full = [r for r in from_yaml if r.method == "cut-full"][0]
    assert full.method_config == {"freeze_bn": True, "freeze_stages": 0, "head_lr_scale": 1.0, "layer_decay": 1.0}
    assert full.train.resolution == 160  # resolved from the backbone's pretrained_cfg


def test_run_id_changes_with_any_spec_field():
    base = expand(build_suite({"methods": "cut-fc", "datasets": "synthetic", "backbones": "test_resnet"}))[0]
    other = expand(build_suite({"methods": "cut-fc", "datasets": "synthetic", "backbones": "test_resnet", "lr": 0.02}))
    assert base.run_id != other[0].run_id
    assert len(base.run_id) == 16


def test_later_layers_win_and_preset_applies():
    suite = build_suite({"preset": "quick"}, {"epochs": 7})
    assert suite.train.epochs == 7 and suite.train.resolution == 80 and suite.train.train_per_class == 10
    quick = build_suite({"preset": "quick"})
    assert quick.train.epochs == 3 and quick.method_config["semantic-pruning"]["classes"] == 1
    override = build_suite({"preset": "quick"}, {"method_config": {"semantic-pruning": {"classes": 2}}})
    assert override.method_config["semantic-pruning"] == {"classes": 2, "modes": "nwp", "sweep": [0.3],
                                                          "control_draws": 0}  # merged, later wins  # fmt: skip


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"epoch": 3}, "unknown key 'epoch'; valid keys: preset, methods"),
        ({"epochs": "ten"}, "epochs: expected an integer, got 'ten'"),
        ({"epochs": 2.5}, "epochs: expected an integer"),
        ({"epochs": 0}, "epochs: must be >= 1"),
        ({"lr": -1}, "lr: must be > 0"),
        ({"optimizer": "lion"}, "optimizer: 'lion' is not one of sgd, adamw, adam"),
        ({"split": [0.5, 0.5]}, "split: expected three positive"),
        ({"preset": "fast"}, "unknown preset 'fast'; known: quick"),
        (
            {"method_config": {"cut-fc": {"freeze": True}}},
            "method_config.cut-fc: unknown key 'freeze'; valid keys: freeze_bn",
        ),
        ({"method_config": {"cut-fc": {"freeze_bn": "maybe"}}}, "freeze_bn: expected true or false"),
        ({"time_budget": "ten minutes"}, "time_budget: expected a duration"),
    ],
)
def test_bad_values_name_the_key_and_valid_choices(layer, message):
    with pytest.raises(SpecError) as e:
        expand(build_suite({"methods": "cut-fc,cut-full", "datasets": "synthetic", "weights": "random"}, layer))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "layer, message",
    [
        ({"methods": "cut-fc,fiter-attention"}, "unknown method 'fiter-attention'"),
        ({"datasets": "flower17"}, "unknown dataset 'flower17'; did you mean 'flowers17'?"),
        ({"backbones": "efficientnet_lite9"}, "unknown backbone 'efficientnet_lite9'"),
        ({"datasets": "synthetic:1x5"}, "expected 'synthetic' or 'synthetic:<classes>x<per_class>'"),
    ],
)
def test_unknown_names_list_valid_choices(layer, message):
    with pytest.raises(ValueError) as e:
        expand(build_suite(layer))
    assert message in str(e.value)
    assert "known:" in str(e.value) or "expected" in str(e.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 3\nmethods: [cut-fc\nlr: 0.1\n")
    with pytest.raises(SpecError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_yaml(bad)


def test_durations():
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    assert parse_duration(30) == 30.0 and parse_duration(None) is None
    with pytest.raises(SpecError):
        parse_duration("-5m")


def test_config_fields_added_later_keep_the_ids_of_the_runs_they_do_not_change():
    """A run id computed the way it was before a method's later fields existed (its config without them) is the
    id the run still has, unless the new field changes what it does (gradient AT's weight, semantic pruning's
    signed sums): those get new ids, and their old records read as what they did."""
    import dataclasses
    import hashlib
    import json

    from finebench.benchmark.spec import SPEC_VERSION, identity_train
    from finebench.methods import METHODS
    from finebench.methods.base import OPTIM_DEFAULTS
    from finebench.reports.frame import method_label

    def old_id(spec):
        d = spec.to_dict()
        d["train"] = identity_train(d["train"])
        later = {**METHODS.get(spec.method).LATER, **OPTIM_DEFAULTS}  # the learning-rate options came later too
        d["method_config"] = {k: v for k, v in d["method_config"].items() if k not in later}
        payload = json.dumps({"v": SPEC_VERSION, **d}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    layer = {"methods": "cut-fc,cut-full,kd,attention-transfer,at+kd,filter-attention", "datasets": "synthetic"}
    runs = {s.method: s for s in expand(build_suite(layer))}
    for method, spec in runs.items():
        assert spec.run_id == old_id(spec), method
    gradient = expand(build_suite(layer, {"method_config": {"attention-transfer": {"kind": "gradient"}}}))
    at = next(s for s in gradient if s.method == "attention-transfer")
    assert at.run_id != old_id(at)  # its term is weighted otherwise now
    sp = expand(build_suite({"methods": "semantic-pruning", "datasets": "synthetic",
                             "method_config": {"semantic-pruning": {"sweep": [0.5], "classes": 3}}}))[0]  # fmt: skip
    assert sp.run_id != old_id(sp)  # signed sums now, sums of |R| before
    legacy = dataclasses.replace(sp, method_config={**sp.method_config, "accumulate": "abs"})
    assert legacy.run_id == old_id(sp)  # asking for the old behaviour finds the old records
    # old records' labels: what their runs did
    assert method_label("semantic-pruning", {"sweep": [0.5], "classes": 3}) == (
        "semantic-pruning (accumulate=abs, classes=3, sweep=[0.5])"
    )
    assert method_label("attention-transfer", {"kind": "gradient", "beta": 1000.0}) == (
        "attention-transfer (gradient_beta=1000.0, kind=gradient)"
    )
    assert method_label("attention-transfer", {"kind": "gradient", "beta": 1000.0, "gradient_beta": 1e6}) == (
        "attention-transfer (kind=gradient)"
    )
    assert method_label("cut-full", {"freeze_bn": False}) == "cut-full"
