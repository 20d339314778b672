"""Trainable-parameter patterns, EMA, trainable-only checkpoints with their base weights, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lsync.errors import CheckpointError, ConfigError
from lsync.manifest import read_records
from lsync.checkpoints import load_model_config
from lsync.training.ema import TrainableEMA
from lsync.training.loop import LoopConfig, Trainer
from lsync.training.sampling import SampleKey
from lsync.training.seeding import sample_rng, seed_everything
from lsync.training.trainable import (
    BASE_FILE,
    compose_state_dict,
    load_checkpoint_model,
    matches,
    save_weights,
    select_trainable,
    set_gradient_checkpointing,
    weights_kind,
)


class Regression(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 24

    def __getitem__(self, key: SampleKey):
        rng = sample_rng(3, key.epoch, key.position)
        x = torch.from_numpy(rng.normal(size=4).astype("float32"))
        return {"x": x, "y": x.sum().reshape(1)}


class TwoPart(nn.Module):
    """A frozen encoder with a persistent buffer, and a head that trains."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 6)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 6))
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.encoder(x)) * self.scale)


def step_fn(model, batch):
    return {"loss": nn.functional.mse_loss(model(batch["x"]), batch["y"])}


def make_trainer(run_dir, **overrides) -> tuple[Trainer, TwoPart]:
    settings = dict(batch_size=4, lr=5e-2, max_steps=4, log_every=1, val_every=0, checkpoint_every=0, keep_last=0,
                    num_workers=0, cpu=True, tensorboard=False, seed=9, checkpoint_weights="trainable", ema=True,
                    ema_decay=0.9)
    config = LoopConfig(**{**settings, **overrides})
    seed_everything(config.seed)
    model = TwoPart()
    select_trainable(model, ["head."])
    return Trainer(run_dir, model, {"kind": "two-part"}, config, Regression(), step_fn), model


# ----------------------------------------------------------------------------------------------- patterns
def test_patterns_are_substrings_or_globs():
    assert matches("down_blocks.0.motion_modules.0.proj.weight", ["motion_modules."])
    assert matches("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight", ["*.attn2.*"])
    assert not matches("conv_in.weight", ["motion_modules.", "attn2."])
    assert matches("anything", ["*"])


def test_select_trainable_sets_requires_grad_and_refuses_typos():
    model = TwoPart()
    assert select_trainable(model, ["head."]) == ["head.weight", "head.bias"]
    assert not any(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(ConfigError, match="'motion_module' match no parameter"):
        select_trainable(model, ["head.", "motion_module"])


def test_gradient_checkpointing_switch_needs_support():
    from lsync.models.presets import build_unet, model_config

    unet = build_unet(model_config("unet_tiny"))
    set_gradient_checkpointing(unet, True)
    assert unet.is_gradient_checkpointing
    set_gradient_checkpointing(unet, False)
    assert not unet.is_gradient_checkpointing
    with pytest.raises(ConfigError, match="does not support gradient checkpointing"):
        set_gradient_checkpointing(TwoPart(), True)


# ----------------------------------------------------------------------------------------------- EMA
def test_ema_follows_the_warmup_rule_and_swaps_back():
    model = TwoPart()
    select_trainable(model, ["head."])
    ema = TrainableEMA(model, decay=0.99)
    assert set(ema.shadow) == {"head.weight", "head.bias"}
    start = model.head.weight.detach().clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    ema.update(model)  # first decay: min(0.99, 1 / 10) = 0.1, so the average moves 90% of the way
    torch.testing.assert_close(ema.shadow["head.weight"], start + 0.9)
    live = model.head.weight.detach().clone()
    with ema.applied_to(model):
        torch.testing.assert_close(model.head.weight.detach(), start + 0.9)
    assert torch.equal(model.head.weight.detach(), live)


# ----------------------------------------------------------------------------------------------- checkpoints
def test_trainable_only_file_needs_its_base(tmp_path):
    model = TwoPart()
    select_trainable(model, ["head."])
    save_weights(model, tmp_path / "ckpt", {"kind": "two-part"}, trainable_only=True)
    assert weights_kind(tmp_path / "ckpt" / "model.safetensors") == "trainable"
    assert set(load_file(tmp_path / "ckpt" / "model.safetensors")) == {"head.weight", "head.bias"}
    with pytest.raises(CheckpointError, match="names no base files"):
        compose_state_dict(tmp_path / "ckpt")


def test_trainer_saves_trainable_weights_once_the_base_and_resumes_exactly_with_ema(tmp_path):
    straight, _ = make_trainer(tmp_path / "straight")
    straight.fit()
    checkpoint = tmp_path / "straight" / "checkpoints" / "step-000004"
    assert set(load_file(checkpoint / "model.safetensors")) == {"head.weight", "head.bias"}
    assert set(load_file(tmp_path / "straight" / BASE_FILE)) == {"encoder.weight", "encoder.bias", "scale"}
    assert load_model_config(checkpoint)["_base"] == [f"../../{BASE_FILE}"]

    # The whole model loads from the checkpoint alone; with use_ema the head carries the average.
    fresh = load_checkpoint_model(TwoPart(), checkpoint)
    torch.testing.assert_close(fresh.head.weight, straight.model.head.weight)
    torch.testing.assert_close(fresh.encoder.weight, straight.model.encoder.weight)
    averaged = load_checkpoint_model(TwoPart(), checkpoint, use_ema=True)
    torch.testing.assert_close(averaged.head.weight, straight.ema.shadow["head.weight"])
    assert not torch.equal(averaged.head.weight, fresh.head.weight)

    first, _ = make_trainer(tmp_path / "split", max_steps=2)
    first.fit()
    resumed, _ = make_trainer(tmp_path / "split")
    resumed.fit(resume_from=tmp_path / "split" / "checkpoints" / "step-000002")
    a, b = (load_file(tmp_path / run / "checkpoints" / "step-000004" / "ema.safetensors") for run in ("straight", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["train/loss"] for r in read_records(tmp_path / run / "metrics.jsonl")] for run in ("straight", "split")]
    assert losses[0] == losses[1]
