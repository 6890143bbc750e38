"""How a run's arithmetic runs: mixed precision, memory format, compilation and the cuDNN mode, all from the spec.

`amp=bf16` runs the forward pass and the losses under `torch.autocast` in bfloat16; `amp=fp16` in float16 with a
gradient scaler (float16's range is too narrow for small gradients), whose state is saved in every checkpoint.
Evaluation uses the same autocast as training. On CPU, autocast runs too (bf16 is the useful one there).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    amp: str  # off | bf16 | fp16
    device_type: str  # cpu | cuda
    scaler: torch.amp.GradScaler | None = None  # fp16 only

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=AMP_DTYPES[self.amp])

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() and optimizer.step(), through the gradient scaler under fp16 (a step whose gradients
        overflowed is skipped and the scale lowered, as the scaler does)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()

    def state(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FP32 = Precision("off", "cpu")


def make_precision(amp: str, device: torch.device) -> Precision:
    if amp not in ("off", *AMP_DTYPES):
        raise ValueError(f"amp: {amp!r} is not one of off, bf16, fp16")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"amp: bf16 is not supported on {torch.cuda.get_device_name(device)}; use amp=fp16 or off")
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return Precision(amp, device.type, scaler)


# x86 CPU flags (/proc/cpuinfo) that give a native low-precision matrix product; ARM lists "bf16" / "fphp"
CPU_NATIVE = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ("avx512_fp16", "amx_fp16", "fphp")}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (x86 `flags`, ARM `Features`); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def precision_warning(amp: str, device: torch.device, flags: set[str] | None = None) -> str | None:
    """What to expect from `amp` on `device` when the hardware has no native support for it: autocast then runs
    emulated and can be far slower than fp32 (a Lite0 training step on an AVX2-only AMD EPYC: 5.7x slower with bf16;
    see the README for the factors measured). None when it is native or unknown, or for amp=off."""
    if amp == "off":
        return None
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        need = (8, 0) if amp == "bf16" else (7, 0)
        if (major, minor) < need:
            name = torch.cuda.get_device_name(device)
            return (f"amp={amp}: {name} (compute capability {major}.{minor}) has no {amp} tensor cores (they need "
                    f"{need[0]}.{need[1]}); expect little or no gain over fp32, or use amp=off")  # fmt: skip
        return None
    if device.type != "cpu":
        return None
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return None  # not Linux, or the flags are unreadable: no claim either way
    native = CPU_NATIVE[amp]
    if not flags & set(native):
        return (f"amp={amp} on this CPU: it lacks {' / '.join(native[:2])} (native {amp} matrix products), so "
                f"autocast emulates {amp} and a step can be several times slower than fp32 (measured: 5.7x slower "
                "for bf16 on an AVX2-only CPU); use amp=off here, or run on hardware that has it")  # fmt: skip
    return None


def set_cudnn(mode: str) -> None:
    """benchmark: cuDNN autotunes each convolution shape (fastest, not bit-reproducible); deterministic:
    deterministic algorithms wherever torch has one (it warns for an operation that has none, such as some
    pooling backward passes on CUDA), and cuBLAS's reproducible workspace (effective when set before the process's
    first matrix product on the GPU)."""
    deterministic = mode == "deterministic"
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def cudnn_state() -> dict[str, bool]:
    """What this process actually runs with (recorded with each run)."""
    return {
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


def to_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if channels_last else model
