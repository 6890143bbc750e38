"""Batches straight from the uint8 image cache: seeded order and flips, normalisation on the target device.

The data path: a persistent worker thread gathers the next batches' uint8 pixels (into pinned memory when the
device is a GPU) while the current batch trains; the main thread copies them to the device without blocking, then
flips, crops and normalises them there. Only uint8 bytes cross the bus, a quarter of a float batch. The time the
training loop spends inside the iterator (waiting for the worker, issuing the copy and the augmentation) is
counted in `data_seconds`: the numerator of a run's data-stall fraction.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from finebench.core.augment import crop_boxes, resized_crops


class Batches:
    """Iterates (x, y) batches over `indices` of a cached (N, 3, H, W) uint8 array (channel-first, so a batch is a
    gather and one float pass: no transposition per epoch).

    The order and the flip decisions of epoch e depend only on (seed, e), so a run is a pure function of its
    spec and any epoch can be replayed. Pixels travel as uint8 and are normalised on `device`; augmentation
    (flips, random-resized crops) runs on those tensors, so the cache is never decoded again. `balanced` draws each
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
        crop: bool = False,
        channels_last: bool = False,
        prefetch: int = 3,
    ) -> None:
        self.images, self.indices = images, np.asarray(indices, dtype=np.int64)
        self.labels = torch.as_tensor(np.asarray(labels)[self.indices], dtype=torch.long)
        if device.type == "cuda" and device.index is None:  # "cuda": the current GPU, named (the thread binds it)
            device = torch.device("cuda", torch.cuda.current_device())
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.flip, self.seed, self.balanced, self.crop = shuffle, flip, seed, balanced, crop
        counts = torch.bincount(self.labels)
        self.class_weights = (1.0 / counts.clamp(min=1).double())[self.labels]  # per item: 1 / its class count
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.epoch = 0
        self.channels_last = channels_last
        self.prefetch = prefetch  # batches gathered ahead by the worker thread (0: gather in the loop)
        self.pin = device.type == "cuda"
        self._worker: ThreadPoolExecutor | None = None  # started on first use, kept across epochs
        self.data_seconds = 0.0  # time spent inside the iterator, over all epochs

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_worker"] = None  # a thread cannot be copied; a copy starts its own
        return state

    def bind_thread(self) -> None:
        """The worker thread pins memory for this loader's GPU, not for GPU 0 (CUDA's current device is per thread)."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def gather(self, rows: np.ndarray) -> torch.Tensor:
        """The uint8 pixels of dataset rows `rows`, in that order (read in sorted order: kinder to a memory-mapped
        cache), as a CPU tensor, pinned when the batch goes to a GPU."""
        sort = np.argsort(rows, kind="stable")
        out = torch.empty((len(rows),) + self.images.shape[1:], dtype=torch.uint8, pin_memory=self.pin)
        out.numpy()[sort] = self.images[rows[sort]]
        return out

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
        x = torch.from_numpy(pixels).to(self.device).float().sub_(self.mean).div_(self.std)
        return x, self.labels[pos].to(self.device), np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)), rows

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
        boxes = crop_boxes(n, self.images.shape[-1], gen) if self.crop else None
        positions = [order[start:end] for start, end in self.bounds()]
        t0 = time.perf_counter()
        for pos, pixels in zip(positions, self.host_batches(positions), strict=True):
            x = pixels.to(self.device, non_blocking=True)
            if flips is not None:  # on the uint8 pixels; a select, not a boolean index (which waits for the device)
                f = flips[pos].to(self.device, non_blocking=True)
                x = torch.where(f.view(-1, 1, 1, 1), x.flip(-1), x)
            x = x.float().sub_(self.mean).div_(self.std)
            if boxes is not None:
                x = resized_crops(x, boxes[pos].to(self.device, non_blocking=True))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self.labels[pos].to(self.device, non_blocking=True)
            self.data_seconds += time.perf_counter() - t0
            yield x, y
            t0 = time.perf_counter()
        self.data_seconds += time.perf_counter() - t0

    def host_batches(self, positions: list[Tensor]) -> Iterator[Tensor]:
        """The uint8 batches at `positions`, gathered `prefetch` batches ahead by the worker thread."""
        rows = [self.indices[pos.numpy()] for pos in positions]
        if self.prefetch < 1:
            yield from (self.gather(r) for r in rows)
            return
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finebench-batches",
                                              initializer=self.bind_thread)  # fmt: skip
        ahead: deque = deque()
        todo = iter(rows)
        for r in todo:
            ahead.append(self._worker.submit(self.gather, r))
            if len(ahead) > self.prefetch:
                break
        while ahead:
            pixels = ahead.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append(self._worker.submit(self.gather, nxt))
            yield pixels


def fixed_sample(labels: np.ndarray, n: int) -> np.ndarray:
    """Positions of up to `n` items taken round-robin over the classes, each class's items in order."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out: list[int] = []
    depth = 0
    while len(out) < min(n, len(labels)):
        out += [int(items[depth]) for items in by_class if depth < len(items)][: n - len(out)]
        depth += 1
    return np.asarray(out, dtype=np.int64)
