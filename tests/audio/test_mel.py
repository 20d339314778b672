"""Wav2Lip mel (SyncNet audio input), its windows, the timing helpers and the wav reader."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import librosa
import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import torch
from safetensors.numpy import load_file

from lsync.audio import timing
from lsync.audio.mel import load_wav_16k_mono, mel_window, melspectrogram
from lsync.errors import InputError


def _test_signal(num_samples: int, seed: int = 0) -> np.ndarray:
    """A voiced-ish signal: two tones with a slow amplitude envelope plus a little noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / timing.AUDIO_SR
    envelope = 0.5 + 0.4 * np.sin(2 * np.pi * 1.5 * t)
    tones = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 1870 * t)
    return (0.3 * envelope * tones + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- timing
def test_timing_constants_agree():
    assert timing.SAMPLES_PER_FRAME * timing.VIDEO_FPS == timing.AUDIO_SR
    assert timing.MEL_FPS * timing.MEL_HOP == timing.AUDIO_SR
    assert timing.mel_window_length(16) == timing.SYNCNET_MEL_WINDOW == 52
    assert timing.WHISPER_WINDOW_MEL_FRAMES == 2 * timing.WHISPER_WINDOW_POSITIONS == 3000


def test_mel_start_index_is_floor_of_80_s_over_25():
    assert [timing.mel_start_index(s) for s in (0, 7, 100, 230)] == [0, 22, 320, 736]
    assert all(timing.mel_start_index(s) == (80 * s) // 25 for s in range(1001))


# ----------------------------------------------------------------------------------------------- mel
def test_mel_shape_range_and_dtype():
    samples = _test_signal(12345)
    mel = melspectrogram(samples)
    assert mel.shape == (80, timing.num_wav2lip_mel_frames(12345)) == (80, 62)
    assert mel.dtype == np.float64
    assert mel.min() >= -4.0 and mel.max() <= 4.0
    assert mel.max() > 0.0  # the tones are well above the -100 dB floor


def test_silence_sits_on_the_floor():
    assert np.all(melspectrogram(np.zeros(4000, np.float32)) == -4.0)


def test_float32_path_is_close_to_float64():
    samples = _test_signal(16000, seed=1)
    mel64 = melspectrogram(samples)
    mel32 = melspectrogram(samples, dtype=np.float32)
    assert mel32.dtype == np.float32
    np.testing.assert_allclose(mel32, mel64, atol=1e-4)


def _mel_from_first_principles(samples: np.ndarray) -> np.ndarray:
    """The README recipe written out step by step (explicit frames and rfft), float64."""
    x = samples.astype(np.float64)
    emphasised = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    padded = np.pad(emphasised, 400)  # centred frames, zero padding
    window = scipy.signal.get_window("hann", 800, fftbins=True)
    starts = range(0, 200 * (1 + len(x) // 200), 200)
    frames = np.stack([padded[start : start + 800] * window for start in starts])
    magnitude = np.abs(np.fft.rfft(frames, axis=1)).T
    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, norm="slaney", htk=False)
    decibels = 20 * np.log10(np.maximum(1e-5, bank.astype(np.float64) @ magnitude)) - 20
    return np.clip(8 * (decibels + 100) / 100 - 4, -4, 4)


def test_mel_matches_the_recipe_step_by_step():
    samples = _test_signal(7000, seed=2)
    np.testing.assert_allclose(melspectrogram(samples), _mel_from_first_principles(samples), rtol=0, atol=1e-9)


def test_rejects_multichannel_samples():
    with pytest.raises(InputError):
        melspectrogram(np.zeros((2, 1000), np.float32))


# ----------------------------------------------------------------------------------------------- windows
def test_mel_window_slices_and_short_windows():
    mel = np.arange(80 * 100, dtype=np.float64).reshape(80, 100)
    window = mel_window(mel, 7)
    assert window.shape == (1, 80, 52)
    np.testing.assert_array_equal(window[0], mel[:, 22:74])
    assert mel_window(mel, 15) is not None  # columns 48..99: exactly fits
    assert mel_window(mel, 16) is None  # columns 51..102: 3 short
    short = mel_window(mel, 16, allow_short=True)
    np.testing.assert_array_equal(short[0], mel[:, 51:])
    with pytest.raises(ValueError):
        mel_window(mel, -1)


def test_mel_window_accepts_torch_tensors():
    mel = torch.randn(80, 200)
    window = mel_window(mel, 10, num_frames=5)
    assert window.shape == (1, 80, timing.mel_window_length(5)) == (1, 80, 16)
    assert torch.equal(window[0], mel[:, 32:48])


# ----------------------------------------------------------------------------------------------- wav reader
def test_load_wav_reads_int16_over_32768(tmp_path):
    path = tmp_path / "dir with spaces" / "stimme ü.wav"
    path.parent.mkdir()
    pcm = (np.arange(-5000, 5000, 7) * 3).astype(np.int16)
    scipy.io.wavfile.write(path, 16000, pcm)
    samples = load_wav_16k_mono(path)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("rate, channels", [(44100, 1), (16000, 2)])
def test_load_wav_refuses_other_formats(tmp_path, rate, channels):
    path = tmp_path / "x.wav"
    pcm = np.zeros((1000, channels) if channels > 1 else 1000, np.int16)
    scipy.io.wavfile.write(path, rate, pcm)
    with pytest.raises(InputError, match="16 kHz mono"):
        load_wav_16k_mono(path)


def test_load_wav_refuses_non_wav(tmp_path):
    path = tmp_path / "not.wav"
    path.write_bytes(b"definitely not RIFF")
    with pytest.raises(InputError):
        load_wav_16k_mono(path)


@pytest.mark.media
def test_demo_wavs_read_directly_equal_the_ffmpeg_decode(media_audios):
    """The reference decodes with ffmpeg to 16 kHz s16 mono; for these files a plain wav read is identical."""
    wavs = [path for path in media_audios if path.suffix.lower() == ".wav"]
    assert wavs, "no .wav files in the media folder"
    for path in wavs:
        decoded = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
             "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
            capture_output=True, check=True,
        ).stdout
        from_ffmpeg = np.frombuffer(decoded, np.int16).astype(np.float32) / 32768.0
        np.testing.assert_array_equal(load_wav_16k_mono(path), from_ffmpeg)


# ----------------------------------------------------------------------------------------------- golden
MEL_GOLDEN = "audio/wav2lip_mel.safetensors"


@pytest.fixture(scope="module")
def mel_golden(reference):
    path = reference / MEL_GOLDEN
    assert path.is_file(), f"{path} is missing (the reference README promises it)"
    return load_file(str(path))


@pytest.mark.golden
def test_golden_mel_float64(mel_golden, golden_media):
    samples = load_wav_16k_mono(golden_media(MEL_GOLDEN, "audio"))
    mel = melspectrogram(samples)
    assert mel.shape == mel_golden["mel"].shape == (80, timing.num_wav2lip_mel_frames(len(samples)))
    np.testing.assert_allclose(mel, mel_golden["mel"], rtol=0, atol=1e-6)


@pytest.mark.golden
def test_golden_mel_float32(mel_golden, golden_media):
    mel = melspectrogram(load_wav_16k_mono(golden_media(MEL_GOLDEN, "audio")), dtype=np.float32)
    np.testing.assert_allclose(mel, mel_golden["mel"], rtol=0, atol=1e-4)


@pytest.mark.golden
def test_golden_mel_windows(mel_golden):
    mel = mel_golden["mel"]
    starts = sorted(int(key.removeprefix("window_start")) for key in mel_golden if key.startswith("window_start"))
    assert starts, "no window_start* tensors in the golden file"
    for start in starts:
        expected = mel_golden[f"window_start{start}"]
        window = mel_window(mel, start, allow_short=True)
        np.testing.assert_array_equal(window, expected)
        full = expected.shape[-1] == timing.SYNCNET_MEL_WINDOW
        assert (mel_window(mel, start) is not None) == full
