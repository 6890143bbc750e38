"""Figures drawn from run artifacts alone (no dataset or model needed at report time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

META = ("images", "labels", "pred", "index")  # arrays of an attention-map artifact that are not maps


def attention_maps(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(meta, maps) of an attention-map artifact: images (n, H, W, 3) uint8, labels, pred, index; and each named
    map (n, h, w) in [0, 1]."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    missing = [k for k in META if k not in arrays]
    if missing:
        raise ValueError(f"attention-map artifact {path} lacks {missing}; it holds {sorted(arrays)}")
    maps = {k: v.astype(np.float32) for k, v in arrays.items() if k not in META}
    return {k: arrays[k] for k in META}, maps


def attention_figure(path: Path, out: Path, title: str) -> Path:
    """One column per image: the image, then each map drawn over it (bilinearly upsampled). Titles say the label
    and the prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, maps = attention_maps(path)
    images = meta["images"]
    n, rows = len(images), 1 + len(maps)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.7 * rows), squeeze=False)
    for j in range(n):
        h, w = images[j].shape[:2]
        axes[0, j].imshow(images[j])
        ok = "" if meta["labels"][j] == meta["pred"][j] else " ✗"
        axes[0, j].set_title(f"y={meta['labels'][j]} ŷ={meta['pred'][j]}{ok}", fontsize=7)
        for i, (name, m) in enumerate(maps.items(), start=1):
            axes[i, j].imshow(images[j])
            axes[i, j].imshow(m[j], cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear")
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
