"""Synthetic talking faces: file format, determinism, a mouth that MediaPipe sees following the audio,
and audio shifted by exactly the requested number of frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lsync.manifest import read_manifest
from lsync.media.audio import frame_rms, load_audio
from lsync.media.probe import probe
from lsync.media.video import VideoReader
from lsync.synth import synthesize

SECONDS = 4.0
FPS = 25


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "raw"
    synthesize(out, clips=2, seconds=SECONDS, seed=0)
    return out


@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> tuple[Path, list[int]]:
    offsets = [3, -2]
    out = tmp_path_factory.mktemp("synth_offset") / "raw"
    synthesize(out, clips=2, seconds=SECONDS, seed=5, av_offset=offsets)
    return out, offsets


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return VideoReader(path).read_all(), load_audio(path)


def _mouth_opening(path: Path) -> np.ndarray:
    """Per frame: inner-lip gap (FaceMesh landmarks 13-14) / face height (10-152); NaN where no face."""
    import mediapipe as mp  # a hard dependency: missing, it is a failure, not a skip
    values = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
        for frame in VideoReader(path):
            result = mesh.process(frame)
            if not result.multi_face_landmarks:
                values.append(np.nan)
                continue
            landmarks = result.multi_face_landmarks[0].landmark
            point = {i: np.array([landmarks[i].x * frame.shape[1], landmarks[i].y * frame.shape[0]])
                     for i in (10, 13, 14, 152)}
            values.append(np.linalg.norm(point[13] - point[14]) / np.linalg.norm(point[10] - point[152]))
    return np.array(values)


def _lagged_correlation(opening: np.ndarray, loudness: np.ndarray, lag: int) -> float:
    """Pearson r of opening[t] with loudness[t + lag] over the frames where both exist."""
    n = min(len(opening), len(loudness))
    a, b = (opening[: n - lag], loudness[lag:n]) if lag >= 0 else (opening[-lag:n], loudness[: n + lag])
    keep = ~np.isnan(a)
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def test_files_and_manifest(clips):
    manifest = read_manifest(clips, kind="raw")
    assert manifest["config"]["seed"] == 0
    files = manifest["summary"]["files"]
    assert [f["name"] for f in files] == ["synth_000.mp4", "synth_001.mp4"]
    assert sorted(p.name for p in clips.glob("*.mp4")) == ["synth_000.mp4", "synth_001.mp4"]
    for record in files:
        assert record["av_offset_frames"] == 0
        info = probe(clips / record["name"])
        assert info.has_video and info.has_audio
        assert info.fps == pytest.approx(FPS) and not info.is_vfr
        assert info.num_frames == record["num_frames"] == SECONDS * FPS
        assert info.height >= 512 and info.video_codec == "h264"
        assert info.audio_codec == "aac" and info.audio_sample_rate in (44100, 48000)
        assert info.audio_duration_s == pytest.approx(SECONDS, abs=0.03)


def test_same_seed_same_decoded_frames_and_samples(clips, tmp_path):
    again = tmp_path / "again"
    synthesize(again, clips=2, seconds=SECONDS, seed=0)
    for name in ("synth_000.mp4", "synth_001.mp4"):
        frames_a, audio_a = _decode(clips / name)
        frames_b, audio_b = _decode(again / name)
        np.testing.assert_array_equal(frames_a, frames_b)
        np.testing.assert_array_equal(audio_a, audio_b)
    # ... while the two clips of one seed differ from each other.
    frames_0, audio_0 = _decode(clips / "synth_000.mp4")
    frames_1, audio_1 = _decode(clips / "synth_001.mp4")
    assert not np.array_equal(audio_0, audio_1)
    assert not np.array_equal(frames_0, frames_1)


def test_audio_is_speech_like(clips):
    audio = load_audio(clips / "synth_000.mp4")
    loudness = frame_rms(audio, 640)
    silent = loudness < 0.05 * loudness.max()
    assert 0.05 < silent.mean() < 0.6  # pauses, but mostly speech
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    assert spectrum[(freqs > 80) & (freqs < 1000)].sum() > spectrum[freqs > 4000].sum() * 10


def test_mediapipe_sees_the_mouth_follow_the_audio(clips):
    for name in ("synth_000.mp4", "synth_001.mp4"):
        opening = _mouth_opening(clips / name)
        assert np.mean(~np.isnan(opening)) >= 0.99
        loudness = frame_rms(load_audio(clips / name), 640)
        assert _lagged_correlation(opening, loudness, 0) >= 0.8


def test_av_offset_shifts_the_audio(shifted):
    out, offsets = shifted
    records = read_manifest(out, kind="raw")["summary"]["files"]
    assert [r["av_offset_frames"] for r in records] == offsets
    for record, offset in zip(records, offsets):
        path = out / record["name"]
        opening = _mouth_opening(path)
        loudness = frame_rms(load_audio(path), 640)
        correlations = {lag: _lagged_correlation(opening, loudness, lag) for lag in range(-6, 7)}
        assert max(correlations, key=correlations.get) == offset
        assert correlations[offset] >= 0.8


# ------------------------------------------------------------------------------------------------ two faces
@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_two") / "raw"
    synthesize(out, clips=3, seconds=2.0, seed=11, size=(640, 400), faces=2, speaker=["left", "right", "none"])
    return out


def _half_openings(path: Path) -> list[np.ndarray]:
    """Mouth opening (FaceMesh 13-14 gap / 10-152 height) of the face in the left and the right half per frame."""
    import mediapipe as mp

    halves = [[], []]
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False) as mesh:
        for frame in VideoReader(path):
            width = frame.shape[1] // 2
            for side in range(2):
                crop = np.ascontiguousarray(frame[:, side * width:(side + 1) * width])
                result = mesh.process(crop)
                if not result.multi_face_landmarks:
                    halves[side].append(np.nan)
                    continue
                marks = result.multi_face_landmarks[0].landmark
                point = {i: np.array([marks[i].x * width, marks[i].y * crop.shape[0]]) for i in (10, 13, 14, 152)}
                halves[side].append(np.linalg.norm(point[13] - point[14]) / np.linalg.norm(point[10] - point[152]))
    return [np.array(h) for h in halves]


def test_two_faces_manifest_records_who_speaks_and_where_the_faces_are(two_faces):
    manifest = read_manifest(two_faces, kind="raw")
    assert manifest["config"]["faces"] == 2
    records = manifest["summary"]["files"]
    assert [(r["speaker"], r["speaker_index"]) for r in records] == [("left", 0), ("right", 1), ("none", None)]
    for record in records:
        info = probe(two_faces / record["name"])
        assert (info.width, info.height) == (640, 400) and info.has_audio
        left, right = record["faces"]
        assert (left["side"], right["side"]) == ("left", "right")
        assert 0 <= left["box"][0] < left["box"][2] <= 320 <= right["box"][0] < right["box"][2] <= 640
        assert all(0.6 <= face["scale"] <= 1.0 for face in (left, right))


def test_two_faces_each_mouth_follows_its_own_speech_and_only_the_speaker_is_heard(two_faces):
    records = read_manifest(two_faces, kind="raw")["summary"]["files"]
    for record in records:
        path = two_faces / record["name"]
        openings = _half_openings(path)
        loudness = frame_rms(load_audio(path), 640)
        assert all(np.mean(~np.isnan(o)) >= 0.95 for o in openings)  # MediaPipe finds both faces
        if record["speaker"] == "none":
            assert all(np.nanstd(o) < 0.01 for o in openings)  # closed mouths throughout
            continue
        speaking = record["speaker_index"]
        heard = _lagged_correlation(openings[speaking], loudness, 0)
        other = _lagged_correlation(openings[1 - speaking], loudness, 0)
        assert heard >= 0.8 and abs(other) < 0.5, (record["name"], heard, other)


def test_two_faces_random_speaker_and_sizes_vary_with_the_seed(tmp_path):
    synthesize(tmp_path, clips=6, seconds=0.5, seed=4, size=(320, 200), faces=2)
    records = read_manifest(tmp_path, kind="raw")["summary"]["files"]
    assert {r["speaker"] for r in records} == {"left", "right"}
    assert {r["faces"][0]["scale"] > r["faces"][1]["scale"] for r in records} == {True, False}
    with pytest.raises(ValueError, match="speaker"):
        synthesize(tmp_path / "bad", clips=1, seconds=0.5, seed=0, faces=2, speaker="middle")


def test_synth_cli_makes_two_face_clips_with_the_chosen_speaker(tmp_path):
    from lsync.cli import main

    out = tmp_path / "two"
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(out), "--clips", "1", "--seconds", "0.5", "--faces", "2", "--speaker", "right"])
    assert exit_info.value.code == 0
    (record,) = read_manifest(out, kind="raw")["summary"]["files"]
    assert record["name"] == "synth2_000.mp4" and record["speaker"] == "right" and record["speaker_index"] == 1
    info = probe(out / record["name"])
    assert (info.width, info.height) == (1024, 640)  # two 512 x 640 panels by default


def test_syllable_rate_sets_the_pace_of_the_speech():
    from lsync.synth import _syllable_plan

    def rate(low: float, high: float) -> float:
        plan = _syllable_plan(np.random.default_rng([4, 0]), 60.0, (low, high))
        durations = np.array([duration for _, duration, *_ in plan])
        return float(1.0 / durations.mean())

    fast, slow = rate(3.0, 6.0), rate(2.0, 4.0)
    assert 3.0 < fast < 6.0 and 2.0 < slow < 4.0 and slow < 0.8 * fast
    with pytest.raises(ValueError, match="syllable_rate"):
        synthesize(Path("unused"), clips=1, seconds=1.0, seed=0, syllable_rate=(4.0, 2.0))


def test_the_cli_reads_a_syllable_rate_range_and_bounds_the_jaw_drop(tmp_path):
    from click.testing import CliRunner

    from lsync.cli import cli

    bad = CliRunner().invoke(cli, ["synth", str(tmp_path / "raw"), "--syllable-rate", "fast"])
    assert bad.exit_code == 2 and "--syllable-rate" in bad.output and not (tmp_path / "raw").exists()
    from lsync.synth import JAW_DROP_LIMIT

    for drop in (0.0, JAW_DROP_LIMIT + 0.1):  # the CLI applies the synthesizer's own limit
        bad = CliRunner().invoke(cli, ["synth", str(tmp_path / "raw"), "--jaw-drop", str(drop)])
        assert bad.exit_code == 2 and "--jaw-drop" in bad.output and f"{JAW_DROP_LIMIT:.1f}" in bad.output
        assert not (tmp_path / "raw").exists()
    good = CliRunner().invoke(cli, ["-q", "synth", str(tmp_path / "raw"), "--clips", "1", "--seconds", "1",
                                    "--syllable-rate", "2-4", "--jaw-drop", "14"])
    assert good.exit_code == 0, good.output
    config = read_manifest(tmp_path / "raw", kind="raw")["config"]
    assert config["syllable_rate"] == [2.0, 4.0] and config["jaw_drop"] == 14.0


def test_jaw_drop_opens_the_lips_wider_and_moves_no_pixel_outside_the_default_mouth_region():
    from lsync.face.lip_gap import lip_gaps
    from lsync.synth import MAX_JAW_DROP, astronaut_photo, open_mouth

    photo = astronaut_photo()
    stills = [open_mouth(photo, 0.0), open_mouth(photo, 1.0), open_mouth(photo, 1.0, 2 * MAX_JAW_DROP)]
    closed, default, wide = lip_gaps(stills, static=True)
    assert closed < 0.02 < default and wide > default + 0.04  # the face mesh sees the wider opening

    def moved_box(drop: float) -> np.ndarray:  # (y0, y1, x0, x1) of the pixels that differ, open vs closed
        ys, xs = np.nonzero(np.abs(open_mouth(photo, 1.0, drop).astype(int) - open_mouth(photo, 0.0, drop)).max(2))
        return np.array([ys.min(), ys.max(), xs.min(), xs.max()])

    # The default's moving region stays inside the mouth mask (see lsync.synth); a wider drop stretches the
    # mouth inside that region instead of pushing the chin further down.
    np.testing.assert_allclose(moved_box(2 * MAX_JAW_DROP), moved_box(MAX_JAW_DROP), atol=1)
    with pytest.raises(ValueError, match="jaw_drop"):
        synthesize(Path("unused"), clips=1, seconds=1.0, seed=0, jaw_drop=40.0)
