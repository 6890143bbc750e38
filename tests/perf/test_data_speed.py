"""The data path on real images (flowers17 from the shared datasets): a pass over images from the uint8 cache vs
decoding and resizing the JPEGs each time (the ratio is the cache's speed-up; goal >= 20x), and the share of a
training epoch spent waiting for batches with the cache (goal <= 5 % on CPU). Figures in the summary of
`pytest tests/perf --benchmark-enable`."""

import time

import numpy as np
import pytest
import torch
from perf_helpers import interleaved_ratio

from finebench.backbones import create_backbone
from finebench.benchmark.data import Batches
from finebench.benchmark.train import make_optimizer
from finebench.datasets import build_dataset
from finebench.datasets.cache import cached_images
from finebench.datasets.imaging import load_square

RES, N, BATCH = 224, 64, 32


@pytest.fixture(scope="module")
def flowers(flowers_root):
    data = build_dataset("flowers17", flowers_root)
    images, _ = cached_images(data, RES, "center-crop", "bicubic")
    paths = [flowers_root / "flowers17" / i for i in data.ids]
    return data, np.asarray(images), paths


def loader(data, images, indices, shuffle=False, flip=False):
    mean = std = (0.5, 0.5, 0.5)
    return Batches(images, data.labels, indices, BATCH, mean, std, torch.device("cpu"), shuffle=shuffle, flip=flip)


@pytest.mark.benchmark(group="data-cache-vs-jpeg")
def test_cache_vs_decoding_jpegs(benchmark, flowers):
    """The same work on both sides (images to normalised float batches, no augmentation: flips or crops cost the
    same on either path)."""
    data, images, paths = flowers
    idx = np.arange(0, len(data), len(data) // N)[:N]
    batches = loader(data, images, idx, shuffle=True)
    mean = torch.full((1, 3, 1, 1), 127.5)

    def from_jpegs():  # what a pipeline without the cache does every epoch: decode, resize, crop, normalise
        for start in range(0, N, BATCH):
            arr = np.stack([load_square(paths[i], RES, "center-crop", "bicubic") for i in idx[start : start + BATCH]])
            x = (torch.from_numpy(arr).permute(0, 3, 1, 2).float() - mean) / mean
            assert x.shape[0] > 0

    def from_cache():
        for x, _ in batches:
            assert x.shape[0] > 0

    ratio = interleaved_ratio(benchmark, from_jpegs, from_cache, "ratio_cache_over_jpeg", rounds=6, warmup=1)
    benchmark.extra_info["cache_speedup"] = 1 / ratio
    assert ratio > 0


@pytest.mark.benchmark(group="data-wait")
def test_data_wait_share_of_a_training_epoch(benchmark, flowers):
    data, images, _ = flowers
    batches = loader(data, images, np.arange(0, len(data), len(data) // (4 * BATCH))[: 4 * BATCH], True, True)
    model = create_backbone("efficientnet_lite0", data.info.num_classes).model.train()
    optimizer = make_optimizer("sgd", list(model.parameters()), 0.01, 0.9, 1e-4)
    shares = []

    def epoch():
        wait = total = 0.0
        it = iter(batches)
        t_epoch = time.perf_counter()
        while True:
            t = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - t
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        total = time.perf_counter() - t_epoch
        shares.append(wait / total)

    benchmark.pedantic(epoch, rounds=3, warmup_rounds=1)
    benchmark.extra_info["ratio_data_wait_share"] = float(np.median(shares[1:] or shares))
    assert 0 < shares[-1] < 1
