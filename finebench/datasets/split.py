"""Deterministic stratified train/val/test splits, written as an index file whose hash goes into every record."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finebench.core.atomic import atomic_write
from finebench.datasets.base import ImageSet


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # item indices
    val: np.ndarray
    test: np.ndarray
    hash: str
    path: Path | None = None
    policy: str = "stratified"  # stratified: train/val/test cut per class; official: the dataset's own test set


def stratified_split(labels: np.ndarray, fractions: tuple[float, ...], seed_key: str) -> dict[str, np.ndarray]:
    """Per class: shuffle with a seed derived from `seed_key`, then cut train / val / test by `fractions`.

    Every class with at least 3 items gets at least one val and one test item (when their fractions are > 0).
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
        if n >= 3:  # a part with a non-zero share gets at least one item
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(
                f"split {list(fractions)}: class {int(cls)} ({n} items) gets no training item; raise the train fraction"
            )
        parts["train"] += idx[:n_train].tolist()
        parts["val"] += idx[n_train : n_train + n_val].tolist()
        parts["test"] += idx[n_train + n_val :].tolist()
    return {k: np.asarray(v, dtype=np.int64) for k, v in parts.items()}


def official_split(data: ImageSet, fractions: tuple[float, ...], seed_key: str) -> dict[str, np.ndarray]:
    """The dataset's own test set as test; val carved per class from its own train set, the suite's val share of
    train + val (0.15 / (0.7 + 0.15) by default)."""
    pool = np.sort(data.official["train"])
    val_share = fractions[1] / (fractions[0] + fractions[1])
    inner = stratified_split(data.labels[pool], (1 - val_share, val_share, 0.0), seed_key)
    return {"train": pool[inner["train"]], "val": pool[inner["val"]], "test": np.sort(data.official["test"])}


def make_split(data: ImageSet, fractions: tuple[float, ...], split_seed: int, out_dir: Path | None) -> Split:
    """Stratified and seeded; datasets with an official test set keep it (see `official_split`)."""
    policy = "official" if data.official is not None else "stratified"
    split_of = official_split if policy == "official" else None
    key = f"{data.info.name}:{split_seed}"
    parts = split_of(data, fractions, key) if split_of else stratified_split(data.labels, fractions, key)
    index = {
        "dataset": data.info.name,
        "manifest_hash": data.info.manifest_hash,
        "split_seed": split_seed,
        "fractions": list(fractions),
        **({"policy": policy} if policy != "stratified" else {}),  # stratified files keep their earlier hash
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
    return Split(parts["train"], parts["val"], parts["test"], digest, path, policy)


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
