"""Audio-visual sync of a talking face: the best offset, LSE-D and LSE-C, from a SyncNet.

For a clip of T aligned faces and its 16 kHz audio, a *scorer* embeds every video window (``window`` frames
starting at frame ``s``) and every audio window (the audio of ``window`` frames starting at frame ``a``). The
distance of video window ``s`` to the audio shifted by ``d`` frames is ``dist(video[s], audio[s + d])`` for
every ``d`` in ``[-K, K]``; pairs whose audio window does not exist (or whose video window holds a frame
without a face) are left out. Then, following Chung & Zisserman's SyncNet evaluation:

* ``curve[d]`` - the distance averaged over the video windows that have a pair at ``d``;
* ``offset`` - ``argmin_d curve[d]``;
* ``lse_d`` - ``min curve`` (the mean distance at that offset);
* ``lse_c`` - ``median(curve) - min(curve)`` (how clearly the best offset stands out).

**Sign.** ``offset = +K`` means the audio is *late*: the sound that belongs to video frame ``t`` is heard at
frame ``t + K``. That is the convention of ``lsync synth --av-offset K``, so a clip made with ``K`` scores
``offset == K``; shifting the audio ``K`` frames earlier (video frame ``t`` gets audio frame ``t + K``) brings
it to 0. syncnet_python prints the opposite sign ("AV offset" = ``-offset``).

**Scorers.** :class:`StableSyncNetScorer` (LatentSync's SyncNet, 16-frame windows of the lower half of the face
with the Wav2Lip mel) uses the distance ``1 - cos(video, audio)`` of its unit embeddings, in ``[0, 1]`` (the
embeddings are non-negative), so its LSE-D/LSE-C are on a cosine scale, not the classic one.
:class:`SyncNetV2Scorer` (classic SyncNet v2, 5-frame windows, MFCC) uses the
Euclidean distance of its raw embeddings, which is the scale papers report LSE-C/LSE-D on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch

from lsync.errors import InputError
from lsync.models import syncnet_v2

DEFAULT_MAX_OFFSET = 15
#: Frames aligned and prepared at a time (keeps the full-size aligned faces of a long video out of memory).
ALIGN_BLOCK = 64


# ----------------------------------------------------------------------------------------------- scores
@dataclass
class SyncScore:
    """The sync of one clip. ``offset``/``lse_d``/``lse_c`` are ``None`` when no window could be scored."""

    offset: int | None
    lse_d: float | None
    lse_c: float | None
    offsets: list[int]
    curve: list[float | None]  # mean distance per offset (None: no pair at that offset)
    windows: int  # video windows that took part
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, with_curve: bool = False) -> dict[str, Any]:
        row = {"offset": self.offset, "lse_d": _round(self.lse_d), "lse_c": _round(self.lse_c),
               "windows": self.windows, **self.extra}
        if with_curve:
            row["curve"] = {str(d): _round(v) for d, v in zip(self.offsets, self.curve)}
        return row


def _round(value: float | None, digits: int = 5) -> float | None:
    return None if value is None else round(float(value), digits)


def shifted_distances(video: torch.Tensor, audio: torch.Tensor, distance, max_offset: int,
                      video_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Distances of every video window to the audio shifted by each offset.

    Args:
        video: (V, D) embeddings of the video windows starting at frames 0 .. V-1.
        audio: (A, D) embeddings of the audio windows starting at frames 0 .. A-1.
        distance: elementwise ``(N, D), (N, D) -> (N,)``.
        max_offset: K; offsets ``-K .. K``.
        video_valid: (V,) bool, False for windows that must not count (a face-less frame inside).

    Returns:
        (V, 2K+1) float32, column ``k`` for offset ``d = k - K``; NaN where audio window ``s + d`` does not
        exist or the video window is invalid.
    """
    num_video, num_audio = video.shape[0], audio.shape[0]
    offsets = torch.arange(-max_offset, max_offset + 1)
    starts = torch.arange(num_video)
    audio_index = starts[:, None] + offsets[None, :]  # (V, 2K+1)
    valid = (audio_index >= 0) & (audio_index < num_audio)
    if video_valid is not None:
        valid &= video_valid.to(torch.bool)[:, None]
    out = torch.full(audio_index.shape, float("nan"))
    rows, cols = torch.nonzero(valid, as_tuple=True)
    if rows.numel():
        out[rows, cols] = distance(video[rows].float(), audio[audio_index[rows, cols]].float()).float().cpu()
    return out


