"""Deterministic stratified train/val/test splits, written as an index file whose hash goes into every record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finebench.datasets.base import ImageSet
from finebench.results.atomic import atomic_write


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # item indices
    val: np.ndarray
    test: np.ndarray
    hash: str
    path: Path | None = None


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed_key: str) -> dict[str, np.ndarray]:
    """Per class: shuffle with a seed derived from `seed_key`, then cut train / val / test by `fractions`.

    Every class with at least 3 items gets at least one val and one test item.
    """
    seed = int.from_bytes(hashlib.sha256(seed_key.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(
                f"split {list(fractions)}: class {int(cls)} ({n} items) gets no training item; raise the train fraction"
            )
        parts["train"] += idx[:n_train].tolist()
        parts["val"] += idx[n_train : n_train + n_val].tolist()
        parts["test"] += idx[n_train + n_val :].tolist()
    return {k: np.asarray(v, dtype=np.int64) for k, v in parts.items()}


def make_split(data: ImageSet, fractions: tuple[float, ...], split_seed: int, out_dir: Path | None) -> Split:
    parts = stratified_split(data.labels, fractions, f"{data.info.name}:{split_seed}")
    index = {
        "dataset": data.info.name,
        "manifest_hash": data.info.manifest_hash,
        "split_seed": split_seed,
        "fractions": list(fractions),
        **{k: [data.ids[i] for i in v] for k, v in parts.items()},
    }
    blob = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(blob).hexdigest()
    path = None
    if out_dir is not None:
        safe = data.info.name.replace(":", "_").replace("/", "_")
        path = out_dir / f"{safe}-seed{split_seed}-{digest[:12]}.json"
        if not path.exists():
            atomic_write(path, lambda f: f.write(blob))
    return Split(parts["train"], parts["val"], parts["test"], digest, path)


def cap_per_class(indices: np.ndarray, labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """Keep the first `per_class` items of each class, in split order (deterministic)."""
    if per_class is None:
        return indices
    keep, seen = [], {}
    for i in indices:
        c = int(labels[i])
        if seen.get(c, 0) < per_class:
            keep.append(i)
            seen[c] = seen.get(c, 0) + 1
    return np.asarray(keep, dtype=np.int64)
