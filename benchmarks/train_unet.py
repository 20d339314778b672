"""U-Net training throughput as one JSON object: optimizer steps per second and peak memory, with the pixel losses
(sync, LPIPS, TREPA through the one-step x0 decode) on and off, for two model sizes; plus a one-batch overfit check.

Rows:

* ``train_step`` - one AdamW step of :class:`lsync.stages.train_unet_step.UNetTrainingStep` (VAE encode, mixed
  noise, U-Net forward/backward, losses, clipping, update) on a random batch of the data's shapes:
  ``tiny`` = the ``tiny`` preset (64 px, 2.9 M parameter U-Net, AlexNet LPIPS, TREPA at 112 px);
  ``mid`` = the stage-2 architecture narrowed to 64/128/256/256 channels at 128 px (256 px on CUDA), VGG LPIPS,
  the tiny VideoMAE at 224 px, VAE gradient checkpointing. Frozen helpers are random: only the cost is measured.
  ``pixel_losses`` false is stage 1 (recon only), true is stage 2 (all four losses).
* ``overfit`` - steps the ``tiny`` U-Net needs to halve the reconstruction loss of one fixed batch (at most 200).

Usage::

    python benchmarks/train_unet.py [--device cpu|cuda] [--steps N] [--batch-size B] [--threads N] [--quick]
                                    [--no-overfit] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import (  # noqa: E402
    PeakMemory,
    autocast_dtype,
    configure_backends,
    dtype_name,
    emit_json,
    log,
    machine_info,
    release_memory,
    time_callable,
    training_step,
    resolve_device,
)

MID_CHANNELS = [64, 128, 256, 256]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per row")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="2 steps per row, tiny rows only")
    parser.add_argument("--no-overfit", action="store_true", help="skip the overfit row")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def preset_config(size: str, device: torch.device, pixel_losses: bool):
    """The resolved ``tiny`` preset, or the mid-size variant of it; pixel losses on or off."""
    from lsync.config import resolve_config
    from lsync.stages.train_unet import TrainUNetConfig

    overrides = [] if pixel_losses else ["loss.sync_weight=0", "loss.lpips_weight=0", "loss.trepa_weight=0"]
    if size == "mid":
        resolution = 256 if device.type == "cuda" else 128
        overrides += [f"model.resolution={resolution}", "model.unet=unet_stage2", "model.vae_gradient_checkpointing=true",
                      f"model.unet_overrides={{block_out_channels: {MID_CHANNELS}, motion_module_kwargs: "
                      "{num_attention_heads: 8, num_transformer_block: 1, attention_block_types: [Temporal_Self, "
                      "Temporal_Self], temporal_position_encoding: true, temporal_position_encoding_max_len: 24, "
                      "temporal_attention_dim_div: 1, zero_initialize: true}}",
                      "loss.lpips_net=vgg", "loss.trepa_image_size=224"]
    return resolve_config(TrainUNetConfig, "unet", "tiny", None, None, overrides)


def random_batch(batch: int, resolution: int, device: torch.device, unet) -> dict[str, Any]:
    """A batch with the shapes and ranges of :class:`lsync.data.unet_dataset.UNetDataset` samples for ``unet``
    (the audio tokens of its ``audio_feat_length``, from whisper-tiny's 5 hidden states of 384 channels)."""
    from lsync.audio.whisper import tokens_per_frame
    from lsync.data.mask_batch import apply_mask, mask_tensor
    from lsync.models.presets import model_config

    whisper = model_config("whisper_tiny")
    tokens = tokens_per_frame(whisper["n_audio_layer"], context=unet.config.audio_feat_length)

    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(batch, 3, 16, resolution, resolution, generator=generator) * 2 - 1
    mask = mask_tensor(resolution).expand(batch, 1, resolution, resolution).contiguous()
    tensors = {
        "frames": frames,
        "ref_frames": torch.rand(batch, 3, 16, resolution, resolution, generator=generator) * 2 - 1,
        "masked_frames": apply_mask(frames, mask),
        "mask": mask,
        "mel": torch.rand(batch, 1, 80, 52, generator=generator) * 8 - 4,
        "audio_features": torch.randn(batch, 16, tokens, whisper["n_audio_state"], generator=generator),
        "epoch": torch.zeros(batch, dtype=torch.int64),
        "position": torch.arange(batch),
    }
    return {k: v.to(device) for k, v in tensors.items()}


def build_step(config, device: torch.device):
    """(U-Net, training step) for a resolved config, with random frozen helpers on ``device``."""
    from lsync.diffusion import make_scheduler
    from lsync.losses import LossModels, make_lpips
    from lsync.models.presets import build_unet, load_models, model_config
    from lsync.models.syncnet import StableSyncNet
    from lsync.stages.train_unet import build_trepa, unet_config
    from lsync.stages.train_unet_step import UNetTrainingStep
    from lsync.training.trainable import set_gradient_checkpointing

    weights = config.loss_weights()
    vae = load_models("tiny").vae.to(device)
    set_gradient_checkpointing(vae, config.model.vae_gradient_checkpointing and weights.needs_pixels)
    models = LossModels()
    if weights.lpips:
        models.lpips = make_lpips(config.loss.lpips_net, "/nonexistent-weights", device=device)
    if weights.trepa:
        models.trepa = build_trepa(config, device)
    if weights.sync:
        models.syncnet = StableSyncNet(model_config("syncnet_tiny")).to(device).eval().requires_grad_(False)
        models.syncnet_resolution = 64
    torch.manual_seed(0)
    unet = build_unet(unet_config(config.model)).to(device).train()
    set_gradient_checkpointing(unet, config.train.gradient_checkpointing)
    step = UNetTrainingStep(vae, make_scheduler(), weights, models, seed=0,
                            mixed_noise_alpha=config.loss.mixed_noise_alpha, uncond_prob=config.loss.uncond_prob)
    return unet, step


def train_step_row(size: str, pixel_losses: bool, device: torch.device, amp, batch: int, steps: int) -> dict:
    config = preset_config(size, device, pixel_losses)
    unet, step = build_step(config, device)
    inputs = random_batch(batch, config.model.resolution, device, unet)
    one_step = training_step(unet, lambda m: step(m, inputs)["loss"], device, amp, config.train.lr,
                             config.train.max_grad_norm)

    release_memory(device)
    with PeakMemory(device) as memory:
        timing = time_callable(one_step, device, repeats=steps, warmup=1)
    row = {"row": "train_step", "size": size, "pixel_losses": pixel_losses, "losses": list(step.weights.active()),
           "resolution": config.model.resolution, "batch": batch, "precision": dtype_name(amp),
           "parameters": sum(p.numel() for p in unet.parameters()), **timing.as_dict(),
           "steps_per_s": round(1 / timing.median_s, 3), "samples_per_s": round(batch / timing.median_s, 3),
           **memory.as_dict()}
    del unet, one_step, step
    release_memory(device)
    return row


def overfit_row(device: torch.device, max_steps: int = 200) -> dict[str, Any]:
    """Recon-only steps on one fixed batch (fixed noise and timestep) until the loss halves."""
    config = preset_config("tiny", device, pixel_losses=False)
    unet, step = build_step(config, device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    inputs = random_batch(1, config.model.resolution, device, unet)
    losses = []
    for _ in range(max_steps):
        loss = step(unet, inputs)["loss"]
        losses.append(float(loss.detach()))
        if losses[-1] <= 0.5 * losses[0]:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {"row": "overfit", "size": "tiny", "first_loss": round(losses[0], 5), "last_loss": round(losses[-1], 5),
            "steps": len(losses) - 1, "halved": losses[-1] <= 0.5 * losses[0], "max_steps": max_steps}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configure_backends(device)
    amp = autocast_dtype(device)
    steps = 2 if args.quick else args.steps
    sizes = ("tiny",) if args.quick else ("tiny", "mid")
    rows = []
    for size in sizes:
        for pixel_losses in (False, True):
            log(f"train_step {size} pixel_losses={pixel_losses} on {device}")
            rows.append(train_step_row(size, pixel_losses, device, amp, args.batch_size, steps))
            log(f"  {rows[-1]['steps_per_s']} steps/s, peak {rows[-1]['peak_memory_mib']} MiB")
    if not args.no_overfit:
        log("overfit one batch (tiny)")
        rows.append(overfit_row(device))
        log(f"  halved after {rows[-1]['steps']} steps")
    emit_json({"schema": "lsync.benchmark.train_unet/1",
               "settings": {"steps": steps, "quick": args.quick, "batch": args.batch_size,
                            "precision": dtype_name(amp)},
               "machine": machine_info(device, amp), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
