"""How open the mouth is in a frame, read from MediaPipe's face mesh: the inner-lip gap over the face height.

The gap is the distance between the inner edges of the upper and lower lip (FaceMesh landmarks 13 and 14), the
face height the distance from the top of the forehead to the chin (landmarks 10 and 152), both in pixels, so the
ratio does not depend on the frame size or on how close the face is. A closed mouth reads about 0.00-0.01, a
wide-open one about 0.1.

FaceMesh runs as MediaPipe's video solution by default (``static_image_mode=False``: a detection on the first
frame, then landmark tracking from frame to frame, a new detection whenever the track is lost), which is what a
script measuring a video with ``mp.solutions.face_mesh.FaceMesh()`` gets; ``static=True`` detects anew on every
frame.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lsync.face.detect import _native_stderr_muted

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
FOREHEAD_TOP, CHIN = 10, 152

__all__ = ["LipGapMeter", "lip_gaps"]


class LipGapMeter:
    """``meter(frame) -> gap / face height`` (NaN where FaceMesh finds no face) for RGB uint8 frames.

    A context manager: the MediaPipe graph is closed on exit. One meter per video (the video solution tracks).
    """

    def __init__(self, static: bool = False, min_detection_confidence: float = 0.5):
        import mediapipe as mp

        with _native_stderr_muted():  # MediaPipe's native start-up chatter goes straight to fd 2
            self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1,
                                                         refine_landmarks=False,
                                                         min_detection_confidence=min_detection_confidence)

    def __call__(self, frame: np.ndarray) -> float:
        height, width = frame.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(frame))
        if not result.multi_face_landmarks:
            return float("nan")
        points = result.multi_face_landmarks[0].landmark

        def pixel(index: int) -> np.ndarray:
            return np.array([points[index].x * width, points[index].y * height])

        face_height = np.linalg.norm(pixel(FOREHEAD_TOP) - pixel(CHIN))
        if face_height <= 0:
            return float("nan")
        return float(np.linalg.norm(pixel(UPPER_INNER_LIP) - pixel(LOWER_INNER_LIP)) / face_height)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> LipGapMeter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lip_gaps(frames: Iterable[np.ndarray], static: bool = False) -> np.ndarray:
    """(N,) float64 gap / face height of each frame, NaN where no face was found."""
    # MediaPipe prints native warnings on the first frames it sees, straight to fd 2.
    with LipGapMeter(static=static) as meter, _native_stderr_muted():
        return np.array([meter(frame) for frame in frames], dtype=np.float64)
