"""TREPA: VideoMAE-v2 encoder layout, checkpoint containers, golden features and loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from lsync.errors import CheckpointError, ConfigError
from lsync.models.trepa import (
    TrepaLoss,
    VideoMAEv2Config,
    VideoMAEv2Encoder,
    load_videomae,
    resize_frames,
    sinusoid_position_table,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"


def _config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, VideoMAEv2Encoder]:
    """A randomly initialised tiny encoder saved the way the released file is: {"model": state_dict}."""
    torch.manual_seed(0)
    model = VideoMAEv2Encoder(_config("trepa_tiny")).eval()
    path = tmp_path_factory.mktemp("trepa ckpt") / "tiny.pth"
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    return path, model


# ----------------------------------------------------------------------------------------------- layout
def test_vit_g_layout_on_meta():
    with torch.device("meta"):
        model = VideoMAEv2Encoder(_config("trepa_vit_g"))
    sd = model.state_dict()
    assert "pos_embed" not in sd  # a fixed table, never stored
    assert model.pos_embed.shape == (1, 2048, 1408)
    assert sd["patch_embed.proj.weight"].shape == (1408, 3, 2, 14, 14)
    assert sd["blocks.39.mlp.fc1.weight"].shape == (6144, 1408)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * 1408, 1408)
    assert "blocks.0.attn.qkv.bias" not in sd and "blocks.0.attn.q_bias" in sd
    assert "blocks.40.norm1.weight" not in sd
    assert sd["head.weight"].shape == (174, 1408)
    assert VideoMAEv2Config.from_dict(_config("trepa_vit_g")) == VideoMAEv2Config()


def test_position_table_formula():
    table = sinusoid_position_table(10, 6)[0].double()
    for p in (0, 3, 9):
        for j in range(6):
            angle = p / 10000 ** (2 * (j // 2) / 6)
            expected = torch.tensor(angle).sin() if j % 2 == 0 else torch.tensor(angle).cos()
            assert table[p, j].item() == pytest.approx(expected.item(), abs=1e-7)


def test_bad_configs_are_reported():
    with pytest.raises(ConfigError, match="unknown key"):
        VideoMAEv2Config.from_dict({"embed_dims": 8})
    with pytest.raises(ConfigError, match="divisible"):
        VideoMAEv2Config.from_dict({"embed_dim": 30, "num_heads": 4})


# ----------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("wrapper", ["model", "module", None])
def test_loads_every_container(tmp_path, tiny_checkpoint, wrapper):
    _, model = tiny_checkpoint
    path = tmp_path / "ckpt.pth"
    sd = model.state_dict()
    torch.save({wrapper: sd} if wrapper else sd, path)
    loaded = load_videomae(path, _config("trepa_tiny"))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for name, value in sd.items():
        assert torch.equal(loaded.state_dict()[name], value), name
    torch.testing.assert_close(loaded.pos_embed, model.pos_embed, rtol=0, atol=0)


def test_a_stored_position_table_must_be_the_fixed_one(tmp_path, tiny_checkpoint):
    _, model = tiny_checkpoint
    sd = dict(model.state_dict())
    sd["pos_embed"] = model.pos_embed.clone()
    torch.save({"module": sd}, tmp_path / "with_table.pth")
    load_videomae(tmp_path / "with_table.pth", _config("trepa_tiny"))
    sd["pos_embed"] = torch.zeros_like(model.pos_embed)
    torch.save({"module": sd}, tmp_path / "learned_table.pth")
    with pytest.raises(CheckpointError, match="pos_embed"):
        load_videomae(tmp_path / "learned_table.pth", _config("trepa_tiny"))


def test_a_checkpoint_for_another_size_is_refused(tiny_checkpoint):
    path, _ = tiny_checkpoint
    config = dict(_config("trepa_tiny"), depth=3)
    with pytest.raises(CheckpointError, match=r"missing: blocks\.2\."):
        load_videomae(path, config)


# ----------------------------------------------------------------------------------------------- loss
def test_resize_matches_per_frame_interpolation():
    videos = torch.randn(2, 3, 4, 20, 30)
    resized = resize_frames(videos, 28)
    assert resized.shape == (2, 3, 4, 28, 28)
    frame = F.interpolate(videos[1, :, 2][None], size=(28, 28), mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(resized[1, :, 2], frame)


def test_loss_is_zero_for_equal_clips_and_gives_gradients(tiny_checkpoint):
    path, _ = tiny_checkpoint
    loss_fn = TrepaLoss(load_videomae(path, _config("trepa_tiny")))
    torch.manual_seed(3)
    real = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    fake = (real + 0.3 * torch.randn_like(real)).requires_grad_(True)
    assert loss_fn(real, real.clone()).item() == 0.0
    loss = loss_fn(fake, real)
    loss.backward()
    assert loss.item() > 0 and fake.grad.abs().sum() > 0
    loss_fn.train()
    assert not loss_fn.encoder.training


# ----------------------------------------------------------------------------------------------- golden
@pytest.mark.golden
def test_golden_features_and_loss(reference):
    configs = sorted((reference / "trepa").glob("*_videomae_config.json"))
    assert configs, "no trepa/*_videomae_config.json"
    io = load_file(reference / "trepa" / "trepa_io.safetensors")
    for config_path in configs:
        weights = config_path.with_name(config_path.name.replace("_config.json", "_weights.safetensors"))
        encoder = load_videomae(weights, json.loads(config_path.read_text()))
        torch.testing.assert_close(encoder.pos_embed, io["pos_embed"], rtol=0, atol=1e-6)
        loss_fn = TrepaLoss(encoder)
        with torch.no_grad():
            fake = loss_fn.features(io["videos_fake"])
            real = loss_fn.features(io["videos_real"])
            loss = loss_fn(io["videos_fake"], io["videos_real"])
        torch.testing.assert_close(fake, io["features_fake"], rtol=0, atol=1e-5)
        torch.testing.assert_close(real, io["features_real"], rtol=0, atol=1e-5)
        torch.testing.assert_close(loss, io["expected_loss"], rtol=1e-4, atol=0)


@pytest.mark.golden
def test_config_files_describe_the_reference_models(reference):
    configs = sorted((reference / "trepa").glob("*_videomae_config.json"))
    assert configs, "no trepa/*_videomae_config.json"
    for config_path in configs:
        golden = VideoMAEv2Config.from_dict(json.loads(config_path.read_text()))
        ours = VideoMAEv2Config.from_dict(_config("trepa_tiny"))
        # The giant differs from the tiny golden only in width, depth and heads (README section 9).
        size_keys = {"embed_dim", "depth", "num_heads"}
        giant = VideoMAEv2Config.from_dict(_config("trepa_vit_g"))
        for key, value in golden.to_dict().items():
            if key not in size_keys:
                assert getattr(giant, key) == pytest.approx(value), key
        if (golden.embed_dim, golden.depth, golden.num_heads) == (ours.embed_dim, ours.depth, ours.num_heads):
            assert ours == golden
