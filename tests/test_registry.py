import pytest

from finebench.backbones import BACKBONES
from finebench.core.registry import Registry
from finebench.datasets import DATASETS
from finebench.methods import METHODS


def test_duplicate_name_raises():
    reg = Registry("thing")
    reg.register("a", lambda: 1, "first")
    with pytest.raises(ValueError, match="duplicate thing name 'a'"):
        reg.register("a", lambda: 2, "second")


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(ValueError) as e:
        METHODS.get("cut-ful")
    msg = str(e.value)
    assert "unknown method 'cut-ful'" in msg and "did you mean 'cut-full'" in msg
    for name in ("cut-fc", "cut-last", "cut-last2", "cut-full"):
        assert name in msg


def test_builtin_registries_have_descriptions():
    assert {"cut-fc", "cut-last", "cut-last2", "cut-full"} <= set(METHODS.names())
    assert {"flowers17", "synthetic"} <= set(DATASETS.names())
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50"} <= set(BACKBONES.names())
    for reg in (METHODS, DATASETS, BACKBONES):
        assert all(entry.description for entry in reg)


def test_registering_a_method_class_twice_fails():
    from finebench.methods import register_method
    from finebench.methods.level_of_cut import CutFull

    with pytest.raises(ValueError, match="duplicate method name 'cut-full'"):
        register_method(type("Again", (CutFull,), {"name": "cut-full"}))
