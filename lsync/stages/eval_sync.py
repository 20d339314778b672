"""``lsync eval sync VIDEO_OR_DIR --syncnet RUN_OR_CKPT``: audio-visual offset, LSE-D and LSE-C per video.

Inputs:

* a video file, or a folder of them (searched recursively): the face is detected, tracked and aligned
  (:func:`lsync.face.video.analyse_faces`, as inference does) directly at the SyncNet's face size, and
  scored against the video's own audio track; windows that contain a frame without a face are left out;
* a ``data`` directory (``lsync preprocess`` / ``lsync filter sync``): its clips are already aligned faces with
  their own wav, and are scored as they are (``--split`` picks some).

Scores come from :mod:`lsync.sync_metrics` (sign: ``+K`` = audio ``K`` frames late, as ``lsync synth
--av-offset K``). Averages over all scored videos go into the summary; with ``--out DIR`` the rows are written
to ``DIR/results.json`` and ``DIR/lsync.json`` (kind ``eval``) is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lsync.console import get_logger, progress
from lsync.errors import InputError, LsyncError
from lsync.eval_results import check_out_dir, write_results
from lsync.face.config import VideoFaceConfig
from lsync.manifest import MANIFEST_NAME, read_manifest
from lsync.sync_metrics import ALIGN_BLOCK, score_clip

log = get_logger(__name__)

FPS = 25
SAMPLE_RATE = 16000


@dataclass
class EvalSyncConfig(VideoFaceConfig):
    """How ``lsync eval sync`` scores; the face keys (raw videos only) are
    :class:`~lsync.face.config.VideoFaceConfig`'s."""

    metric: Literal["stable", "syncnet-v2"] = "stable"
    max_offset: int = 15  # frames searched on each side
    split: str | None = None  # data directories: only this split (None: all clips)
    batch_size: int = 64
    image_size: int | None = None  # StableSyncNet face size (default: the run's)
    geometry: str = "syncnet_16_pixel_attn"  # towers of a bare stable_syncnet.pt
    device: str | None = None  # None: CUDA when present
    threads: int | None = None  # torch CPU threads (None: torch's default)


# ----------------------------------------------------------------------------------------------- inputs
def is_data_dir(path: Path) -> bool:
    if not (path.is_dir() and (path / MANIFEST_NAME).is_file()):
        return False
    return read_manifest(path).get("kind") == "data"


def list_videos(path: Path) -> list[Path]:
    """A video file itself, or the video files under a folder (sorted, recursive)."""
    from lsync.data.layout import VIDEO_EXTENSIONS

    if not path.exists():
        raise InputError(f"{path} does not exist", "pass a video file, a folder of videos or a data directory")
    if path.is_file():
        return [path]
    videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not videos:
        raise InputError(f"{path} holds no video files ({', '.join(VIDEO_EXTENSIONS)})",
                         "pass a video file, a folder of videos or a data directory")
    return videos


# ----------------------------------------------------------------------------------------------- scoring
def video_faces(video: Path, scorer, config: EvalSyncConfig) -> tuple[np.ndarray, np.ndarray]:
    """Prepared faces of every frame of ``video`` at 25 fps (zeros where there is no face) and ``has_face``."""
    from lsync.media.video import VideoReader
    from lsync.face.video import align_crop, analyse_faces

    geometry = analyse_faces(video, config, scorer.face_size, fps=FPS)
    if not geometry.has_face.any():
        raise InputError(f"no face found in any of the {geometry.num_frames} frames of {video}",
                         f"pass a video that shows a face of at least {config.min_face} px")
    blank = np.zeros((scorer.face_size, scorer.face_size, 3), np.uint8)
    prepared, block = [], []
    for index, frame in enumerate(VideoReader(video, fps=FPS, num_frames=geometry.num_frames)):
        has_face = geometry.has_face[index]
        block.append(align_crop(frame, geometry.affines[index], scorer.face_size) if has_face else blank)
        if len(block) == ALIGN_BLOCK:
            prepared.append(scorer.prepare_faces(np.stack(block)))
            block = []
    if block:
        prepared.append(scorer.prepare_faces(np.stack(block)))
    frames = np.concatenate(prepared)
    return frames, geometry.has_face[:len(frames)]


