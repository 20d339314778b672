"""Which face to lip-sync when there are several: every face tracked, then one chosen (``--face-select``).

:func:`lsync.face.track.track_faces` follows *one* subject that it picks on the first frame (``largest`` or
``center``). The other rules need to see every face first:

* ``X,Y`` - the track whose box contains pixel ``(X, Y)`` in the first frame where that track appears;
* ``track:N`` - track ``N`` as listed by ``lsync infer --list-faces VIDEO`` (:func:`track_all_faces`, numbered
  from 1 in order of appearance, left to right);
* ``speaker`` - in every shot, the track whose lips are in sync with the video's own soundtrack (the scoring is
  injected: :func:`select_speaker` takes a function that returns a SyncNet score per track piece, see
  :mod:`lsync.face.speaker`); when no track is confidently in sync, the shot falls back to its largest track.

Identity never switches inside a track: faces are linked frame to frame by box overlap / centre distance (the
criterion of :func:`~lsync.face.track.track_faces`), two faces can never share a track, and every track ends at a
shot cut. Once a track is chosen by ``X,Y`` or ``track:N``, later tracks that start where it was last seen
(after a gap longer than ``max_gap``) continue it, like the single-subject tracker re-acquires its subject.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lsync.face.detect import Face
from lsync.face.track import FACE_SELECT_MODES, TrackSegment, _SegmentBuilder, _center, _size, box_iou, track_faces

__all__ = ["FaceSelect", "SelectedFaces", "TrackScore", "Track", "parse_face_select", "select_faces",
           "select_speaker", "track_all_faces"]

#: Face-select rules that need every face tracked (the others follow one subject from the first frame).
MULTI_TRACK_MODES = ("speaker", "point", "track")
FACE_SELECT_HELP = "largest, center, speaker, X,Y (a pixel of the face) or track:N (from --list-faces)"


# ----------------------------------------------------------------------------------------------- the rule
@dataclass(frozen=True)
class FaceSelect:
    """A parsed ``--face-select`` value: ``mode`` plus the point (``X,Y``) or the track number (``track:N``)."""

    mode: str  # largest | center | speaker | point | track
    point: tuple[float, float] | None = None
    track: int | None = None

    @property
    def multi_track(self) -> bool:
        return self.mode in MULTI_TRACK_MODES

    def __str__(self) -> str:
        if self.mode == "point":
            return f"{self.point[0]:g},{self.point[1]:g}"
        if self.mode == "track":
            return f"track:{self.track}"
        return self.mode


_POINT = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*")
_TRACK = re.compile(r"\s*track\s*:\s*(\d+)\s*", re.IGNORECASE)


def parse_face_select(text: str | FaceSelect) -> FaceSelect:
    """``largest`` / ``center`` / ``speaker`` / ``X,Y`` / ``track:N`` -> :class:`FaceSelect`; ValueError otherwise."""
    if isinstance(text, FaceSelect):
        return text
    value = str(text).strip()
    if value.lower() in (*FACE_SELECT_MODES, "speaker"):
        return FaceSelect(value.lower())
    if match := _POINT.fullmatch(value):
        x, y = float(match[1]), float(match[2])
        if x < 0 or y < 0:
            raise ValueError(f"face_select point {value!r} lies outside the frame (negative pixel)")
        return FaceSelect("point", point=(x, y))
    if match := _TRACK.fullmatch(value):
        if int(match[1]) < 1:
            raise ValueError(f"face_select {value!r}: tracks are numbered from 1 (lsync infer --list-faces)")
        return FaceSelect("track", track=int(match[1]))
    raise ValueError(f"face_select {value!r} is not one of {FACE_SELECT_HELP}")


# ----------------------------------------------------------------------------------------------- tracking
@dataclass
class Track:
    """One face followed through one shot: ``id`` (1-based, the ``track:N`` number) and its frames."""

    id: int
    segment: TrackSegment
    start: int = field(init=False)  # first frame
    end: int = field(init=False)  # one past the last (a half-open range, as slices)

    def __post_init__(self) -> None:
        self.start, self.end = self.segment.start, self.segment.end

    @property
    def size(self) -> float:
        """Median short side of the face box (px): what ``min_face`` is compared with."""
        boxes = self.segment.bboxes
        return float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))

    @property
    def mean_area(self) -> float:
        boxes = self.segment.bboxes
        return float(np.mean((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))

    def summary(self) -> dict[str, Any]:
        """What ``--list-faces`` prints and ``lsync.json`` records."""
        detected = int((~self.segment.interpolated).sum())  # the other frames were interpolated over a gap
        mean_box = self.segment.bboxes.mean(axis=0)
        return {"id": self.id, "start": self.start, "end": self.end, "frames": len(self.segment),
                "detected_frames": detected, "mean_box": [round(float(v), 1) for v in mean_box],
                "size_px": round(self.size, 1)}


def track_all_faces(
    per_frame_faces: Sequence[Sequence[Face]],
    cuts: Sequence[int] = (),
    max_gap: int = 5,
    min_face: float = 0,
    min_frames: int = 5,
    min_iou: float = 0.3,
    max_center_shift: float = 0.5,
) -> list[Track]:
    """Every face of a video as tracks.

    Per frame the detections are linked to the open tracks greedily, best (IoU, -centre shift) pair first, each
    track and each face at most once; a face linked to no track opens a new one. A track not seen for more than
    ``max_gap`` frames is closed (shorter gaps are interpolated), and every track is closed at a shot cut.

    Args:
        per_frame_faces: the faces of every frame (any order).
        cuts: frames that start a new shot.
        min_face: faces narrower or lower than this many pixels are ignored (the stages track every face, so that
            the numbering of ``--list-faces`` does not depend on ``--min-face``, and filter whole tracks later).
        min_frames: shorter tracks (detector flicker) are dropped before numbering.
    Returns:
        tracks numbered from 1 in order of their first frame, then left to right.
    """
    cut_set = set(int(c) for c in cuts)
    open_tracks: list[_SegmentBuilder] = []
    last_boxes: list[np.ndarray] = []
    finished: list[TrackSegment] = []
    for frame, faces in enumerate(per_frame_faces):
        if frame in cut_set:
            finished += [t.build() for t in open_tracks]
            open_tracks, last_boxes = [], []
        keep = [i for i, t in enumerate(open_tracks) if frame - t.last - 1 <= max_gap]
        finished += [t.build() for i, t in enumerate(open_tracks) if i not in keep]
        open_tracks, last_boxes = [open_tracks[i] for i in keep], [last_boxes[i] for i in keep]
        faces = [face for face in faces if min(face.width, face.height) >= min_face]
        pairs = []
        for t, box in enumerate(last_boxes):
            center, size = _center(box), max(_size(box), 1e-6)
            for f, face in enumerate(faces):
                iou = box_iou(face.bbox, box)
                shift = float(np.linalg.norm(_center(face.bbox) - center)) / size
                if iou >= min_iou or shift <= max_center_shift:
                    pairs.append((iou, -shift, t, f))
        used_tracks, used_faces = set(), set()
        for _, _, t, f in sorted(pairs, reverse=True):
            if t in used_tracks or f in used_faces:
                continue
            used_tracks.add(t)
            used_faces.add(f)
            open_tracks[t].add(frame, faces[f])
            last_boxes[t] = np.asarray(faces[f].bbox, np.float64)
        for f, face in enumerate(faces):
            if f not in used_faces:
                open_tracks.append(_SegmentBuilder(frame, face))
                last_boxes.append(np.asarray(face.bbox, np.float64))
    finished += [t.build() for t in open_tracks]
    finished = [s for s in finished if len(s) >= min_frames]
    finished.sort(key=lambda s: (s.start, float(s.bboxes[0, 0] + s.bboxes[0, 2])))
    return [Track(id=number, segment=segment) for number, segment in enumerate(finished, start=1)]


# ----------------------------------------------------------------------------------------------- choosing
@dataclass
class TrackScore:
    """The sync of one track piece against the video's own audio (from a SyncNet, see :mod:`lsync.face.speaker`)."""

    offset: int | None
    confidence: float | None  # LSE-C: median - min of the distance-by-offset curve
    distance: float | None  # LSE-D: the distance at the best offset
    windows: int


