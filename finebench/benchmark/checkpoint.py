"""Per-epoch checkpoints: everything an interrupted run needs to go on exactly where it stopped.

After every epoch a run writes `<out>/checkpoints/<run id>/last.pt`: the model, the optimiser, the step count (the
learning-rate schedule is a function of it), the random states of Python, NumPy and torch (CPU and CUDA), the budget
meter, the per-epoch history and the best-so-far epoch. The best-val weights go to `best-e<epoch>.pt`, written
before `last.pt` names it and deleted only after a newer `last.pt` names a newer one, so a kill at any moment
leaves a `last.pt` whose best file exists. Every file is written to a temporary file and renamed into place. The
data order and augmentation of an epoch depend only on (seed, epoch), so the loaders need no state.

Files are read with `torch.load(weights_only=True)`: tensors and plain containers only, no code.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finebench.core.atomic import atomic_write
from finebench.core.safeload import safe_load
from finebench.results.faults import crash_point
from finebench.results.store import ResultStore

FORMAT = 1


def checkpoint_dir(out: Path, run_id: str) -> Path:
    return Path(out) / "checkpoints" / run_id


def discard(out: Path, run_id: str) -> None:
    """Remove a run's checkpoints (once its record is written they are no longer needed)."""
    shutil.rmtree(checkpoint_dir(out, run_id), ignore_errors=True)


def recorded(store: ResultStore, run_id: str) -> None:
    """A run's record is in the store: its checkpoints and an earlier failed attempt's account are spent."""
    discard(store.root, run_id)
    store.clear_failure(run_id)


def rng_state() -> dict[str, Any]:
    """The random states of Python, NumPy and torch, as tensors and plain values (loadable with weights_only)."""
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        # only when CUDA is in use: a CPU run must not initialise it
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        if torch.cuda.device_count() < len(state["cuda"]):
            raise ValueError(
                f"the checkpoint holds the random states of {len(state['cuda'])} GPU(s), this process sees "
                f"{torch.cuda.device_count()}; resume where it ran, or delete the run's checkpoint folder"
            )
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoints:
    """The `last` and `best` checkpoints of one run."""

    def __init__(self, out: Path, run_id: str) -> None:
        self.run_id = run_id
        self.dir = checkpoint_dir(out, run_id)
        self.last = self.dir / "last.pt"

    def save(self, state: dict[str, Any], best_epoch: int, best_weights: dict[str, torch.Tensor] | None) -> None:
        """Write `state` as last.pt; `best_weights` (when the best epoch changed) first, as best-e<epoch>.pt."""
        best_name = f"best-e{best_epoch}.pt"
        if best_weights is not None:
            atomic_write(self.dir / best_name, lambda f: torch.save(best_weights, f))
        state = dict(state, format=FORMAT, run_id=self.run_id, best_file=best_name)

        def write(f) -> None:
            torch.save(state, f)
            crash_point("checkpoint-write")  # fault injection: a kill while the temporary file is being written

        atomic_write(self.last, write)
        for old in self.dir.glob("best-e*.pt"):  # older best files: no checkpoint names them any more
            if old.name != best_name:
                old.unlink(missing_ok=True)

    def load(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """(last state, best weights), or None when the run has no checkpoint. A checkpoint that cannot be used
        raises ValueError naming the file and what is wrong with it."""
        if not self.last.exists():
            return None
        restart = f"; delete {self.dir} to start the run from its beginning"
        try:
            state = safe_load(self.last, "checkpoint")
        except ValueError as e:
            raise ValueError(f"{e}{restart}") from e
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("run_id") != self.run_id:
            raise ValueError(
                f"checkpoint {self.last} is not a format-{FORMAT} checkpoint of run {self.run_id}{restart}"
            )
        best_path = self.dir / state["best_file"]
        try:
            best = safe_load(best_path, "best-state file")
        except ValueError as e:
            raise ValueError(f"checkpoint {self.last} names a best-state file that cannot be used: {e}{restart}") from e
        return state, best
