"""Streaming decode (constant-rate resampling, slicing, scaling) and atomic streaming encode + mux."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lsync.errors import StageFailure
from lsync.manifest import TEMP_PREFIX
from lsync.media.audio import load_audio, write_wav
from lsync.media.probe import MediaInputError, probe
from lsync.media.video import VideoReader, VideoWriter, iter_frames, mux

W, H = 64, 48


def _level_frames(count: int) -> np.ndarray:
    """Flat grey frames whose level encodes the frame index (4 levels apart survive H.264 at crf 0)."""
    levels = 16 + 4 * np.arange(count)
    return np.broadcast_to(levels[:, None, None, None], (count, H, W, 3)).astype(np.uint8).copy()


def _decoded_indices(frames: np.ndarray) -> np.ndarray:
    return np.round((frames.reshape(len(frames), -1).mean(axis=1) - 16) / 4).astype(int)


@pytest.fixture(scope="module")
def clip30(tmp_path_factory) -> Path:
    """2 s at 30 fps (60 frames), frame i at grey level 16 + 4 i."""
    path = tmp_path_factory.mktemp("video") / "clip30.mp4"
    with VideoWriter(path, fps=30, width=W, height=H, crf=0, preset="ultrafast") as writer:
        writer.write(_level_frames(60))
    return path


@pytest.mark.media
def test_media_first_frames_match_decord(media_videos):
    import decord

    for path in media_videos:
        reader = VideoReader(path, num_frames=3)
        frames = reader.read_all()
        info = probe(path)
        assert frames.shape == (3, info.height, info.width, 3) and frames.dtype == np.uint8
        expected = decord.VideoReader(str(path)).get_batch([0, 1, 2]).asnumpy()
        np.testing.assert_array_equal(frames, expected, err_msg=path.name)


def test_30fps_source_comes_out_at_25fps(clip30):
    info = probe(clip30)
    assert info.fps == pytest.approx(30) and info.num_frames == 60
    reader = VideoReader(clip30, fps=25)
    frames = reader.read_all()
    assert len(frames) == len(reader) == info.frames_at(25) == 50
    # Output frame k shows the source frame nearest to time k/25 (source index ~ 1.2 k): some dropped.
    indices = _decoded_indices(frames)
    assert np.all(np.abs(indices - 1.2 * np.arange(50)) <= 1)
    assert np.all(np.diff(indices) >= 1)


def test_native_rate_keeps_every_frame(clip30):
    frames = VideoReader(clip30, fps=None).read_all()
    np.testing.assert_array_equal(_decoded_indices(frames), np.arange(60))


def test_slices_equal_the_full_decode(clip30):
    full = VideoReader(clip30).read_all()
    part = VideoReader(clip30, start_frame=17, num_frames=9)
    assert len(part) == 9
    np.testing.assert_array_equal(part.read_all(), full[17:26])
    tail = VideoReader(clip30, start_frame=45, num_frames=100).read_all()
    np.testing.assert_array_equal(tail, full[45:])
    assert len(list(iter_frames(clip30, num_frames=0))) == 0


def test_scaling_and_batches(clip30):
    reader = VideoReader(clip30, size=(32, 24))
    batches = list(reader.iter_batches(16))
    assert [b.shape for b in batches] == [(16, 24, 32, 3)] * 3 + [(2, 24, 32, 3)]


def test_stopping_early_does_not_hang(clip30):
    for i, _ in enumerate(VideoReader(clip30)):
        if i == 2:
            break
    assert next(iter_frames(clip30)).shape == (H, W, 3)


def test_reader_rejects_audio_only(tmp_path):
    wav = write_wav(tmp_path / "speech.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(MediaInputError) as err:
        VideoReader(wav)
    assert err.value.reason == "no_video"


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(8, H, W, 3)), axis=1), axis=2)
    frames = np.clip(128 + 40 * smooth / np.abs(smooth).max(), 0, 255).astype(np.uint8)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, fps=25, width=W, height=H, crf=10) as writer:
        for frame in frames:
            writer.write(frame)
    assert writer.frames_written == 8
    info = probe(out)
    assert (info.width, info.height, info.num_frames, info.video_codec) == (W, H, 8, "h264")
    decoded = VideoReader(out).read_all()
    assert np.abs(decoded.astype(int) - frames).mean() < 3


def test_writer_exception_leaves_no_file(tmp_path):
    out = tmp_path / "never.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, fps=25, width=W, height=H) as writer:
            writer.write(_level_frames(3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_frames_and_empty_output(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(out, fps=25, width=W, height=H) as writer:
            writer.write(np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(StageFailure, match="no frames"):
        with VideoWriter(out, fps=25, width=W, height=H):
            pass
    assert not any(p.name.startswith(TEMP_PREFIX) or p == out for p in tmp_path.iterdir())


def test_writer_pads_odd_sizes(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, fps=25, width=W - 1, height=H - 1) as writer:
        writer.write(np.full((3, H - 1, W - 1, 3), 100, np.uint8))
    info = probe(out)
    assert (info.width, info.height) == (W, H)


def test_writer_muxes_audio_keeping_rate_and_channels(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], axis=1)
    wav = write_wav(tmp_path / "tone ü.wav", stereo, 44100)
    out = tmp_path / "with audio.mp4"
    with VideoWriter(out, fps=25, width=W, height=H, audio_path=wav, shortest=False) as writer:
        writer.write(_level_frames(25))
    info = probe(out)
    assert info.has_audio and info.audio_codec == "aac"
    assert (info.audio_sample_rate, info.audio_channels) == (44100, 2)
    assert info.audio_duration_s == pytest.approx(1.0, abs=0.03)


def test_mux_copies_video_and_replaces_audio(clip30, tmp_path):
    tone = 0.25 * np.sin(2 * np.pi * 300 * np.arange(3 * 48000) / 48000)
    wav = write_wav(tmp_path / "tone.wav", tone, 48000)
    out = mux(clip30, wav, tmp_path / "muxed.mp4", shortest=True)
    info = probe(out)
    assert (info.audio_sample_rate, info.audio_channels, info.audio_codec) == (48000, 1, "aac")
    assert info.num_frames == 60
    assert info.duration_s == pytest.approx(2.0, abs=0.1)  # -shortest: cut to the 2 s video
    np.testing.assert_array_equal(VideoReader(out, fps=None).read_all(), VideoReader(clip30, fps=None).read_all())
    decoded = load_audio(out, sample_rate=48000)
    assert np.sqrt(np.mean(decoded[4800:-4800] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.05)


@pytest.mark.media
def test_decode_memory_does_not_grow_with_length(media_videos):
    import tracemalloc

    reader = VideoReader(media_videos[0], num_frames=40)
    frame_bytes = reader.width * reader.height * 3
    tracemalloc.start()
    try:
        count = sum(1 for _ in reader)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 40
    assert peak < 4 * frame_bytes  # a frame or two in flight, never the whole clip
