"""The face settings every stage that finds faces shares: how faces are detected, which one is followed, and how
its landmarks are smoothed over time.

One definition for ``lsync preprocess``, ``lsync infer`` and ``lsync eval sync``: their configs inherit these
fields, so the keys are the same top-level names in every stage's YAML, ``--set`` and ``lsync.json`` (``--set
min_face=40`` works everywhere), and the command-line flags come from one place
(:func:`lsync.cli_options.face_options`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal


@dataclass
class FaceConfig:
    """Detection, tracking and landmark smoothing (preprocessing, inference and evaluation)."""

    detector: Literal["mediapipe", "insightface"] = "mediapipe"
    detector_models: str | None = None  # InsightFace model pack folder (buffalo_l)
    detect_size: int = 640  # faces are found on frames scaled to this long side (landmarks on full-size crops)
    max_faces: int = 4  # faces detected per frame: more than one lets the tracker keep the subject in a crowd
    # which face is followed: largest | center | speaker | X,Y | track:N (lsync.face.select; N from --list-faces)
    face_select: str = "largest"
    max_gap: int = 5  # frames without a face that are interpolated; longer gaps split the track
    min_face: int = 32  # px (short side of the face box, full-resolution frame)
    smooth_method: Literal["gaussian", "savgol", "one_euro", "none"] = "gaussian"  # landmark smoothing over time
    smooth_strength: float = 1.0  # gaussian sigma / savgol half-window in frames
    # face_select=speaker: every face track scored against the video's own audio (lsync.face_select)
    syncnet: str | None = None  # a syncnet run, checkpoint dir or stable_syncnet.pt (syncnet_v2.model for v2)
    speaker_metric: Literal["stable", "syncnet-v2"] = "stable"
    speaker_min_conf: float | None = None  # None: the metric's default (face_select.SPEAKER_MIN_CONF)
    speaker_max_offset: int = 3  # a speaking face's best audio offset lies within this many frames of 0
    speaker_min_seconds: float = 1.0  # shorter tracks are not scored


@dataclass
class VideoFaceConfig(FaceConfig):
    """:class:`FaceConfig` plus what analysing a whole video for alignment adds (inference, ``eval sync``)."""

    detect_batch: int = 8  # frames decoded and detected at a time
    align_smooth: bool = True  # the reference's smooth=True translation smoothing of the matrices


#: Every face key (the names :func:`lsync.face.video.detector_settings` and the flags draw on).
FACE_KEYS = tuple(f.name for f in fields(VideoFaceConfig))
