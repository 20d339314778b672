"""Shot-cut detection on a stream of frames, after PySceneDetect's adaptive content detector.

The content score of frame ``t`` is the mean absolute difference of its HSV pixels and those of frame
``t - 1`` (on a small copy: cuts are global events). A cut is declared where the score stands out from its
neighbourhood - ``score[t] / mean(score[t-w .. t+w] without t) >= adaptive_threshold`` - and is large in
absolute terms too (``>= min_content``). The ratio is what makes it robust to fast camera motion, which
raises every score in a window rather than one.

Only one float per frame is kept, so memory does not grow with the length of the video beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Frames are compared at this width (aspect kept); cuts are visible at any size.
ANALYSIS_WIDTH = 96


@dataclass(frozen=True)
class ShotDetectorConfig:
    adaptive_threshold: float = 3.0
    min_content: float = 15.0
    window: int = 2  # neighbours on each side used for the adaptive average
    min_shot_frames: int = 15  # no two cuts closer than this


class ShotDetector:
    """Feed frames in order with :meth:`push`; :meth:`cuts` gives the indices of frames that start a new shot."""

    def __init__(self, config: ShotDetectorConfig | None = None):
        self.config = config or ShotDetectorConfig()
        self._previous_hsv: np.ndarray | None = None
        self._scores: list[float] = []

    def push(self, frame_rgb: np.ndarray) -> None:
        """Add the next frame, ``(H, W, 3)`` uint8 RGB."""
        hsv = _small_hsv(frame_rgb)
        if self._previous_hsv is None:
            self._scores.append(0.0)
        else:
            self._scores.append(float(np.abs(hsv - self._previous_hsv).mean()))
        self._previous_hsv = hsv

    @property
    def scores(self) -> np.ndarray:
        return np.asarray(self._scores, dtype=np.float32)

    def cuts(self) -> list[int]:
        return detect_cuts(self.scores, self.config)


def detect_cuts(scores: np.ndarray, config: ShotDetectorConfig | None = None) -> list[int]:
    """Indices ``t`` where a new shot starts (frame ``t`` differs from ``t - 1``), from per-frame scores."""
    config = config or ShotDetectorConfig()
    cuts: list[int] = []
    w = config.window
    for t in range(1, len(scores)):
        lo, hi = max(1, t - w), min(len(scores), t + w + 1)
        neighbours = np.concatenate([scores[lo:t], scores[t + 1:hi]])
        average = float(neighbours.mean()) if neighbours.size else 0.0
        ratio = scores[t] / max(average, 1e-6)
        if scores[t] < config.min_content or ratio < config.adaptive_threshold:
            continue
        if cuts and t - cuts[-1] < config.min_shot_frames:
            continue
        cuts.append(t)
    return cuts


def shot_ranges(num_frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of the shots between ``cuts``."""
    bounds = [0, *[c for c in cuts if 0 < c < num_frames], num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _small_hsv(frame_rgb: np.ndarray) -> np.ndarray:
    h, w = frame_rgb.shape[:2]
    height = max(1, round(h * ANALYSIS_WIDTH / w))
    small = cv2.resize(frame_rgb, (ANALYSIS_WIDTH, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32)
