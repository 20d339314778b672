#!/usr/bin/env bash
# GPU readiness in one short run (under 10 minutes on an H100/H200): the README's install, then released-size
# inference (random weights) on a 10 s 1080p input in fp16 and bf16, with and without --compile and
# --cache-interval 3; prints frames/s, model seconds and peak VRAM as JSON (benchmarks/gpu_infer.py).
#   bash benchmarks/gpu.sh [--video FILE] [--steps N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/lsync ] || { python3 -m venv .venv && .venv/bin/pip install -q -e .; }
exec .venv/bin/python benchmarks/gpu_infer.py "$@"
