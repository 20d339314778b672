"""``--face-select`` for the stages that follow a face (preprocess, infer): the rule's settings, the SyncNet scoring of
every face track against the video's own soundtrack (``speaker``), and ``lsync infer --list-faces``.

The choosing itself is :mod:`lsync.face.select`; this module (shared by two stages, so it lives below them) brings
the pieces a stage has: the config fields
(:func:`face_select_rule`, :func:`speaker_options`), a SyncNet (:func:`load_speaker_syncnet`), the video and its
audio (:func:`track_scorer`: one decoding pass aligns every scored track's faces at the SyncNet's face size, each
track is scored with :func:`lsync.sync_metrics.score_sync` against the audio under its own frames).

**What "in sync" means.** A track counts as speaking when the SyncNet's best audio offset is within
``speaker_max_offset`` frames of 0 and its confidence (LSE-C, median minus minimum of the distance-by-offset
curve) is at least ``speaker_min_conf``. The default threshold depends on the SyncNet's distance:
:data:`SPEAKER_MIN_CONF`. On StableSyncNet's ``1 - cos`` scale 0.15, measured with tiny SyncNets trained on the
demo's data (validation accuracy 0.77-0.79) on held-out two-face synthetic videos
(``benchmarks/face_select_speaker.py``): the speaking face scores 0.28-0.48, the other face 0.05-0.29 (sometimes
at offset 0), closed mouths 0.01-0.08, and a SyncNet with random weights 0.03-0.06, so neither silence nor an
untrained SyncNet passes, with a factor of about two to either side. 1.0 on the classic
SyncNet v2 scale. Among the tracks in sync the most confident one wins, so a listener who happens to score near
offset 0 does not beat the speaker; the threshold only decides when nobody is in sync.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lsync.console import get_logger
from lsync.errors import InputError, UsageError
from lsync.face.select import FaceSelect, Track, TrackScore, parse_face_select

log = get_logger(__name__)

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
#: Default ``speaker_min_conf`` per sync metric (see the module docstring).
SPEAKER_MIN_CONF = {"stable": 0.15, "syncnet-v2": 1.0}
#: Offsets searched when a track is scored (frames on each side).
SEARCH_OFFSET = 15
#: Frames aligned and prepared per block (bounded memory on long videos).
ALIGN_BLOCK = 64

__all__ = ["SPEAKER_MIN_CONF", "contact_sheet", "face_select_rule", "list_faces", "load_speaker_syncnet",
           "speaker_options", "track_scorer"]


# ----------------------------------------------------------------------------------------------- config
def face_select_rule(config: Any) -> FaceSelect:
    """The parsed ``config.face_select``; a :class:`UsageError` for a bad value or ``speaker`` without a SyncNet."""
    try:
        rule = parse_face_select(config.face_select)
    except ValueError as exc:
        raise UsageError(str(exc), "pass --face-select largest|center|speaker|X,Y|track:N") from None
    if rule.mode == "speaker" and not getattr(config, "syncnet", None):
        raise UsageError("--face-select speaker scores every face with a SyncNet, and none was given",
                         "pass --syncnet RUN_OR_CKPT (a lsync train syncnet run or stable_syncnet.pt)")
    return rule


def speaker_min_conf(config: Any) -> float:
    if config.speaker_min_conf is not None:
        return float(config.speaker_min_conf)
    return SPEAKER_MIN_CONF[config.speaker_metric]


def speaker_options(config: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`lsync.face.select.select_speaker` from a stage config."""
    return {"min_conf": speaker_min_conf(config), "max_offset": int(config.speaker_max_offset),
            "min_frames": max(16, int(round(config.speaker_min_seconds * FPS)))}


def selection_settings(config: Any) -> dict[str, Any]:
    """What besides the detector decides the chosen face (part of the face-track cache key)."""
    rule = face_select_rule(config)
    settings: dict[str, Any] = {"face_select": str(rule)}
    if rule.mode == "speaker":
        from lsync.training.checkpointing import weights_digest

        syncnet = Path(config.syncnet)
        settings.update(syncnet=weights_digest(syncnet) if syncnet.exists() else str(config.syncnet),
                        speaker_metric=config.speaker_metric, **speaker_options(config))
    return settings


def load_speaker_syncnet(config: Any):
    """The SyncNet scorer of ``config.syncnet`` (``config.speaker_metric``: ``stable`` or ``syncnet-v2``), loaded
    once per process and file version (batches of videos and preprocessing workers reuse it)."""
    syncnet = Path(config.syncnet).expanduser()
    stamp = syncnet.stat().st_mtime_ns if syncnet.exists() else None
    return _cached_scorer(str(syncnet), stamp, config.speaker_metric, getattr(config, "device", None))


@functools.lru_cache(maxsize=2)
def _cached_scorer(syncnet: str, stamp: int | None, metric: str, device_name: str | None):
    from lsync.sampling import pick_device
    from lsync.sync_metrics import load_scorer

    device, _ = pick_device(device_name)
    return load_scorer(metric, syncnet, device)


