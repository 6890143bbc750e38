"""The GPU check script (tests/gpu/check.sh) keeps working: its CPU smoke mode runs every step and reports OK."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_mode_runs_every_step(tmp_path):
    cmd = ["bash", str(ROOT / "tests/gpu/check.sh"), "--smoke", "--out", str(tmp_path / "w")]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert any(x.startswith("throughput (test_resnet") and "runner / loop = " in x for x in lines)
    assert any("cudnn deterministic, two runs: identical" in x for x in lines)
    assert any(x.startswith("--devices cpu,cpu: 2 runs recorded") for x in lines)
    assert lines[-1].endswith("OK")
