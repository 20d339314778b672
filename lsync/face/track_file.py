"""Face-track files: the result of inference's first pass, saved so that a video is analysed only once.

Dubbing one video into many languages should not detect its face many times. A *face track* is one
subject's face in every source frame (25 fps grid) of one video: the three alignment points, the face box and
whether the face was detected, bridged by interpolation, or missing. It is written by
``lsync infer --save-faces track.npz``, kept in a cache keyed by the video's digest and the detector settings,
and read back by ``--faces FILE``. Landmark smoothing and the alignment matrices are *not* stored: they are
computed from the points on every run, so changing ``smooth_method`` needs no new detection.

``--faces`` also accepts a plain ``.npy`` / ``.npz`` array of shape (frames, 3, 2): three points per source
frame in pixel coordinates - image-left eyebrow centre, image-right eyebrow centre, nose centre - with rows of
NaN where there is no face (faces found by any other tool, e.g. LatentSync's own InsightFace landmarks).

File layout (an uncompressed ``.npz``, read with ``allow_pickle=False``): ``format`` = ``lsync-face-track``,
``version``, ``landmarks3`` (N, 3, 2) float32, ``boxes`` (N, 4) float32 ``(x0, y0, x1, y1)``, ``status`` (N,)
int8 (0 missing, 1 detected, 2 interpolated), ``segment`` (N,) int32 (the tracked stretch a frame belongs to,
-1 where missing), ``frame_size`` (2,) int64 ``(width, height)``, ``video_digest`` and ``settings`` (JSON text).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsync.errors import InputError

TRACK_FORMAT = "lsync-face-track"
TRACK_VERSION = 1

MISSING, DETECTED, INTERPOLATED = 0, 1, 2
STATUS_NAMES = {MISSING: "missing", DETECTED: "detected", INTERPOLATED: "interpolated"}

__all__ = ["DETECTED", "FaceTrack", "INTERPOLATED", "MISSING", "cached_track_path", "load_face_track"]


@dataclass
class FaceTrack:
    """One subject's face per source frame of one video.

    landmarks3: (N, 3, 2) float32 pixel (x, y) of left brow, right brow, nose; NaN where missing.
    boxes: (N, 4) float32 ``(x0, y0, x1, y1)``; NaN where missing or unknown (plain point arrays).
    status: (N,) int8 :data:`MISSING` / :data:`DETECTED` / :data:`INTERPOLATED`.
    segment: (N,) int32 tracked stretch of each frame (-1 where missing); alignment smoothing restarts per stretch.
    """

    landmarks3: np.ndarray
    boxes: np.ndarray
    status: np.ndarray
    segment: np.ndarray
    frame_size: tuple[int, int] | None = None  # (width, height) of the video it came from
    video_digest: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # detector settings that made it

    @property
    def num_frames(self) -> int:
        return len(self.status)

    @property
    def has_face(self) -> np.ndarray:
        return self.status != MISSING

    def segments(self) -> list[tuple[int, int]]:
        """``[(start, end), ...]``: maximal runs of frames of one tracked stretch, in frame order."""
        runs = []
        start = None
        for frame in range(self.num_frames + 1):
            current = self.segment[frame] if frame < self.num_frames else -1
            if start is not None and current != self.segment[start]:
                runs.append((start, frame))
                start = None
            if start is None and current >= 0:
                start = frame
        return runs

    def counts(self) -> dict[str, int]:
        return {name: int((self.status == code).sum()) for code, name in STATUS_NAMES.items()}

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_segments(cls, segments: Sequence[Any], num_frames: int, **info: Any) -> FaceTrack:
        """From :func:`lsync.face.track.track_faces` segments (``start``, ``end``, ``landmarks3``, ``bboxes``,
        ``interpolated``) of a video of ``num_frames`` frames."""
        track = cls._empty(num_frames, **info)
        for number, seg in enumerate(segments):
            frames = slice(seg.start, seg.end)
            track.landmarks3[frames] = seg.landmarks3
            track.boxes[frames] = seg.bboxes
            track.status[frames] = np.where(seg.interpolated, INTERPOLATED, DETECTED)
            track.segment[frames] = number
        return track

    @classmethod
    def from_points(cls, points: np.ndarray, source: str = "points") -> FaceTrack:
        """From a plain (N, 3, 2) array; a row with any NaN is a frame without a face."""
        points = np.asarray(points)
        if points.ndim != 3 or points.shape[1:] != (3, 2) or not np.issubdtype(points.dtype, np.number):
            raise InputError(f"{source} holds an array of shape {points.shape} ({points.dtype})",
                             "pass an array of shape (frames, 3, 2): brow, brow, nose (x, y) per source frame")
        points = points.astype(np.float32)
        missing = np.isnan(points).any(axis=(1, 2))
        if not np.isfinite(points[~missing]).all():
            raise InputError(f"{source} holds infinite coordinates", "use NaN rows for frames without a face")
        track = cls._empty(len(points))
        track.landmarks3[~missing] = points[~missing]
        track.status[~missing] = DETECTED
        # Runs of frames with a face are the stretches (a missing frame restarts the alignment smoothing).
        starts = np.flatnonzero(~missing & np.concatenate([[True], missing[:-1]]))
        track.segment[~missing] = np.searchsorted(starts, np.flatnonzero(~missing), side="right") - 1
        return track

    @classmethod
    def _empty(cls, num_frames: int, **info: Any) -> FaceTrack:
        return cls(landmarks3=np.full((num_frames, 3, 2), np.nan, np.float32),
                   boxes=np.full((num_frames, 4), np.nan, np.float32),
                   status=np.zeros(num_frames, np.int8), segment=np.full(num_frames, -1, np.int32), **info)

    # ------------------------------------------------------------------------------------------ checks
    def check_video(self, video: str | os.PathLike, num_frames: int, frame_size: tuple[int, int],
                    digest: str | None, source: str | os.PathLike) -> None:
        """Refuse a track made from another video: another digest, or (without digests) another frame count or
        frame size. ``num_frames`` is the video's frame count at 25 fps."""
        if self.video_digest is not None and digest is not None:
            if self.video_digest != digest:
                raise InputError(f"face track {source} was made from another video than {video} (digest differs)",
                                 "pass the track saved for this video, or drop --faces to detect again")
            return  # the very file it was made from (its decoded frame count is the track's)
        if self.num_frames != num_frames:
            raise InputError(f"face track {source} has {self.num_frames} frames but {video} has {num_frames} "
                             f"at 25 fps", "pass the track of this video (one row per source frame)")
        if self.frame_size is not None and tuple(self.frame_size) != tuple(frame_size):
            raise InputError(f"face track {source} was made from a {self.frame_size[0]}x{self.frame_size[1]} video "
                             f"but {video} is {frame_size[0]}x{frame_size[1]}", "pass the track of this video")

    # ------------------------------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the track atomically (temp name, then rename); returns the path."""
        from lsync.manifest import atomic_output

        path = Path(path)
        arrays = {
            "format": np.array(TRACK_FORMAT), "version": np.array(TRACK_VERSION),
            "landmarks3": self.landmarks3.astype(np.float32), "boxes": self.boxes.astype(np.float32),
            "status": self.status.astype(np.int8), "segment": self.segment.astype(np.int32),
            "frame_size": np.array(self.frame_size if self.frame_size else (0, 0), np.int64),
            "video_digest": np.array(self.video_digest or ""),
            "settings": np.array(json.dumps(self.settings, sort_keys=True)),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        return path


def load_face_track(path: str | os.PathLike) -> FaceTrack:
    """A :class:`FaceTrack` from a track file written by :meth:`FaceTrack.save`, or from a plain point array."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"face track {path} does not exist", "pass a file written by --save-faces or a .npy array")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read face track {path} ({exc})", "pass a .npz track or a .npy array") from None
    if isinstance(loaded, np.ndarray):
        return FaceTrack.from_points(loaded, source=str(path))
    with loaded:
        names = set(loaded.files)
        if "format" not in names:
            if len(names) != 1:
                raise InputError(f"{path} holds {len(names)} arrays but no lsync face track",
                                 "pass one (frames, 3, 2) array or a file written by --save-faces")
            return FaceTrack.from_points(loaded[names.pop()], source=str(path))
        return _read_track(path, {name: loaded[name] for name in names})


def _read_track(path: Path, arrays: dict[str, np.ndarray]) -> FaceTrack:
    if str(arrays["format"]) != TRACK_FORMAT or int(arrays.get("version", -1)) > TRACK_VERSION:
        raise InputError(f"{path} is not a face track this lsync can read "
                         f"(format {arrays['format']}, version {arrays.get('version')})", "upgrade lsync")
    try:
        track = FaceTrack(landmarks3=arrays["landmarks3"].astype(np.float32), boxes=arrays["boxes"].astype(np.float32),
                          status=arrays["status"].astype(np.int8), segment=arrays["segment"].astype(np.int32),
                          frame_size=tuple(int(v) for v in arrays["frame_size"]) or None,
                          video_digest=str(arrays["video_digest"]) or None,
                          settings=json.loads(str(arrays["settings"])))
    except (KeyError, ValueError) as exc:
        raise InputError(f"face track {path} is damaged ({exc})", "delete it and detect again") from None
    n = track.num_frames
    if (track.landmarks3.shape != (n, 3, 2) or track.boxes.shape != (n, 4) or track.segment.shape != (n,)
            or not np.isin(track.status, list(STATUS_NAMES)).all()
            or not np.isfinite(track.landmarks3[track.status != MISSING]).all()):
        raise InputError(f"face track {path} is damaged (inconsistent arrays)", "delete it and detect again")
    if track.frame_size == (0, 0):
        track.frame_size = None
    return track


def cached_track_path(cache_dir: str | os.PathLike, video_digest: str, settings: dict[str, Any]) -> Path:
    """Where the track of a video (by content digest) made with ``settings`` lives in a track cache."""
    from lsync.manifest import json_digest

    key = json_digest({"format": TRACK_FORMAT, "version": TRACK_VERSION, "video": video_digest,
                       "settings": settings}).split(":")[-1]
    return Path(cache_dir) / key[:2] / f"{key}.npz"
