"""Smoke test of benchmarks/train_unet.py, run the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_cpu_run_prints_steps_per_second_with_and_without_pixel_losses(tmp_path):
    out = tmp_path / "train unet.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "train_unet.py"), "--quick", "--device", "cpu",
         "--threads", "1", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert result["schema"] == "lsync.benchmark.train_unet/1" and result["machine"]["device"] == "cpu"
    steps = [row for row in result["rows"] if row["row"] == "train_step"]
    assert [(row["size"], row["pixel_losses"]) for row in steps] == [("tiny", False), ("tiny", True)]
    assert steps[0]["losses"] == ["recon"] and steps[1]["losses"] == ["recon", "sync", "lpips", "trepa"]
    for row in steps:
        assert row["steps_per_s"] > 0 and row["peak_memory_mib"] > 0 and row["parameters"] == 2861732
    overfit = next(row for row in result["rows"] if row["row"] == "overfit")
    assert overfit["halved"] and overfit["steps"] <= 200 and overfit["last_loss"] <= 0.5 * overfit["first_loss"]
