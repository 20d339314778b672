"""Whisper audio encoder and the per-frame audio features the U-Net is conditioned on.

LatentSync conditions its U-Net on the hidden states of an openai-whisper *audio encoder* (``tiny.pt``):

1. :func:`log_mel_spectrogram` - Whisper's 80-band log-mel at 100 columns per second;
2. :class:`WhisperAudioEncoder` - conv stem + sinusoidal positions + pre-norm attention blocks, run on 30 s
   windows (3000 columns -> 1500 positions, 50 per second); we keep the stem output and every block output
   **before** ``ln_post``, giving ``(T50, L+1, D)`` features (:class:`WhisperFeatureExtractor`);
3. :func:`feature_chunks` / :func:`feature_window` - for video frame ``i`` the positions ``2i-4 .. 2i+5``
   (clamped) of all L+1 layers, concatenated position-major into a ``(10 (L+1), D)`` token sequence
   (``(50, 384)`` for whisper-tiny). That is the reference's ``audio_feat_length = (2, 2)``, 2 video frames of
   context either side; a ``context = (left, right)`` takes positions ``2i - 2 left .. 2i + 2 right + 1``, i.e.
   ``2 (left + right + 1) (L+1)`` tokens. A U-Net's own context is ``unet.config.audio_feat_length``.

Long audio is encoded window by window; see :class:`WhisperFeatureExtractor` for the two ``windowing`` modes
(the reference's independent 30 s segments, and our default overlapping windows that remove its seams).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lsync.audio.timing import (
    AUDIO_SR,
    DEFAULT_AUDIO_FEAT_LENGTH,
    WHISPER_HOP,
    WHISPER_N_FFT,
    num_whisper_chunks,
    num_whisper_positions,
    whisper_chunk_indices,
    whisper_chunk_positions,
)
from lsync.errors import CheckpointError, ConfigError, InputError
from lsync.checkpoints import load_state_dict_strict, read_state_dict

#: Right/left margin (in 50 Hz positions, 250 = 5 s) every output position of the ``"overlap"`` windowing
#: keeps from the edges of the window it is taken from (except at the very start and end of the audio).
DEFAULT_OVERLAP_MARGIN = 250

#: How many key names a checkpoint error lists per category before it only gives the count.

Windowing = Literal["overlap", "reference"]


# ------------------------------------------------------------------------------------------------ log-mel
@lru_cache(maxsize=None)
def _mel_filters(n_mels: int) -> torch.Tensor:
    """``(n_mels, 201)`` Slaney mel filters; whisper's bundled ``mel_filters.npz`` holds exactly these (float32)."""
    return torch.from_numpy(librosa.filters.mel(sr=AUDIO_SR, n_fft=WHISPER_N_FFT, n_mels=n_mels))


