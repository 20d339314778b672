"""``lsync train vae data/ runs/vae``: train the image autoencoder of a small latent-diffusion system on its faces.

The released models use Stable Diffusion's VAE (``sd-vae-ft-mse``), which cannot be downloaded here and is far too
slow for a 2-core CPU; a random VAE cannot decode a face from any latent, so no U-Net trained on it can lip-sync.
This stage fits a small diffusers ``AutoencoderKL`` (the SD geometry: 4 latent channels, 8x downsampling;
``configs/models/vae_tiny.yaml``) to the aligned faces of a data directory, which is all the tiny U-Net ever
sees. Loss per frame: L1 over the face, an extra L1 over the mouth region (the part the U-Net repaints, and the
part that must show whether the mouth is open) and a KL term that keeps the latent space smooth for diffusion.

The run directory is a manifest directory of kind ``vae-run``::

    config.yaml                 the resolved config, written at the start (a resume must match it)
    metrics.jsonl, metrics.png  every loss term, validation L1 / PSNR (face and mouth), lr, grad norm
    checkpoints/step-000200/    model.safetensors + config.json + everything needed to resume exactly
    val/step-000200.png         validation frames (top) and their reconstructions (bottom)
    vae/                        the final VAE as a diffusers folder (config.json + diffusion_pytorch_model.safetensors)
    lsync.json                  written last (inputs: the data directory; summary: final metrics, latent scaling)

``vae/config.json`` records ``scaling_factor`` and ``shift_factor`` measured on the training faces
(``1 / std`` and the mean of the posterior means), so scaled latents have unit variance as the diffusion noise
schedule assumes - SD's 0.18215 was found the same way for its VAE. ``lsync train unet --vae RUN`` and
``lsync infer --vae RUN`` read that folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsync.config import load_model_config, section
from lsync.console import get_logger
from lsync.errors import ConfigError, InputError
from lsync.training.loop import LoopConfig

log = get_logger(__name__)

RUN_KIND = "vae-run"
VAL_DIR = "val"
#: Frames of the training set encoded to measure the latent scale at the end.
SCALE_FRAMES = 512


@dataclass
class VAEModelSection:
    config: str = "vae_tiny"  # configs/models/<name>.yaml or a YAML path: the AutoencoderKL constructor keys
    resolution: int = 64  # face size the frames are decoded at (the U-Net's resolution)


@dataclass
class VAELossSection:
    l1_weight: float = 1.0  # L1 over the whole face
    mouth_weight: float = 2.0  # extra L1 over the mouth region (where the U-Net repaints)
    kl_weight: float = 1e-4  # KL of the posterior to N(0, 1), per latent element


@dataclass
class VAEDataSection:
    cache_dir: str | None = None  # derived-data cache (default: <data>/cache, shared with the U-Net)
    frame_stride: int = 1  # train on every n-th frame of each clip
    val_frames: int = 64  # validation frames, spread evenly over the val clips
    val_images: int = 8  # frames shown in val/step-*.png


@dataclass
class TrainVAEConfig:
    model: VAEModelSection = section(VAEModelSection)
    loss: VAELossSection = section(VAELossSection)
    data: VAEDataSection = section(VAEDataSection)
    train: LoopConfig = section(LoopConfig, lr=1e-3, batch_size=32, warmup_steps=20)
    init: str | None = None  # a diffusers VAE folder (or finished vae run) to fine-tune


# ----------------------------------------------------------------------------------------------- the model
def vae_config(section: VAEModelSection) -> dict[str, Any]:
    config = load_model_config(section.config, "model.config", "vae")
    factor = 2 ** (len(config.get("block_out_channels", [])) - 1)
    if section.resolution % max(factor, 1) or section.resolution < factor:
        raise ConfigError(f"model.resolution={section.resolution} is not a multiple of the VAE's {factor}x "
                          "downsampling", f"use e.g. {max(64, factor)}")
    return config


def build_vae(config: TrainVAEConfig):
    from diffusers import AutoencoderKL

    from lsync.models.vae import load_vae

    architecture = vae_config(config.model)
    vae = AutoencoderKL.from_config(architecture)
    if config.init is not None:
        source = load_vae(config.init)
        vae.load_state_dict(source.state_dict(), strict=True)
    vae.requires_grad_(True)
    return vae, architecture


# ----------------------------------------------------------------------------------------------- the losses
def region_l1(error: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``error`` (B, 3, H, W) weighted by ``weights`` (B or 1, 1, H, W)."""
    weights = weights.to(error.dtype).expand_as(error)
    return (error * weights).sum() / weights.sum().clamp_min(1.0)


