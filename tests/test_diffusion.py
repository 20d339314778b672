"""DDIM scheduler config, one-step x0, mixed noise and add_noise, against the reference goldens."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lsync.diffusion import (
    SCHEDULER_CONFIG,
    add_noise,
    guidance,
    make_scheduler,
    mixed_noise,
    mixed_noise_std,
    one_step_x0,
    sample_timesteps,
)
from lsync.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models"


# ----------------------------------------------------------------------------------------------- behaviour
def test_scheduler_defaults_and_yaml_agree():
    scheduler = make_scheduler()
    from_yaml = make_scheduler(yaml.safe_load((CONFIGS / "scheduler_ddim.yaml").read_text()))
    assert dict(scheduler.config) == dict(from_yaml.config)
    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.num_train_timesteps == 1000
    assert yaml.safe_load((CONFIGS / "scheduler_ddim.yaml").read_text()) == SCHEDULER_CONFIG


def test_scheduler_overrides_and_errors():
    assert make_scheduler({"steps_offset": 0}).config.steps_offset == 0
    with pytest.raises(ConfigError):
        make_scheduler({"beta_schedule": "no-such-schedule"})


def test_one_step_x0_inverts_add_noise():
    scheduler = make_scheduler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 5, 6, 6, generator=g)
    noise = torch.randn(3, 4, 5, 6, 6, generator=g)
    t = torch.tensor([0, 400, 900])
    x_t = add_noise(scheduler, x0, noise, t)
    recovered = one_step_x0(x_t, noise, t, scheduler.alphas_cumprod)
    torch.testing.assert_close(recovered, x0, rtol=1e-4, atol=2e-4)
    assert recovered.dtype == x_t.dtype


def test_mixed_noise_shares_one_component_over_frames():
    latents = torch.zeros(2, 4, 6, 5, 5)
    raw_shared, raw_ind = torch.randn(2, *latents.shape).unbind(0)
    noise = mixed_noise(latents, 2.0, raw_shared=raw_shared, raw_ind=raw_ind)
    shared_std, ind_std = mixed_noise_std(2.0)
    assert shared_std**2 + ind_std**2 == pytest.approx(1.0)
    shared = noise - raw_ind * ind_std
    for f in range(6):
        torch.testing.assert_close(shared[:, :, f], raw_shared[:, :, 0] * shared_std)


def test_mixed_noise_draw_order_and_generator():
    latents = torch.zeros(2, 4, 16, 8, 8)
    torch.manual_seed(7)
    from_global = mixed_noise(latents, 1.0)
    torch.manual_seed(7)
    raw_shared, raw_ind = torch.randn_like(latents), torch.randn_like(latents)
    torch.testing.assert_close(from_global, mixed_noise(latents, 1.0, raw_shared=raw_shared, raw_ind=raw_ind))
    a = mixed_noise(latents, 1.0, generator=torch.Generator().manual_seed(3))
    b = mixed_noise(latents, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert abs(a.std().item() - 1.0) < 0.05
    with pytest.raises(ValueError, match="both"):
        mixed_noise(latents, 1.0, raw_shared=raw_shared)


def test_small_helpers():
    t = sample_timesteps(64, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (64,) and 0 <= t.min() and t.max() < 1000
    uncond, cond = torch.zeros(3), torch.ones(3)
    torch.testing.assert_close(guidance(uncond, cond, 1.5), torch.full((3,), 1.5))


# ----------------------------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden(reference) -> dict[str, torch.Tensor]:
    return load_file(reference / "diffusion" / "diffusion_golden.safetensors")


@pytest.fixture(scope="module")
def scheduler(reference):
    return make_scheduler(json.loads((reference / "diffusion" / "scheduler_config.json").read_text()))


@pytest.mark.golden
def test_scheduler_config_semantics(reference, scheduler):
    ours = dict(make_scheduler().config)
    assert dict(scheduler.config) == ours
    resolved = json.loads(next((reference / "diffusion").glob("scheduler_config_resolved*.json")).read_text())
    for key, value in resolved.items():
        if not key.startswith("_") and key != "skip_prk_steps":
            assert ours[key] == value, key


@pytest.mark.golden
def test_betas_and_alphas_cumprod(golden, scheduler):
    torch.testing.assert_close(scheduler.betas, golden["betas"], rtol=1e-6, atol=0)
    torch.testing.assert_close(scheduler.alphas_cumprod, golden["alphas_cumprod"], rtol=1e-6, atol=0)


@pytest.mark.golden
def test_one_step_x0(golden, scheduler):
    x0 = one_step_x0(golden["onestep_x_t"], golden["onestep_pred_noise"], golden["onestep_timesteps"],
                     scheduler.alphas_cumprod)
    torch.testing.assert_close(x0, golden["onestep_expected_x0"], rtol=1e-5, atol=1e-5)


@pytest.mark.golden
def test_mixed_noise_and_add_noise_for_every_alpha(golden, scheduler):
    alphas = sorted(m.group(1) for k in golden if (m := re.fullmatch(r"mixed_alpha([0-9p]+)_noise", k)))
    assert alphas, "no mixed_alpha*_noise tensors"
    latents = golden["mixed_gt_latents"]
    for tag in alphas:
        alpha = float(tag.replace("p", "."))
        noise = mixed_noise(latents, alpha, raw_shared=golden[f"mixed_alpha{tag}_raw_shared"],
                            raw_ind=golden[f"mixed_alpha{tag}_raw_ind"])
        torch.testing.assert_close(noise, golden[f"mixed_alpha{tag}_noise"], rtol=0, atol=1e-5)
        noisy = add_noise(scheduler, latents, noise, golden["onestep_timesteps"])
        torch.testing.assert_close(noisy, golden[f"mixed_alpha{tag}_noisy_latents"], rtol=0, atol=1e-5)


@pytest.mark.golden
def test_ddim_timesteps_and_steps(golden, scheduler):
    scheduler = copy.deepcopy(scheduler)  # set_timesteps mutates it; keep the shared fixture pristine
    expected = golden["ddim_timesteps"]
    scheduler.set_timesteps(len(expected))
    assert torch.equal(scheduler.timesteps, expected)
    positions = sorted(int(m.group(1)) for k in golden if (m := re.fullmatch(r"ddim_step(\d+)_sample", k)))
    assert positions, "no ddim_step*_sample tensors"
    for j in positions:
        out = scheduler.step(golden[f"ddim_step{j}_model_output"], scheduler.timesteps[j],
                             golden[f"ddim_step{j}_sample"], eta=0.0).prev_sample
        torch.testing.assert_close(out, golden[f"ddim_step{j}_prev_sample"], rtol=0, atol=1e-5)
