"""The frozen image autoencoder: diffusers ``AutoencoderKL`` (``stabilityai/sd-vae-ft-mse`` for the released
models, or a tiny random one for tests), with LatentSync's latent scaling (factor 0.18215, shift 0).

Frames go in as (B, 3, F, H, W) in [-1, 1] and latents come out as (B, 4, F, H/8, W/8), already scaled, so
callers never touch the scaling factor themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL

from lsync.config import CONFIGS_DIR
from lsync.errors import InputError

SCALING_FACTOR = 0.18215
SHIFT_FACTOR = 0.0


def load_vae(folder: str | Path | None = None, config: str | Path | dict | None = None) -> AutoencoderKL:
    """A VAE from a local diffusers folder (``config.json`` + weights), or random from a config.

    Args:
        folder: e.g. ``~/.cache/lsync/sd-vae-ft-mse``; never downloads.
        config: dict or YAML path for a randomly initialised VAE (default: ``configs/models/vae_tiny.yaml``).
    """
    if folder is not None:
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder} is not a diffusers VAE folder (no config.json)",
                             "pass the sd-vae-ft-mse folder (lsync weights list shows where it is expected)")
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    else:
        if config is None or isinstance(config, (str, Path)):
            path = Path(config) if config is not None else CONFIGS_DIR / "models" / "vae_tiny.yaml"
            config = yaml.safe_load(path.read_text())
        vae = AutoencoderKL.from_config(config)
    vae.requires_grad_(False)
    return vae.eval()


def _frames_first(video: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, C, F, H, W) -> (B*F, C, H, W), contiguous.

    Frames that come from (H, W, C) images are channels-last views; on the CPU the VAE's float32 GroupNorms lose
    precision on that layout (1e-4 instead of 1e-6 against float64 on the encoder output), so it is made
    contiguous here whatever the caller passes.
    """
    b, c, f, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).contiguous(), f


def _clip_first(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W)."""
    bf, c, h, w = frames.shape
    return frames.reshape(bf // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)


def encode(vae: AutoencoderKL, video: torch.Tensor, sample: bool = False,
           generator: torch.Generator | None = None, chunk: int = 16) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> scaled latents (B, 4, F, H/8, W/8).

    ``sample=False`` takes the posterior mode (deterministic, what inference wants); frames are encoded in
    chunks of ``chunk`` to bound activation memory.
    """
    frames, num_frames = _frames_first(video.to(vae.dtype))
    latents = []
    for part in frames.split(chunk):
        posterior = vae.encode(part).latent_dist
        latents.append(posterior.sample(generator) if sample else posterior.mode())
    latents = (torch.cat(latents) - SHIFT_FACTOR) * SCALING_FACTOR
    return _clip_first(latents, num_frames)


def decode(vae: AutoencoderKL, latents: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Scaled latents (B, 4, F, h, w) -> frames (B, 3, F, 8h, 8w), roughly in [-1, 1] (not clamped)."""
    frames, num_frames = _frames_first(latents.to(vae.dtype) / SCALING_FACTOR + SHIFT_FACTOR)
    decoded = torch.cat([vae.decode(part).sample for part in frames.split(chunk)])
    return _clip_first(decoded, num_frames)
