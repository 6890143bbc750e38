"""Batches straight from the uint8 image cache: seeded order and flips, normalisation on the target device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


class Batches:
    """Iterates (x, y) batches over `indices` of a cached (N, H, W, 3) uint8 array.

    The order and the flip decisions of epoch e depend only on (seed, e), so a run is a pure function of its
    spec and any epoch can be replayed. Pixels travel as uint8 and are normalised on `device`. `balanced` draws each
    epoch's |indices| items with replacement, each class equally likely (the filter-attention paper's sampler).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        shuffle: bool = False,
        flip: bool = False,
        seed: int = 0,
        balanced: bool = False,
    ) -> None:
        self.images, self.indices = images, np.asarray(indices, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels)[self.indices], dtype=torch.long)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.flip, self.seed, self.balanced = shuffle, flip, seed, balanced
        counts = torch.bincount(self.labels)
        self.class_weights = (1.0 / counts.clamp(min=1).double())[self.labels]  # per item: 1 / its class count
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.epoch = 0

    def bounds(self) -> list[tuple[int, int]]:
        """Batch start/end positions. A lone last sample joins the previous batch: BatchNorm cannot train on a
        batch of one, and every sample must still be seen once per epoch (the budget)."""
        n, bs = len(self.indices), self.batch_size
        edges = list(range(0, n, bs)) + [n]
        if len(edges) > 2 and n - edges[-2] == 1:
            del edges[-2]
        return list(zip(edges[:-1], edges[1:], strict=True))

    def __len__(self) -> int:
        return len(self.bounds())

    @property
    def num_samples(self) -> int:
        return len(self.indices)

    def sample(self, n: int) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """A fixed, spec-independent sample of up to `n` items for figures: the first item of each class in turn
        (class 0, 1, ..., then each class's second item...). Returns normalised x, y, the uint8 pixels (n, H, W, 3)
        and the items' dataset indices, so every method's figure shows the same images."""
        pos = fixed_sample(self.labels.numpy(), n)
        rows = self.indices[pos]
        pixels = np.ascontiguousarray(self.images[rows])
        x = torch.from_numpy(pixels).to(self.device).permute(0, 3, 1, 2)
        x = ((x.float() - self.mean) / self.std).contiguous()
        return x, self.labels[pos].to(self.device), pixels, rows

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.indices)
        if self.balanced:  # every class equally likely: draw n items with replacement, p ~ 1 / class count
            order = torch.multinomial(self.class_weights, n, replacement=True, generator=gen)
        elif self.shuffle:
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        flips = torch.rand(n, generator=gen) < 0.5 if self.flip else None
        for start, end in self.bounds():
            pos = order[start:end]
            rows = self.indices[pos.numpy()]
            sort = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memory-mapped cache
            pixels = np.empty((len(rows),) + self.images.shape[1:], dtype=np.uint8)
            pixels[sort] = self.images[rows[sort]]
            x = torch.from_numpy(pixels).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            x = (x.float() - self.mean) / self.std
            if flips is not None:
                f = flips[pos].to(self.device)
                x = torch.where(f.view(-1, 1, 1, 1), x.flip(3), x)
            yield x.contiguous(), self.labels[pos].to(self.device, non_blocking=True)


def fixed_sample(labels: np.ndarray, n: int) -> np.ndarray:
    """Positions of up to `n` items taken round-robin over the classes, each class's items in order."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out: list[int] = []
    depth = 0
    while len(out) < min(n, len(labels)):
        out += [int(items[depth]) for items in by_class if depth < len(items)][: n - len(out)]
        depth += 1
    return np.asarray(out, dtype=np.int64)