def score_distances(distances: torch.Tensor, max_offset: int) -> SyncScore:
    """Offset, LSE-D and LSE-C from the (V, 2K+1) matrix of :func:`shifted_distances`."""
    offsets = list(range(-max_offset, max_offset + 1))
    matrix = distances.double().numpy()
    counted = ~np.isnan(matrix)
    counts = counted.sum(axis=0)
    windows = int(counted.any(axis=1).sum())
    with np.errstate(invalid="ignore"):
        curve = np.where(counts > 0, np.nansum(matrix, axis=0) / np.maximum(counts, 1), np.nan)
    if not np.isfinite(curve).any():
        return SyncScore(None, None, None, offsets, [None] * len(offsets), windows)
    best = int(np.nanargmin(curve))
    minimum = float(curve[best])
    return SyncScore(offset=offsets[best], lse_d=minimum, lse_c=float(np.nanmedian(curve)) - minimum,
                     offsets=offsets, curve=[None if np.isnan(v) else float(v) for v in curve], windows=windows)


def window_validity(has_face: np.ndarray, window: int) -> np.ndarray:
    """(T - window + 1,) bool: True where all ``window`` frames from that start have a face."""
    has_face = np.asarray(has_face, bool)
    if len(has_face) < window:
        return np.zeros(0, bool)
    missing = np.concatenate([[0], np.cumsum(~has_face)])
    return (missing[window:] - missing[:-window]) == 0


