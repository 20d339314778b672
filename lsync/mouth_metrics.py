"""Does the mouth follow the audio? Pearson correlation of a per-frame mouth opening with the per-frame loudness.

Per video frame t the loudness is the RMS of the 640 samples of 16 kHz audio under that frame
(:func:`lsync.media.audio.frame_rms`); the opening is any per-frame series (here the face-mesh lip gap of
:mod:`lsync.face.lip_gap`). :func:`best_lag_correlation` tries lags of ``-max_lag .. max_lag`` frames and keeps the
best, so a mouth that leads or trails the sound by a frame or two still counts as following it.

Sign of the lag: ``lag = +k`` pairs the opening of frame ``t`` with the loudness of frame ``t - k`` (the mouth
moves ``k`` frames after the sound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: At least this many frames with a face must overlap for a correlation to be reported.
MIN_FRAMES = 8


@dataclass(frozen=True)
class LagCorrelation:
    r: float | None  # best Pearson r over the lags (None: too few frames, or a constant series)
    lag: int | None  # the lag that gave it
    by_lag: dict[int, float | None]  # r at every lag tried
    frames: int  # frame pairs at lag 0 with a finite opening

    def as_dict(self) -> dict:
        return {"r": _round(self.r), "lag": self.lag, "frames": self.frames,
                "by_lag": {str(k): _round(v) for k, v in self.by_lag.items()}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r of two equal-length series, over the positions where both are finite (None if undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < MIN_FRAMES:
        return None
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else None


def lagged_pair(opening: np.ndarray, loudness: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlapping parts of ``opening[t]`` and ``loudness[t - lag]``, as two equal-length arrays."""
    if lag >= 0:
        n = max(0, min(len(opening) - lag, len(loudness)))
        return opening[lag:lag + n], loudness[:n]
    n = max(0, min(len(opening), len(loudness) + lag))
    return opening[:n], loudness[-lag:-lag + n]


def best_lag_correlation(opening: np.ndarray, loudness: np.ndarray, max_lag: int = 3) -> LagCorrelation:
    """The best Pearson r of ``opening[t]`` with ``loudness[t - lag]`` over ``lag`` in ``-max_lag .. max_lag``.

    ``opening`` may hold NaN (frames without a face): those frames are left out at every lag.
    """
    opening, loudness = np.asarray(opening, np.float64), np.asarray(loudness, np.float64)
    by_lag = {lag: pearson(*lagged_pair(opening, loudness, lag)) for lag in range(-max_lag, max_lag + 1)}
    scored = {lag: r for lag, r in by_lag.items() if r is not None}
    best = max(scored, key=lambda lag: (scored[lag], -abs(lag))) if scored else None
    frames = int(np.isfinite(opening[:len(loudness)]).sum())
    return LagCorrelation(r=scored[best] if best is not None else None, lag=best, by_lag=by_lag, frames=frames)
