"""Wav2Lip-style mel spectrogram: the SyncNet audio input.

The recipe is LatentSync's ``melspectrogram`` with its ``configs/audio.yaml`` (which inherits Wav2Lip's):

1. pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (zero initial state);
2. STFT with n_fft 800, hop 200 (80 columns per second), Hann window 800, frames centred with **zero** padding
   of 400 on both sides (librosa >= 0.10 default), magnitude;
3. 80 Slaney-normalised mel bands from 55 to 7600 Hz (librosa's default float32 filter bank);
4. ``20 log10(max(1e-5, x)) - 20`` dB, then ``8 (S + 100) / 100 - 4`` clipped to ``[-4, 4]``.

The reference computes in float64 (scipy's filter promotes the float32 samples), which is our default; float32
agrees to about 4e-5.

A SyncNet sample of 16 frames starting at video frame ``s`` takes 52 columns from ``int(80 s / 25)``
(:func:`mel_window`).
"""

from __future__ import annotations

from functools import lru_cache
from os import PathLike

import librosa
import numpy as np
import scipy.io.wavfile
import scipy.signal

from lsync.audio.timing import AUDIO_SR, MEL_HOP, mel_start_index, mel_window_length
from lsync.errors import InputError

N_FFT = 800
WIN_LENGTH = 800
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0


def load_wav_16k_mono(path: str | PathLike) -> np.ndarray:
    """Read a 16 kHz mono PCM wav as float32 samples in [-1, 1): int16 / 32768, ``(num_samples,)``.

    This is what the reference gets from ffmpeg (``-f s16le -ac 1 -ar 16000``) or decord for a file that is already
    16 kHz mono 16-bit, so no resampling or mixing happens here. Anything else is refused: decode it with ffmpeg
    first (``lsync.media``).
    """
    try:
        sample_rate, samples = scipy.io.wavfile.read(path)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path} as a wav file ({error})", "pass a PCM wav file") from error
    if sample_rate != AUDIO_SR or samples.ndim != 1 or samples.dtype != np.int16:
        raise InputError(
            f"{path} is {sample_rate} Hz, {1 if samples.ndim == 1 else samples.shape[1]} channel(s), {samples.dtype}",
            "convert it to 16 kHz mono 16-bit PCM first (ffmpeg -ar 16000 -ac 1 -c:a pcm_s16le)",
        )
    return samples.astype(np.float32) / np.float32(32768.0)


@lru_cache(maxsize=None)
def _mel_basis() -> np.ndarray:
    """(80, 401) Slaney mel filter bank, float32 as librosa builds it by default (the reference never casts it)."""
    return librosa.filters.mel(sr=AUDIO_SR, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)


@lru_cache(maxsize=None)
def _hann_window() -> np.ndarray:
    """(800,) periodic Hann window, float64 (what ``librosa.stft`` multiplies every frame by)."""
    window = scipy.signal.get_window("hann", WIN_LENGTH, fftbins=True)
    window.flags.writeable = False  # shared by every call
    return window


def _centred_stft_magnitude(samples: np.ndarray) -> np.ndarray:
    """``|STFT|`` exactly as ``librosa.stft(n_fft=800, hop_length=200, pad_mode="constant")`` computes it.

    ``(num_samples,)`` -> ``(401, 1 + num_samples // 200)``. Written out because ``librosa.stft`` imports the
    modules whose numba kernels compile on first use: about 20 s in every fresh environment, longer than all the
    mel work of a demo. The steps are librosa's: centre the frames with ``n_fft // 2`` zeros on both sides, apply
    the periodic Hann window, take the real FFT of each frame.
    """
    padded = np.pad(samples, N_FFT // 2, mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::MEL_HOP]  # (T, 800), a view
    spectrum = np.fft.rfft(frames * _hann_window(), axis=-1)
    if samples.dtype == np.float32:
        spectrum = spectrum.astype(np.complex64)  # librosa's output precision for float32 input
    return np.abs(spectrum).T


def melspectrogram(samples_16k: np.ndarray, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Wav2Lip mel of 16 kHz mono samples: ``(num_samples,)`` -> ``(80, 1 + num_samples // 200)`` in ``[-4, 4]``.

    ``dtype`` is the computation (and output) precision: float64 reproduces the reference to ~1e-7,
    float32 to ~4e-5.
    """
    samples = np.asarray(samples_16k)
    if samples.ndim != 1:
        raise InputError(f"expected mono samples of shape (n,), got {samples.shape}", "mix down to mono first")
    samples = samples.astype(dtype, copy=False)
    emphasised = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], samples).astype(dtype, copy=False)
    magnitude = _centred_stft_magnitude(emphasised)
    mel = np.dot(_mel_basis().astype(dtype, copy=False), magnitude)
    # min level 1e-5 = -100 dB, written the way the reference derives it from min_level_db.
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    decibels = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    normalised = (2 * MAX_ABS_VALUE) * ((decibels - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE
    return np.clip(normalised, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(dtype, copy=False)


def mel_window(mel, start_frame: int, num_frames: int = 16, *, fps: float = 25, allow_short: bool = False):
    """The SyncNet audio window for video frames ``start_frame .. start_frame + num_frames - 1``.

    ``mel`` is ``(80, T)`` (numpy array or torch tensor); the result is ``(1, 80, mel_window_length(num_frames))``
    = ``(1, 80, 52)`` for 16 frames, a plain slice starting at column ``int(80 * start_frame / fps)``.

    Near the end of the audio the slice is shorter than that. The reference datasets reject such a sample and
    draw another, so by default this returns ``None``; ``allow_short=True`` returns the short slice as the
    reference's ``crop_audio_window`` does.
    """
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    start = mel_start_index(start_frame, fps)
    length = mel_window_length(num_frames)
    window = mel[None, :, start : start + length]
    if window.shape[-1] < length and not allow_short:
        return None
    return window
