"""Checkpoint directories, RNG state, metrics files and the accelerator settings."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lsync.errors import CheckpointError, UsageError
from lsync.manifest import read_records
from lsync.training import checkpointing as ckpt
from lsync.training.accelerate_setup import resolve_mixed_precision
from lsync.training.metrics import MetricsLog, ema
from lsync.training.seeding import capture_rng_state, restore_rng_state, sample_rng, seed_everything


def draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_survives_a_checkpoint_file(tmp_path):
    seed_everything(3)
    draws()
    ckpt.save_tensors(capture_rng_state(), tmp_path / "rng.pt")
    expected = draws()
    draws()
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_sample_rng_depends_on_every_part_of_the_key():
    first = sample_rng(1, 0, 5).random()
    assert sample_rng(1, 0, 5).random() == first
    assert len({first, sample_rng(1, 1, 5).random(), sample_rng(1, 0, 6).random(), sample_rng(2, 0, 5).random()}) == 4


def fake_checkpoint(run_dir, step):
    staging = ckpt.staging_dir(run_dir, step)
    staging.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        (staging / name).write_bytes(b"x")
    ckpt.save_tensors({"step": step}, staging / ckpt.STATE_NAME)
    return ckpt.publish_checkpoint(staging, run_dir, step, keep_last=2)


def test_checkpoints_are_listed_pruned_and_resolved(tmp_path):
    for step in (5, 10, 15):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "checkpoints" / "step-000020").mkdir()  # no training_state.pt: incomplete, ignored
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [10, 15]
    assert ckpt.resolve_resume(tmp_path, "auto").name == "step-000015"
    assert ckpt.resolve_resume(tmp_path, None) is None
    assert ckpt.resolve_resume(tmp_path / "fresh", "auto") is None
    assert ckpt.load_training_state(ckpt.resolve_resume(tmp_path, "auto"))["step"] == 15
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        ckpt.resolve_resume(tmp_path, tmp_path / "checkpoints" / "step-000020")


def test_weights_digest_follows_a_run_to_its_newest_checkpoint(tmp_path):
    from lsync.manifest import quick_file_digest

    for step, content in ((5, b"old"), (10, b"new")):
        checkpoint = fake_checkpoint(tmp_path, step)
        (checkpoint / "model.safetensors").write_bytes(content)
    newest = tmp_path / "checkpoints" / "step-000010" / "model.safetensors"
    assert ckpt.weights_digest(tmp_path) == quick_file_digest(newest)
    assert ckpt.weights_digest(newest.parent) == ckpt.weights_digest(newest) == quick_file_digest(newest)
    assert ckpt.weights_digest(tmp_path / "missing") is None


def test_staging_debris_is_cleared(tmp_path):
    staging = ckpt.staging_dir(tmp_path, 3)
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"half")
    ckpt.clear_staging(tmp_path)
    assert not staging.exists()


def test_metrics_resume_drops_records_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for step in (1, 2, 3, 4):
        log.log(step, {"train/loss": 1.0 / step, "val/accuracy": 0.5 + step / 10})
    log.close()
    resumed = MetricsLog(tmp_path, resume_step=2, tensorboard=False)
    assert [r["step"] for r in resumed.records()] == [1, 2]
    resumed.log(3, {"train/loss": torch.tensor(0.25)})
    chart = resumed.plot()
    resumed.close()
    assert read_records(tmp_path / "metrics.jsonl")[-1] == {"step": 3, "train/loss": 0.25}
    assert chart.read_bytes()[:4] == b"\x89PNG"
    fresh = MetricsLog(tmp_path, tensorboard=False)  # a fresh start forgets an earlier attempt
    assert fresh.records() == []
    fresh.close()


def test_ema_is_debiased():
    assert ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_mixed_precision_choices():
    assert resolve_mixed_precision("auto", "cpu") == "no"
    assert resolve_mixed_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UsageError):
        resolve_mixed_precision("fp16", "cpu")
    with pytest.raises(UsageError):
        resolve_mixed_precision("fp8", "cuda")
