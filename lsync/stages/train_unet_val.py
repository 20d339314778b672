"""The validation video of a U-Net run: a ``val`` clip's faces lip-synced to another clip's audio.

Every validation renders ``<run>/val/step-NNNNNN.mp4`` with the inference sampler
(:class:`lsync.sampling.ChunkSampler`: DDIM, guidance, shared initial noise, mask compositing) on the
aligned faces of the data directory - no face detection or paste-back - with the other clip's audio muxed in.
When a SyncNet is at hand each 16-frame window of the result is scored against the audio's mel: ``sync_cosine``
is the mean cosine similarity, ``sync_accuracy`` the share of windows above 0.5 (what the SyncNet calls in sync).
Every render is also measured the way ``lsync eval mouth`` measures a result (:mod:`lsync.face.lip_gap`): the
face-mesh lip gap of the rendered faces against the loudness of the driving audio (``mouth_r_drive``) and of the
face clip's own audio (``mouth_r_source``, what a model copying the reference mouth would follow).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lsync.audio.timing import SAMPLES_PER_FRAME, audio_context, mel_start_index, mel_window_length
from lsync.console import get_logger
from lsync.data.unet_dataset import ClipInfo, UNetDataCache, decode_clip

log = get_logger(__name__)

WINDOW = 16
VAL_DIR = "val"


@dataclass
class ValidationSection:
    """The ``validation:`` section of a U-Net preset."""

    frames: int = 48  # frames rendered (at most the shorter of the two clips); 0 = no validation videos
    steps: int = 20  # DDIM steps
    guidance: float = 1.5  # classifier-free guidance scale (<= 1 skips the unconditional branch)
    seed: int = 1247
    crf: int = 18
    clip: str | None = None  # id of the val clip whose faces are rendered (default: the first)
    audio_clip: str | None = None  # id of the clip whose audio drives them (default: the first other clip)


@dataclass
class SyncScorer:
    """A frozen SyncNet and the face size it was trained at."""

    model: nn.Module
    image_size: int


class ValidationRenderer:
    """``renderer(unet) -> {"sync_cosine", "sync_accuracy", "sync_windows"}`` and a video in ``<run>/val/``.

    Args:
        run_dir: the run directory.
        face_clip, audio_clip: the clip whose faces are rendered and the clip whose audio drives them.
        cache: the U-Net data cache (Whisper features and mel of the audio clip).
        extractor: the Whisper feature extractor the U-Net trains with.
        encoder_id: its identity (cache key).
        vae: the frozen VAE; resolution: the face size.
        config: the validation settings; device: where sampling runs.
        scorer: the SyncNet, or None to render without scoring.
        current_step: returns the training step (names the video).
        audio_feat_length: the audio context of the rendered U-Net's tokens (its ``config.audio_feat_length``;
            the sampler refuses tokens of another context).
    """

    def __init__(self, run_dir: Path, face_clip: ClipInfo, audio_clip: ClipInfo, cache: UNetDataCache,
                 extractor, encoder_id: str, vae: nn.Module, resolution: int, config: ValidationSection,
                 device: torch.device, scorer: SyncScorer | None, current_step: Callable[[], int], *,
                 audio_feat_length: Sequence[int]):
        from lsync.audio.mel import load_wav_16k_mono
        from lsync.manifest import file_digest
        from lsync.media.audio import frame_rms, write_wav

        self.run_dir, self.vae, self.extractor = Path(run_dir), vae, extractor
        self.resolution, self.config, self.device = resolution, config, device
        self.scorer, self.current_step = scorer, current_step
        self.face_clip, self.audio_clip = face_clip, audio_clip
        self.num_frames = min(config.frames, face_clip.num_frames, audio_clip.num_frames)
        self.faces = decode_clip(face_clip.video, resolution, self.num_frames)  # (N, R, R, 3) uint8
        audio_digest = file_digest(audio_clip.audio)
        features_file = cache.ensure_whisper(audio_clip.audio, audio_digest, extractor, encoder_id)
        self.audio_feat_length = audio_context(audio_feat_length)
        # (N, P (L+1), D): P = 10 Whisper positions per frame for the reference's context (2, 2)
        self.audio_features = cache.whisper_window(features_file, 0, self.num_frames, self.audio_feat_length)
        self.mel = torch.from_numpy(np.array(cache.load_mel(audio_clip.audio, audio_digest)))  # (80, T)
        self.wav = self.run_dir / VAL_DIR / "audio.wav"
        samples = load_wav_16k_mono(audio_clip.audio)[: self.num_frames * SAMPLES_PER_FRAME]
        write_wav(self.wav, samples, 16000)
        self.driving_loudness = frame_rms(samples, SAMPLES_PER_FRAME)
        source = load_wav_16k_mono(face_clip.audio)[: self.num_frames * SAMPLES_PER_FRAME]
        self.source_loudness = frame_rms(source, SAMPLES_PER_FRAME)

    def describe(self) -> str:
        return f"{self.num_frames} frames of '{self.face_clip.id}' with the audio of '{self.audio_clip.id}'"

    def render(self, unet: nn.Module) -> np.ndarray:
        """The lip-synced faces, uint8 (N, R, R, 3)."""
        from lsync.diffusion import make_scheduler
        from lsync.models.presets import ModelBundle
        from lsync.sampling import ChunkSampler

        bundle = ModelBundle(preset="training", resolution=self.resolution, unet=unet, vae=self.vae,
                             audio=self.extractor, scheduler=make_scheduler(), files={})
        sampler = ChunkSampler(bundle, self.device, torch.float32, steps=self.config.steps,
                               guidance=self.config.guidance, seed=self.config.seed)
        chunks = []
        for start in range(0, self.num_frames, WINDOW):
            stop = min(start + WINDOW, self.num_frames)
            faces = sampler(self.faces[start:stop], self.audio_features[start:stop])  # (n, 3, R, R) in [-1, 1]
            chunks.append(((faces.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
        return torch.cat(chunks).numpy()

    def write_video(self, frames: np.ndarray) -> Path:
        from lsync.media.video import VideoWriter

        path = self.run_dir / VAL_DIR / f"step-{self.current_step():06d}.mp4"
        with VideoWriter(path, fps=25, width=self.resolution, height=self.resolution, crf=self.config.crf,
                         audio_path=self.wav) as writer:
            writer.write(frames)
        return path

    @torch.no_grad()
    def score(self, frames: np.ndarray) -> dict[str, float]:
        """SyncNet cosine of every whole 16-frame window of ``frames`` against the audio's mel window."""
        from lsync.losses import syncnet_input
        from lsync.models.syncnet import cosine_similarity

        model, cosines = self.scorer.model, []
        pixels = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, N, R, R)
        for start in range(0, self.num_frames - WINDOW + 1, WINDOW):
            column = mel_start_index(start)
            mel = self.mel[:, column:column + mel_window_length(WINDOW)]
            if mel.shape[1] < mel_window_length(WINDOW):
                break
            images = syncnet_input(pixels[None, :, start:start + WINDOW], self.scorer.image_size)
            dtype = next(model.parameters()).dtype
            vision, audio = model(images.to(self.device, dtype), mel[None, None].to(self.device, dtype))
            cosines.append(float(cosine_similarity(vision.float(), audio.float())[0]))
        if not cosines:
            return {}
        values = np.array(cosines)
        return {"sync_cosine": float(values.mean()), "sync_accuracy": float((values > 0.5).mean()),
                "sync_windows": float(len(values))}

    def mouth(self, frames: np.ndarray) -> dict[str, float]:
        """How well the rendered mouth follows the driving audio and the face clip's own (see the module docstring)."""
        from lsync.face.lip_gap import lip_gaps
        from lsync.mouth_metrics import best_lag_correlation

        gaps = lip_gaps(frames)
        scores = {"mouth_face_share": float(np.isfinite(gaps).mean())}
        for name, loudness in (("mouth_r_drive", self.driving_loudness), ("mouth_r_source", self.source_loudness)):
            fit = best_lag_correlation(gaps, loudness)
            if fit.r is not None:
                scores[name] = fit.r
        return scores

    def __call__(self, unet: nn.Module) -> dict[str, Any]:
        frames = self.render(unet)
        path = self.write_video(frames)
        log.debug("validation video %s", path)
        scores = self.mouth(frames)
        if self.scorer is not None:
            scores.update(self.score(frames))
        return scores