def log_mel_spectrogram(samples_16k: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel of 16 kHz mono samples: ``(num_samples,)`` -> float32 ``(n_mels, num_samples // 160)``.

    Hann STFT (n_fft 400, hop 160, centred with reflect padding) with the last frame dropped, power spectrum,
    Slaney mel filters, ``log10`` floored at 1e-10, everything below ``max - 8`` raised to it, then
    ``(x + 4) / 4``. The ``max`` is taken over the **whole** input, so call this once per file, not per window.
    Computed on the CPU in float32, like the reference.
    """
    if torch.is_tensor(samples_16k):
        audio = samples_16k.detach().to("cpu", torch.float32)
    else:
        audio = torch.from_numpy(np.asarray(samples_16k, dtype=np.float32))
    if audio.ndim != 1:
        raise InputError(f"expected mono samples of shape (n,), got {tuple(audio.shape)}", "mix down to mono first")
    if audio.numel() <= WHISPER_N_FFT // 2:
        raise InputError(
            f"audio of {audio.numel()} samples is too short for Whisper", "pass at least 0.02 s of audio"
        )
    window = torch.hann_window(WHISPER_N_FFT)
    stft = torch.stft(
        audio, WHISPER_N_FFT, WHISPER_HOP, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = stft[:, :-1].abs() ** 2
    mel = _mel_filters(n_mels) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


# ------------------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class WhisperDims:
    """The audio half of an openai-whisper ``dims`` dict (the text-decoder entries are not needed)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int

    @classmethod
    def from_dict(cls, dims: Mapping[str, Any], source: str = "whisper dims") -> WhisperDims:
        """Pick the audio entries out of a full whisper ``dims`` dict; other entries are ignored."""
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in dims]
        if missing:
            raise ConfigError(f"{source} lacks {', '.join(missing)}", "give every n_mels / n_audio_* entry")
        values = {name: dims[name] for name in names}
        bad = [f"{k}={v!r}" for k, v in values.items() if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
        if bad:
            raise ConfigError(f"{source} has invalid {', '.join(bad)}", "use positive integers")
        if values["n_audio_state"] % values["n_audio_head"] or values["n_audio_state"] % 2:
            raise ConfigError(
                f"{source}: n_audio_state {values['n_audio_state']} must be even and divisible by "
                f"n_audio_head {values['n_audio_head']}",
                "fix the dims",
            )
        return cls(**values)

    @property
    def window_mel_frames(self) -> int:
        """Log-mel columns one encoder pass takes (3000 = 30 s for every released Whisper)."""
        return 2 * self.n_audio_ctx


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional table ``(length, channels)``: ``[sin | cos]`` over geometric timescales."""
    half = channels // 2
    log_increment = math.log(max_timescale) / (half - 1)
    inverse_timescales = torch.exp(-log_increment * torch.arange(half))
    angles = torch.arange(length)[:, None] * inverse_timescales[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class Float32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the module dtype (as whisper does, for fp16/bf16 stability)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).to(x.dtype)


class WhisperSelfAttention(nn.Module):
    """Multi-head self-attention with whisper's parameter names (``key`` has no bias)."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D)`` -> ``(B, T, D)``, full (unmasked) attention over the window."""
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, H, T, D/H)
            return t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)

        attended = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))


