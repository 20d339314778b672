"""Smoke test of benchmarks/train_syncnet.py, run the way a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_quick_cpu_run_prints_train_and_loader_rows(tmp_path):
    out = tmp_path / "résultat" / "train syncnet.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "train_syncnet.py"), "--quick", "--device", "cpu",
         "--threads", "1", "--workers", "0", "--batch-size", "8", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == result
    assert result["schema"] == "lsync.benchmark.train_syncnet/1" and result["machine"]["device"] == "cpu"
    rows = {row["row"]: row for row in result["rows"]}
    train = rows["train_step"]
    assert train["preset"] == "tiny" and train["batch"] == 8 and train["repeats"] == 2
    assert train["samples_per_s"] > 0 and train["peak_memory_mib"] > 0 and train["parameters"] == 577504
    loader = rows["data_loader"]
    assert loader["samples_per_s"] > 0 and loader["batches"] == 10 and loader["image_size"] == 64
    assert result["skipped"] == [{"preset": "16_pixel_attn", "reason": "the released geometry runs only on CUDA"}]
