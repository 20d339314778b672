"""``lsync eval mouth VIDEO_OR_DIR``: does the mouth of a lip-synced video follow its driving audio?

Per output frame: the face-mesh inner-lip gap over the face height (:mod:`lsync.face.lip_gap`); per frame of the
driving audio: the RMS of its 640 samples at 16 kHz. ``r_drive`` is the best Pearson correlation of the two over
lags of ``-max_lag .. max_lag`` frames (:mod:`lsync.mouth_metrics`); ``r_source`` the same against the audio of the
source video, which is what the mouth would follow if the model copied the source's own mouth. A model that
lip-syncs has a high ``r_drive`` and a clearly lower ``r_source`` (``margin = r_drive - r_source``).

Inputs:

* an ``lsync infer`` output folder: every video its ``lsync.json`` lists, with the driving audio and the source
  video recorded there;
* a video file: driven by its own audio track (or ``--audio FILE``); ``--source FILE`` (a video or audio file)
  gives ``r_source``.

With ``--out DIR`` the rows (with the per-frame series) go to ``DIR/results.json`` and ``DIR/lsync.json`` (kind
``eval``, ``summary.evaluation = "mouth"``) is written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsync.config import config_to_dict
from lsync.console import get_logger, progress
from lsync.errors import InputError, LsyncError, UsageError
from lsync.manifest import MANIFEST_NAME, atomic_write_json, quick_file_digest, read_manifest, write_manifest

log = get_logger(__name__)

FPS = 25
RESULTS_FILE = "results.json"


@dataclass
class EvalMouthConfig:
    max_lag: int = 3  # frames tried on each side
    static: bool = False  # FaceMesh detects on every frame instead of tracking from frame to frame


@dataclass(frozen=True)
class MouthJob:
    """One video to measure, the audio that drives it, and (optionally) the source whose own audio it replaced."""

    video: Path
    driving_audio: Path
    source: Path | None = None


# ----------------------------------------------------------------------------------------------- inputs
def jobs_for(inputs: Path, audio: Path | None = None, source: Path | None = None) -> list[MouthJob]:
    """The videos under ``inputs``: an ``lsync infer`` output folder (its recorded pairs) or one video file."""
    if not inputs.exists():
        raise InputError(f"{inputs} does not exist", "pass a lip-synced video or an lsync infer output folder")
    if inputs.is_file():
        return [MouthJob(inputs, audio or inputs, source)]
    if audio is not None or source is not None:
        raise UsageError("--audio and --source are for a single video", "an lsync infer folder records both")
    if not (inputs / MANIFEST_NAME).is_file():
        raise InputError(f"{inputs} is not an lsync infer output folder (no {MANIFEST_NAME})",
                         "pass a video file, or the --out-dir of lsync infer")
    outputs = read_manifest(inputs, kind="inference")["summary"].get("outputs", {})
    jobs = [MouthJob(inputs / name, Path(entry["inputs"]["audio"]["path"]), Path(entry["inputs"]["video"]["path"]))
            for name, entry in sorted(outputs.items()) if (inputs / name).is_file()]
    if not jobs:
        raise InputError(f"{inputs} lists no video that is still there", "run lsync infer into it again")
    return jobs


# ----------------------------------------------------------------------------------------------- measuring
def measure(job: MouthJob, config: EvalMouthConfig) -> dict[str, Any]:
    """One row: face share, ``r_drive`` and ``r_source`` (with their lags) and the per-frame series."""
    from lsync.face.lip_gap import lip_gaps
    from lsync.media.audio import frame_loudness
    from lsync.media.probe import probe
    from lsync.media.video import VideoReader
    from lsync.mouth_metrics import best_lag_correlation

    probe(job.video).require(video=True, audio=False)
    gaps = lip_gaps(VideoReader(job.video, fps=FPS), static=config.static)
    if len(gaps) == 0:
        raise InputError(f"{job.video} has no decodable frames", "check that the video is complete")
    found = np.isfinite(gaps)
    drive = frame_loudness(job.driving_audio, FPS)
    drive_fit = best_lag_correlation(gaps, drive, config.max_lag)
    row: dict[str, Any] = {
        "video": str(job.video), "driving_audio": str(job.driving_audio),
        "source": str(job.source) if job.source else None,
        "frames": int(len(gaps)), "frames_with_face": int(found.sum()),
        "face_share": round(float(found.mean()), 5),
        "r_drive": drive_fit.as_dict()["r"], "lag_drive": drive_fit.lag,
        "r_source": None, "lag_source": None, "margin": None,
        "lip_gap_mean": round(float(np.nanmean(gaps)), 5) if found.any() else None,
        "lip_gap_std": round(float(np.nanstd(gaps)), 5) if found.any() else None,
    }
    if job.source is not None:
        source_fit = best_lag_correlation(gaps, frame_loudness(job.source, FPS), config.max_lag)
        row.update(r_source=source_fit.as_dict()["r"], lag_source=source_fit.lag)
        if drive_fit.r is not None and source_fit.r is not None:
            row["margin"] = round(drive_fit.r - source_fit.r, 5)
        row["by_lag_source"] = source_fit.as_dict()["by_lag"]
    row["by_lag_drive"] = drive_fit.as_dict()["by_lag"]
    row["series"] = {"lip_gap": [None if not np.isfinite(g) else round(float(g), 5) for g in gaps],
                     "driving_rms": [round(float(v), 6) for v in drive]}
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the measured rows (``face_share``, ``r_drive``, ``r_source``, ``margin``) and the worst of each."""
    measured = [r for r in rows if "error" not in r]

    def mean(key):
        values = [r[key] for r in measured if r.get(key) is not None]
        return round(float(np.mean(values)), 5) if values else None

    summary = {"videos": len(rows), "measured": len(measured), "failed": len(rows) - len(measured)}
    for key in ("face_share", "r_drive", "r_source", "margin"):
        summary[key] = mean(key)
    values = [r["r_drive"] for r in measured if r.get("r_drive") is not None]
    summary["min_r_drive"] = round(float(min(values)), 5) if values else None
    return summary


