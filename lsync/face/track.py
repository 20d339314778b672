"""Follow one subject through a video and smooth its landmarks.

LatentSync picks the largest face in every frame independently, so the edited face can jump between people,
and one frame without a face aborts the run. Here the subject is chosen once (``largest`` or ``center``) and then
followed by box overlap / centre distance, so another face can never take its place. Short detection gaps are
bridged by linear interpolation; longer ones split the video into segments (the caller leaves the frames
between segments untouched). Landmarks can then be smoothed over time to remove detector jitter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import savgol_filter

from lsync.face.detect import Face

FACE_SELECT_MODES = ("largest", "center")
SMOOTHING_METHODS = ("none", "gaussian", "savgol", "one_euro")

__all__ = ["TrackSegment", "box_iou", "smooth_landmarks", "track_faces"]


@dataclass
class TrackSegment:
    """Frames ``start .. end - 1`` in which the subject is known (detected or interpolated).

    landmarks3: (T, 3, 2) float32; bboxes: (T, 4) float32 ``(x0, y0, x1, y1)``; scores: (T,) float32 detector
    scores (NaN on interpolated frames); interpolated: (T,) bool, True where the frame had no matching detection.
    """

    start: int
    end: int
    landmarks3: np.ndarray
    bboxes: np.ndarray
    scores: np.ndarray
    interpolated: np.ndarray

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def frames(self) -> range:
        return range(self.start, self.end)

    def smoothed(self, method: str = "gaussian", strength: float = 1.0, **kwargs) -> "TrackSegment":
        """A copy with :func:`smooth_landmarks` applied to ``landmarks3``."""
        return replace(self, landmarks3=smooth_landmarks(self.landmarks3, method, strength, **kwargs))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _center(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)


def _size(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def _select_initial(faces: list[Face], face_select: str, frame_size: tuple[int, int] | None) -> Face:
    if face_select == "largest":
        return max(faces, key=lambda face: face.area)
    if frame_size is None:
        raise ValueError("face_select='center' needs frame_size=(width, height)")
    frame_center = np.array(frame_size, np.float64) / 2
    return min(faces, key=lambda face: float(np.linalg.norm(_center(face.bbox) - frame_center)))


def _match(faces: list[Face], last_box: np.ndarray, min_iou: float, max_center_shift: float) -> Face | None:
    """The face continuing the subject whose last box is ``last_box``, or None.

    A candidate continues the subject when its box overlaps the last one by ``min_iou`` or its centre moved by at
    most ``max_center_shift`` times the last box size; among those the highest IoU, then the nearest centre wins.
    """
    best, best_key = None, None
    last_center, last_size = _center(last_box), max(_size(last_box), 1e-6)
    for face in faces:
        iou = box_iou(face.bbox, last_box)
        shift = float(np.linalg.norm(_center(face.bbox) - last_center)) / last_size
        if iou < min_iou and shift > max_center_shift:
            continue
        key = (iou, -shift)
        if best_key is None or key > best_key:
            best, best_key = face, key
    return best


class _SegmentBuilder:
    """Accumulates matched frames of one segment, interpolating the short gaps between them."""

    def __init__(self, frame: int, face: Face):
        self.start = frame
        self.last = frame
        self.landmarks3 = [np.asarray(face.landmarks3, np.float32)]
        self.bboxes = [np.asarray(face.bbox, np.float32)]
        self.scores = [float(face.score)]
        self.interpolated = [False]

    def add(self, frame: int, face: Face) -> None:
        gap = frame - self.last - 1
        if gap > 0:
            lm0, lm1 = self.landmarks3[-1], np.asarray(face.landmarks3, np.float32)
            box0, box1 = self.bboxes[-1], np.asarray(face.bbox, np.float32)
            for step in range(1, gap + 1):
                t = step / (gap + 1)
                self.landmarks3.append(((1 - t) * lm0 + t * lm1).astype(np.float32))
                self.bboxes.append(((1 - t) * box0 + t * box1).astype(np.float32))
                self.scores.append(float("nan"))
                self.interpolated.append(True)
        self.landmarks3.append(np.asarray(face.landmarks3, np.float32))
        self.bboxes.append(np.asarray(face.bbox, np.float32))
        self.scores.append(float(face.score))
        self.interpolated.append(False)
        self.last = frame

    def build(self) -> TrackSegment:
        return TrackSegment(
            start=self.start,
            end=self.last + 1,
            landmarks3=np.stack(self.landmarks3).astype(np.float32),
            bboxes=np.stack(self.bboxes).astype(np.float32),
            scores=np.asarray(self.scores, np.float32),
            interpolated=np.asarray(self.interpolated, bool),
        )


def track_faces(
    per_frame_faces: Sequence[Sequence[Face]],
    face_select: str = "largest",
    frame_size: tuple[int, int] | None = None,
    max_gap: int = 5,
    min_face: float = 50,
    min_iou: float = 0.3,
    max_center_shift: float = 0.5,
) -> list[TrackSegment]:
    """Follow one subject through a video.

    Args:
        per_frame_faces: for every frame, the faces a detector returned (any order).
        face_select: how the subject is chosen when there is none yet: ``largest`` face or the one nearest the
            frame ``center`` (needs ``frame_size``).
        frame_size: ``(width, height)`` of the frames.
        max_gap: longest run of frames without the subject that is bridged by interpolation; a longer run ends the
            segment, and the subject is picked again when faces reappear (preferring one where it was last seen).
        min_face: faces whose box is narrower or lower than this many pixels are ignored.
        min_iou, max_center_shift: a face continues the subject when its box overlaps the last known box by at
            least ``min_iou`` or its centre moved by at most ``max_center_shift`` x the last box size.
    Returns:
        Segments in frame order; frames outside every segment have no usable subject.
    """
    if face_select not in FACE_SELECT_MODES:
        raise ValueError(f"face_select must be one of {FACE_SELECT_MODES}, got {face_select!r}")
    segments: list[TrackSegment] = []
    current: _SegmentBuilder | None = None
    last_box: np.ndarray | None = None  # where the subject was last seen, kept across segments

    for frame, faces in enumerate(per_frame_faces):
        faces = [face for face in faces if min(face.width, face.height) >= min_face]
        if current is not None and frame - current.last - 1 > max_gap:
            segments.append(current.build())
            current = None
        if not faces:
            continue
        match = _match(faces, last_box, min_iou, max_center_shift) if last_box is not None else None
        if current is None:
            # (Re)acquire: the face where the subject was last seen if there is one, else the selection rule.
            face = match or _select_initial(faces, face_select, frame_size)
            current = _SegmentBuilder(frame, face)
        elif match is not None:
            face = match
            current.add(frame, face)
        else:
            continue  # other people only: the subject is missing in this frame
        last_box = np.asarray(face.bbox, np.float64)

    if current is not None:
        segments.append(current.build())
    return segments


# ----------------------------------------------------------------------------------------------------------------
# Temporal smoothing
# ----------------------------------------------------------------------------------------------------------------


def _one_euro(signal: np.ndarray, fps: float, min_cutoff: float, beta: float, d_cutoff: float) -> np.ndarray:
    """Causal One-Euro filter along axis 0 of a (T, D) signal (Casiez et al. 2012)."""

    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    out = np.empty_like(signal)
    out[0] = signal[0]
    derivative = np.zeros_like(signal[0])
    a_d = alpha(d_cutoff)
    for t in range(1, len(signal)):
        raw_derivative = (signal[t] - out[t - 1]) * fps
        derivative = a_d * raw_derivative + (1 - a_d) * derivative
        cutoff = min_cutoff + beta * np.abs(derivative)
        a = alpha(cutoff)
        out[t] = a * signal[t] + (1 - a) * out[t - 1]
    return out


def smooth_landmarks(
    landmarks: np.ndarray,
    method: str = "gaussian",
    strength: float = 1.0,
    fps: float = 25.0,
    beta: float = 0.05,
) -> np.ndarray:
    """Temporal smoothing of a (T, K, 2) landmark track (one segment: do not smooth across cuts).

    Methods:
        ``none``: unchanged copy.
        ``gaussian``: zero-phase Gaussian filter, sigma = ``strength`` frames (edges: nearest).
        ``savgol``: Savitzky-Golay, quadratic, window ``2 * round(strength) + 1`` frames (keeps fast motion
            better than a Gaussian of the same width).
        ``one_euro``: causal One-Euro filter with min cutoff ``1 / strength`` Hz and speed coefficient ``beta``
            (for streaming use; it lags slightly).
    Returns:
        (T, K, 2) float32.
    """
    landmarks = np.asarray(landmarks, np.float32)
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"smoothing method must be one of {SMOOTHING_METHODS}, got {method!r}")
    if method == "none" or strength <= 0 or len(landmarks) < 2:
        return landmarks.copy()
    flat = landmarks.reshape(len(landmarks), -1).astype(np.float64)
    if method == "gaussian":
        smoothed = gaussian_filter1d(flat, sigma=strength, axis=0, mode="nearest")
    elif method == "savgol":
        window = 2 * max(1, round(strength)) + 1
        if window > len(flat):
            window = len(flat) if len(flat) % 2 == 1 else len(flat) - 1
        if window <= 2:
            return landmarks.copy()
        smoothed = savgol_filter(flat, window_length=window, polyorder=2, axis=0, mode="interp")
    else:
        smoothed = _one_euro(flat, fps=fps, min_cutoff=1.0 / strength, beta=beta, d_cutoff=1.0)
    return smoothed.reshape(landmarks.shape).astype(np.float32)
