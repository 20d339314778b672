"""The four U-Net training losses, their weighting, and LPIPS's backbone handling (no downloads)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from lsync.config import CONFIGS_DIR
from lsync.errors import ConfigError, InputError
from lsync.losses import (
    LPIPS_BACKBONE_FILES,
    LossModels,
    LossWeights,
    compute_losses,
    lower_half_frames,
    lpips_lower_half,
    make_lpips,
    recon_loss,
    sync_loss,
    syncnet_input,
    trepa_loss,
)
from lsync.models.syncnet import StableSyncNet, cosine_loss, pack_frames_for_syncnet
from lsync.models.trepa import TrepaLoss, VideoMAEv2Encoder

MODELS = CONFIGS_DIR / "models"


def _config(name):
    return yaml.safe_load((MODELS / f"{name}.yaml").read_text(encoding="utf-8"))


def _video(seed, batch=1, frames=16, size=64):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, size, size, generator=generator) * 2 - 1


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """Any attempt to fetch weights fails the test; the torch hub cache is an empty folder."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv("LSYNC_WEIGHTS", raising=False)


@pytest.fixture(scope="module")
def random_lpips():
    return make_lpips(weights_dir="/nonexistent-lsync-weights")


@pytest.fixture(scope="module")
def syncnet():
    torch.manual_seed(0)
    return StableSyncNet(_config("syncnet_tiny")).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def trepa():
    torch.manual_seed(0)
    return TrepaLoss(VideoMAEv2Encoder(_config("trepa_tiny")))


