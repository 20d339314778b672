"""Choosing one face among several (``--face-select``): parsing the rule, tracking every face without identity
switches, ``X,Y`` / ``track:N``, and the per-shot speaker choice.

The speaker tests here are unit tests of the *selection logic*: the SyncNet is replaced by a scorer with known
answers. The real SyncNet path is tested end to end in ``tests/stages/test_face_select.py`` and measured by
``benchmarks/face_select_speaker.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from lsync.face.select import (
    TrackScore,
    parse_face_select,
    select_faces,
    select_speaker,
    track_all_faces,
)

from tests.face.test_track import make_face


def test_parse_face_select():
    assert parse_face_select("largest").mode == "largest"
    assert parse_face_select(" Speaker ").mode == "speaker"
    point = parse_face_select("640, 360.5")
    assert (point.mode, point.point, str(point)) == ("point", (640.0, 360.5), "640,360.5")
    track = parse_face_select("track:2")
    assert (track.mode, track.track, str(track), track.multi_track) == ("track", 2, "track:2", True)
    assert not parse_face_select("center").multi_track
    for bad in ("loudest", "track:0", "track:x", "1,2,3", "-5,10", ""):
        with pytest.raises(ValueError):
            parse_face_select(bad)


def two_people(frames: int = 30, gap: tuple[int, int] | None = None):
    """A small face moving right on the left and a large one on the right; ``gap`` hides the small one."""
    per_frame = []
    for t in range(frames):
        faces = [make_face(600, 200, 160)]
        if gap is None or not gap[0] <= t < gap[1]:
            faces.append(make_face(100 + 3 * t, 200, 80))
        per_frame.append(faces[::-1] if t % 2 else faces)  # detector order must not matter
    return per_frame


def test_every_face_gets_its_own_track_numbered_left_to_right():
    tracks = track_all_faces(two_people(), min_face=20)
    assert [t.id for t in tracks] == [1, 2]
    left, right = tracks
    assert (left.start, left.end, right.start, right.end) == (0, 30, 0, 30)
    np.testing.assert_allclose(left.segment.bboxes[:, 0], [60 + 3 * t for t in range(30)])  # never the other face
    np.testing.assert_allclose(right.segment.bboxes[:, 0], 520)
    assert left.summary()["mean_box"] == pytest.approx([103.5, 160, 183.5, 240], abs=0.1)


def test_tracks_close_at_cuts_and_after_long_gaps_and_flicker_is_dropped():
    per_frame = two_people(gap=(10, 20))
    per_frame[25].append(make_face(400, 500, 60))  # one-frame false detection
    tracks = track_all_faces(per_frame, cuts=[15], max_gap=5, min_face=20, min_frames=5)
    spans = sorted((t.start, t.end, round(float(t.segment.bboxes[0, 0]))) for t in tracks)
    # right face: split at the cut; left face: ends at 10, reappears at 20
    assert spans == [(0, 10, 60), (0, 15, 520), (15, 30, 520), (20, 30, 120)]


def test_short_gaps_are_bridged_inside_a_track():
    tracks = track_all_faces(two_people(gap=(10, 13)), max_gap=5, min_face=20)
    left = tracks[0]
    assert (left.start, left.end) == (0, 30)
    assert left.segment.interpolated[10:13].all() and not left.segment.interpolated[:10].any()


def test_point_picks_the_track_whose_first_box_holds_it_and_follows_it_after_a_gap():
    per_frame = two_people(gap=(10, 20))
    selected = select_faces(per_frame, "110,200", (800, 400), max_gap=5, min_face=20)
    assert [(s.start, s.end) for s in selected.segments] == [(0, 10), (20, 30)]  # re-acquired where last seen
    assert selected.report["rule"] == "110,200" and len(selected.report["tracks"]) == 3
    right = select_faces(per_frame, "600,200", (800, 400), max_gap=5, min_face=20)
    assert [(s.start, s.end) for s in right.segments] == [(0, 30)]
    nowhere = select_faces(per_frame, "5,5", (800, 400), min_face=20)
    assert nowhere.segments == [] and nowhere.report["missing"]


def test_track_n_picks_that_track():
    per_frame = two_people()
    chosen = select_faces(per_frame, "track:2", (800, 400), min_face=20)
    assert len(chosen.segments) == 1 and chosen.segments[0].bboxes[0, 0] == 520
    assert chosen.report["chosen"] == [2]
    assert select_faces(per_frame, "track:3", (800, 400), min_face=20).report["missing"]


def test_largest_and_center_are_the_single_subject_tracker():
    per_frame = two_people()
    (largest,) = select_faces(per_frame, "largest", (800, 400), min_face=20).segments
    assert largest.bboxes[0, 0] == 520
    (center,) = select_faces(per_frame, "center", (200, 400), min_face=20).segments
    assert center.bboxes[0, 0] == 60


class KnownScores:
    """Scores tracks by the x of their first box: what a SyncNet would say about who is speaking."""

    def __init__(self, by_left_edge: dict[int, TrackScore]):
        self.by_left_edge = by_left_edge
        self.calls = []

    def __call__(self, tracks):
        self.calls.append([t.id for t in tracks])
        return [self.by_left_edge[round(float(t.segment.bboxes[0, 0]))] for t in tracks]


def test_speaker_is_the_confident_in_sync_track_even_when_smaller():
    tracks = track_all_faces(two_people(), min_face=20)
    scorer = KnownScores({60: TrackScore(0, 0.4, 0.3, 15), 520: TrackScore(-9, 0.2, 0.5, 15)})
    chosen, shots = select_speaker(tracks, 30, [], scorer, min_conf=0.1, max_offset=2, min_frames=16)
    assert [t.id for t in chosen] == [1]
    (shot,) = shots
    assert shot["chosen"] == [1] and shot["rule"] == "speaker" and shot["frames"] == [0, 30]
    assert {r["track"]: r["in_sync"] for r in shot["scores"]} == {1: True, 2: False}
    assert shot["scores"][0]["confidence"] == 0.4 and shot["scores"][1]["offset"] == -9


def test_speaker_falls_back_to_the_largest_face_with_a_warning_when_nobody_is_in_sync():
    tracks = track_all_faces(two_people(), min_face=20)
    warnings = []
    scorer = KnownScores({60: TrackScore(7, 0.4, 0.3, 15), 520: TrackScore(0, 0.01, 0.5, 15)})
    chosen, shots = select_speaker(tracks, 30, [], scorer, min_conf=0.1, max_offset=2, min_frames=16,
                                   warn=warnings.append)
    assert [t.id for t in chosen] == [2]  # the large right face
    assert shots[0]["rule"] == "largest" and shots[0]["fallback"] == "no track in sync"
    assert len(warnings) == 1 and "falling back to the largest face" in warnings[0]


def test_speaker_is_chosen_per_shot_and_short_tracks_are_not_scored():
    per_frame = two_people(frames=60)
    per_frame[50:] = [[make_face(600, 200, 160)] for _ in range(10)]  # the left face leaves near the end
    for t in range(40, 48):
        per_frame[t].append(make_face(350, 350, 60))  # someone passing by for 8 frames
    tracks = track_all_faces(per_frame, cuts=[30], min_face=20)
    # shot 1: the right face speaks; shot 2 (frames 30-59): the left one (its track starts at x 150)
    scorer = KnownScores({60: TrackScore(0, 0.05, 0.3, 15), 520: TrackScore(1, 0.5, 0.3, 15),
                          150: TrackScore(0, 0.6, 0.2, 5)})
    chosen, shots = select_speaker(tracks, 60, [30], scorer, min_conf=0.1, max_offset=2, min_frames=16)
    assert [s["frames"] for s in shots] == [[0, 30], [30, 60]]
    first, second = shots
    right_id = next(t.id for t in tracks if t.start == 0 and t.segment.bboxes[0, 0] == 520)
    left_late = next(t.id for t in tracks if t.start == 30 and t.segment.bboxes[0, 0] == 150)
    passer = next(t.id for t in tracks if t.start == 40)
    assert first["chosen"] == [right_id] and second["chosen"] == [left_late]
    assert [t.id for t in chosen] == [right_id, left_late]
    assert len(scorer.calls) == 1 and passer not in scorer.calls[0]  # one call (one decoding pass), long tracks
    assert next(r for r in second["scores"] if r["track"] == passer)["skipped"] == "shorter than 16 frames"


def test_select_faces_speaker_needs_a_scorer_and_reports_every_track():
    with pytest.raises(ValueError):
        select_faces(two_people(), "speaker", (800, 400), min_face=20)
    scorer = KnownScores({60: TrackScore(0, 0.4, 0.3, 15), 520: TrackScore(3, 0.1, 0.5, 15)})
    selected = select_faces(two_people(), "speaker", (800, 400), min_face=20, score_tracks=scorer,
                            speaker_options={"min_conf": 0.2, "max_offset": 2, "min_frames": 16})
    assert selected.segments[0].bboxes[0, 0] == 60
    assert selected.report["rule"] == "speaker" and len(selected.report["tracks"]) == 2


def test_small_faces_are_numbered_but_cannot_be_chosen():
    per_frame = [faces + [make_face(400, 50, 30)] for faces in two_people()]  # a 30 px face in the background
    listed = track_all_faces(per_frame)
    assert len(listed) == 3 and sorted(t.size for t in listed) == [30, 80, 160]
    small = next(t.id for t in listed if t.size == 30)
    too_small = select_faces(per_frame, f"track:{small}", (800, 400), min_face=50)
    assert too_small.segments == [] and too_small.report["missing"] and too_small.report["too_small"] == 30
    assert len(too_small.report["tracks"]) == 3  # the same numbering as --list-faces, whatever min_face
    scorer = KnownScores({60: TrackScore(0, 0.4, 0.3, 15), 520: TrackScore(3, 0.1, 0.5, 15)})
    speaker = select_faces(per_frame, "speaker", (800, 400), min_face=50, score_tracks=scorer,
                           speaker_options={"min_conf": 0.2, "max_offset": 2, "min_frames": 16})
    assert scorer.calls == [[t.id for t in listed if t.size >= 50]]  # the small face is never scored
    assert speaker.segments[0].bboxes[0, 0] == 60