class VAETrainingStep:
    """``step(vae, batch) -> {"loss", "l1", "mouth_l1", "kl"}`` (unweighted terms plus the weighted total)."""

    def __init__(self, loss: VAELossSection):
        for name in ("l1_weight", "mouth_weight", "kl_weight"):
            value = getattr(loss, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"loss.{name}={value} is not a finite number >= 0", f"set loss.{name} >= 0")
        if loss.l1_weight == 0 and loss.mouth_weight == 0:
            raise ConfigError("both reconstruction weights are 0", "give loss.l1_weight a value above 0")
        self.loss = loss

    def __call__(self, vae, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pixels, keep = batch["pixels"], batch["mask"]  # (B, 3, R, R), (B, 1, R, R)
        posterior = vae.encode(pixels).latent_dist
        recon = vae.decode(posterior.sample()).sample
        error = (recon.float() - pixels.float()).abs()
        l1 = error.mean()
        mouth = region_l1(error, 1 - keep)
        kl = posterior.kl().float().mean() / posterior.mean[0].numel()  # per latent element
        total = self.loss.l1_weight * l1 + self.loss.mouth_weight * mouth + self.loss.kl_weight * kl
        return {"loss": total, "l1": l1, "mouth_l1": mouth, "kl": kl}


# ----------------------------------------------------------------------------------------------- validation
def psnr(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2), optionally over a weighted region."""
    error = (a.float().clamp(-1, 1) - b.float()) ** 2
    mse = float(region_l1(error, weights)) if weights is not None else float(error.mean())
    return 10 * math.log10(4.0 / max(mse, 1e-10))


class VAEValidator:
    """``validator(vae) -> {"loss", "psnr", "mouth_psnr"}`` on fixed val frames, and ``val/step-N.png``."""

    def __init__(self, run_dir: Path, frames: torch.Tensor, keep: torch.Tensor, images: int, current_step,
                 device: torch.device):
        self.run_dir, self.frames, self.keep = run_dir, frames, keep  # (N, 3, R, R), (1, 1, R, R)
        self.images, self.current_step, self.device = images, current_step, device

    def __call__(self, vae) -> dict[str, float]:
        recons = []
        for part in self.frames.split(32):
            part = part.to(self.device)
            recons.append(vae.decode(vae.encode(part).latent_dist.mode()).sample.float().cpu())
        recon = torch.cat(recons)
        self.write_image(recon)
        keep = self.keep.expand(len(recon), -1, -1, -1)
        return {"loss": float((recon - self.frames).abs().mean()), "psnr": psnr(recon, self.frames),
                "mouth_psnr": psnr(recon, self.frames, 1 - keep)}

    def write_image(self, recon: torch.Tensor) -> Path:
        import cv2

        from lsync.manifest import atomic_output

        count = min(self.images, len(recon))
        picks = np.linspace(0, len(recon) - 1, count).round().astype(int)

        def row(images: torch.Tensor) -> np.ndarray:
            pixels = ((images[picks].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            return np.concatenate(list(pixels.permute(0, 2, 3, 1).numpy()), axis=1)

        grid = np.concatenate([row(self.frames), row(recon)], axis=0)
        scale = max(1, 128 // self.frames.shape[-1])  # 64 px faces are shown at 2x
        grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        path = self.run_dir / VAL_DIR / f"step-{self.current_step():06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
        return path


def validation_frames(dataset, count: int) -> torch.Tensor:
    """(count, 3, R, R) frames spread evenly over ``dataset``."""
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)
    return torch.stack([dataset[int(i)]["pixels"] for i in picks])


# ----------------------------------------------------------------------------------------------- latent scale
@torch.no_grad()
def measure_latent_scale(vae, dataset, device: torch.device, count: int = SCALE_FRAMES) -> tuple[float, float]:
    """(scaling_factor, shift_factor): 1 / std and mean of the posterior means of ``count`` training frames."""
    frames = validation_frames(dataset, count)
    latents = torch.cat([vae.encode(part.to(device)).latent_dist.mode().float().cpu() for part in frames.split(32)])
    mean, std = float(latents.mean()), float(latents.std())
    return 1.0 / max(std, 1e-6), mean


def export_vae(vae, folder: Path, scale: float, shift: float) -> Path:
    """Write the VAE as a diffusers folder with its latent scaling, under a temp name renamed when complete."""
    import shutil
    import tempfile

    from lsync.manifest import TEMP_PREFIX

    vae.register_to_config(scaling_factor=round(scale, 6), shift_factor=round(shift, 6))
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}vae-", dir=folder.parent))
    try:
        vae.save_pretrained(staging, safe_serialization=True)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


# ----------------------------------------------------------------------------------------------- the stage
def run(data_dir: str | Path, run_dir: str | Path, config: TrainVAEConfig, resume: str | None = "auto",
        on_step_end=None) -> dict[str, Any] | None:
    """Train the VAE on ``data_dir`` into ``run_dir``; returns the summary written to ``lsync.json`` (``None`` on
    the other processes of a distributed run). ``resume`` as in :func:`lsync.stages.train_syncnet.run`."""
    from lsync.data.frame_dataset import FrameDataset
    from lsync.data.unet_dataset import load_clips
    from lsync.manifest import describe_input
    from lsync.models.vae import EXPORT_DIR
    from lsync.training.accelerate_setup import make_accelerator
    from lsync.training.loop import Trainer
    from lsync.training.run_dir import fit_and_record, prepare_run_dir
    from lsync.training.seeding import seed_everything

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    step = VAETrainingStep(config.loss)  # bad weights: one-line errors before anything is built
    records = load_clips(data_dir, None)
    if not any(r.get("split") == "train" for r in records):
        raise InputError(f"{data_dir} has no clips in split 'train'", "preprocess more videos into it")
    accelerator = make_accelerator(config.train.mixed_precision, cpu=config.train.cpu)
    device = accelerator.device
    resume_from = prepare_run_dir(run_dir, config, resume, accelerator.is_main_process,
                                  ignore=("init", "data.cache_dir"))
    seed_everything(config.train.seed)
    vae, architecture = build_vae(config)

    resolution, d = config.model.resolution, config.data
    with accelerator.main_process_first():  # the main process fills the frame cache, the others read it
        train_set = FrameDataset(data_dir, resolution, "train", d.cache_dir, d.frame_stride)
        train_set.prepare(show_progress=accelerator.is_main_process)
    validate, holder = None, {}
    if accelerator.is_main_process and d.val_frames > 0:
        if any(r.get("split") == "val" for r in records):
            val_set = FrameDataset(data_dir, resolution, "val", d.cache_dir)
            val_set.prepare()
            validate = VAEValidator(run_dir, validation_frames(val_set, d.val_frames), train_set.mask[None],
                                    d.val_images, lambda: holder["trainer"].step, device)
        else:
            log.warning("%s has no 'val' clips: the VAE trains without validation", data_dir)

    model_config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    trainer = Trainer(run_dir, vae, model_config, config.train, train_set, step, validate_fn=validate,
                      accelerator=accelerator, description="vae", on_step_end=on_step_end)
    holder["trainer"] = trainer

    def export(summary: dict[str, Any]) -> None:
        """The trained VAE as the diffusers folder ``vae/``, with the latent scale measured on the train frames."""
        vae.eval()  # the trained weights (the trainer's wrapper, if any, shares them)
        scale, shift = measure_latent_scale(vae, train_set, device)
        export_vae(vae, run_dir / EXPORT_DIR, scale, shift)
        summary.update(scaling_factor=round(scale, 6), shift_factor=round(shift, 6), resolution=resolution,
                       vae=EXPORT_DIR)

    about = f"{len(train_set)} train frames of {len(train_set.records)} clips at {resolution} px"
    return fit_and_record(trainer, resume_from, about, RUN_KIND, config, lambda: [describe_input(data_dir)],
                          finish=export)