# ----------------------------------------------------------------------------------------------- scoring
def track_scorer(video: str | Path, samples: np.ndarray, scorer, config: Any,
                 on_frames: Callable[[int], None] | None = None) -> Callable[[Sequence[Track]], list[TrackScore]]:
    """A ``score_tracks`` function for :func:`lsync.face.select.select_speaker`.

    Args:
        video: the video the tracks were found in (decoded again at 25 fps, once for all tracks).
        samples: its own soundtrack, 16 kHz mono float.
        scorer: a :class:`lsync.sync_metrics.SyncScorer`.
        config: smoothing settings (``smooth_method``, ``smooth_strength``) as for the stage's own alignment.
    """

    def score_tracks(tracks: Sequence[Track]) -> list[TrackScore]:
        from lsync.sync_metrics import score_sync

        prepared = _aligned_tracks(video, tracks, scorer, config, on_frames)
        scores = []
        for track in tracks:
            audio = samples[track.start * SAMPLES_PER_FRAME: track.end * SAMPLES_PER_FRAME]
            result = score_sync(scorer, prepared[track.id], audio, SEARCH_OFFSET)
            scores.append(TrackScore(result.offset, result.lse_c, result.lse_d, result.windows))
            log.debug("track %d (frames %d-%d): offset %s, confidence %s", track.id, track.start, track.end - 1,
                      result.offset, result.lse_c)
        return scores

    return score_tracks


def _aligned_tracks(video, tracks: Sequence[Track], scorer, config: Any, on_frames) -> dict[int, np.ndarray]:
    """{track id: (frames, ...) prepared faces}: every track's faces aligned at ``scorer.face_size`` in one pass."""
    from lsync.face.align import similarity_transform
    from lsync.face.track import smooth_landmarks
    from lsync.media.video import VideoReader
    from lsync.face.video import align_crop

    size = scorer.face_size
    affines = {}
    for track in tracks:
        landmarks = smooth_landmarks(track.segment.landmarks3, config.smooth_method, config.smooth_strength, fps=FPS)
        affines[track.id] = np.stack([similarity_transform(points, size) for points in landmarks])
    blocks: dict[int, list[np.ndarray]] = {t.id: [] for t in tracks}
    prepared: dict[int, list[np.ndarray]] = {t.id: [] for t in tracks}
    last = max((t.end for t in tracks), default=0)
    for index, frame in enumerate(VideoReader(video, fps=FPS, num_frames=last)):
        for track in tracks:
            if track.start <= index < track.end:
                blocks[track.id].append(align_crop(frame, affines[track.id][index - track.start], size))
                if len(blocks[track.id]) == ALIGN_BLOCK:
                    prepared[track.id].append(scorer.prepare_faces(np.stack(blocks[track.id])))
                    blocks[track.id] = []
        if on_frames is not None:
            on_frames(1)
    for track in tracks:
        if blocks[track.id]:
            prepared[track.id].append(scorer.prepare_faces(np.stack(blocks[track.id])))
    return {tid: np.concatenate(parts) if parts else np.zeros((0,)) for tid, parts in prepared.items()}


def video_soundtrack(video: str | Path) -> np.ndarray:
    """The video's own audio at 16 kHz mono (what ``speaker`` scores the faces against)."""
    from lsync.media.audio import load_audio
    from lsync.media.probe import probe

    if not probe(video).has_audio:
        raise InputError(f"--face-select speaker scores the faces of {video} against its own soundtrack, and it has "
                         "no audio stream", "choose the face with --face-select X,Y or track:N instead")
    return load_audio(video, sample_rate=SAMPLE_RATE, mono=True)


# ----------------------------------------------------------------------------------------------- a video
def detect_selected_track(video: str | Path, config: Any, fps: float = FPS,
                          on_frames: Callable[[int], None] | None = None, scorer=None):
    """Detect every face of ``video``, track them all and keep the one ``config.face_select`` names.

    Returns ``(FaceTrack, timings)`` like :func:`lsync.face.video.detect_track`; the track's
    ``settings["face_selection"]`` is the report of :func:`lsync.face.select.select_faces` (every track, and for
    ``speaker`` every score and the choice per shot). ``scorer``: a SyncNet scorer to use instead of loading
    ``config.syncnet``.
    """
    import time

    from lsync.face.track_file import FaceTrack
    from lsync.face.video import detect_faces, detector_settings

    rule = face_select_rule(config)
    detection = detect_faces(video, config, fps=fps, on_frames=on_frames, shots=rule.multi_track)
    tic = time.perf_counter()
    selected = choose_face(video, detection.faces, detection.cuts, detection.frame_size, config,
                           lambda: video_soundtrack(video), scorer=scorer)
    track = FaceTrack.from_segments(selected.segments, len(detection.faces), frame_size=detection.frame_size,
                                    settings={**detector_settings(config), "face_selection": selected.report})
    detection.timings["track"] = time.perf_counter() - tic
    return track, detection.timings


