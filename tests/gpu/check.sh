#!/usr/bin/env bash
# The GPU check: throughput of the runner vs a hand-written loop, data stall, deterministic reruns, --devices.
# On a GPU machine: tests/gpu/check.sh (under 8 minutes). On a CPU: tests/gpu/check.sh --smoke (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec "${PYTHON:-python}" tests/gpu/check.py "$@"
