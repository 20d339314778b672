"""Inference pass 1 (faces of every frame -> one alignment matrix per source frame) and the per-frame warps.

Tracking needs every detection before it can decide anything (a subject is chosen once and followed, gaps
are bridged or split), so pass 1 decodes the whole video and keeps only boxes and three landmarks per frame.
The result, :class:`FaceGeometry`, is a small per-source-frame table (a (2, 3) matrix and flags), so the
second, streaming pass - which may visit a frame several times when the audio loops the video - never
detects or fits anything again, and a frame always gets the same alignment whichever direction it is played.

The warps work on a crop of the frame around the face: converting a whole 1080x1920 frame to float costs
more than the warp itself. The crop covers every pixel the full-frame warp would read or write (bilinear
footprint, erosion and feather reach), so the result equals the full-frame computation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from lsync.face.align import AlignmentSmoother, aligned_face_size, restore_face, similarity_transform, warp_face
from lsync.face.track import smooth_landmarks, track_faces
from lsync.face.track_file import INTERPOLATED, FaceTrack

__all__ = ["FaceGeometry", "align_crop", "analyse_faces", "detect_track", "detector_settings", "face_window",
           "geometry_from_track", "paste_face"]


@dataclass
class FaceGeometry:
    """Where the subject's face is in every source frame.

    affines: (N, 2, 3) float32 frame -> aligned-face matrices (NaN where there is no face);
    has_face: (N,) bool; interpolated: (N,) bool (bridged detection gaps); segments: tracked stretches.
    """

    num_frames: int
    frame_size: tuple[int, int]  # (width, height)
    resolution: int
    affines: np.ndarray
    has_face: np.ndarray
    interpolated: np.ndarray
    segments: list[tuple[int, int]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def frames_with_face(self) -> int:
        return int(self.has_face.sum())


def analyse_faces(
    video: str | Path,
    config: Any,
    resolution: int,
    fps: float = 25.0,
    on_frames: Callable[[int], None] | None = None,
) -> FaceGeometry:
    """Pass 1: detect (in batches), track one subject, smooth its landmarks, fit one matrix per frame.

    Args:
        video: the driving video.
        config: anything with the detector fields of :class:`~lsync.stages.preprocess.PreprocessConfig`
            (``detector``, ``detector_models``, ``detect_size``, ``max_faces``) plus ``face_select``,
            ``max_gap``, ``min_face``, ``smooth_method``, ``smooth_strength``, ``align_smooth``,
            ``detect_batch`` (:class:`~lsync.stages.infer.InferConfig`).
        resolution: aligned face size R of the model.
        on_frames: called with the number of frames just analysed (progress).
    """
    track, timings = detect_track(video, config, fps=fps, on_frames=on_frames)
    geometry = geometry_from_track(track, config, resolution, fps=fps)
    geometry.timings = {**timings, **geometry.timings}
    return geometry


def detector_settings(config: Any) -> dict[str, Any]:
    """The settings that decide a face track (the key of the track cache; smoothing is applied afterwards)."""
    return {
        "detector": config.detector, "detector_models": config.detector_models, "detect_size": config.detect_size,
        "max_faces": config.max_faces, "face_select": config.face_select, "max_gap": config.max_gap,
        "min_face": config.min_face,
    }


def detect_track(
    video: str | Path,
    config: Any,
    fps: float = 25.0,
    on_frames: Callable[[int], None] | None = None,
) -> tuple[FaceTrack, dict[str, float]]:
    """Decode every frame, detect faces in batches and track one subject: the :class:`FaceTrack` of ``video``
    and the seconds spent decoding, detecting and tracking."""
    from lsync.media.video import VideoReader
    from lsync.stages.preprocess import make_detector

    reader = VideoReader(video, fps=fps)
    per_frame_faces = []
    timings = {"decode": 0.0, "detect": 0.0}
    with make_detector(config) as detector:
        batches = reader.iter_batches(config.detect_batch)
        while True:
            tic = time.perf_counter()
            batch = next(batches, None)
            timings["decode"] += time.perf_counter() - tic
            if batch is None:
                break
            tic = time.perf_counter()
            per_frame_faces.extend(detector(batch))
            timings["detect"] += time.perf_counter() - tic
            if on_frames is not None:
                on_frames(len(batch))
    tic = time.perf_counter()
    segments = track_faces(per_frame_faces, face_select=config.face_select, frame_size=(reader.width, reader.height),
                           max_gap=config.max_gap, min_face=config.min_face)
    track = FaceTrack.from_segments(segments, len(per_frame_faces), frame_size=(reader.width, reader.height),
                                    settings=detector_settings(config))
    timings["track"] = time.perf_counter() - tic
    return track, timings


def geometry_from_track(track: FaceTrack, config: Any, resolution: int, fps: float = 25.0,
                        frame_size: tuple[int, int] | None = None) -> FaceGeometry:
    """Smooth each tracked stretch's landmarks (``smooth_method``, ``smooth_strength``) and fit one alignment
    matrix per frame, with the reference's ``smooth=True`` matrix smoother restarted per stretch
    (``align_smooth``)."""
    tic = time.perf_counter()
    num_frames = track.num_frames
    affines = np.full((num_frames, 2, 3), np.nan, np.float32)
    for start, end in track.segments():
        landmarks = smooth_landmarks(track.landmarks3[start:end], config.smooth_method, config.smooth_strength,
                                     fps=fps)
        # The reference's smooth=True alignment: a fresh smoother per tracked stretch, run in frame order.
        smoother = AlignmentSmoother(resolution) if config.align_smooth else None
        for offset, points in enumerate(landmarks):
            affines[start + offset] = smoother(points) if smoother else similarity_transform(points, resolution)
    return FaceGeometry(num_frames=num_frames, frame_size=tuple(frame_size or track.frame_size),
                        resolution=resolution, affines=affines, has_face=track.has_face.copy(),
                        interpolated=track.status == INTERPOLATED, segments=track.segments(),
                        timings={"align_fit": time.perf_counter() - tic})


# ----------------------------------------------------------------------------------------------- warps on crops
def face_window(affine: np.ndarray, resolution: int, frame_hw: tuple[int, int], margin: int = 2):
    """Rows/cols slices of the frame covering the aligned face rectangle mapped back, plus ``margin`` px.

    affine: (2, 3) frame -> face matrix. The bilinear footprint needs ``margin >= 2``; the paste-back's erosion and
    feathering reach ``~sqrt(face area) / 10`` further (see :func:`paste_face`).
    """
    face_w, face_h = aligned_face_size(resolution)
    inverse = cv2.invertAffineTransform(np.asarray(affine, np.float64))
    corners = np.array([[0, 0, 1], [face_w - 1, 0, 1], [0, face_h - 1, 1], [face_w - 1, face_h - 1, 1]], np.float64)
    mapped = corners @ inverse.T
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + margin + 1
    height, width = frame_hw
    return slice(max(0, min(y0, height)), max(0, min(y1, height))), slice(max(0, min(x0, width)), max(0, min(x1, width)))


def _shifted(affine: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """The matrix for a crop starting at (cols.start, rows.start): A [x + x0, y + y0, 1]."""
    shifted = np.asarray(affine, np.float32).copy()
    shifted[:, 2] += shifted[:, :2] @ np.array([cols.start, rows.start], np.float32)
    return shifted


def align_crop(frame: np.ndarray, affine: np.ndarray, resolution: int) -> np.ndarray:
    """The ``R x R`` aligned face of a frame (warp, then LANCZOS4 resize like :func:`lsync.face.align.align_face`).

    frame: (H, W, 3) uint8 RGB. Returns (R, R, 3) uint8.
    """
    rows, cols = face_window(affine, resolution, frame.shape[:2], margin=2)
    raw = warp_face(frame[rows, cols], _shifted(affine, rows, cols), aligned_face_size(resolution))
    return cv2.resize(raw, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)


def paste_margin(affine: np.ndarray, resolution: int) -> int:
    """Pixels around the pasted face that the paste-back's erosion and Gaussian feathering can change."""
    face_w, face_h = aligned_face_size(resolution)
    area = face_w * face_h / max(abs(float(np.linalg.det(np.asarray(affine, np.float64)[:, :2]))), 1e-12)
    return 2 * (int(math.sqrt(area)) // 20) + 8


def paste_face(frame: np.ndarray, face: torch.Tensor, affine: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """Un-warp a generated ``R x R`` face into its frame with the feathered paste-back, in place.

    Args:
        frame: (H, W, 3) uint8 RGB, modified in place and returned.
        face: (3, R, R) float in [-1, 1] (the composited model output).
        affine: (2, 3) frame -> face matrix the face was aligned with.
        weight: blend of the pasted result with the untouched frame (cross-fade at the edges of face gaps).
    """
    resolution = int(face.shape[-1])
    rows, cols = face_window(affine, resolution, frame.shape[:2], margin=paste_margin(affine, resolution))
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return frame
    crop = np.ascontiguousarray(frame[rows, cols])
    pasted = restore_face(crop, face.float().cpu(), _shifted(affine, rows, cols))
    if weight < 1.0:
        pasted = np.round(weight * pasted.astype(np.float32) + (1 - weight) * crop.astype(np.float32))
        pasted = pasted.clip(0, 255).astype(np.uint8)
    frame[rows, cols] = pasted
    return frame
