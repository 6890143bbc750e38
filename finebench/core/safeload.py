"""Read torch files without running code: tensors and plain containers only (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    pass


def safe_load(path: str | Path, what: str) -> Any:
    """The contents of the torch file `path` (a `what`: "weights file", "checkpoint"...). A file that holds other
    Python objects is refused, naming the object it would have created; a damaged file raises ValueError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(?:unsupported GLOBAL|Unsupported global:?)\s+(?:GLOBAL\s+)?([\w.]+)", str(e))
        if found:
            raise UnsafeFileError(
                f"{what} {path} is refused: it holds a Python object ({found.group(1)}) besides tensors, and "
                "loading it would run code. finebench reads tensors and plain containers only; save a state dict "
                "(torch.save(model.state_dict(), path)) from a trusted copy of the model"
            ) from e
        raise ValueError(f"{what} {path} cannot be read: not a torch file, or damaged ({e.__class__.__name__})") from e
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways (KeyError, EOFError, RuntimeError...)
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}" if str(e) else type(e).__name__
        raise ValueError(f"{what} {path} cannot be read: not a torch file, or damaged ({reason})") from e