class WhisperEncoderBlock(nn.Module):
    """Pre-norm residual block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` with a 4x GELU MLP."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = WhisperSelfAttention(n_state, n_head)
        self.attn_ln = Float32LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = Float32LayerNorm(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperAudioEncoder(nn.Module):
    """The openai-whisper audio encoder; parameter names match the checkpoint's ``encoder.*`` keys.

    Input: log-mel ``(B, n_mels, 2 n_audio_ctx)`` = ``(B, 80, 3000)``. The stem (two GELU convolutions, the second
    with stride 2) halves the time axis to ``n_audio_ctx`` = 1500 positions, adds the sinusoidal table, then the
    blocks run; ``ln_post`` is only applied by :meth:`forward`.
    """

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        width = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, width))
        self.blocks = nn.ModuleList(WhisperEncoderBlock(width, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        self.ln_post = Float32LayerNorm(width)

    @property
    def num_hidden_states(self) -> int:
        """L + 1: the stem output and one per block."""
        return len(self.blocks) + 1

    def hidden_states(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, 2 n_ctx)`` -> ``(B, n_ctx, L+1, D)``: stem output, then each block's output (no ln_post)."""
        expected = (self.dims.n_mels, self.dims.window_mel_frames)
        if mel.ndim != 3 or tuple(mel.shape[1:]) != expected:
            raise ValueError(f"expected log-mel of shape (B, {expected[0]}, {expected[1]}), got {tuple(mel.shape)}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding.to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=2)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``(B, n_mels, 2 n_ctx)`` -> ``(B, n_ctx, D)``: the final encoder output (after ``ln_post``)."""
        return self.ln_post(self.hidden_states(mel)[:, :, -1])


def _as_dims(dims: WhisperDims | Mapping[str, Any]) -> WhisperDims:
    return dims if isinstance(dims, WhisperDims) else WhisperDims.from_dict(dims)


#: Weight gain of the stem convolutions of a seeded random encoder. A log-mel has a std of ~0.5 and each GELU
#: keeps about half of the variance, so at gain 1 the stem's audio content reaches ~1/5 of the unit-amplitude
#: positional table it is added to: the tokens are then mostly *where* in the window a frame is, and the loudness
#: explains ~2 % of their variance. Gain 2 brings the content to the table's scale (~20 %); the demo's tiny U-Net
#: then follows the syllables, not only speech against silence (seed 7's held-out clips: r_drive 0.67 -> 0.78).
RANDOM_STEM_GAIN = 2.0


def build_whisper_encoder(dims: WhisperDims | Mapping[str, Any], seed: int | None = 0) -> WhisperAudioEncoder:
    """A randomly initialised encoder for tests and demos (the positional table is the real sinusoid table).

    With a ``seed`` the weights are reproducible and scaled so activations stay O(1) through the blocks:
    matrices ``N(0, 1) / sqrt(fan_in)`` (the two stem convolutions times :data:`RANDOM_STEM_GAIN`, so the audio
    content of the tokens is not drowned by the positional table), LayerNorm weights ``1 + 0.05 N(0, 1)``, biases
    ``0.05 N(0, 1)``. ``seed=None`` keeps PyTorch's default initialisation.
    """
    encoder = WhisperAudioEncoder(_as_dims(dims))
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in encoder.named_parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                if parameter.ndim >= 2:
                    gain = RANDOM_STEM_GAIN if name.startswith("conv") else 1.0
                    parameter.copy_(noise * gain / math.sqrt(parameter[0].numel()))
                elif name.endswith("ln.weight") or name.endswith("ln_post.weight"):
                    parameter.copy_(1.0 + 0.05 * noise)
                else:
                    parameter.copy_(0.05 * noise)
    return encoder.eval()


def load_encoder_state_dict(
    encoder: WhisperAudioEncoder, state_dict: Mapping[str, Any], source: str = "checkpoint"
) -> WhisperAudioEncoder:
    """Strictly load the ``encoder.*`` entries of a full whisper state dict into ``encoder``; returns it.

    Decoder entries (``decoder.*``) are expected and ignored. Any missing, unexpected or mis-shaped
    ``encoder.*`` entry is a :class:`CheckpointError` naming them (names relative to ``encoder.``).
    """
    prefix = "encoder."
    found = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    return load_state_dict_strict(encoder, found, f"the encoder.* entries of {source}")


def load_whisper_encoder(
    path: str | PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> WhisperAudioEncoder:
    """Build the encoder from an openai-whisper checkpoint ``{"dims", "model_state_dict"}`` and load it strictly.

    Read through :mod:`lsync.checkpoints` (``torch.load(weights_only=True)``); returned in eval mode on
    ``device`` in ``dtype``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"whisper checkpoint {path} not found", "check the path (LatentSync uses whisper/tiny.pt)")
    checkpoint = read_state_dict(path)
    if checkpoint.container != "whisper":
        raise CheckpointError(
            f"{path} is not an openai-whisper checkpoint (it is a {checkpoint.container!r} container, "
            "not dims and model_state_dict)",
            "pass an openai-whisper .pt file (e.g. tiny.pt)",
        )
    try:
        dims = WhisperDims.from_dict(checkpoint.dims, source=f"{path} dims")
    except ConfigError as error:
        raise CheckpointError(error.what, "pass an openai-whisper .pt file") from error
    encoder = WhisperAudioEncoder(dims)
    load_encoder_state_dict(encoder, checkpoint.state_dict, source=str(path))
    return encoder.to(device=device, dtype=dtype).eval()


#: Key of a U-Net checkpoint's ``config.json`` that records :func:`encoder_digest` of the encoder it trained with.
AUDIO_ENCODER_KEY = "_audio_encoder"


def encoder_digest(encoder: WhisperAudioEncoder) -> str:
    """``sha256:<hex>`` of what the encoder computes: its dims and every weight tensor (name, dtype, shape, bytes).

    A U-Net learns the tokens of one encoder; its training run records this digest so that inference can refuse
    another one (e.g. a tiny preset's random encoder from another lsync version), which would feed it tokens it
    has never seen and give a mouth that ignores the audio."""
    digest = hashlib.sha256(json.dumps(asdict(encoder.dims), sort_keys=True).encode())
    for name, tensor in encoder.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


# ------------------------------------------------------------------------------------------------ windowing
@dataclass(frozen=True)
class EncoderWindow:
    """One encoder pass over long audio, in 50 Hz positions.

    The pass reads log-mel columns ``2 start .. 2 start + 2 n_ctx - 1`` (zero-padded past the end) and produces
    positions ``start .. start + n_ctx - 1``, of which ``keep_start .. keep_end - 1`` go to the output.
    """

    start: int
    keep_start: int
    keep_end: int


def reference_window_plan(num_mel_frames: int, window_positions: int = 1500) -> list[EncoderWindow]:
    """The reference segmentation: back-to-back 30 s segments, each keeping ``int(segment_frames / 2)`` positions.

    Segments that keep nothing (a 1-column remainder) are left out: they do not change the output.
    """
    window_frames = 2 * window_positions
    plan = []
    for seek in range(0, num_mel_frames, window_frames):
        kept = min(window_frames, num_mel_frames - seek) // 2
        if kept:
            plan.append(EncoderWindow(seek // 2, seek // 2, seek // 2 + kept))
    return plan


def overlap_window_plan(
    num_mel_frames: int, window_positions: int = 1500, margin: int = DEFAULT_OVERLAP_MARGIN
) -> list[EncoderWindow]:
    """Overlapping 30 s windows whose kept parts tile ``0 .. num_mel_frames // 2 - 1`` exactly once.

    * Window 0 is the reference's first segment (start 0, zero-padded if the audio is shorter) and keeps its
      first ``window_positions`` (1500) positions, so the first 30 s - and all of any audio up to 30 s - are
      bit-identical to the reference.
    * Every later window starts ``margin`` positions before the first position it keeps and keeps
      ``window_positions - 2 margin`` positions (hop 1000 = 20 s with the default 250 = 5 s margin), so each
      of its kept positions has at least ``margin`` positions of real audio on both sides inside the window.
    * The last window is moved left so that it ends exactly at the end of the audio: it holds only real audio (no
      zero padding) and keeps everything up to the end; its kept positions have more than ``margin`` of left
      context and run to the true end of the audio on the right.
    """
    if not 0 <= 2 * margin < window_positions:
        raise ValueError(f"margin must be in [0, {window_positions // 2}), got {margin}")
    total = num_whisper_positions(num_mel_frames)
    if total == 0:
        return []
    plan = [EncoderWindow(0, 0, min(window_positions, total))]
    next_kept = plan[0].keep_end
    while next_kept < total:
        start = next_kept - margin
        if start + window_positions >= total:
            start, keep_end = total - window_positions, total
        else:
            keep_end = start + window_positions - margin
        plan.append(EncoderWindow(start, next_kept, keep_end))
        next_kept = keep_end
    return plan


class WhisperFeatureExtractor:
    """Per-position Whisper features ``(T50, L+1, D)`` for a whole audio file, with a choice of windowing.

    ``T50 = num_samples // 160 // 2`` positions (50 per second), each the stem output and every block output
    (before ``ln_post``) of the encoder, returned as float32 on the CPU.

    The encoder sees exactly 3000 log-mel columns (30 s) per pass: its positional table has 1500 rows. The
    log-mel, including its ``max - 8`` floor, is computed once over the whole file in both modes.

    ``windowing="reference"`` reproduces LatentSync exactly: back-to-back 30 s segments, the last one
    zero-padded (0.0 in the normalised log-mel domain, which is not silence), each keeping ``int(frames / 2)``
    positions. Positions on either side of every 30 s boundary are computed with no context across it, and
    the two sides come from different encoder passes, so the features jump there - a visible quality drop in
    the lip-sync every 30 s.

    ``windowing="overlap"`` (default) runs the windows of :func:`overlap_window_plan`: the first window is the
    reference's first segment (so the output equals the reference over the first 30 s, and entirely for audio
    up to 30 s); after it, windows overlap by 10 s (hop 20 s) and each contributes only its central 20 s, so
    every position after the first 30 s is encoded with at least 5 s of audio on both sides (or up to the true
    end of the file), and no window is zero-padded. The price is about 1.5 encoder passes per 30 s instead of
    one. The last 5 s of the first window still lack right context (as in the reference); that is the cost of
    staying identical to the reference over the first 30 s.
    """

    def __init__(
        self,
        encoder: WhisperAudioEncoder,
        windowing: Windowing = "overlap",
        margin: int = DEFAULT_OVERLAP_MARGIN,
    ):
        if windowing not in ("overlap", "reference"):
            raise ConfigError(f"unknown whisper windowing {windowing!r}", "use 'overlap' or 'reference'")
        self.encoder = encoder.eval()
        self.windowing = windowing
        self.margin = margin

    @classmethod
    def from_checkpoint(
        cls,
        path: str | PathLike,
        windowing: Windowing = "overlap",
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> WhisperFeatureExtractor:
        return cls(load_whisper_encoder(path, device=device, dtype=dtype), windowing=windowing)

    def window_plan(self, num_mel_frames: int) -> list[EncoderWindow]:
        """The encoder passes this extractor makes for a log-mel of ``num_mel_frames`` columns."""
        window_positions = self.encoder.dims.n_audio_ctx
        if self.windowing == "reference":
            return reference_window_plan(num_mel_frames, window_positions)
        return overlap_window_plan(num_mel_frames, window_positions, self.margin)

    def log_mel(self, samples_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(num_samples,)`` -> ``(n_mels, num_samples // 160)``, see :func:`log_mel_spectrogram`."""
        return log_mel_spectrogram(samples_16k, n_mels=self.encoder.dims.n_mels)

    @torch.inference_mode()
    def features_from_log_mel(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Whole-file log-mel ``(n_mels, N)`` -> features ``(N // 2, L+1, D)`` float32 on the CPU."""
        dims = self.encoder.dims
        if log_mel.ndim != 2 or log_mel.shape[0] != dims.n_mels:
            raise ValueError(f"expected a log-mel of shape ({dims.n_mels}, N), got {tuple(log_mel.shape)}")
        parameter = next(self.encoder.parameters())
        pieces = []
        for window in self.window_plan(log_mel.shape[1]):
            segment = log_mel[:, 2 * window.start : 2 * window.start + dims.window_mel_frames]
            # The reference pads a short last segment with 0.0 (in the normalised log-mel domain) to 30 s.
            segment = F.pad(segment, (0, dims.window_mel_frames - segment.shape[1]))
            states = self.encoder.hidden_states(segment[None].to(device=parameter.device, dtype=parameter.dtype))[0]
            kept = states[window.keep_start - window.start : window.keep_end - window.start]
            pieces.append(kept.to("cpu", torch.float32))
        if not pieces:
            return torch.zeros(0, self.encoder.num_hidden_states, dims.n_audio_state)
        return torch.cat(pieces, dim=0)

    def __call__(self, samples_16k: np.ndarray | torch.Tensor) -> torch.Tensor:
        """16 kHz mono samples ``(num_samples,)`` -> features ``(num_samples // 160 // 2, L+1, D)``."""
        return self.features_from_log_mel(self.log_mel(samples_16k))


# ------------------------------------------------------------------------------------------------ per-frame chunks
def chunk_source_indices(num_positions: int, fps: float = 25, num_chunks: int | None = None, *,
                         context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """``(N, P)`` int64: the clamped Whisper positions of each video frame's chunk, ``P = 2 (left + right + 1)``
    for ``context = (left, right)`` (10 for the reference's (2, 2)).

    ``num_chunks`` defaults to the reference's count :func:`lsync.audio.timing.num_whisper_chunks`
    (``num_positions // 2 + 2`` at fps 25).
    """
    if num_positions <= 0:
        raise ValueError("no Whisper positions to chunk")
    if num_chunks is None:
        num_chunks = num_whisper_chunks(num_positions, fps)
    return frame_chunk_indices(range(num_chunks), num_positions, fps, context)


def frame_chunk_indices(frames: range, num_positions: int, fps: float = 25.0,
                        context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """``(len(frames), P)`` int64 Whisper positions of the given video frames' chunks
    (:func:`whisper_chunk_indices` per frame; P = 2 (left + right + 1))."""
    rows = [whisper_chunk_indices(frame, num_positions, fps, context) for frame in frames]
    return torch.tensor(rows, dtype=torch.int64).reshape(len(frames), whisper_chunk_positions(context))


def _gather_chunks(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """features ``(T50, L+1, D)``, indices ``(N, P)`` -> ``(N, P (L+1), D)``, position-major."""
    if features.ndim != 3:
        raise ValueError(f"expected features of shape (T50, L+1, D), got {tuple(features.shape)}")
    num_chunks = indices.shape[0]
    return features[indices.to(features.device)].reshape(num_chunks, -1, features.shape[-1])


def feature_chunks(features: torch.Tensor, fps: float = 25, *,
                   context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """The reference's ``feature2chunks``: features ``(T50, L+1, D)`` -> ``(N, P (L+1), D)``, one row per frame.

    Chunk ``i`` holds positions ``int(i 50 / fps) - 2 left .. + 2 right + 1`` (``-4 .. +5`` for the default
    ``context = (2, 2)``; ``P = 2 (left + right + 1)``) clamped into ``[0, T50 - 1]``, all layers of the first
    position, then all layers of the next, and so on. There are ``T50 // 2 + 2`` chunks at fps 25 (one or two
    more than video frames; inference uses one per frame).
    """
    return _gather_chunks(features, chunk_source_indices(features.shape[0], fps, context=context))


def feature_window(features: torch.Tensor, start_frame: int, num_frames: int = 16, fps: float = 25, *,
                   context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> torch.Tensor:
    """The U-Net input for frames ``start_frame .. start_frame + num_frames - 1``.

    features ``(T50, L+1, D)`` -> ``(num_frames, P (L+1), D)`` with ``P = 2 (left + right + 1)`` positions of
    ``context = (left, right)`` - ``(16, 50, D)`` for the reference's (2, 2) and whisper-tiny, ``(16, 10, D)``
    for (0, 0). Row ``k`` is the chunk of frame ``start_frame + k`` (positions clamped into the feature array,
    as the reference's ``crop_overlap_audio_window``), i.e. ``feature_chunks(features, context=context)
    [start_frame : start_frame + num_frames]`` wherever those chunks exist. Pass the U-Net's
    ``config.audio_feat_length`` as ``context``.
    """
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    indices = frame_chunk_indices(range(start_frame, start_frame + num_frames), features.shape[0], fps, context)
    return _gather_chunks(features, indices)


def tokens_per_frame(encoder_or_num_layers: WhisperAudioEncoder | int, *,
                     context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> int:
    """``P (L+1)`` audio tokens per video frame, ``P = 2 (left + right + 1)`` Whisper positions of ``context``
    (50 for whisper-tiny and the reference's (2, 2)); pass an encoder or its block count ``L``."""
    layers = encoder_or_num_layers if isinstance(encoder_or_num_layers, int) else len(encoder_or_num_layers.blocks)
    return whisper_chunk_positions(context) * (layers + 1)
