"""Cutting a source into clips: intervals where one tracked face is visible inside one shot, split evenly
into pieces of ``min_frames .. max_frames`` frames.

Pure functions over frame indices, so the policy is easy to test and independent of decoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    start: int  # first frame
    end: int  # one past the last frame

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PlannedClip:
    index: int  # position of the clip within its source (stable across reruns)
    start: int
    end: int
    track: int  # which face-track segment it came from


@dataclass(frozen=True)
class DroppedInterval:
    start: int
    end: int
    reason: str
    detail: str


def intersect(shots: list[tuple[int, int]], tracks: list[tuple[int, int]]) -> list[tuple[Interval, int]]:
    """Pieces where a shot and a face-track segment overlap, with the index of the track segment."""
    pieces = []
    for track_index, (t0, t1) in enumerate(tracks):
        for s0, s1 in shots:
            a, b = max(s0, t0), min(s1, t1)
            if b > a:
                pieces.append((Interval(a, b), track_index))
    return sorted(pieces, key=lambda item: item[0].start)


def split_evenly(length: int, min_frames: int, max_frames: int) -> list[int]:
    """Lengths of the pieces an interval of ``length`` frames is cut into.

    As few pieces as possible, all of nearly equal length within ``[min_frames, max_frames]``; when that is
    impossible (``min_frames > max_frames / 2`` and an awkward length) whole ``max_frames`` pieces are taken and
    the remainder dropped. An interval shorter than ``min_frames`` gives no piece.
    """
    if length < min_frames:
        return []
    count = math.ceil(length / max_frames)
    if length // count < min_frames:
        return [max_frames] * (length // max_frames)
    base, extra = divmod(length, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def plan_clips(
    shots: list[tuple[int, int]],
    tracks: list[tuple[int, int]],
    min_frames: int,
    max_frames: int,
) -> tuple[list[PlannedClip], list[DroppedInterval]]:
    """Clips with frame-exact boundaries, and the intervals that could not give one (with a reason)."""
    if not 0 < min_frames <= max_frames:
        raise ValueError(f"need 0 < min_frames <= max_frames, got {min_frames}, {max_frames}")
    clips: list[PlannedClip] = []
    dropped: list[DroppedInterval] = []
    for interval, track in intersect(shots, tracks):
        lengths = split_evenly(interval.length, min_frames, max_frames)
        if not lengths:
            dropped.append(DroppedInterval(interval.start, interval.end, "short_segment",
                                           f"{interval.length} frames between cuts or face gaps, "
                                           f"fewer than the {min_frames} a clip needs"))
            continue
        start = interval.start
        for length in lengths:
            clips.append(PlannedClip(len(clips), start, start + length, track))
            start += length
    return clips, dropped
