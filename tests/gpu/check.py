"""The figures the README promises for a GPU, measured in one go (under 8 minutes on one GPU); `--smoke` runs the
same steps small on a CPU, so CI keeps the script working.

1. Throughput: images/s of `bench run` (the runner: data path, bookkeeping, evaluation excluded) against a minimal
   hand-written training loop in the same process on the same model and batch size (ResNet-50, random weights,
   224 px, bf16 autocast, channels_last), and the runner's data-stall fraction.
2. Reproducibility: two runs under `--cudnn deterministic` give identical losses and accuracies.
3. `--devices`: the suite's runs spread over the listed GPUs (every GPU here), each recorded.

Usage: python tests/gpu/check.py [--smoke] [--out DIR]   (tests/gpu/check.sh wraps it)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FULL = {"backbone": "resnet50", "resolution": 224, "batch": 64, "amp": "bf16", "channels_last": True,
        "dataset": "synthetic:20x150", "epochs": 2, "hand_steps": 60, "device": "cuda"}  # fmt: skip
SMOKE = {"backbone": "test_resnet", "resolution": 32, "batch": 8, "amp": "off", "channels_last": False,
         "dataset": "synthetic:3x8", "epochs": 1, "hand_steps": 3, "device": "cpu"}  # fmt: skip


def bench(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "finebench.cli", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]


def run_args(c: dict, methods: str, extra: list[str] = ()) -> list[str]:
    args = ["run", "--methods", methods, "--dataset", c["dataset"], "--backbone", c["backbone"], "--weights",
            "random", "--epochs", str(c["epochs"]), "--resolution", str(c["resolution"]), "--batch-size",
            str(c["batch"]), "--amp", c["amp"], "--quiet", *extra]  # fmt: skip
    return args + (["--channels-last"] if c["channels_last"] else [])


def hand_loop(c: dict) -> float:
    """Images/s of a bare loop: random batches already on the device, forward under autocast, backward, SGD."""
    from finebench.backbones import create_backbone

    dev = torch.device(c["device"])
    model = create_backbone(c["backbone"], 20, "random").model.to(dev).train()
    fmt = torch.channels_last if c["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(c["batch"], 3, c["resolution"], c["resolution"], device=dev).to(memory_format=fmt)
    y = torch.randint(0, 20, (c["batch"],), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    amp = c["amp"] != "off"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(5 if c["device"] == "cuda" else 1):  # warm-up (cuDNN autotuning)
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(c["hand_steps"]):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return c["hand_steps"] * c["batch"] / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="small, on the CPU (what CI runs)")
    ap.add_argument("--out", help="keep the results here (default: a temporary folder)")
    a = ap.parse_args()
    c = SMOKE if a.smoke else FULL
    if not a.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run with --smoke for the CPU check")
    work = Path(a.out or tempfile.mkdtemp(prefix="finebench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    device = torch.cuda.get_device_name(0) if c["device"] == "cuda" else "cpu"
    print(f"device: {device}; torch {torch.__version__}; mode: {'smoke' if a.smoke else 'full'}; work: {work}")

    # 1. throughput: the runner against a hand-written loop, same process family, same model and batch
    bench(run_args(c, "cut-full", ["--out", "speed", "--device", c["device"]]), work)
    (rec,) = records(work / "speed")
    runner = rec["cost"]["images_per_second"]
    stall = rec["cost"]["data_stall_fraction"]
    hand = hand_loop(c)
    print(f"throughput ({c['backbone']}, {c['resolution']} px, batch {c['batch']}, amp {c['amp']}, "
          f"channels_last {c['channels_last']}): runner {runner:.1f} img/s, hand-written loop {hand:.1f} img/s, "
          f"runner / loop = {runner / hand:.3f}; data-stall fraction {stall:.4f}")  # fmt: skip

    # 2. two runs under --cudnn deterministic: identical numbers
    det = []
    for i in (1, 2):
        bench(run_args(c, "cut-full", ["--out", f"det{i}", "--cudnn", "deterministic", "--device", c["device"]]), work)
        (r,) = records(work / f"det{i}")
        det.append(([e["losses"] for e in r["epochs"]], [e["val"] for e in r["epochs"]], r["best"]["test"]))
    same = det[0] == det[1]
    print(f"cudnn deterministic, two runs: {'identical' if same else 'DIFFERENT'} losses, val and test metrics "
          f"(first epoch loss {det[0][0][0]})")  # fmt: skip

    # 3. --devices: runs spread over every GPU (CPU workers in smoke mode)
    n = torch.cuda.device_count() if c["device"] == "cuda" else 2
    devices = ",".join(str(i) for i in range(n)) if c["device"] == "cuda" else "cpu,cpu"
    t0 = time.perf_counter()
    bench(run_args(c, "cut-fc,cut-full", ["--out", "devices", "--devices", devices]), work)
    done = records(work / "devices")
    used = sorted({r["env"].get("device", "?") for r in done})
    print(f"--devices {devices}: {len(done)} runs recorded in {time.perf_counter() - t0:.0f} s on {', '.join(used)}")

    ok = same and len(done) == 2 and runner > 0 and hand > 0
    print(f"total {time.perf_counter() - t_start:.0f} s: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
