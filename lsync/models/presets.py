"""Build the models of a weights preset: ``tiny`` (random, CPU-sized) or the released LatentSync 1.5 / 1.6 files.

One place decides which config and which file make each model, so inference and fine-tuning load a preset
the same way. Released files are found by :mod:`lsync.weights` and loaded strictly through
:mod:`lsync.checkpoints`: a missing, unexpected or mis-shaped key is an error, never skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lsync.config import MODELS_DIR
from lsync.weights import PRESET_RESOLUTION, resolve_weights

#: A U-Net architecture file beside ``latentsync_unet.pt`` (the reference's ``model:`` keys as JSON).
UNET_CONFIG_NAME = "unet_config.json"


def model_config(name: str) -> dict[str, Any]:
    """A model config from ``configs/models/<name>.yaml``."""
    return yaml.safe_load((MODELS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


@dataclass
class ModelBundle:
    """What inference needs: the U-Net, the VAE, the Whisper feature extractor and the DDIM scheduler."""

    preset: str
    resolution: int
    unet: Any  # UNet3DConditionModel
    vae: Any  # diffusers AutoencoderKL
    audio: Any  # WhisperFeatureExtractor
    scheduler: Any  # diffusers DDIMScheduler
    files: dict[str, Path]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> ModelBundle:
        for model in (self.unet, self.vae, self.audio.encoder):
            model.to(device=device, dtype=dtype)
        return self


def load_models(
    preset: str,
    weights_dir: str | Path | None = None,
    seed: int = 0,
    unet_config: dict[str, Any] | None = None,
    windowing: str = "overlap",
) -> ModelBundle:
    """The inference models of ``preset`` on the CPU in float32 (move them with :meth:`ModelBundle.to`).

    Args:
        preset: ``tiny``, ``latentsync-1.5`` or ``latentsync-1.6``.
        weights_dir: searched first for released files (see :mod:`lsync.weights`).
        seed: random initialisation of the ``tiny`` models.
        unet_config: override the U-Net architecture (e.g. a checkpoint made with another config).
        windowing: Whisper long-audio windowing, ``overlap`` (no seams) or ``reference``.
    """
    from lsync.audio.whisper import WhisperFeatureExtractor, build_whisper_encoder, load_whisper_encoder
    from lsync.diffusion import make_scheduler
    from lsync.models.vae import load_vae

    files = resolve_weights(preset, weights_dir, need="inference")
    if preset == "tiny":
        torch.manual_seed(seed)
        unet = build_unet(unet_config or model_config("unet_tiny"))
        vae = load_vae(config=MODELS_DIR / "vae_tiny.yaml")
        encoder = build_whisper_encoder(model_config("whisper_tiny"), seed=seed)
    else:
        beside = None if unet_config else unet_config_beside(files["unet"])
        if beside is not None:
            files["unet_config"] = files["unet"].parent / UNET_CONFIG_NAME
        unet = load_unet(files["unet"], unet_config or beside or model_config("unet_stage2"))
        vae = load_vae(files["vae/config.json"].parent)
        encoder = load_whisper_encoder(files["whisper"])
    return ModelBundle(preset=preset, resolution=PRESET_RESOLUTION[preset], unet=unet.eval(), vae=vae,
                       audio=WhisperFeatureExtractor(encoder, windowing=windowing), scheduler=make_scheduler(),
                       files=files)


def unet_config_beside(weights: str | Path) -> dict[str, Any] | None:
    """The architecture in ``unet_config.json`` next to a U-Net weights file (fine-tuned variants, tiny test
    models), or None when there is none (the released stage2 architecture applies)."""
    from lsync.errors import CheckpointError

    path = Path(weights).parent / UNET_CONFIG_NAME
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path} ({exc})", "fix or remove the U-Net config file") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is not a JSON object of U-Net config keys", "fix or remove it")
    return {key: value for key, value in config.items() if not key.startswith("_")}


def build_unet(config: dict[str, Any]):
    from lsync.models.unet3d import UNet3DConditionModel

    return UNet3DConditionModel.from_config(config)


def load_unet(path: str | Path, config: dict[str, Any]):
    """A U-Net from a released ``latentsync_unet.pt`` (or our safetensors), built on the meta device so the
    1.3 G parameters are allocated once, by the checkpoint's own tensors."""
    from lsync.checkpoints import load_state_dict_strict, read_state_dict

    checkpoint = read_state_dict(path, mmap=True)
    with torch.device("meta"):
        unet = build_unet(config)
    # Every buffer of the U-Net is persistent (the motion modules' position tables), so after a strict load
    # with assign=True nothing is left on the meta device.
    return load_state_dict_strict(unet, checkpoint.state_dict, str(path), assign=True)