class _Forbidden(torch.nn.Module):
    """A loss network that must never run."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, *args):
        raise AssertionError("a loss with weight 0 ran its model")


class _Counting(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, *args):
        self.calls += 1
        return self.inner(*args)


# ------------------------------------------------------------------------------------------------ weights
def test_default_weights_are_latentsync_stage2():
    weights = LossWeights()
    assert weights.to_dict() == {"recon": 1.0, "sync": 0.05, "lpips": 0.1, "trepa": 10.0}
    assert weights.active() == ("recon", "sync", "lpips", "trepa")
    assert weights.needs_pixels
    assert not LossWeights(sync=0, lpips=0, trepa=0).needs_pixels


@pytest.mark.parametrize("kwargs", [{"sync": -0.1}, {"trepa": float("nan")},
                                    {"recon": 0, "sync": 0, "lpips": 0, "trepa": 0}])
def test_bad_weights_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        LossWeights(**kwargs)


# ------------------------------------------------------------------------------------------------ recon
def test_recon_loss_is_mean_squared_error():
    pred = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    noise = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert recon_loss(pred, noise).item() == pytest.approx((1 + 4 + 4 + 4) / 4)
    assert recon_loss(noise, noise).item() == 0.0
    with pytest.raises(ValueError):
        recon_loss(pred, noise[:1])


# ------------------------------------------------------------------------------------------------ zero weights skip
def test_zero_weights_never_run_their_models():
    noise = torch.randn(2, 4, 16, 8, 8)
    forbidden = LossModels(lpips=_Forbidden(), syncnet=_Forbidden(), trepa=_Forbidden())
    out = compute_losses(LossWeights(sync=0, lpips=0, trepa=0), noise_pred=noise + 1, noise=noise,
                         pred_frames=_video(1), gt_frames=_video(2), mel=torch.zeros(1, 1, 80, 52),
                         models=forbidden)
    assert set(out.raw) == {"recon"} and out.total.item() == pytest.approx(1.0)
    # Without pixel losses nothing else is needed at all.
    out = compute_losses(LossWeights(sync=0, lpips=0, trepa=0), noise_pred=noise, noise=noise)
    assert out.total.item() == 0.0


def test_sync_weight_runs_the_syncnet_once_and_only_it(syncnet):
    counting = _Counting(syncnet)
    models = LossModels(syncnet=counting, lpips=_Forbidden(), trepa=_Forbidden())
    out = compute_losses(LossWeights(recon=0, sync=0.5, lpips=0, trepa=0), pred_frames=_video(3),
                         mel=torch.randn(1, 1, 80, 52), models=models)
    assert counting.calls == 1
    assert set(out.raw) == {"sync"}
    assert out.weighted["sync"].item() == pytest.approx(0.5 * out.raw["sync"].item())
    assert out.total.item() == pytest.approx(out.weighted["sync"].item())


def test_missing_model_for_active_loss_is_a_config_error():
    with pytest.raises(ConfigError, match="sync"):
        compute_losses(LossWeights(recon=0, lpips=0, trepa=0), pred_frames=_video(1),
                       mel=torch.zeros(1, 1, 80, 52))


# ------------------------------------------------------------------------------------------------ sync
def test_sync_loss_is_bce_of_cosine_to_one(syncnet):
    frames, mel = _video(4, batch=2), torch.randn(2, 1, 80, 52)
    loss = sync_loss(frames, mel, syncnet)
    vision, audio = syncnet(pack_frames_for_syncnet(frames.permute(0, 2, 1, 3, 4)), mel)
    assert loss.item() == pytest.approx(cosine_loss(vision, audio, torch.ones(2)).item(), rel=1e-6)
    cos = F.cosine_similarity(vision, audio).clamp(1e-12, 1)
    assert loss.item() == pytest.approx(float(-cos.log().mean()), rel=1e-5)


def test_syncnet_input_is_the_lower_half_resized_to_the_syncnet_size():
    frames = _video(5, frames=16, size=32)
    packed = syncnet_input(frames, resolution=64)
    assert packed.shape == (1, 48, 32, 64)
    upscaled = F.interpolate(frames[0].permute(1, 0, 2, 3), size=(64, 64), mode="bicubic", align_corners=False)
    torch.testing.assert_close(packed[0, 3:6], upscaled[1, :, 32:])  # frame 1, rows 32..63
    assert syncnet_input(frames).shape == (1, 48, 16, 32)  # no resolution: as given


# ------------------------------------------------------------------------------------------------ LPIPS
def test_lpips_without_backbone_warns_and_uses_a_random_one(caplog):
    with caplog.at_level(logging.WARNING, logger="lsync"):
        model = make_lpips()
    assert not model.pretrained_backbone
    assert "RANDOM" in caplog.text and LPIPS_BACKBONE_FILES["vgg"] in caplog.text
    assert all(not p.requires_grad for p in model.parameters())
    model.train()
    assert not model.model.training  # heads with dropout stay in eval mode


def test_lpips_require_pretrained_names_the_file(tmp_path):
    with pytest.raises(InputError, match="vgg16-397923af.pth") as info:
        make_lpips(weights_dir=tmp_path, require_pretrained=True)
    assert str(tmp_path) in info.value.fix


def test_lpips_loads_a_torchvision_backbone_from_the_weights_dir(tmp_path):
    """A file with torchvision's vgg16 ``features.*`` layout is found (LatentSync's auxiliary/ folder) and loaded."""
    from torchvision.models import vgg16

    features = vgg16().features.state_dict()  # random torchvision weights (no download)
    (tmp_path / "auxiliary").mkdir()
    torch.save({f"features.{k}": v for k, v in features.items()}, tmp_path / "auxiliary" / "vgg16-397923af.pth")
    model = make_lpips(weights_dir=tmp_path, require_pretrained=True)
    assert model.pretrained_backbone
    loaded = model.model.net.state_dict()
    torch.testing.assert_close(loaded["slice1.0.weight"], features["0.weight"])
    torch.testing.assert_close(loaded["slice5.28.bias"], features["28.bias"])


def test_lpips_lower_half_ignores_the_upper_half_and_passes_gradients(random_lpips):
    gt = _video(6, frames=2)
    assert lpips_lower_half(gt, gt, random_lpips).item() == pytest.approx(0.0, abs=1e-6)
    pred = _video(7, frames=2).requires_grad_(True)
    loss = lpips_lower_half(pred, gt, random_lpips)
    assert loss.ndim == 0 and loss.item() > 0  # the shipped linear heads are non-negative
    loss.backward()
    assert pred.grad[..., 32:, :].abs().sum() > 0
    assert pred.grad[..., :32, :].abs().sum() == 0
    changed_top = pred.detach().clone()
    changed_top[..., :32, :] = 0
    assert lpips_lower_half(changed_top, gt, random_lpips).item() == pytest.approx(loss.item(), rel=1e-5)
    assert lower_half_frames(gt).shape == (2, 3, 32, 64)


# ------------------------------------------------------------------------------------------------ TREPA
def test_trepa_loss_with_the_tiny_config(trepa):
    gt = _video(8, size=32)
    assert trepa_loss(gt, gt, trepa).item() == pytest.approx(0.0, abs=1e-9)
    pred = _video(9, size=32)
    loss = trepa_loss(pred, gt, trepa)
    assert loss.item() > 0 and math.isfinite(loss.item())
    assert loss.item() == pytest.approx(trepa(pred, gt).item())


# ------------------------------------------------------------------------------------------------ all together
def test_all_losses_weighted_and_gradients_reach_the_generated_frames(random_lpips, syncnet, trepa):
    weights = LossWeights()
    noise = torch.randn(1, 4, 16, 8, 8)
    noise_pred = (noise + 0.1 * torch.randn_like(noise)).requires_grad_(True)
    pred, gt = _video(10).requires_grad_(True), _video(11)
    models = LossModels(lpips=random_lpips, syncnet=syncnet, trepa=trepa, syncnet_resolution=64)
    out = compute_losses(weights, noise_pred=noise_pred, noise=noise, pred_frames=pred, gt_frames=gt,
                         mel=torch.randn(1, 1, 80, 52), models=models)
    assert set(out.raw) == {"recon", "sync", "lpips", "trepa"}
    for name, value in out.raw.items():
        assert value.ndim == 0
        assert out.weighted[name].item() == pytest.approx(getattr(weights, name) * value.item(), rel=1e-6)
    assert out.total.item() == pytest.approx(sum(v.item() for v in out.weighted.values()), rel=1e-6)
    out.total.backward()
    assert noise_pred.grad.abs().sum() > 0
    assert pred.grad.abs().sum() > 0
    for model in (random_lpips, syncnet, trepa):
        assert all(p.grad is None for p in model.parameters())  # frozen: nothing accumulates in the loss nets
    values = out.log_values()
    assert set(values) == {"loss", "recon", "recon_weighted", "sync", "sync_weighted", "lpips", "lpips_weighted",
                           "trepa", "trepa_weighted"}
    assert all(isinstance(v, float) for v in values.values())
