"""The layout of a data directory written by ``lsync preprocess``: its rates, folder and record file names, and
the summary its ``lsync.json`` carries.

Preprocessing writes this layout; merging, the sync filter and the evaluations read it, so it lives below the
stages that share it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
CLIPS_DIR = "clips"
CLIPS_FILE, REJECTS_FILE, SOURCES_FILE, CONFIG_FILE = "clips.jsonl", "rejects.jsonl", "sources.jsonl", "config.yaml"


def summarize_records(clips: list[dict[str, Any]], rejects: list[dict[str, Any]], sources: list[dict[str, Any]],
                      resolution: int | None) -> dict[str, Any]:
    """The ``summary`` of a data directory's ``lsync.json`` (preprocessing and ``lsync merge`` write it)."""
    seconds = sum(c["num_frames"] for c in clips) / FPS
    return {
        "sources": len(sources),
        "sources_accepted": sum(1 for s in sources if s["status"] == "accepted"),
        "clips": len(clips),
        "hours": round(seconds / 3600, 4),
        "splits": dict(Counter(c["split"] for c in clips)),
        "rejects": dict(Counter(r["reason"] for r in rejects)),
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "resolution": resolution,
    }
