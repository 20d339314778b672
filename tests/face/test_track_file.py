"""Face-track files: building from tracker segments or point arrays, round trips, and refusing another video's."""

from __future__ import annotations

import numpy as np
import pytest

from lsync.errors import InputError
from lsync.face.track import TrackSegment
from lsync.face.track_file import DETECTED, INTERPOLATED, MISSING, FaceTrack, cached_track_path, load_face_track


def _points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(50, 150, (n, 3, 2))).astype(np.float32)


def test_a_point_array_with_nan_rows_becomes_stretches_of_frames_with_a_face():
    points = _points(9)
    points[[3, 4, 8]] = np.nan
    track = FaceTrack.from_points(points)
    assert track.num_frames == 9
    assert track.status.tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 0]
    assert track.segments() == [(0, 3), (5, 8)]
    assert track.segment.tolist() == [0, 0, 0, -1, -1, 1, 1, 1, -1]
    assert track.counts() == {"missing": 3, "detected": 6, "interpolated": 0}
    np.testing.assert_array_equal(track.landmarks3[5], points[5])


@pytest.mark.parametrize("bad", [np.zeros((4, 2, 2)), np.zeros((4, 3)), np.array([["a"] * 2] * 3)])
def test_arrays_of_another_shape_are_refused_in_one_line(bad):
    with pytest.raises(InputError, match=r"shape \(frames, 3, 2\)"):
        FaceTrack.from_points(bad, source="faces.npy")


def test_infinite_points_are_refused():
    points = _points(3)
    points[1, 0, 0] = np.inf
    with pytest.raises(InputError, match="infinite"):
        FaceTrack.from_points(points)


def test_tracker_segments_keep_their_stretches_even_when_adjacent():
    def segment(start, end, interpolated):
        n = end - start
        return TrackSegment(start, end, _points(n, start), np.tile([1, 2, 30, 40], (n, 1)).astype(np.float32),
                            np.ones(n, np.float32), np.array(interpolated, bool))

    track = FaceTrack.from_segments([segment(1, 4, [0, 1, 0]), segment(4, 6, [0, 0])], 7, frame_size=(64, 48))
    assert track.status.tolist() == [MISSING, DETECTED, INTERPOLATED, DETECTED, DETECTED, DETECTED, MISSING]
    assert track.segments() == [(1, 4), (4, 6)]  # a new identity right after another one restarts smoothing
    np.testing.assert_array_equal(track.boxes[2], [1, 2, 30, 40])
    assert np.isnan(track.boxes[0]).all()


def test_a_saved_track_reads_back_identically(tmp_path):
    points = _points(6)
    points[2] = np.nan
    track = FaceTrack.from_points(points)
    track.frame_size, track.video_digest, track.settings = (320, 240), "sha256:abc", {"detector": "mediapipe"}
    path = track.save(tmp_path / "tracks é" / "talk.npz")
    loaded = load_face_track(path)
    for name in ("landmarks3", "boxes", "status", "segment"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(track, name))
    assert (loaded.frame_size, loaded.video_digest, loaded.settings) == ((320, 240), "sha256:abc",
                                                                         {"detector": "mediapipe"})
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".lsync-tmp")]


def test_plain_npy_and_single_array_npz_files_are_accepted(tmp_path):
    points = _points(5)
    np.save(tmp_path / "points.npy", points)
    np.savez(tmp_path / "points.npz", anything=points)
    for name in ("points.npy", "points.npz"):
        track = load_face_track(tmp_path / name)
        np.testing.assert_array_equal(track.landmarks3, points)
        assert track.video_digest is None and track.frame_size is None
    np.savez(tmp_path / "two.npz", a=points, b=points)
    with pytest.raises(InputError, match="2 arrays"):
        load_face_track(tmp_path / "two.npz")


def test_unreadable_and_damaged_tracks_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_face_track(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="cannot read"):
        load_face_track(tmp_path / "junk.npz")
    track = FaceTrack.from_points(_points(4))
    path = track.save(tmp_path / "t.npz")
    arrays = dict(np.load(path))
    arrays["status"] = np.array([1, 1, 7, 1], np.int8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match="damaged"):
        load_face_track(tmp_path / "bad.npz")


def test_a_track_of_another_video_is_refused():
    track = FaceTrack.from_points(_points(10))
    track.frame_size = (64, 48)
    track.check_video("v.mp4", 10, (64, 48), None, "t.npz")  # no digests: frame count and size agree
    with pytest.raises(InputError, match="10 frames but v.mp4 has 12"):
        track.check_video("v.mp4", 12, (64, 48), None, "t.npz")
    with pytest.raises(InputError, match="64x48 video"):
        track.check_video("v.mp4", 10, (48, 64), None, "t.npz")
    track.video_digest = "sha256:one"
    with pytest.raises(InputError, match="another video"):
        track.check_video("v.mp4", 10, (64, 48), "sha256:two", "t.npz")
    track.check_video("v.mp4", 11, (64, 48), "sha256:one", "t.npz")  # the same file: its own decode counts


def test_the_cache_key_follows_the_video_and_the_detector_settings(tmp_path):
    settings = {"detector": "mediapipe", "max_faces": 4}
    base = cached_track_path(tmp_path, "sha256:v1", settings)
    assert base == cached_track_path(tmp_path, "sha256:v1", dict(settings))
    assert base != cached_track_path(tmp_path, "sha256:v2", settings)
    assert base != cached_track_path(tmp_path, "sha256:v1", {**settings, "max_faces": 1})
    assert base.parent.parent == tmp_path and base.suffix == ".npz"
