"""Clip planning: frame-exact pieces inside shots and face tracks."""

from __future__ import annotations

import pytest

from lsync.data.clip_plan import intersect, plan_clips, split_evenly


@pytest.mark.parametrize(
    "length, expected",
    [
        (124, []),  # shorter than 5 s
        (125, [125]),
        (250, [250]),
        (251, [126, 125]),  # 10.04 s -> two ~5 s clips, not 10 s + a dropped 1 frame
        (500, [250, 250]),
        (620, [207, 207, 206]),
    ],
)
def test_split_evenly_at_25fps_5_to_10s(length, expected):
    pieces = split_evenly(length, 125, 250)
    assert pieces == expected
    assert sum(pieces) == (length if pieces else 0)
    assert all(125 <= p <= 250 for p in pieces)


def test_split_when_min_is_more_than_half_max():
    # 7-10 s clips: 16 s cannot be split into two >= 7 s pieces of <= 10 s? it can (8 + 8).
    assert split_evenly(400, 175, 250) == [200, 200]
    # 11 s: one piece is too long, two are too short -> one 10 s piece, 1 s dropped
    assert split_evenly(275, 175, 250) == [250]


def test_plan_respects_cuts_and_face_gaps():
    shots = [(0, 300), (300, 700)]
    tracks = [(0, 280), (290, 700)]  # the face is lost for 10 frames
    clips, dropped = plan_clips(shots, tracks, 125, 250)
    spans = [(c.start, c.end) for c in clips]
    assert spans == [(0, 140), (140, 280), (300, 500), (500, 700)]
    assert [c.index for c in clips] == [0, 1, 2, 3] and [c.track for c in clips] == [0, 0, 1, 1]
    assert [(d.start, d.end, d.reason) for d in dropped] == [(290, 300, "short_segment")]
    for clip in clips:  # no clip spans a cut
        assert not any(clip.start < cut < clip.end for cut in (300,))


def test_intersect_orders_by_start():
    pieces = intersect([(0, 10), (10, 20)], [(5, 15)])
    assert [(p.start, p.end, t) for p, t in pieces] == [(5, 10, 0), (10, 15, 0)]


def test_invalid_bounds():
    with pytest.raises(ValueError):
        plan_clips([(0, 10)], [(0, 10)], 10, 5)
