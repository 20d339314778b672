"""``lsync preprocess`` on the real talking-head videos of the media folder: clip formats and alignment quality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lsync.face.align import aligned_face_size, template_points
from lsync.face.detect import get_detector
from lsync.inspect import contact_sheet
from lsync.manifest import read_manifest, read_records
from lsync.media.probe import probe
from lsync.media.video import VideoReader
from lsync.stages.preprocess import PreprocessConfig, run

pytestmark = [pytest.mark.media, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo_data(media_videos, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    listing = root / "sources.txt"
    listing.write_text("\n".join(str(path) for path in media_videos), encoding="utf-8")
    out = root / "data"
    run(listing, out, PreprocessConfig())
    return out


def test_demo_videos_give_aligned_256px_clips(demo_data, media_videos):
    read_manifest(demo_data, kind="data")
    clips = read_records(demo_data / "clips.jsonl")
    # one talking head per video, one shot: every source is used, in clips of at most 10 s
    sources = read_records(demo_data / "sources.jsonl")
    assert [s["status"] for s in sources] == ["accepted"] * len(media_videos)
    for path in media_videos:
        made = [c for c in clips if c["source"] == str(path)]
        assert len(made) >= max(1, math.floor(probe(path).duration_s / 10)), path.name
    for clip in clips:
        video = probe(demo_data / clip["video"])
        assert (video.width, video.height, video.fps) == (256, 256, 25.0)
        audio = probe(demo_data / clip["audio"])
        assert (audio.audio_sample_rate, audio.audio_channels) == (16000, 1)
        assert abs(audio.audio_duration_s - video.num_frames / 25) <= 1 / 25


def test_aligned_faces_sit_on_the_template_and_are_level(demo_data, tmp_path):
    """Re-detected on the aligned frames, eyebrow and nose centres land on the template, eyebrows level."""
    width, height = aligned_face_size(256)
    target = template_points(256) * np.array([256 / width, 256 / height])  # the warp is resized to 256 x 256
    errors, angles = [], []
    with get_detector("mediapipe", max_faces=1) as detector:
        for clip in read_records(demo_data / "clips.jsonl"):
            for frame in list(VideoReader(demo_data / clip["video"], fps=None))[::10]:
                faces = detector.detect(frame)
                assert faces, f"no face re-detected in {clip['video']}"
                points = faces[0].landmarks3
                errors.append(np.linalg.norm(points - target, axis=1).mean())
                dx, dy = points[1] - points[0]
                angles.append(abs(math.degrees(math.atan2(dy, dx))))
    assert float(np.mean(errors)) <= 10.0, f"mean landmark distance {np.mean(errors):.2f} px"
    assert float(np.median(angles)) <= 5.0, f"median eyebrow angle {np.median(angles):.2f} deg"
    sheet = contact_sheet(demo_data, tmp_path / "sheet.png")
    assert sheet.stat().st_size > 10_000