# ----------------------------------------------------------------------------------------------- scorers
class SyncScorer(Protocol):
    """What :func:`score_sync` needs from a SyncNet."""

    name: str
    window: int  # video frames per window
    face_size: int  # aligned faces are made (or resized) to this size before :meth:`prepare_faces`

    def prepare_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, R, R, 3) uint8 aligned faces -> the compact per-frame input the video tower reads."""

    def embed_video(self, frames: np.ndarray) -> torch.Tensor:
        """Prepared frames (T, ...) -> (T - window + 1, D) embeddings of the windows starting at each frame."""

    def embed_audio(self, samples: np.ndarray) -> torch.Tensor:
        """16 kHz mono float samples -> (A, D) embeddings of the audio windows starting at frames 0 .. A-1."""

    def distance(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """(N, D), (N, D) -> (N,)."""


def score_sync(scorer: SyncScorer, frames: np.ndarray, samples: np.ndarray, max_offset: int = DEFAULT_MAX_OFFSET,
               has_face: np.ndarray | None = None) -> SyncScore:
    """The sync of prepared frames (``scorer.prepare_faces``) against 16 kHz ``samples``."""
    if len(frames) < scorer.window:
        return SyncScore(None, None, None, list(range(-max_offset, max_offset + 1)),
                         [None] * (2 * max_offset + 1), 0)
    video = scorer.embed_video(frames)
    audio = scorer.embed_audio(samples)
    valid = None if has_face is None else torch.from_numpy(window_validity(has_face, scorer.window))
    return score_distances(shifted_distances(video, audio, scorer.distance, max_offset, valid), max_offset)


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 (or fp16) autocast on CUDA, nothing on the CPU (where autocast mostly slows the convs down)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def set_threads(threads: int | None) -> None:
    """Fix torch's CPU threads (``None`` leaves the default). One thread per process is much faster than
    several when other processes share the cores: idle OpenMP threads spin and steal them."""
    if threads:
        torch.set_num_threads(threads)


def resize_faces(faces: np.ndarray, size: int) -> np.ndarray:
    """(N, R, R, 3) uint8 -> (N, size, size, 3): area filter when shrinking, bicubic when enlarging."""
    if faces.shape[1] == size and faces.shape[2] == size:
        return faces
    interpolation = cv2.INTER_AREA if faces.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(face, (size, size), interpolation=interpolation) for face in faces])


class StableSyncNetScorer:
    """LatentSync's StableSyncNet: 16-frame windows of the lower face half, Wav2Lip mel, ``1 - cos`` distance.

    Args:
        model: a :class:`~lsync.models.syncnet.StableSyncNet` in eval mode (on ``device``).
        image_size: the face size S its visual tower takes (input ``(3 * 16, S/2, S)``).
    """

    name = "stable-syncnet"
    distance_name = "1 - cosine similarity"

    def __init__(self, model, image_size: int, device: torch.device, batch_size: int = 64):
        from lsync.audio.timing import SYNCNET_NUM_FRAMES

        self.model = model
        self.face_size = image_size
        self.window = SYNCNET_NUM_FRAMES
        self.device = device
        self.batch_size = batch_size

    def prepare_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, R, R, 3) uint8 -> (N, S/2, S, 3) uint8: resized to S, lower half (the rows SyncNet sees)."""
        resized = resize_faces(np.asarray(faces), self.face_size)
        return np.ascontiguousarray(resized[:, self.face_size // 2:])

    @torch.no_grad()
    def embed_video(self, frames: np.ndarray) -> torch.Tensor:
        """(T, S/2, S, 3) uint8 lower halves -> (T - 15, D) unit embeddings."""
        frames_t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T, 3, S/2, S)
        starts = range(len(frames) - self.window + 1)
        out = []
        for first in range(0, len(starts), self.batch_size):
            batch = torch.stack([frames_t[s:s + self.window].reshape(-1, *frames_t.shape[2:])
                                 for s in starts[first:first + self.batch_size]])  # (B, 48, S/2, S), ch 3f + c
            batch = batch.to(self.device).float().div_(127.5).sub_(1.0)
            with autocast_for(self.device):
                out.append(self.model.embed_images(batch).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_audio(self, samples: np.ndarray) -> torch.Tensor:
        """16 kHz samples -> (A, D) unit embeddings of the 52-column mel windows of frames 0 .. A-1."""
        from lsync.audio.mel import melspectrogram
        from lsync.audio.timing import mel_start_index, mel_window_length

        mel = torch.from_numpy(melspectrogram(np.asarray(samples, np.float32)).astype(np.float32))
        length = mel_window_length(self.window)
        count = 0
        while mel_start_index(count) + length <= mel.shape[1]:
            count += 1
        out = []
        for first in range(0, count, self.batch_size):
            batch = torch.stack([mel[:, mel_start_index(a):mel_start_index(a) + length]
                                 for a in range(first, min(count, first + self.batch_size))])[:, None]
            with autocast_for(self.device):
                out.append(self.model.embed_audio(batch.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.model.embed_dim)

    @staticmethod
    def distance(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return 1.0 - (video * audio).sum(dim=1)


class SyncNetV2Scorer:
    """:class:`SyncScorer` for SyncNet v2 (:mod:`lsync.models.syncnet_v2`): 5-frame windows, Euclidean distance."""

    name = "syncnet-v2"
    distance_name = "euclidean distance of the raw 1024-d embeddings"
    window = syncnet_v2.VIDEO_WINDOW
    face_size = syncnet_v2.FACE_SIZE

    def __init__(self, model, device: torch.device, batch_size: int = 32):
        self.model = model
        self.device = device
        self.batch_size = batch_size

    def prepare_faces(self, faces: np.ndarray) -> np.ndarray:
        """(N, R, R, 3) RGB uint8 -> (N, 224, 224, 3) BGR uint8 (syncnet_python reads frames with OpenCV)."""
        return np.ascontiguousarray(resize_faces(np.asarray(faces), self.face_size)[..., ::-1])

    @torch.no_grad()
    def embed_video(self, frames: np.ndarray) -> torch.Tensor:
        """(T, 224, 224, 3) BGR uint8 -> (T - 4, 1024)."""
        frames_t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
        starts = range(frames_t.shape[1] - self.window + 1)
        out = []
        for first in range(0, len(starts), self.batch_size):
            batch = torch.stack([frames_t[:, s:s + self.window] for s in starts[first:first + self.batch_size]])
            with autocast_for(self.device):
                out.append(self.model.embed_lips(batch.to(self.device).float()).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def embed_audio(self, samples: np.ndarray) -> torch.Tensor:
        """16 kHz samples -> (A, 1024) embeddings of MFCC columns ``4a .. 4a + 19`` for frames a = 0 .. A-1."""
        ceps = torch.from_numpy(syncnet_v2.mfcc(samples))
        count = max(0, (ceps.shape[1] - syncnet_v2.MFCC_WINDOW) // syncnet_v2.MFCC_PER_FRAME + 1)
        step, width = syncnet_v2.MFCC_PER_FRAME, syncnet_v2.MFCC_WINDOW
        out = []
        for first in range(0, count, self.batch_size):
            batch = torch.stack([ceps[:, step * a:step * a + width]
                                 for a in range(first, min(count, first + self.batch_size))])[:, None]
            with autocast_for(self.device):
                out.append(self.model.embed_audio(batch.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, syncnet_v2.EMBED_DIM)

    @staticmethod
    def distance(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pairwise_distance(video, audio)


# ----------------------------------------------------------------------------------------------- loading
def load_scorer(metric: str, syncnet: str | None, device: torch.device, batch_size: int = 64,
                image_size: int | None = None, geometry: str = "syncnet_16_pixel_attn") -> SyncScorer:
    """The scorer for ``--metric``: ``stable`` (a run, checkpoint dir or stable_syncnet.pt) or ``syncnet-v2``
    (``syncnet_v2.model``)."""
    from lsync.errors import UsageError

    if syncnet is None:
        raise UsageError("no SyncNet given", "pass --syncnet RUN_OR_CKPT (or syncnet_v2.model with "
                                             "--metric syncnet-v2)")
    if metric == "syncnet-v2":
        return SyncNetV2Scorer(syncnet_v2.load_syncnet_v2(syncnet, device), device, batch_size)
    if metric != "stable":
        raise UsageError(f"unknown sync metric {metric!r}", "use --metric stable or --metric syncnet-v2")
    from lsync.stages.eval_syncnet import EvalSyncNetConfig, load_for_eval

    loaded = load_for_eval(syncnet, EvalSyncNetConfig(image_size=image_size, geometry=geometry), device)
    scorer = StableSyncNetScorer(loaded.model, loaded.image_size, device, batch_size)
    scorer.source = str(loaded.source)
    return scorer


# ----------------------------------------------------------------------------------------------- data clips
def clip_faces(data_dir: Path, record: dict[str, Any], scorer) -> np.ndarray:
    """The prepared faces of a data-directory clip (already aligned: decoded as they are, then prepared)."""
    from lsync.media.video import VideoReader

    prepared, block = [], []
    for frame in VideoReader(data_dir / record["video"], fps=None):
        block.append(frame)
        if len(block) == ALIGN_BLOCK:
            prepared.append(scorer.prepare_faces(np.stack(block)))
            block = []
    if block:
        prepared.append(scorer.prepare_faces(np.stack(block)))
    if not prepared:
        raise InputError(f"{data_dir / record['video']} has no frames", "preprocess the clip again")
    return np.concatenate(prepared)


def score_clip(data_dir: Path, record: dict[str, Any], scorer, max_offset: int):
    """The :class:`SyncScore` of a data-directory clip against its own wav."""
    from lsync.audio.mel import load_wav_16k_mono

    frames = clip_faces(data_dir, record, scorer)
    samples = load_wav_16k_mono(data_dir / record["audio"])
    return score_sync(scorer, frames, samples, max_offset)
