"""What a run may spend and what it spent.

The primary budget is epochs (= samples seen, identical for every method of a suite); an optional wall-clock cap
stops a run cleanly. Extra phases a method needs (a teacher's training, a calibration pass) are charged here so
that nothing happens off the books.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class Charge:
    seconds: float = 0.0
    samples: int = 0
    flops: float = 0.0

    def add(self, seconds: float = 0.0, samples: int = 0, flops: float = 0.0) -> None:
        self.seconds += seconds
        self.samples += samples
        self.flops += flops


@dataclass
class BudgetMeter:
    """Counts samples, optimiser steps and seconds of one run, plus charged extra phases."""

    epochs: int
    samples_per_epoch: int
    time_budget: float | None = None
    samples: int = 0
    steps: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    data_seconds: float = 0.0  # of train_seconds: time the loop spent in the data iterator (waiting, copying)
    flops_per_image: float | None = None  # forward FLOPs of the trained model for one image
    train_flops: float = 0.0  # measured: each step's samples x its stage's FLOPs per training sample
    charges: dict[str, Charge] = field(default_factory=dict)
    capped: bool = False
    earlier_peak: dict[str, float | None] | None = None  # peak memory of the process a resumed run began in
    _start: float = field(default_factory=time.perf_counter)

    @property
    def sample_budget(self) -> int:
        return self.epochs * self.samples_per_epoch

    def start(self) -> None:
        """Start the wall clock (after set-up: data caching and model building are not training time)."""
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def step(self, batch_size: int, seconds: float, flops_per_sample: float = 0.0) -> None:
        self.samples += batch_size
        self.steps += 1
        self.train_seconds += seconds
        self.train_flops += flops_per_sample * batch_size

    def over_time(self) -> bool:
        """True once the wall-clock cap is spent; marks the run as capped."""
        if self.time_budget is not None and self.elapsed() >= self.time_budget:
            self.capped = True
        return self.capped

    def charge(self, phase: str, seconds: float = 0.0, samples: int = 0, flops: float = 0.0) -> None:
        """Book the cost of an extra phase (teacher training, calibration...) against this run."""
        if seconds < 0 or samples < 0 or flops < 0:
            raise ValueError(f"charge {phase!r}: costs must be >= 0, got {seconds=}, {samples=}, {flops=}")
        self.charges.setdefault(phase, Charge()).add(seconds, samples, flops)

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the meter (the wall clock as seconds elapsed so far)."""
        return {
            "samples": self.samples,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "data_seconds": self.data_seconds,
            "train_flops": self.train_flops,
            "elapsed": self.elapsed(),
            "capped": self.capped,
            "charges": self.charges_dict(),
            "peak_memory": peak_memory(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's meter: counts, seconds, charges; the wall clock goes on from its elapsed."""
        self.samples, self.steps = state["samples"], state["steps"]
        self.train_seconds, self.eval_seconds = state["train_seconds"], state["eval_seconds"]
        self.data_seconds = state.get("data_seconds", 0.0)
        self.train_flops = state.get("train_flops", 0.0)
        self.capped = state["capped"]
        self.charges = {k: Charge(**v) for k, v in state["charges"].items()}
        self._start = time.perf_counter() - state["elapsed"]
        self.earlier_peak = state["peak_memory"]  # the process that wrote the checkpoint had its own peak

    def charges_dict(self) -> dict[str, dict[str, float]]:
        return {k: vars(v).copy() for k, v in self.charges.items()}

    def summary(self) -> dict[str, Any]:
        charged = self.charges_dict()
        return {
            "epochs_budget": self.epochs,
            "samples_budget": self.sample_budget,
            "samples": self.samples,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            # end to end: data, forward, backward, optimiser and bookkeeping, over the training seconds
            "images_per_second": self.samples / self.train_seconds if self.train_seconds > 0 else None,
            "data_seconds": self.data_seconds,
            # share of the training time the loop spent in the data iterator (waiting for the worker, issuing the
            # copy and the augmentation); on a GPU, host time: it can only stall the device if the queue ran dry
            "data_stall_fraction": self.data_seconds / self.train_seconds if self.train_seconds > 0 else None,
            "flops_per_image": self.flops_per_image,
            # measured, not assumed: one real training step per stage counted by torch's flop counter (forward,
            # backward, a double backward, a teacher's forward), times the samples each stage trained on
            "train_flops": self.train_flops,
            "time_budget": self.time_budget,
            "capped": self.capped,
            "charges": charged,
            "charged_seconds": sum(c.seconds for c in self.charges.values()),
            "peak_memory": peak_memory(self.earlier_peak),
        }


def conv_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                        output_padding, groups, output_mask, out_shape, **kwargs) -> int:  # fmt: skip
    """FLOPs of a convolution's backward (input and weight gradients), grouped convolutions counted as such.
    torch's own formula (torch 2.14) counts the weight gradient of a grouped conv as if it were dense, `groups`
    times too many: 64x for a 64-channel depthwise conv, which made a depthwise network's training step look 42x
    its forward pass. The same terms as torch's, the weight gradient divided by the groups."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:  # grad input: a transposed convolution of grad_out with the weight
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:  # grad weight: each group's inputs against its own outputs only
        a, b = (t(grad_out_shape), t(x_shape)) if transposed else (t(x_shape), t(grad_out_shape))
        flops += conv_flop_count(a, b, t(out_shape[1]), transposed=False) // groups
    return flops


class _Whole:
    """Stands in for the flop counter's per-module tracker: every count goes to the total ("Global"). The tracker's
    module hooks break `torch.autograd.grad` of an input gradient (gradient AT's double backward: "A leaf node was
    passed to _will_engine_execute_node"), and we only need the total."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return None


def flop_counter():
    """torch's flop counter with grouped convolutions' backward counted right (see `conv_backward_flops`), counting
    the total only (see `_Whole`)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    counter.mod_tracker = _Whole()
    return counter


def forward_flops(model: nn.Module, resolution: int, device: torch.device) -> float:
    """Forward FLOPs for one image, counted by torch's flop counter (convs and matmuls)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, resolution, resolution, device=device)
    counter = flop_counter()
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return float(counter.get_total_flops())


def step_flops(step, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """FLOPs of `step(batch)` (a training step: forward, losses, backward) per sample of `batch`, as torch's flop
    counter sees them (convolutions and matrix products, their gradients included; 2 per multiply-add)."""
    counter = flop_counter()
    with counter:
        step(batch)
    return float(counter.get_total_flops()) / len(batch[1])


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory(earlier: dict[str, float | None] | None = None) -> dict[str, float | None]:
    """Peak CUDA allocator memory since the run began, and the process's peak RSS in MiB. The RSS peak is
    process-wide (it includes earlier runs of a suite and the image cache): an upper bound, not a per-run figure.
    `earlier`: the peaks of the process a resumed run began in (the larger of each is kept)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mib = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    peaks = {"cuda_mib": cuda, "process_peak_rss_mib": rss_mib}
    for key, value in (earlier or {}).items():
        if value is not None and key in peaks:
            peaks[key] = value if peaks[key] is None else max(peaks[key], value)
    return peaks
