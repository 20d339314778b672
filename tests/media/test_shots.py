"""Shot-cut detection on synthetic frame streams."""

from __future__ import annotations

import numpy as np

from lsync.media.shots import ShotDetector, shot_ranges


def moving_scene(seed: int, frames: int, size=(72, 128)) -> list[np.ndarray]:
    """A textured image panning slowly: high-frequency content but no cut."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[0], size[1] * 2, 3), dtype=np.uint8)
    base = np.repeat(np.repeat(base[::8, ::8], 8, axis=0), 8, axis=1)[: size[0]]
    return [np.ascontiguousarray(base[:, t : t + size[1]]) for t in range(frames)]


def test_cut_between_two_scenes_is_found_exactly():
    frames = moving_scene(0, 40) + moving_scene(1, 35)
    detector = ShotDetector()
    for frame in frames:
        detector.push(frame)
    assert detector.cuts() == [40]
    assert shot_ranges(len(frames), detector.cuts()) == [(0, 40), (40, 75)]


def test_no_cut_in_a_continuous_scene_or_flat_video():
    for frames in (moving_scene(2, 60), [np.full((72, 128, 3), 90, np.uint8)] * 30):
        detector = ShotDetector()
        for frame in frames:
            detector.push(frame)
        assert detector.cuts() == []


def test_cuts_closer_than_min_shot_are_merged():
    frames = moving_scene(0, 30) + moving_scene(1, 5) + moving_scene(2, 30)
    detector = ShotDetector()
    for frame in frames:
        detector.push(frame)
    assert detector.cuts() == [30]  # the 5-frame flash is not a shot of its own
