"""The clocks that tie video frames to audio samples, Wav2Lip mel columns and Whisper positions.

Everything in lsync runs on four clocks:

* video at ``VIDEO_FPS`` = 25 frames per second (the reference re-encodes every video to 25 fps);
* audio at ``AUDIO_SR`` = 16 kHz mono, so one video frame spans ``SAMPLES_PER_FRAME`` = 640 samples;
* the Wav2Lip mel (SyncNet audio input) with hop 200 samples, ``MEL_FPS`` = 80 columns per second;
* the Whisper log-mel with hop 160 samples (100 columns per second), which the encoder's stride-2 convolution
  turns into ``WHISPER_FPS`` = 50 positions per second.

The index helpers below reproduce the reference arithmetic literally (including its float-then-``int``
rounding), because a window that starts one column off is a different training sample.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

VIDEO_FPS = 25
AUDIO_SR = 16000
SAMPLES_PER_FRAME = AUDIO_SR // VIDEO_FPS  # 640

# Wav2Lip-style mel spectrogram (SyncNet audio input).
MEL_HOP = 200
MEL_FPS = AUDIO_SR // MEL_HOP  # 80
SYNCNET_NUM_FRAMES = 16
SYNCNET_MEL_WINDOW = 52  # = mel_window_length(16)

# Whisper.
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_MEL_FPS = AUDIO_SR // WHISPER_HOP  # 100
WHISPER_FPS = 50  # encoder positions per second (conv2 has stride 2)
WHISPER_WINDOW_SECONDS = 30
WHISPER_WINDOW_MEL_FRAMES = WHISPER_WINDOW_SECONDS * WHISPER_MEL_FPS  # 3000
WHISPER_WINDOW_POSITIONS = WHISPER_WINDOW_SECONDS * WHISPER_FPS  # 1500

# Per-video-frame Whisper chunk. LatentSync's ``audio_feat_length = [left, right]`` is the audio context of a
# frame in video frames either side; at 2 Whisper positions per frame it covers positions
# ``centre - 2 left .. centre + 2 right + 1``.
WHISPER_POSITIONS_PER_FRAME = 2  # the reference's fixed factor (50 positions/s over 25 frames/s)
DEFAULT_AUDIO_FEAT_LENGTH = (2, 2)  # the reference's (and the released U-Nets') context
# The reference chunk, positions centre-4 .. centre+5: what every helper below takes without a ``context``.
WHISPER_CHUNK_LEFT = WHISPER_POSITIONS_PER_FRAME * DEFAULT_AUDIO_FEAT_LENGTH[0]  # 4
WHISPER_CHUNK_RIGHT = WHISPER_POSITIONS_PER_FRAME * DEFAULT_AUDIO_FEAT_LENGTH[1] + 1  # 5
WHISPER_CHUNK_POSITIONS = WHISPER_CHUNK_LEFT + 1 + WHISPER_CHUNK_RIGHT  # 10


def mel_start_index(start_frame: int, fps: float = VIDEO_FPS) -> int:
    """First Wav2Lip mel column of the window that starts at video frame ``start_frame``.

    Computed as the reference does, ``int(80.0 * (start_frame / fps))``; for fps 25 and every start frame up to
    1000 this equals ``floor(80 * start_frame / 25)``.
    """
    return int(float(MEL_FPS) * (start_frame / float(fps)))


def mel_window_length(num_frames: int = SYNCNET_NUM_FRAMES) -> int:
    """Number of mel columns the reference takes for ``num_frames`` video frames: ``ceil(num_frames / 5 * 16)``.

    That is 80/25 = 16/5 columns per frame, rounded up: 52 for the usual 16 frames.
    """
    return math.ceil(num_frames / 5 * 16)


def num_wav2lip_mel_frames(num_samples: int) -> int:
    """Columns of the centred Wav2Lip STFT: ``1 + num_samples // 200``."""
    return 1 + num_samples // MEL_HOP


def num_whisper_mel_frames(num_samples: int) -> int:
    """Columns of the Whisper log-mel: the centred STFT has ``1 + n // 160`` frames and the last one is dropped."""
    return num_samples // WHISPER_HOP


def num_whisper_positions(num_mel_frames: int) -> int:
    """Whisper feature positions (50 per second) the reference keeps for a log-mel of ``num_mel_frames`` columns.

    The reference keeps ``int(segment_frames / 2)`` positions of every 3000-frame segment; summed over the
    segments that is ``num_mel_frames // 2``.
    """
    return num_mel_frames // 2


def whisper_center_index(frame: int, fps: float = VIDEO_FPS) -> int:
    """Whisper position at the centre of video frame ``frame``: ``int(frame * 50 / fps)`` (reference rounding)."""
    return int(frame * WHISPER_FPS / fps)


def audio_context(value: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> tuple[int, int]:
    """``audio_feat_length`` checked and normalised: ``(left, right)`` video frames of audio context per frame.

    Accepts any two-item sequence of non-negative integers (a yaml/json list or a tuple); raises ValueError
    naming the value otherwise (floats and bools are refused, a half frame of context does not exist).
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"audio_feat_length must be [left, right] (video frames of audio context), got {value!r}")
    context = []
    for side in value:
        if isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < 0:
            raise ValueError(f"audio_feat_length must be two non-negative integers [left, right], got {value!r}")
        context.append(int(side))
    return context[0], context[1]


def whisper_chunk_positions(context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> int:
    """Whisper positions per video frame for an ``audio_feat_length`` of ``(left, right)``: ``2 (left + right + 1)``
    (10 for the reference's (2, 2), 2 - the frame's own positions - for (0, 0))."""
    left, right = audio_context(context)
    return WHISPER_POSITIONS_PER_FRAME * (left + right + 1)


def whisper_chunk_indices(frame: int, num_positions: int, fps: float = VIDEO_FPS,
                          context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> list[int]:
    """The Whisper positions that make up video frame ``frame``'s audio chunk, clamped into the feature array.

    With ``context = (left, right)`` (``audio_feat_length``, video frames) these are positions
    ``centre - 2 left .. centre + 2 right + 1`` with ``centre = whisper_center_index(frame, fps)`` - ``centre-4 ..
    centre+5`` for the reference's (2, 2), ``centre, centre+1`` for (0, 0) - each clamped into
    ``[0, num_positions - 1]`` (so chunks near the ends repeat the first/last position).
    """
    left, right = audio_context(context)
    centre = whisper_center_index(frame, fps)
    first = centre - WHISPER_POSITIONS_PER_FRAME * left
    last = centre + WHISPER_POSITIONS_PER_FRAME * (right + 1) - 1
    return [min(max(position, 0), num_positions - 1) for position in range(first, last + 1)]


def num_whisper_chunks(num_positions: int, fps: float = VIDEO_FPS) -> int:
    """How many per-frame chunks the reference ``feature2chunks`` emits for ``num_positions`` Whisper positions.

    Its loop appends chunk ``i`` and stops after the first ``i`` whose start ``int(i * (50.0 / fps))`` exceeds
    ``num_positions``. At fps 25 that is ``num_positions // 2 + 2`` chunks: one or two more than there are video
    frames, the extra ones clamped onto the last position.
    """
    multiplier = WHISPER_FPS / float(fps)
    frame = 0
    while int(frame * multiplier) <= num_positions:
        frame += 1
    return frame + 1