def choose_face(video: str | Path, per_frame_faces, cuts: Sequence[int], frame_size: tuple[int, int], config: Any,
                soundtrack: Callable[[], np.ndarray], scorer=None):
    """:func:`lsync.face.select.select_faces` with the stage's settings: for ``speaker`` the SyncNet of
    ``config.syncnet`` (or ``scorer``) scores the tracks against ``soundtrack()`` (16 kHz mono); a fallback to
    the largest face is logged as a warning. A named face (``X,Y``, ``track:N``) that is not there is an error."""
    from lsync.face.select import select_faces

    rule = face_select_rule(config)
    score_tracks = None
    if rule.mode == "speaker":
        scorer = scorer or load_speaker_syncnet(config)
        score_tracks = track_scorer(video, soundtrack(), scorer, config)
    selected = select_faces(per_frame_faces, rule, frame_size, max_gap=config.max_gap, min_face=config.min_face,
                            cuts=cuts, score_tracks=score_tracks,
                            speaker_options=speaker_options(config) if rule.mode == "speaker" else None,
                            warn=lambda message: log.warning("%s: %s", video, message))
    if selected.report.get("missing"):
        count = len(selected.report["tracks"])
        what = f"no face track contains the point {rule}" if rule.mode == "point" else f"there is no {rule}"
        if "too_small" in selected.report:
            what = (f"the face named by {rule} is {selected.report['too_small']:g} px, smaller than "
                    f"min_face {config.min_face:g}")
        raise InputError(f"{video}: {what} ({count} face track{'s' * (count != 1)} found)",
                         f"see them with lsync infer --list-faces {video}")
    if rule.mode == "speaker":
        for shot in selected.report["shots"]:
            log.info("%s frames %d-%d: track %s chosen (%s)", video, shot["frames"][0], shot["frames"][1] - 1,
                     ",".join(map(str, shot["chosen"])), shot["rule"])
    return selected


# ----------------------------------------------------------------------------------------------- listing
def list_faces(video: str | Path, config: Any, sheet: str | Path | None = None) -> list[dict[str, Any]]:
    """Every face track of ``video`` (the numbering ``--face-select track:N`` uses), and a contact sheet PNG.

    Returns one summary per track (``id``, ``start``, ``end``, ``frames``, ``detected_frames``, ``mean_box``,
    ``size_px``). Every face is listed, whatever its size: the numbers do not depend on ``min_face``.
    """
    from lsync.face.select import track_all_faces
    from lsync.face.video import detect_faces

    detection = detect_faces(video, config, fps=FPS, shots=True)
    tracks = track_all_faces(detection.faces, cuts=detection.cuts, max_gap=config.max_gap)
    if sheet is not None:
        contact_sheet(video, tracks, sheet)
    return [t.summary() for t in tracks]


def contact_sheet(video: str | Path, tracks: Sequence[Track], path: str | Path, thumbs: int = 3,
                  size: int = 128) -> Path:
    """A PNG: one row per track - its number, then ``thumbs`` face crops spread over its frames (first, middle,
    last) at ``size`` px. Written atomically."""
    import cv2

    from lsync.manifest import atomic_output
    from lsync.media.video import VideoReader

    wanted: dict[int, list[tuple[int, int]]] = {}
    for row, track in enumerate(tracks):
        for frame in sorted(set(np.linspace(track.start, track.end - 1, thumbs).round().astype(int).tolist())):
            wanted.setdefault(frame, []).append((row, frame - track.start))
    label_w = 72
    sheet = np.full((max(1, len(tracks)) * (size + 8) + 8, label_w + thumbs * (size + 8) + 8, 3), 255, np.uint8)
    column = {row: 0 for row in range(len(tracks))}
    last = max(wanted, default=-1)
    if last >= 0:
        for index, frame in enumerate(VideoReader(video, fps=FPS, num_frames=last + 1)):
            for row, offset in wanted.get(index, []):
                crop = _square_crop(frame, tracks[row].segment.bboxes[offset], size)
                y, x = 8 + row * (size + 8), label_w + 8 + column[row] * (size + 8)
                sheet[y:y + size, x:x + size] = crop
                column[row] += 1
    for row, track in enumerate(tracks):
        cv2.putText(sheet, f"{track.id}", (12, 8 + row * (size + 8) + size // 2 + 12), cv2.FONT_HERSHEY_SIMPLEX,
                    1.2, (0, 0, 0), 2, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
    return path


def _square_crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The face box grown by 30 % to a square, clipped to the frame, resized to ``size``."""
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box)
    side = 1.3 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = frame.shape[:2]
    a, b = int(max(0, cx - side / 2)), int(min(w, cx + side / 2))
    c, d = int(max(0, cy - side / 2)), int(min(h, cy + side / 2))
    crop = frame[c:d, a:b] if b > a and d > c else np.zeros((size, size, 3), np.uint8)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
