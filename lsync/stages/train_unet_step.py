"""One U-Net training micro-step of LatentSync, as a callable the shared trainer runs.

For a batch of 16-frame windows (see :mod:`lsync.data.unet_dataset`):

1. the frozen VAE encodes the ground truth, the masked frames and the reference window (posterior mean: the
   SD VAE's posterior std is ~1e-4 of its latents, so sampling would only add noise to the target);
2. per sample: a timestep uniform in [0, 1000), mixed noise (``mixed_noise_alpha``; a part shared by all frames)
   and, with probability ``uncond_prob``, all-zero audio - the unconditional branch classifier-free guidance
   uses at inference, which the reference never trains;
3. the U-Net reads 13 channels: noisy latents (4) + mask (1) + masked latents (4) + reference latents (4);
4. the losses of :func:`lsync.losses.compute_losses`: recon (MSE on the noise) and, when a pixel loss is on, the
   one-step x0 estimate decoded by the VAE for sync / LPIPS / TREPA. A loss with weight 0 never runs. With
   ``pixel_loss_every`` k > 1 the pixel losses run on optimizer steps k, 2k, 3k ... only (counted from 1, so with
   k dividing ``log_every`` every logged step shows all four); the other steps train recon alone.

**Randomness per sample.** Timestep, noise and audio drop of a sample come from a generator seeded by
``(seed, epoch, position)`` of the sample (its :class:`~lsync.training.sampling.SampleKey`), not from the
global RNG: a sample trains the same way whatever the number of processes, batch split or resume point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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


class LatentMemo:
    """VAE latents of single frames, kept in memory for reuse: ``(clip, frame, masked) -> (4, h, w)`` latent.

    The VAE is frozen and encodes the posterior mean, so a frame's latents never change during a run: a window
    whose frames were seen before needs no VAE pass. Small data sets (the demo's 1,800 frames) are covered
    after a few epochs and the encode cost of a step (a fifth of it for the tiny models) goes away. At most
    ``max_entries`` latents are kept, least recently used dropped first.
    """

    def __init__(self, max_entries: int):
        from collections import OrderedDict

        self.max_entries = max_entries
        self.entries: OrderedDict[tuple[int, int, bool], torch.Tensor] = OrderedDict()

    def get(self, key: tuple[int, int, bool]) -> torch.Tensor | None:
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
        return entry

    def put(self, key: tuple[int, int, bool], latent: torch.Tensor) -> None:
        self.entries[key] = latent
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


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
        latent_memo_frames: keep this many frames' latents in memory (:class:`LatentMemo`; 0 = encode every step).
        pixel_loss_every: run the pixel losses on every k-th optimizer step only (1 = always).
        completed_steps: ``() -> int``, the optimizer steps finished so far (the trainer's ``step``); needed
            when ``pixel_loss_every`` > 1. Reading the trainer's count, not counting calls, keeps the schedule
            right under gradient accumulation and after a resume.
    """

    def __init__(self, vae: nn.Module, scheduler, weights: LossWeights, loss_models: LossModels, seed: int,
                 mixed_noise_alpha: float = 1.0, uncond_prob: float = 0.0, latent_memo_frames: int = 0,
                 pixel_loss_every: int = 1, completed_steps: Callable[[], int] | None = None):
        if pixel_loss_every > 1 and completed_steps is None:
            raise ValueError("pixel_loss_every > 1 needs completed_steps, the trainer's step count")
        self.vae = vae
        self.scheduler = scheduler
        self.weights = weights
        self.pixel_loss_every = pixel_loss_every
        self.completed_steps = completed_steps
        self.loss_models = loss_models
        self.seed = seed
        self.mixed_noise_alpha = mixed_noise_alpha
        self.uncond_prob = uncond_prob
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.float()
        self.memo = LatentMemo(2 * latent_memo_frames) if latent_memo_frames > 0 else None  # plain + masked

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
        if self.memo is not None and "clip_index" in batch:
            return self._encode_with_memo(batch)
        pixels = torch.cat([batch["frames"], batch["masked_frames"], batch["ref_frames"]])
        gt, masked, reference = encode(self.vae, pixels).float().chunk(3)
        return gt, masked, reference

    def _encode_with_memo(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`encode_inputs` through the :class:`LatentMemo`: only latents not seen before are computed, in one
        VAE pass for the whole batch."""
        num_frames = batch["frames"].shape[2]
        # Per window: (sample, which pixels, frame offset, memo key); keys are (clip, frame, masked).
        windows = {"gt": [], "masked": [], "reference": []}
        for i, (clip, start, ref) in enumerate(zip(batch["clip_index"].tolist(), batch["start_frame"].tolist(),
                                                   batch["ref_start_frame"].tolist())):
            for f in range(num_frames):
                windows["gt"].append((i, "frames", f, (clip, start + f, False)))
                windows["masked"].append((i, "masked_frames", f, (clip, start + f, True)))
                windows["reference"].append((i, "ref_frames", f, (clip, ref + f, False)))
        missing: dict[tuple[int, int, bool], tuple[int, str, int]] = {}
        for entries in windows.values():
            for i, source, f, key in entries:
                if key not in missing and self.memo.get(key) is None:
                    missing[key] = (i, source, f)
        if missing:
            pixels = torch.stack([batch[source][i, :, f] for i, source, f in missing.values()])[:, :, None]
            latents = encode(self.vae, pixels).float()[:, :, 0]  # (n, 4, h, w)
            for latent, key in zip(latents, missing):
                self.memo.put(key, latent)

        def clip_latents(entries) -> torch.Tensor:  # -> (B, 4, F, h, w)
            stacked = torch.stack([self.memo.get(key) for _, _, _, key in entries])
            return stacked.reshape(-1, num_frames, *stacked.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()

        return clip_latents(windows["gt"]), clip_latents(windows["masked"]), clip_latents(windows["reference"])

    def weights_now(self) -> LossWeights:
        """The weights of the optimizer step in progress: all of them, or recon alone between pixel-loss steps."""
        if self.pixel_loss_every == 1 or (self.completed_steps() + 1) % self.pixel_loss_every == 0:
            return self.weights
        return self.weights.recon_only()

    def __call__(self, unet: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        weights = self.weights_now()
        gt_latents, masked_latents, ref_latents = self.encode_inputs(batch)
        draws = self.draw(batch, gt_latents)
        noisy = add_noise(self.scheduler, gt_latents, draws.noise, draws.timesteps)
        num_frames, latent_size = gt_latents.shape[2], tuple(gt_latents.shape[-2:])
        mask = latent_mask_batch(batch["mask"].to(gt_latents.dtype), num_frames, latent_size)
        model_input = torch.cat([noisy, mask, masked_latents, ref_latents], dim=1)  # (B, 13, F, h, w)
        audio = batch["audio_features"] * draws.keep_audio[:, None, None, None].to(batch["audio_features"].dtype)
        noise_pred = unet(model_input, draws.timesteps, encoder_hidden_states=audio).sample

        pred_frames = None
        if weights.needs_pixels:
            x0 = one_step_x0(noisy, noise_pred.float(), draws.timesteps, self.alphas_cumprod)
            pred_frames = decode(self.vae, x0)  # (B, 3, F, H, W); gradients flow through the frozen decoder
        losses = compute_losses(weights, noise_pred=noise_pred, noise=draws.noise, pred_frames=pred_frames,
                                gt_frames=batch["frames"], mel=batch["mel"], models=self.loss_models)
        values: dict[str, torch.Tensor] = {"loss": losses.total}
        for name, raw in losses.raw.items():
            values[name] = raw
            values[f"{name}_weighted"] = losses.weighted[name]
        return values
