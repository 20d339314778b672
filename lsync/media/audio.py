"""Audio in and out: decode any media file's audio to float32 samples, write 16-bit PCM wavs atomically.

Decoding follows the reference exactly: ffmpeg resamples and downmixes to signed 16-bit PCM
(``-f s16le -ac 1 -ar 16000``, Whisper's ``load_audio``) and the samples are divided by 32768, so
``load_audio`` equals decord's ``AudioReader`` and the reference's int16/32768 loaders bit for bit, and
``write_wav`` -> ``load_audio`` round-trips exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import wave
from pathlib import Path

import numpy as np

from lsync.errors import StageFailure
from lsync.manifest import atomic_output
from lsync.media.ffmpeg import StderrDrain, ffmpeg_command, file_arg, last_error_line
from lsync.media.probe import MediaInputError, probe

#: The rate every audio model in lsync works at (Whisper, the Wav2Lip mel).
DEFAULT_SAMPLE_RATE = 16000
_INT16_SCALE = 32768.0
_READ_CHUNK = 1 << 20  # bytes per pipe read when skipping or collecting samples


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = DEFAULT_SAMPLE_RATE,
    mono: bool = True,
    start_s: float | None = None,
    duration_s: float | None = None,
) -> np.ndarray:
    """Decode the first audio stream of ``path`` to float32 samples in [-1, 1).

    Args:
        sample_rate: resample to this rate; ``None`` keeps the file's rate.
        mono: downmix to one channel (ffmpeg's ``-ac 1``); otherwise keep the file's channels.
        start_s, duration_s: a segment, in seconds of the output. Cut at whole samples
            (``round(start_s * rate)``, ``round(duration_s * rate)`` samples) *after* resampling, so a
            segment equals the same slice of the whole decode exactly. Beyond the end it is shorter.

    Returns:
        (N,) float32 when ``mono``, else (N, C) float32 - int16 samples / 32768.

    Raises:
        MediaInputError: reason ``unreadable`` (missing, empty, not media, cut short) or ``no_audio``.
        StageFailure: ffmpeg was killed by a signal lsync did not send (the samples would be incomplete).
    """
    info = probe(path).require(video=False, audio=True)
    rate = sample_rate or info.audio_sample_rate
    channels = 1 if mono else (info.audio_channels or 1)
    start = 0 if start_s is None else int(round(start_s * rate))
    count = None if duration_s is None else int(round(duration_s * rate))
    if start < 0 or (count is not None and count < 0):
        raise ValueError(f"start_s and duration_s must be >= 0, got {start_s}, {duration_s}")

    args: list = ["-i", file_arg(path), "-map", "0:a:0", "-vn", "-f", "s16le", "-acodec", "pcm_s16le",
                  "-ac", str(channels), "-ar", str(rate)]
    if count is not None:
        # Decode no further than needed; the exact cut happens on the sample stream below.
        args += ["-t", repr((start + count) / rate + 0.1)]
    proc = subprocess.Popen(ffmpeg_command(*args, "-"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    drain = StderrDrain(proc.stderr)
    frame_bytes = 2 * channels
    read_to_end = stopped_by_us = False
    try:
        _skip_bytes(proc.stdout, start * frame_bytes)
        wanted = None if count is None else count * frame_bytes
        data = proc.stdout.read() if wanted is None else proc.stdout.read(wanted)
        read_to_end = wanted is None or len(data) < wanted
    finally:
        if not read_to_end and proc.poll() is None:
            proc.kill()  # we have what we need (or failed): the rest of the decode is not wanted
            stopped_by_us = True
        proc.stdout.close()
        returncode = proc.wait()
    _check_decoder_exit(path, returncode, stopped_by_us, drain)
    data = data[: len(data) - len(data) % frame_bytes]
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / _INT16_SCALE
    return samples if mono else samples.reshape(-1, channels)


def _check_decoder_exit(path, returncode: int, stopped_by_us: bool, drain: StderrDrain) -> None:
    """Only a clean exit, or the kill we sent after reading enough, means the samples are complete. A signal we
    did not send (the out-of-memory killer, a crash) cut the decode short: its samples are not the file's."""
    if returncode == 0 or (stopped_by_us and returncode == -signal.SIGKILL):
        return
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else f"signal {-returncode}"
        raise StageFailure(f"ffmpeg was killed by {name} while decoding the audio of {path}",
                           "run the command again (if it happens again, check free memory)")
    raise MediaInputError(f"{path} audio could not be decoded ({last_error_line(drain.text())})",
                          "check that the file is complete")


def _skip_bytes(stream, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, _READ_CHUNK))
        if not chunk:
            return
        n -= len(chunk)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1) -> int16, the inverse of ``/ 32768`` (values outside are clipped)."""
    samples = np.asarray(samples, dtype=np.float64)
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio samples contain NaN or infinity")
    return np.clip(np.round(samples * _INT16_SCALE), -32768, 32767).astype("<i2")


def write_wav(path: str | os.PathLike, samples: np.ndarray, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """Write 16-bit PCM wav atomically. ``samples``: (N,) mono or (N, C) float in [-1, 1) (or int16 as is).

    Floats are scaled by 32768 and rounded, so ``load_audio(write_wav(p, x))`` gives back ``x`` exactly
    whenever ``x`` came from ``load_audio`` at the same rate. Returns ``Path(path)``.
    """
    samples = np.asarray(samples)
    if samples.ndim not in (1, 2):
        raise ValueError(f"samples must be (N,) or (N, C), got shape {samples.shape}")
    pcm = samples.astype("<i2") if samples.dtype == np.int16 else to_int16(samples)
    channels = 1 if pcm.ndim == 1 else pcm.shape[1]
    out = Path(path)
    with atomic_output(out) as tmp:
        with wave.open(str(tmp), "wb") as wav:
            wav.setnchannels(channels)
            wav.setsampwidth(2)
            wav.setframerate(int(sample_rate))
            wav.writeframes(np.ascontiguousarray(pcm).tobytes())
    return out


def extract_audio_segment(
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    start_s: float | None = None,
    duration_s: float | None = None,
    sample_rate: int | None = DEFAULT_SAMPLE_RATE,
    mono: bool = True,
) -> Path:
    """Decode a segment of ``path``'s audio (see :func:`load_audio`) into a 16-bit wav at ``out_path``."""
    samples = load_audio(path, sample_rate=sample_rate, mono=mono, start_s=start_s, duration_s=duration_s)
    rate = sample_rate or probe(path).audio_sample_rate
    return write_wav(out_path, samples, rate)


def frame_rms(samples: np.ndarray, samples_per_frame: int) -> np.ndarray:
    """Root-mean-square of consecutive non-overlapping windows: (N,) -> (N // samples_per_frame,) float32.

    With 640 samples at 16 kHz this is the loudness of each 25 fps video frame.
    """
    n = len(samples) // samples_per_frame
    windows = np.asarray(samples[: n * samples_per_frame], dtype=np.float64).reshape(n, samples_per_frame)
    return np.sqrt(np.mean(windows**2, axis=1)).astype(np.float32)


def frame_loudness(path: str | os.PathLike, fps: int = 25) -> np.ndarray:
    """(N,) float64 loudness of each video frame of ``path``'s audio: the RMS of the frame's samples of the 16 kHz
    mono audio (640 of them at 25 fps), the per-frame series that mouth openings are correlated with."""
    return frame_rms(load_audio(path, sample_rate=DEFAULT_SAMPLE_RATE, mono=True),
                     DEFAULT_SAMPLE_RATE // fps).astype(np.float64)
