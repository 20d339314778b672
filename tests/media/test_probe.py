"""probe(): stream facts of real and generated files, and the reasons it rejects unusable ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lsync.errors import InputError
from lsync.media.audio import load_audio, write_wav
from lsync.media.ffmpeg import run_ffmpeg
from lsync.media.probe import NO_AUDIO, NO_VIDEO, UNREADABLE, MediaInputError, probe
from lsync.media.video import VideoReader, VideoWriter, mux


def _make_video(path: Path, *extra: str, seconds: float = 1.0, rate: str = "25", size: str = "64x48",
                audio: bool = True) -> Path:
    """A small test-pattern H.264 mp4 (with a 44.1 kHz stereo tone when ``audio``)."""
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
                 "-ac", "2", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, "-y", path]
    run_ffmpeg(args, what="make a test video")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _make_video(tmp_path_factory.mktemp("probe") / "clip.mp4", seconds=2.0)


@pytest.mark.media
def test_media_videos_probe_as_decord_reads_them(media_videos):
    """The facts probe reads from ffmpeg's stream listing, against decord's own demuxer and decoder."""
    import decord

    for path in media_videos:
        info = probe(path)
        assert info.has_video and info.has_audio, path.name
        frames = decord.VideoReader(str(path))
        assert info.num_frames == len(frames) == info.frames_at(info.fps) == round(info.video_duration_s * info.fps)
        assert info.fps == pytest.approx(frames.get_avg_fps(), rel=1e-4) and not info.is_vfr
        assert frames[0].shape == (info.height, info.width, 3) and info.rotation == 0
        native = decord.AudioReader(str(path), sample_rate=-1, mono=False).shape  # (channels, samples)
        # resampled to the probed rate, decord returns just as many samples: the rate is the file's
        assert decord.AudioReader(str(path), sample_rate=info.audio_sample_rate, mono=False).shape == native
        assert info.audio_channels == native[0]
        assert info.audio_duration_s == pytest.approx(native[1] / info.audio_sample_rate, abs=0.05)
        assert info.duration_s == pytest.approx(max(info.video_duration_s, info.audio_duration_s), abs=0.05)


def test_generated_clip_facts(clip):
    info = probe(clip)
    assert (info.width, info.height, info.fps, info.num_frames) == (64, 48, 25.0, 50)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.audio_sample_rate == 44100 and info.audio_channels == 2
    assert info.video_duration_s == pytest.approx(2.0)
    assert info.require(video=True, audio=True) is info


def test_rotation_swaps_display_size_and_decoder_applies_it(clip, tmp_path):
    rotated = tmp_path / "rotated.mp4"
    run_ffmpeg(["-display_rotation", "90", "-i", clip, "-c", "copy", "-y", rotated], what="rotate")
    info = probe(rotated)
    assert info.rotation == 90
    assert (info.width, info.height) == (48, 64)
    frame = next(iter(VideoReader(rotated)))
    assert frame.shape == (64, 48, 3)


def test_variable_frame_rate_is_detected(tmp_path):
    cfr = _make_video(tmp_path / "cfr.mp4", audio=False)
    # Every other frame 15 ms late: intervals alternate 55/25 ms.
    jitter = "settb=1/1000,setpts=(N/25+mod(N\\,2)*0.015)/TB"
    vfr = _make_video(tmp_path / "vfr.mp4", "-vf", jitter, "-fps_mode", "passthrough", "-enc_time_base", "1:1000",
                      audio=False)
    assert not probe(cfr).is_vfr
    assert probe(vfr).is_vfr


def test_audio_only_file(tmp_path):
    wav = write_wav(tmp_path / "speech.wav", np.zeros(8000, np.float32), 16000)
    info = probe(wav)
    assert info.has_audio and not info.has_video
    assert (info.width, info.height, info.fps, info.num_frames) == (None, None, None, None)
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("pcm_s16le", 16000, 1)
    assert info.audio_duration_s == pytest.approx(0.5)
    with pytest.raises(MediaInputError) as err:
        info.require(video=True, audio=True)
    assert err.value.reason == NO_VIDEO


def test_video_without_audio(tmp_path):
    info = probe(_make_video(tmp_path / "silent.mp4", audio=False))
    assert info.has_video and not info.has_audio
    with pytest.raises(MediaInputError) as err:
        info.require(video=True, audio=True)
    assert err.value.reason == NO_AUDIO
    assert "silent.mp4" in str(err.value)


def _truncated(clip: Path, tmp_path: Path, faststart: bool) -> Path:
    source = tmp_path / "whole.mp4"
    run_ffmpeg(["-i", clip, "-c", "copy", *(["-movflags", "+faststart"] if faststart else []), "-y", source],
               what="remux")
    cut = tmp_path / f"cut{'_faststart' if faststart else ''}.mp4"
    data = source.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize("case", ["missing", "zero_bytes", "text", "truncated", "truncated_faststart", "directory"])
def test_unusable_inputs_are_unreadable(case, clip, tmp_path):
    path = {
        "missing": lambda: tmp_path / "nope.mp4",
        "zero_bytes": lambda: _touch(tmp_path / "empty.mp4"),
        "text": lambda: _text(tmp_path / "notes.mp4"),
        "truncated": lambda: _truncated(clip, tmp_path, faststart=False),
        "truncated_faststart": lambda: _truncated(clip, tmp_path, faststart=True),
        "directory": lambda: _mkdir(tmp_path / "folder.mp4"),
    }[case]()
    with pytest.raises(MediaInputError) as err:
        probe(path)
    assert isinstance(err.value, InputError)
    assert err.value.reason == UNREADABLE
    message = str(err.value)
    assert path.name in message and "\n" not in message


def test_path_with_spaces_and_unicode(clip, tmp_path):
    folder = tmp_path / "dir with spaces ü"
    folder.mkdir()
    for name in ("vidéo 'quoted' 日本.mp4", "take 1:2.mp4", "http:like.mp4", "-dash.mp4"):
        odd = folder / name
        shutil.copy(clip, odd)
        info = probe(odd)
        assert info.num_frames == 50
        frames = VideoReader(odd, num_frames=2).read_all()
        assert frames.shape == (2, 48, 64, 3) and frames.dtype == np.uint8
        assert load_audio(odd).size > 0
    written = folder / "out: ü.mp4"
    with VideoWriter(written, fps=25, width=64, height=48, audio_path=folder / "take 1:2.mp4") as writer:
        writer.write(frames)
    assert probe(written).has_audio
    assert probe(mux(written, folder / "http:like.mp4", folder / "muxed 2:1.mp4")).num_frames == 2


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text(path: Path) -> Path:
    path.write_text("this is not a video\n" * 50)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path