def score_video(video: Path, scorer, config: EvalSyncConfig) -> dict[str, Any]:
    """One row: the sync of a raw video against its own audio track."""
    from lsync.media.audio import load_audio
    from lsync.media.probe import probe
    from lsync.sync_metrics import score_sync

    probe(video).require(video=True, audio=True)
    frames, has_face = video_faces(video, scorer, config)
    samples = load_audio(video, sample_rate=SAMPLE_RATE, mono=True)
    score = score_sync(scorer, frames, samples, config.max_offset, has_face=has_face)
    return {"video": str(video), "frames": int(len(frames)), "frames_with_face": int(has_face.sum()),
            **score.as_dict(with_curve=True)}


def summarize_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Averages over the rows that got a score (``lse_c``, ``lse_d``, ``offset``, ``abs_offset``)."""
    scored = [r for r in rows if r.get("offset") is not None]

    def mean(key, transform=float):
        return round(float(np.mean([transform(r[key]) for r in scored])), 5) if scored else None

    return {"videos": len(rows), "scored": len(scored), "failed": sum(1 for r in rows if "error" in r),
            "lse_c": mean("lse_c"), "lse_d": mean("lse_d"), "offset": mean("offset"),
            "abs_offset": mean("offset", abs),
            "in_sync_share": round(sum(r["offset"] == 0 for r in scored) / len(scored), 5) if scored else None}


# ----------------------------------------------------------------------------------------------- the stage
def evaluate(inputs: str | Path, syncnet: str | Path, config: EvalSyncConfig,
             out_dir: str | Path | None = None) -> dict[str, Any]:
    """Score every video (or data-directory clip) under ``inputs``; returns ``{"rows", "summary", ...}`` and,
    with ``out_dir``, writes ``results.json`` and the ``eval`` manifest there."""
    from lsync.data.syncnet_dataset import read_clip_records
    from lsync.sampling import pick_device
    from lsync.sync_metrics import load_scorer, set_threads

    started = time.perf_counter()
    set_threads(config.threads)
    inputs = Path(inputs)
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    device, _ = pick_device(config.device)
    from_data_dir = is_data_dir(inputs)
    records = read_clip_records(inputs, config.split) if from_data_dir else None
    videos = None if from_data_dir else list_videos(inputs)
    scorer = load_scorer(config.metric, str(syncnet), device, config.batch_size, config.image_size, config.geometry)
    rows = []
    items = records if from_data_dir else videos
    with progress(transient=True) as bar:
        task = bar.add_task("sync", total=len(items), unit="videos")
        for item in items:
            try:
                if from_data_dir:
                    score = score_clip(inputs, item, scorer, config.max_offset)
                    rows.append({"video": item["video"], "id": item["id"], "split": item.get("split"),
                                 "frames": int(item["num_frames"]), **score.as_dict(with_curve=True)})
                else:
                    rows.append(score_video(item, scorer, config))
            except LsyncError as exc:
                if len(items) == 1:
                    raise
                log.warning("%s: %s", item if not from_data_dir else item["id"], exc.message)
                rows.append({"video": str(item) if not from_data_dir else item["video"], "error": exc.message})
            bar.advance(task)
    summary = summarize_rows(rows)
    if summary["scored"] == 0 and len(rows) > 1:
        raise InputError(f"none of the {len(rows)} videos under {inputs} could be scored ({rows[0]['error']})",
                         "pass videos with a visible face and an audio track")
    summary.update(metric=config.metric, distance=scorer.distance_name, model=getattr(scorer, "source", str(syncnet)),
                   max_offset=config.max_offset, offset_sign="+K = audio K frames late (lsync synth --av-offset K)",
                   elapsed_s=round(time.perf_counter() - started, 2))
    result = {"summary": summary, "rows": rows}
    if out_dir is not None:
        result["written_to"] = str(write_results(Path(out_dir), "sync", config, inputs, syncnet, result,
                                                 from_data_dir, videos))
    return result