# ----------------------------------------------------------------------------------------------- the stage
def evaluate(inputs: str | Path, config: EvalMouthConfig, out_dir: str | Path | None = None,
             audio: str | Path | None = None, source: str | Path | None = None) -> dict[str, Any]:
    """Measure every video of ``inputs``; returns ``{"summary", "rows"}`` (and ``written_to`` with ``out_dir``)."""
    started = time.perf_counter()
    if config.max_lag < 0:
        raise UsageError(f"--max-lag must be >= 0, got {config.max_lag}", "use e.g. 3")
    inputs = Path(inputs)
    if out_dir is not None:
        _check_out_dir(Path(out_dir))
    jobs = jobs_for(inputs, Path(audio) if audio else None, Path(source) if source else None)
    rows = []
    with progress(transient=True) as bar:
        task = bar.add_task("mouth", total=len(jobs), unit="videos")
        for job in jobs:
            try:
                rows.append(measure(job, config))
            except LsyncError as exc:
                if len(jobs) == 1:
                    raise
                log.warning("%s: %s", job.video, exc.message)
                rows.append({"video": str(job.video), "error": exc.message})
            bar.advance(task)
    summary = summarize(rows)
    summary.update(max_lag=config.max_lag, lag_sign="+k = the mouth moves k frames after the sound",
                   elapsed_s=round(time.perf_counter() - started, 2))
    result = {"summary": summary, "rows": rows}
    if out_dir is not None:
        result["written_to"] = str(write_results(Path(out_dir), config, jobs, result))
    return result


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file", "pass a folder")
    if (out_dir / MANIFEST_NAME).is_file() and read_manifest(out_dir).get("kind") != "eval":
        raise UsageError(f"{out_dir} holds another kind of lsync output", "choose another --out folder")


def write_results(out_dir: Path, config: EvalMouthConfig, jobs: list[MouthJob], result: dict[str, Any]) -> Path:
    """``results.json`` then ``lsync.json`` (kind ``eval``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until the new results are in place
    atomic_write_json(out_dir / RESULTS_FILE, result["rows"])
    described, seen = [], set()
    for job in jobs:
        for path, kind in ((job.video, "video"), (job.driving_audio, "audio"), (job.source, "source")):
            if path is not None and path.is_file() and path.resolve() not in seen:
                seen.add(path.resolve())
                described.append({"path": str(path.resolve()), "kind": kind, "digest": quick_file_digest(path)})
    write_manifest(out_dir, "eval", config_to_dict(config), inputs=described,
                   summary={"evaluation": "mouth", **result["summary"]})
    return out_dir
