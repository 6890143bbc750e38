"""Random-resized crops on image tensors, shared by the data pipeline and by methods that draw a second view."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def crop_boxes(n: int, size: int, gen: torch.Generator, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)) -> Tensor:
    """n random crops (x1, y1, x2, y2) of a size x size image: area share in `scale`, aspect ratio in `ratio`
    (log-uniform), position uniform; the crops are resized back to size x size (random-resized-crop)."""
    area = torch.empty(n).uniform_(*scale, generator=gen) * size * size
    log_r = torch.empty(n).uniform_(float(np.log(ratio[0])), float(np.log(ratio[1])), generator=gen)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(1, size)
    h = torch.sqrt(area / r).clamp(1, size)
    x1 = torch.rand(n, generator=gen) * (size - w)
    y1 = torch.rand(n, generator=gen) * (size - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def resized_crops(x: Tensor, boxes: Tensor) -> Tensor:
    """Each image's box, bilinearly resampled to the image's own size (on x's device)."""
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(len(x), device=x.device, dtype=x.dtype)[:, None], boxes.to(x.dtype)], dim=1)
    return roi_align(x, rois, output_size=x.shape[-2:], spatial_scale=1.0, sampling_ratio=2, aligned=True)
