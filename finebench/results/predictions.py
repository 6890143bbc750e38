"""Per-image test predictions, kept compactly in a record so that reports can resample the test images.

A record's `best.test_predictions` holds, for every test image in the split's order, the top-1 prediction, the
label and whether the label was among the top three, as little-endian unsigned 16-bit integers (labels,
predictions) and a bit array (top-3 hits), each base64-encoded: about 5 bytes per image (1 KB for Flowers-17's 204
test images, 30 KB for CUB's 5,794).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

FORMAT = "u16le+bits/base64"


def encode(pred: list[int], target: list[int], top3: list[bool]) -> dict[str, Any]:
    if not len(pred) == len(target) == len(top3):
        raise ValueError(f"predictions: {len(pred)} predictions, {len(target)} labels, {len(top3)} top-3 flags")
    if max([*pred, *target], default=0) >= 2**16:
        raise ValueError("predictions: class indices of 65,536 and more do not fit the record's 16-bit encoding")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return {
        "format": FORMAT,
        "n": len(pred),
        "pred": b64(np.asarray(pred, dtype="<u2").tobytes()),
        "target": b64(np.asarray(target, dtype="<u2").tobytes()),
        "top3": b64(np.packbits(np.asarray(top3, dtype=bool)).tobytes()),
    }


def decode(data: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    """{"pred", "target", "top3"} arrays of an encoded record entry; None when the record has none (older records)."""
    if not data or data.get("format") != FORMAT:
        return None
    n = int(data["n"])

    def raw(key: str) -> bytes:
        return base64.b64decode(data[key])

    pred = np.frombuffer(raw("pred"), dtype="<u2").astype(np.int64)
    target = np.frombuffer(raw("target"), dtype="<u2").astype(np.int64)
    top3 = np.unpackbits(np.frombuffer(raw("top3"), dtype=np.uint8))[:n].astype(bool)
    if not len(pred) == len(target) == n:
        raise ValueError(f"damaged test predictions: {len(pred)} predictions and {len(target)} labels for n={n}")
    return {"pred": pred, "target": target, "top3": top3}