@dataclass
class SelectedFaces:
    """The frames of the chosen face (segments for :meth:`lsync.face.track_file.FaceTrack.from_segments`) and how
    they were chosen (``report``, recorded in ``lsync.json``)."""

    segments: list[TrackSegment]
    report: dict[str, Any]


Scorer = Callable[[Sequence[Track]], list[TrackScore]]


def select_faces(
    per_frame_faces: Sequence[Sequence[Face]],
    face_select: str | FaceSelect,
    frame_size: tuple[int, int],
    max_gap: int = 5,
    min_face: float = 50,
    cuts: Sequence[int] = (),
    score_tracks: Scorer | None = None,
    speaker_options: dict[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> SelectedFaces:
    """The segments of the face ``face_select`` names.

    ``largest`` and ``center`` are :func:`~lsync.face.track.track_faces` unchanged. The other rules track every
    face (:func:`track_all_faces`, numbered whatever their size); only tracks whose median face size reaches
    ``min_face`` can be chosen. ``speaker`` needs ``score_tracks`` (track pieces -> :class:`TrackScore`) and
    takes ``speaker_options`` (``min_conf``, ``max_offset``, ``min_frames``, see :func:`select_speaker`).
    A named track that is not there (or too small) gives an empty choice with ``report["missing"]`` (and
    ``report["too_small"]``, its size).
    """
    rule = parse_face_select(face_select)
    if not rule.multi_track:
        segments = track_faces(per_frame_faces, face_select=rule.mode, frame_size=frame_size, max_gap=max_gap,
                               min_face=min_face)
        return SelectedFaces(segments, {"rule": rule.mode})
    tracks = track_all_faces(per_frame_faces, cuts=cuts, max_gap=max_gap)
    selectable = [t for t in tracks if t.size >= min_face]
    listed = [t.summary() for t in tracks]
    if rule.mode == "speaker":
        if score_tracks is None:
            raise ValueError("face_select='speaker' needs a SyncNet scorer (score_tracks)")
        chosen, shots = select_speaker(selectable, len(per_frame_faces), cuts, score_tracks, warn=warn,
                                       **(speaker_options or {}))
        report = {"rule": "speaker", "tracks": listed, "shots": shots}
    else:
        first = _named_track(tracks, rule)
        chosen = _with_continuations(first, selectable) if first is not None and first.size >= min_face else []
        report = {"rule": str(rule), "tracks": listed, "chosen": [t.id for t in chosen]}
        if first is None:
            report["missing"] = True
        elif not chosen:
            report.update(missing=True, too_small=round(first.size, 1))
    return SelectedFaces([t.segment for t in sorted(chosen, key=lambda t: t.start)], report)


def _named_track(tracks: Sequence[Track], rule: FaceSelect) -> Track | None:
    if rule.mode == "track":
        return next((t for t in tracks if t.id == rule.track), None)
    x, y = rule.point
    for track in tracks:  # in order of appearance: the first track that holds the point where it appears
        x0, y0, x1, y1 = track.segment.bboxes[0]
        if x0 <= x <= x1 and y0 <= y <= y1:
            return track
    return None


def _with_continuations(first: Track, tracks: Sequence[Track], min_iou: float = 0.3,
                        max_center_shift: float = 0.5) -> list[Track]:
    """``first`` plus the later tracks that start where the chain was last seen (the subject re-acquired after a
    gap or a cut, as :func:`~lsync.face.track.track_faces` does); tracks overlapping the chain in time never join."""
    chain = [first]
    for track in sorted(tracks, key=lambda t: t.start):
        if track.start < chain[-1].end:
            continue
        last_box = chain[-1].segment.bboxes[-1].astype(np.float64)
        box = track.segment.bboxes[0]
        shift = float(np.linalg.norm(_center(box) - _center(last_box))) / max(_size(last_box), 1e-6)
        if box_iou(box, last_box) >= min_iou or shift <= max_center_shift:
            chain.append(track)
    return chain


def select_speaker(
    tracks: Sequence[Track],
    num_frames: int,
    cuts: Sequence[int],
    score_tracks: Scorer,
    min_conf: float = 0.0,
    max_offset: int = 3,
    min_frames: int = 25,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[Track], list[dict[str, Any]]]:
    """Per shot, the track in sync with the soundtrack.

    Every track of at least ``min_frames`` frames is scored (one call of ``score_tracks`` with all of them). A
    track is *in sync* when its best offset is within ``max_offset`` frames of 0 and its confidence is at least
    ``min_conf``; the in-sync track with the highest confidence wins its shot. A shot without one falls back to
    its largest track (mean box area), with a warning.

    Returns:
        the chosen tracks and one report per shot with frames, the rule used and every track's score.
    """
    from lsync.media.shots import shot_ranges

    scored = [t for t in tracks if len(t.segment) >= min_frames]
    scores = dict(zip((t.id for t in scored), score_tracks(scored))) if scored else {}
    chosen, shots = [], []
    for start, end in shot_ranges(num_frames, list(cuts)):
        in_shot = [t for t in tracks if start <= t.start < end]
        if not in_shot:
            continue
        rows = []
        for track in in_shot:
            score = scores.get(track.id)
            in_sync = (score is not None and score.offset is not None and abs(score.offset) <= max_offset
                       and score.confidence >= min_conf)
            rows.append({"track": track.id, "frames": len(track.segment),
                         **({"offset": score.offset, "confidence": _round(score.confidence),
                             "distance": _round(score.distance), "windows": score.windows} if score is not None
                            else {"skipped": f"shorter than {min_frames} frames"}),
                         "in_sync": bool(in_sync)})
        in_sync = sorted((t for t in in_shot if next(r for r in rows if r["track"] == t.id)["in_sync"]),
                         key=lambda t: -scores[t.id].confidence)
        if in_sync:
            # The most confident track, then the other in-sync tracks beside it in time (the speaker again after
            # a gap the tracker could not bridge), never two at once.
            picked = []
            for track in in_sync:
                if all(track.end <= p.start or track.start >= p.end for p in picked):
                    picked.append(track)
            rule = "speaker"
        else:
            largest = max(in_shot, key=lambda t: t.mean_area)
            picked = _with_continuations(largest, [t for t in in_shot if t.start >= largest.end])
            rule = "largest"
            if warn is not None:
                warn(f"frames {start}-{end - 1}: no face is in sync with the soundtrack (confidence >= {min_conf:g} "
                     f"within {max_offset} frames of offset 0); falling back to the largest face, track {largest.id}")
        chosen += picked
        shots.append({"frames": [start, end], "chosen": sorted(t.id for t in picked), "rule": rule,
                      **({"fallback": "no track in sync"} if rule == "largest" else {}), "scores": rows})
    return chosen, shots


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)
