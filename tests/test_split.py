import json

import numpy as np

from finebench.datasets import build_dataset
from finebench.datasets.split import cap_per_class, make_split, stratified_split


def test_split_is_deterministic_stratified_and_disjoint(tmp_path):
    data = build_dataset("synthetic:5x20")
    a = make_split(data, (0.7, 0.15, 0.15), 0, tmp_path)
    b = make_split(data, (0.7, 0.15, 0.15), 0, tmp_path)
    assert a.hash == b.hash
    for part in ("train", "val", "test"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    everything = np.concatenate([a.train, a.val, a.test])
    assert sorted(everything.tolist()) == list(range(len(data)))  # disjoint and complete
    for part, expected in (("train", 14), ("val", 3), ("test", 3)):
        counts = np.bincount(data.labels[getattr(a, part)], minlength=5)
        assert counts.tolist() == [expected] * 5, part


def test_other_seed_or_dataset_gives_other_split(tmp_path):
    data = build_dataset("synthetic:5x20")
    a = make_split(data, (0.7, 0.15, 0.15), 0, None)
    b = make_split(data, (0.7, 0.15, 0.15), 1, None)
    assert a.hash != b.hash and not np.array_equal(a.val, b.val)


def test_index_file_holds_the_ids_and_its_hash_is_recorded(tmp_path):
    data = build_dataset("synthetic:3x10")
    split = make_split(data, (0.6, 0.2, 0.2), 7, tmp_path)
    index = json.loads(split.path.read_text())
    assert index["split_seed"] == 7 and index["manifest_hash"] == data.info.manifest_hash
    assert index["val"] == [data.ids[i] for i in split.val]
    import hashlib

    assert hashlib.sha256(split.path.read_bytes()).hexdigest() == split.hash


def test_small_classes_still_get_val_and_test():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    parts = stratified_split(labels, (0.8, 0.1, 0.1), "x:0")
    for part in ("val", "test"):
        assert set(labels[parts[part]]) == {0, 1}


def test_cap_per_class_keeps_split_order():
    labels = np.array([0, 1, 0, 1, 0, 1])
    assert cap_per_class(np.array([5, 4, 3, 2, 1, 0]), labels, 2).tolist() == [5, 4, 3, 2]
    assert cap_per_class(np.array([1, 2]), labels, None).tolist() == [1, 2]


def test_a_class_without_training_items_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="class 0 .* gets no training item"):
        stratified_split(np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1]), (0.05, 0.5, 0.45), "x:0")
