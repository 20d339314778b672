"""load_audio / write_wav / extract_audio_segment: exact int16/32768 decoding, exact segments, atomic writes."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from lsync.manifest import TEMP_PREFIX
from lsync.media.audio import extract_audio_segment, frame_rms, load_audio, to_int16, write_wav
from lsync.media.ffmpeg import run_ffmpeg
from lsync.media.probe import NO_AUDIO, MediaInputError, probe


def _read_wav_int16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


@pytest.fixture(scope="module")
def stereo_44k(tmp_path_factory) -> Path:
    """3 s stereo AAC at 44.1 kHz: a chirp left, a tone right."""
    path = tmp_path_factory.mktemp("audio") / "stereo.m4a"
    run_ffmpeg(["-f", "lavfi", "-i", "aevalsrc=0.4*sin(2*PI*(200+300*t)*t)|0.2*sin(2*PI*500*t):s=44100:d=3",
                "-c:a", "aac", "-y", path], what="make a test tone")
    return path


@pytest.mark.media
def test_16k_wav_equals_int16_over_32768(media_audios):
    wavs = []
    for path in media_audios:
        if path.suffix.lower() == ".wav":
            with wave.open(str(path)) as wav:
                if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2):
                    wavs.append(path)
    assert wavs, "no 16 kHz mono 16-bit wav in the media folder"
    for path in wavs:
        samples = load_audio(path)
        assert samples.dtype == np.float32 and samples.ndim == 1
        np.testing.assert_array_equal(samples, _read_wav_int16(path).astype(np.float32) / 32768)


def test_resampled_mono_and_native_stereo(stereo_44k):
    mono = load_audio(stereo_44k)
    assert mono.ndim == 1 and abs(len(mono) - 48000) <= 16
    native = load_audio(stereo_44k, sample_rate=None, mono=False)
    assert native.ndim == 2 and native.shape[1] == 2
    assert abs(len(native) - 3 * 44100) <= 16
    # Left is louder than right (0.4 vs 0.2 amplitude).
    assert np.sqrt(np.mean(native[:, 0] ** 2)) > 1.5 * np.sqrt(np.mean(native[:, 1] ** 2))


def test_segment_equals_slice_of_full_decode(stereo_44k):
    full = load_audio(stereo_44k)
    segment = load_audio(stereo_44k, start_s=1.23, duration_s=0.5)
    start = round(1.23 * 16000)
    np.testing.assert_array_equal(segment, full[start: start + 8000])
    np.testing.assert_array_equal(load_audio(stereo_44k, start_s=2.5), full[40000:])
    np.testing.assert_array_equal(load_audio(stereo_44k, duration_s=0.25), full[:4000])


@pytest.mark.media
def test_video_file_audio_and_no_audio(media_videos, tmp_path):
    for path in media_videos:
        samples = load_audio(path)
        assert abs(len(samples) / 16000 - probe(path).audio_duration_s) < 0.01, path.name
    silent = tmp_path / "silent.mp4"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=32x32:rate=25:duration=0.4", "-c:v", "libx264", "-y", silent],
               what="make a silent video")
    with pytest.raises(MediaInputError) as err:
        load_audio(silent)
    assert err.value.reason == NO_AUDIO


def test_write_wav_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(1)
    original = to_int16(rng.uniform(-0.9, 0.9, size=16000)).astype(np.float32) / 32768
    path = write_wav(tmp_path / "round trip é.wav", original, 16000)
    np.testing.assert_array_equal(load_audio(path), original)
    info = probe(path)
    assert (info.audio_codec, info.audio_sample_rate, info.audio_channels) == ("pcm_s16le", 16000, 1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_write_wav_clips_and_rejects_nan(tmp_path):
    path = write_wav(tmp_path / "loud.wav", np.array([2.0, -2.0, 0.5]), 8000)
    np.testing.assert_array_equal(_read_wav_int16(path), [32767, -32768, 16384])
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "nan.wav", np.array([0.0, np.nan]), 8000)
    assert not (tmp_path / "nan.wav").exists()


def test_extract_audio_segment(stereo_44k, tmp_path):
    out = extract_audio_segment(stereo_44k, tmp_path / "seg.wav", start_s=0.5, duration_s=1.0)
    np.testing.assert_array_equal(load_audio(out), load_audio(stereo_44k, start_s=0.5, duration_s=1.0))
    assert len(_read_wav_int16(out)) == 16000


def test_frame_rms():
    samples = np.concatenate([np.zeros(640), np.full(640, 0.5), np.ones(100)])
    np.testing.assert_allclose(frame_rms(samples, 640), [0.0, 0.5])


def test_a_decoder_killed_by_a_foreign_signal_is_an_error_not_a_short_result(stereo_44k, monkeypatch):
    """ffmpeg writes half a second of samples, then dies by SIGKILL (the OOM killer): load_audio must not return
    the half second as if it were the whole file."""
    import sys

    import lsync.media.audio as audio_module
    from lsync.errors import StageFailure

    script = ("import os, signal, sys; sys.stdout.buffer.write(bytes(16000)); sys.stdout.flush(); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    monkeypatch.setattr(audio_module, "ffmpeg_command", lambda *args: [sys.executable, "-c", script])
    with pytest.raises(StageFailure, match="killed by SIGKILL while decoding"):
        load_audio(stereo_44k)
    with pytest.raises(StageFailure, match="killed by SIGKILL"):
        load_audio(stereo_44k, duration_s=1.0)  # wants 32000 bytes, gets 16000
    # a segment read to its end, then stopped by us, stays a normal result
    monkeypatch.undo()
    assert len(load_audio(stereo_44k, duration_s=0.5)) == 8000
