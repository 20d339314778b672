"""Subject tracking (no identity switch, gap filling, segment splits, size filter) and landmark smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from lsync.face.detect import Face
from lsync.face.track import TrackSegment, box_iou, smooth_landmarks, track_faces


def make_face(cx: float, cy: float, size: float, score: float = 0.9) -> Face:
    """A synthetic face whose three points sit at fixed offsets inside its box (so they identify it)."""
    half = size / 2
    bbox = np.array([cx - half, cy - half, cx + half, cy + half], np.float32)
    offsets = np.array([[-0.3, -0.2], [0.3, -0.2], [0.0, 0.1]])
    landmarks3 = np.array([cx, cy]) + offsets * size
    return Face(bbox=bbox, score=score, landmarks3=landmarks3.astype(np.float32))


def test_box_iou():
    a = np.array([0, 0, 10, 10.0])
    assert box_iou(a, a) == 1.0
    assert box_iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20, 20, 30, 30.0])) == 0.0


def test_subject_is_kept_when_a_larger_face_appears():
    subject = [make_face(100 + 2 * t, 100, 80) for t in range(10)]
    frames = [[subject[t]] if t < 3 else [make_face(400, 300, 200), subject[t]] for t in range(10)]
    (segment,) = track_faces(frames)
    assert (segment.start, segment.end) == (0, 10)
    np.testing.assert_allclose(segment.bboxes[:, 0], [60 + 2 * t for t in range(10)])
    assert not segment.interpolated.any()


def test_initial_selection_largest_or_center():
    frames = [[make_face(50, 50, 120), make_face(320, 240, 60)] for _ in range(4)]
    (largest,) = track_faces(frames, face_select="largest")
    assert largest.bboxes[0, 0] == pytest.approx(-10)
    (centered,) = track_faces(frames, face_select="center", frame_size=(640, 480))
    assert centered.bboxes[0, 0] == pytest.approx(290)
    with pytest.raises(ValueError):
        track_faces(frames, face_select="center")
    with pytest.raises(ValueError):
        track_faces(frames, face_select="loudest")


def test_short_gap_is_interpolated_even_with_another_face_present():
    frames = []
    for t in range(12):
        faces = [make_face(100 + 10 * t, 200, 100)]
        if 4 <= t <= 6:
            faces = [make_face(500, 200, 150)]  # the subject is missed, someone else is visible
        frames.append(faces)
    (segment,) = track_faces(frames, max_gap=5)
    assert (segment.start, segment.end) == (0, 12)
    np.testing.assert_array_equal(segment.interpolated, [t in (4, 5, 6) for t in range(12)])
    expected = np.stack([make_face(100 + 10 * t, 200, 100).landmarks3 for t in range(12)])
    np.testing.assert_allclose(segment.landmarks3, expected, atol=1e-4)
    np.testing.assert_allclose(segment.bboxes[5], make_face(150, 200, 100).bbox, atol=1e-4)
    assert np.isnan(segment.scores[4:7]).all() and not np.isnan(segment.scores[:4]).any()


def test_long_gap_splits_the_track():
    frames = [[make_face(100, 100, 90)] if t < 5 or t >= 12 else [] for t in range(20)]
    first, second = track_faces(frames, max_gap=5)
    assert (first.start, first.end, len(first)) == (0, 5, 5)
    assert (second.start, second.end) == (12, 20)
    assert list(second.frames) == list(range(12, 20))
    # a gap of exactly max_gap frames is still bridged
    frames = [[make_face(100, 100, 90)] if t < 5 or t >= 10 else [] for t in range(15)]
    (only,) = track_faces(frames, max_gap=5)
    assert only.interpolated.sum() == 5


def test_after_a_long_gap_the_subject_is_preferred_where_it_was_last_seen():
    frames = [[make_face(100, 100, 90)] for _ in range(3)] + [[] for _ in range(10)]
    frames += [[make_face(500, 400, 200), make_face(104, 102, 90)] for _ in range(3)]
    first, second = track_faces(frames, max_gap=2)
    assert second.start == 13 and second.bboxes[0, 0] == pytest.approx(59)


def test_small_faces_are_ignored():
    frames = [[make_face(100, 100, 30), make_face(300, 100, 60)] for _ in range(5)]
    (segment,) = track_faces(frames, min_face=50)
    assert segment.bboxes[0, 0] == pytest.approx(270)
    assert track_faces([[make_face(100, 100, 30)]] * 5, min_face=50) == []
    assert track_faces([]) == []


def test_fast_motion_is_followed_by_centre_distance():
    frames = [[make_face(100 + 30 * t, 100, 100), make_face(100 + 30 * t, 400, 100)] for t in range(6)]
    (segment,) = track_faces(frames, face_select="largest")
    assert np.allclose(segment.bboxes[:, 1], 50)  # stayed on the upper face although IoU drops frame to frame


def _noisy_track(length=80, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None, None]
    clean = np.broadcast_to(np.array([[100.0, 100.0], [160.0, 100.0], [130.0, 140.0]]), (length, 3, 2)) + 0.5 * t
    return clean, clean + rng.normal(0, 1.5, clean.shape)


def _jitter(track: np.ndarray) -> float:
    """Mean absolute second difference over time: what frame-to-frame shaking looks like."""
    return float(np.abs(np.diff(track, n=2, axis=0))[10:-10].mean())


@pytest.mark.parametrize("method", ["gaussian", "savgol", "one_euro"])
def test_smoothing_reduces_jitter(method):
    clean, noisy = _noisy_track()
    smoothed = smooth_landmarks(noisy, method=method, strength=2.0)
    assert smoothed.shape == noisy.shape and smoothed.dtype == np.float32
    assert _jitter(smoothed) < 0.5 * _jitter(noisy), method
    if method != "one_euro":  # zero-phase filters also get closer to the true (moving) track; one-euro lags
        inner = slice(10, -10)
        assert np.abs(smoothed - clean)[inner].mean() < 0.8 * np.abs(noisy - clean)[inner].mean(), method


def test_smoothing_off_and_degenerate_inputs():
    _, noisy = _noisy_track(10)
    np.testing.assert_array_equal(smooth_landmarks(noisy, "none"), noisy.astype(np.float32))
    np.testing.assert_array_equal(smooth_landmarks(noisy, "gaussian", strength=0), noisy.astype(np.float32))
    np.testing.assert_array_equal(smooth_landmarks(noisy[:1], "savgol", 3), noisy[:1].astype(np.float32))
    assert smooth_landmarks(noisy[:4], "savgol", 5).shape == (4, 3, 2)
    still = np.ones((20, 3, 2), np.float32) * 7
    for method in ("gaussian", "savgol", "one_euro"):
        np.testing.assert_allclose(smooth_landmarks(still, method, 3), still, atol=1e-5)
    with pytest.raises(ValueError):
        smooth_landmarks(noisy, "kalman")


def test_segment_smoothed_copy():
    _, noisy = _noisy_track(30)
    segment = TrackSegment(0, 30, noisy.astype(np.float32), np.zeros((30, 4), np.float32), np.ones(30, np.float32),
                           np.zeros(30, bool))
    smoothed = segment.smoothed("gaussian", 2.0)
    assert smoothed is not segment and smoothed.start == 0 and len(smoothed) == 30
    assert not np.allclose(smoothed.landmarks3, segment.landmarks3)
