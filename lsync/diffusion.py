"""Diffusion helpers shared by training and inference: the DDIM scheduler, mixed noise, one-step x0.

The scheduler config is LatentSync's ``configs/scheduler_config.json`` (kept here as :data:`SCHEDULER_CONFIG`
so the package needs no config file to sample): scaled-linear betas 0.00085 -> 0.012 over 1000 steps,
epsilon prediction, ``steps_offset`` 1, no clipping, ``set_alpha_to_one`` false. The same
``diffusers.DDIMScheduler`` adds training noise (``add_noise``) and runs the inference steps.

Latents are video latents (B, C, F, h, w) throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import DDIMScheduler

from lsync.errors import ConfigError

#: LatentSync's scheduler config (``configs/scheduler_config.json``), minus the informational class name.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

# Keys of a diffusers scheduler_config.json that describe the file rather than the schedule.
_INFORMATIONAL_KEYS = {"_class_name", "_diffusers_version", "_use_default_values", "skip_prk_steps"}


def make_scheduler(config_dict: Mapping[str, Any] | None = None) -> DDIMScheduler:
    """A ``DDIMScheduler`` from :data:`SCHEDULER_CONFIG`, with ``config_dict`` entries overriding it.

    ``config_dict`` may be a full diffusers ``scheduler_config.json`` (its ``_class_name`` etc. are ignored).
    """
    config = dict(SCHEDULER_CONFIG)
    for key, value in (config_dict or {}).items():
        if key not in _INFORMATIONAL_KEYS:
            config[key] = value
    try:
        return DDIMScheduler(**config)
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise ConfigError(f"invalid scheduler config ({exc})", "see lsync.diffusion.SCHEDULER_CONFIG") from exc


#: Samplers ``lsync infer --scheduler`` offers, all built on the training schedule (same betas and timesteps).
SAMPLERS = ("ddim", "dpm++")


def make_sampler(name: str = "ddim", config_dict: Mapping[str, Any] | None = None):
    """The inference scheduler ``name`` on LatentSync's training schedule.

    ``ddim``: the reference's DDIM (eta 0). ``dpm++``: diffusers' multistep DPM-Solver++ (second order, first
    order on the last step), which needs fewer steps for the same result; it keeps a history of model outputs, so
    call ``set_timesteps`` before every chunk.
    """
    from diffusers import DPMSolverMultistepScheduler

    ddim = make_scheduler(config_dict)
    if name == "ddim":
        return ddim
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(ddim.config, algorithm_type="dpmsolver++", solver_order=2)
    raise ConfigError(f"unknown scheduler '{name}'", f"choose one of: {', '.join(SAMPLERS)}")


def _per_sample(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather ``values[timesteps]`` and shape it (B, 1, 1, ...) to broadcast against ``like``."""
    gathered = values.to(like.device)[timesteps.to(like.device).long()].to(like.dtype)
    return gathered.reshape(-1, *([1] * (like.ndim - 1)))


def one_step_x0(
    x_t: torch.Tensor, noise_pred: torch.Tensor, timesteps: torch.Tensor, alphas_cumprod: torch.Tensor
) -> torch.Tensor:
    """Estimate the clean latents in one step: x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t).

    Args:
        x_t: noisy latents (B, C, F, h, w).
        noise_pred: predicted noise, same shape.
        timesteps: (B,) integer timesteps, one per batch item.
        alphas_cumprod: (T,) cumulative alpha products of the scheduler (float32).
    Returns:
        (B, C, F, h, w) in ``x_t``'s dtype. No clipping (x0 grows large at high t).
    """
    alpha = _per_sample(alphas_cumprod, timesteps, x_t)
    return (x_t - (1 - alpha) ** 0.5 * noise_pred) / alpha**0.5


def mixed_noise_std(alpha: float) -> tuple[float, float]:
    """(shared std, independent std) of mixed noise: sqrt(a^2 / (1 + a^2)) and sqrt(1 / (1 + a^2))."""
    return (alpha**2 / (1 + alpha**2)) ** 0.5, (1 / (1 + alpha**2)) ** 0.5


def mixed_noise(
    latents: torch.Tensor,
    alpha: float,
    generator: torch.Generator | None = None,
    raw_shared: torch.Tensor | None = None,
    raw_ind: torch.Tensor | None = None,
) -> torch.Tensor:
    """Unit-variance noise with a component shared by all frames (the "mixed noise" of LatentSync training).

    Two full-size standard-normal draws are made, ``raw_shared`` first, then ``raw_ind`` (from ``generator``,
    or the global RNG like ``torch.randn_like`` when it is None); pass both to use pre-drawn values. Frame 0
    of the scaled shared draw is repeated over all frames::

        noise = raw_ind * sqrt(1 / (1 + a^2)) + repeat_F((raw_shared * sqrt(a^2 / (1 + a^2)))[:, :, :1])

    Args:
        latents: (B, C, F, h, w), only its shape/dtype/device are used.
        alpha: the shared-to-independent std ratio (1 in stage 2: both parts std sqrt(0.5)).
    Returns:
        noise of ``latents``' shape.
    """
    if latents.ndim != 5:
        raise ValueError(f"mixed noise expects (B, C, F, h, w) latents, got shape {tuple(latents.shape)}")
    if (raw_shared is None) != (raw_ind is None):
        raise ValueError("pass both raw_shared and raw_ind, or neither")
    if raw_shared is None:
        raw_shared = _randn_like(latents, generator)
        raw_ind = _randn_like(latents, generator)
    shared_std, ind_std = mixed_noise_std(alpha)
    num_frames = latents.shape[2]
    shared = (raw_shared * shared_std)[:, :, 0:1].repeat(1, 1, num_frames, 1, 1)
    return raw_ind * ind_std + shared


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def add_noise(
    scheduler: DDIMScheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The forward process through the scheduler: sqrt(a_t) * latents + sqrt(1 - a_t) * noise, per batch item."""
    return scheduler.add_noise(latents, noise, timesteps)


def sample_timesteps(
    batch_size: int, num_train_timesteps: int = 1000, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B,) int64 training timesteps drawn uniformly from [0, num_train_timesteps)."""
    gen_device = generator.device if generator is not None else "cpu"
    t = torch.randint(0, num_train_timesteps, (batch_size,), generator=generator, device=gen_device)
    return t.long().to(device)


def guidance(noise_uncond: torch.Tensor, noise_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: uncond + scale * (cond - uncond)."""
    if not math.isfinite(scale):
        raise ValueError(f"guidance scale must be finite, got {scale}")
    return noise_uncond + scale * (noise_cond - noise_uncond)
