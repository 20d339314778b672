"""One U-Net training micro-step of LatentSync, as a callable the shared trainer runs.

For a batch of 16-frame windows (see :mod:`lsync.data.unet_dataset`):

1. the frozen VAE encodes the ground truth, the masked frames and the reference window (posterior mean: the
   SD VAE's posterior std is ~1e-4 of its latents, so sampling would only add noise to the target);
2. per sample: a timestep uniform in [0, 1000), mixed noise (``mixed_noise_alpha``; a part shared by all frames)
   and, with probability ``uncond_prob``, all-zero audio - the unconditional branch classifier-free guidance
   uses at inference, which the reference never trains;
3. the U-Net reads 13 channels: noisy latents (4) + mask (1) + masked latents (4) + reference latents (4);
4. the losses of :func:`lsync.losses.compute_losses`: recon (MSE on the noise) and, when a pixel loss is on, the
   one-step x0 estimate decoded by the VAE for sync / LPIPS / TREPA. A loss with weight 0 never runs.

**Randomness per sample.** Timestep, noise and audio drop of a sample come from a generator seeded by
``(seed, epoch, position)`` of the sample (its :class:`~lsync.training.sampling.SampleKey`), not from the
global RNG: a sample trains the same way whatever the number of processes, batch split or resume point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lsync.data.mask_batch import latent_mask_batch
from lsync.diffusion import add_noise, mixed_noise, one_step_x0
from lsync.losses import LossModels, LossWeights, compute_losses
from lsync.models.vae import decode, encode

#: Mixed into every per-sample seed so these draws never coincide with another use of (seed, epoch, position).
_STREAM = 0x554E4554  # "UNET"


def sample_generator(seed: int, epoch: int, position: int) -> torch.Generator:
    """A CPU generator for one sample's draws, seeded by hashing ``(seed, epoch, position)``."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(position), _STREAM]).generate_state(1, np.uint64)
    return torch.Generator("cpu").manual_seed(int(state[0]))


@dataclass
class SampleDraws:
    """What a batch's generators decided: (B,) timesteps, noise like the latents, (B,) audio kept (1) or dropped (0)."""

    timesteps: torch.Tensor
    noise: torch.Tensor
    keep_audio: torch.Tensor


class UNetTrainingStep:
    """``step(unet, batch) -> {"loss", <raw loss>, <loss>_weighted, ...}`` for :class:`lsync.training.loop.Trainer`.

    Args:
        vae: the frozen VAE, on the training device (gradient checkpointing on to decode x0 cheaply).
        scheduler: the DDIM scheduler whose ``add_noise`` and ``alphas_cumprod`` define the forward process.
        weights: the loss weights; pixel losses switch the x0 decode on.
        loss_models: the frozen loss networks (only those with a non-zero weight are needed).
        seed: run seed of the per-sample generators.
        mixed_noise_alpha: shared-to-independent noise std ratio (0 = independent noise per frame).
        uncond_prob: probability of training a sample with all-zero audio.
    """

    def __init__(self, vae: nn.Module, scheduler, weights: LossWeights, loss_models: LossModels, seed: int,
                 mixed_noise_alpha: float = 1.0, uncond_prob: float = 0.0):
        self.vae = vae
        self.scheduler = scheduler
        self.weights = weights
        self.loss_models = loss_models
        self.seed = seed
        self.mixed_noise_alpha = mixed_noise_alpha
        self.uncond_prob = uncond_prob
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.float()

    def draw(self, batch: dict[str, Any], latents: torch.Tensor) -> SampleDraws:
        """Each sample's timestep, mixed noise and audio drop from its own generator; latents (B, 4, F, h, w)."""
        timesteps, noises, keep = [], [], []
        for i, (epoch, position) in enumerate(zip(batch["epoch"].tolist(), batch["position"].tolist())):
            generator = sample_generator(self.seed, epoch, position)
            timesteps.append(torch.randint(0, self.num_train_timesteps, (1,), generator=generator))
            noises.append(mixed_noise(latents[i:i + 1], self.mixed_noise_alpha, generator=generator))
            keep.append(torch.rand(1, generator=generator) >= self.uncond_prob)
        device = latents.device
        return SampleDraws(torch.cat(timesteps).to(device), torch.cat(noises),
                           torch.cat(keep).to(device=device, dtype=latents.dtype))

    @torch.no_grad()
    def encode_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ground-truth, masked and reference latents, each (B, 4, F, h, w) float32, in one VAE pass."""
        pixels = torch.cat([batch["frames"], batch["masked_frames"], batch["ref_frames"]])
        gt, masked, reference = encode(self.vae, pixels).float().chunk(3)
        return gt, masked, reference

    def __call__(self, unet: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        gt_latents, masked_latents, ref_latents = self.encode_inputs(batch)
        draws = self.draw(batch, gt_latents)
        noisy = add_noise(self.scheduler, gt_latents, draws.noise, draws.timesteps)
        num_frames, latent_size = gt_latents.shape[2], tuple(gt_latents.shape[-2:])
        mask = latent_mask_batch(batch["mask"].to(gt_latents.dtype), num_frames, latent_size)
        model_input = torch.cat([noisy, mask, masked_latents, ref_latents], dim=1)  # (B, 13, F, h, w)
        audio = batch["audio_features"] * draws.keep_audio[:, None, None, None].to(batch["audio_features"].dtype)
        noise_pred = unet(model_input, draws.timesteps, encoder_hidden_states=audio).sample

        pred_frames = None
        if self.weights.needs_pixels:
            x0 = one_step_x0(noisy, noise_pred.float(), draws.timesteps, self.alphas_cumprod)
            pred_frames = decode(self.vae, x0)  # (B, 3, F, H, W); gradients flow through the frozen decoder
        losses = compute_losses(self.weights, noise_pred=noise_pred, noise=draws.noise, pred_frames=pred_frames,
                                gt_frames=batch["frames"], mel=batch["mel"], models=self.loss_models)
        values: dict[str, torch.Tensor] = {"loss": losses.total}
        for name, raw in losses.raw.items():
            values[name] = raw
            values[f"{name}_weighted"] = losses.weighted[name]
        return values
