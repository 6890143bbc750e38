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
    assert full.method_config == {"freeze_bn": True, "freeze_stages": 0}
    assert full.train.resolution == 160  # resolved from the backbone's pretrained_cfg


def test_run_id_changes_with_any_spec_field():
    base = expand(build_suite({"methods": "cut-fc", "datasets": "synthetic", "backbones": "test_resnet"}))[0]
    other = expand(build_suite({"methods": "cut-fc", "datasets": "synthetic", "backbones": "test_resnet", "lr": 0.02}))
    assert base.run_id != other[0].run_id
    assert len(base.run_id) == 16


def test_later_layers_win_and_preset_applies():
    suite = build_suite({"preset": "quick"}, {"epochs": 7})
    assert suite.train.epochs == 7 and suite.train.resolution == 128
    assert build_suite({"preset": "quick"}).train.epochs == 3


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
