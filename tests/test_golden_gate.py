"""Golden and media tests skip when their folders are missing, and fail instead under LSYNC_REQUIRE_GOLDEN=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# one golden test and one media test, both cheap
SELECTED = ["tests/face/test_mask.py::test_mouth_mask_matches_reference_pngs",
            "tests/media/test_audio.py::test_video_file_audio_and_no_audio"]


def run_selected(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "empty").mkdir(exist_ok=True)
    environment = {**{k: v for k, v in os.environ.items() if k != "LSYNC_REQUIRE_GOLDEN"}, "PYTHONPATH": str(REPO_ROOT),
                   "LSYNC_REFERENCE_DIR": str(tmp_path / "missing reference"),
                   "LSYNC_MEDIA_DIR": str(tmp_path / "empty"), **env}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *SELECTED],
                          cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)


def test_missing_golden_and_media_folders_skip_by_default(tmp_path):
    result = run_selected(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 skipped" in result.stdout and "golden data not found" in result.stdout
    assert "demo media not found" in result.stdout


def test_missing_golden_and_media_folders_fail_when_required(tmp_path):
    result = run_selected(tmp_path, LSYNC_REQUIRE_GOLDEN="1")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "2 errors" in result.stdout and "LSYNC_REQUIRE_GOLDEN is set" in result.stdout  # fixtures fail
    assert "golden data not found" in result.stdout and "demo media not found" in result.stdout
