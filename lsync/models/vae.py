"""The frozen image autoencoder: diffusers ``AutoencoderKL`` (``stabilityai/sd-vae-ft-mse`` for the released
models, one trained by ``lsync train vae`` for the tiny preset, or a random one for tests), with its latent scaling.

Frames go in as (B, 3, F, H, W) in [-1, 1] and latents come out as (B, 4, F, H/8, W/8), already scaled, so
callers never touch the scaling factor themselves. The scale and shift are the VAE config's ``scaling_factor``
and ``shift_factor`` (SD's 0.18215 and none, LatentSync's values, for the released VAE; a trained tiny VAE
records the factors that give its latents unit variance, see :mod:`lsync.stages.train_vae`).

A VAE is a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``); :func:`resolve_vae_folder`
also accepts a finished ``lsync train vae`` run, whose ``vae/`` folder holds the exported weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL

from lsync.config import MODELS_DIR
from lsync.errors import InputError

SCALING_FACTOR = 0.18215  # SD's, and the default of a config without one
SHIFT_FACTOR = 0.0
#: The folder of a ``vae-run`` that holds the exported diffusers VAE.
EXPORT_DIR = "vae"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
#: Key of a U-Net checkpoint's config.json naming the VAE its latents belong to (relative to the checkpoint).
VAE_KEY = "_vae"


def load_vae(folder: str | Path | None = None, config: str | Path | dict | None = None) -> AutoencoderKL:
    """A VAE from a local diffusers folder (``config.json`` + weights), or random from a config.

    Args:
        folder: e.g. ``~/.cache/lsync/sd-vae-ft-mse``, or a finished ``lsync train vae`` run; never downloads.
        config: dict or YAML path for a randomly initialised VAE (default: ``configs/models/vae_tiny.yaml``).
    """
    if folder is not None:
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file() and (folder / EXPORT_DIR).is_dir():
            folder = resolve_vae_folder(folder)  # an lsync train vae run
        if not (folder / "config.json").is_file():
            raise InputError(f"{folder} is not a diffusers VAE folder (no config.json)",
                             "pass the sd-vae-ft-mse folder (lsync weights list shows where it is expected)")
        vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    else:
        if config is None or isinstance(config, (str, Path)):
            path = Path(config) if config is not None else MODELS_DIR / "vae_tiny.yaml"
            config = yaml.safe_load(path.read_text())
        vae = AutoencoderKL.from_config(config)
    vae.requires_grad_(False)
    return vae.eval()


def resolve_vae_folder(path: str | Path) -> Path:
    """The diffusers folder a ``--vae`` argument names: the folder itself, or the ``vae/`` export of a finished
    ``lsync train vae`` run."""
    p = Path(path).expanduser()
    if (p / "config.json").is_file() and (p / DIFFUSERS_WEIGHTS).is_file():
        return p
    if (p / EXPORT_DIR / "config.json").is_file() and (p / EXPORT_DIR / DIFFUSERS_WEIGHTS).is_file():
        return p / EXPORT_DIR
    if not p.exists():
        raise InputError(f"VAE {p} does not exist", "pass an lsync train vae run or a diffusers VAE folder")
    if (p / "checkpoints").is_dir():
        raise InputError(f"the VAE run {p} has not finished (no {EXPORT_DIR}/ export yet)",
                         f"rerun `lsync train vae DATA {p}` to finish it")
    raise InputError(f"{p} is neither an lsync train vae run nor a diffusers VAE folder",
                     f"pass a folder with config.json + {DIFFUSERS_WEIGHTS}, or a finished lsync train vae run")


def checkpoint_vae(checkpoint: str | Path) -> Path | None:
    """The VAE folder a U-Net checkpoint directory names in its ``config.json`` (``_vae``), or None."""
    from lsync.checkpoints import CONFIG_NAME, load_model_config

    directory = Path(checkpoint)
    if not (directory / CONFIG_NAME).is_file():
        return None
    entry = load_model_config(directory).get(VAE_KEY)
    if not entry:
        return None
    folder = Path(entry) if Path(entry).is_absolute() else (directory / entry).resolve()
    if not (folder / "config.json").is_file():
        raise InputError(f"the U-Net {directory} was trained with the VAE {folder}, which is missing",
                         "put it back, or pass the VAE it was trained with as --vae")
    return folder


def vae_digest(folder: str | Path) -> str:
    """Content digest of a diffusers VAE folder (its config and weights files)."""
    from lsync.manifest import file_digest, json_digest

    folder = Path(folder)
    return json_digest({p.name: file_digest(p) for p in sorted(folder.iterdir()) if p.is_file()})


def latent_scale(vae: AutoencoderKL) -> tuple[float, float]:
    """(scaling_factor, shift_factor) of a VAE: scaled = (z - shift) * scale."""
    scale = getattr(vae.config, "scaling_factor", None)
    shift = getattr(vae.config, "shift_factor", None)
    return (float(scale) if scale is not None else SCALING_FACTOR,
            float(shift) if shift is not None else SHIFT_FACTOR)


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
    scale, shift = latent_scale(vae)
    latents = (torch.cat(latents) - shift) * scale
    return _clip_first(latents, num_frames)


def decode(vae: AutoencoderKL, latents: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Scaled latents (B, 4, F, h, w) -> frames (B, 3, F, 8h, 8w), roughly in [-1, 1] (not clamped)."""
    scale, shift = latent_scale(vae)
    frames, num_frames = _frames_first(latents.to(vae.dtype) / scale + shift)
    decoded = torch.cat([vae.decode(part).sample for part in frames.split(chunk)])
    return _clip_first(decoded, num_frames)
