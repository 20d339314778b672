"""``lsync eval recon``: mouth-region metrics and a tiny random U-Net regenerating a synthetic val clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lsync.commands.evaluate import evaluate as eval_group
from lsync.errors import InputError, UsageError
from lsync.face.mask import mouth_mask
from lsync.manifest import read_manifest
from lsync.models.checkpoints import save_model
from lsync.models.presets import build_unet, model_config
from lsync.models.syncnet import StableSyncNet
from lsync.stages.eval_recon import (EvalReconConfig, evaluate, masked_psnr, masked_ssim, mouth_region,
                                     read_clip_frames, regenerate)
from lsync.stages.preprocess import PreprocessConfig, run as preprocess
from lsync.synth import synthesize


def test_mouth_region_is_the_repainted_part_of_the_mask():
    region, rows, cols = mouth_region(64)
    assert region.shape == (64, 64)
    assert 0.3 < region.mean() < 0.5  # about 41 % of the face is repainted
    assert rows.start >= 20 and rows.stop <= 64  # below the nose
    assert region[rows, cols].sum() == region.sum()


def test_psnr_and_ssim_look_only_at_the_region():
    rng = np.random.default_rng(0)
    region, rows, cols = mouth_region(64)
    real = rng.integers(0, 200, (3, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(masked_psnr(real, real.copy(), region), [100.0] * 3)  # capped for equal pixels
    np.testing.assert_allclose(masked_ssim(real, real.copy(), region, rows, cols), 1.0, atol=1e-6)
    fake = real.copy()
    fake[:, region] += 10  # a constant error of 10 inside the region ...
    fake[:, ~region] = 0  # ... and anything outside it
    np.testing.assert_allclose(masked_psnr(real, fake, region), 10 * np.log10(255 ** 2 / 100), atol=1e-9)
    assert (masked_ssim(real, fake, region, rows, cols) < 1.0).all()


@pytest.fixture(scope="module")
def val_data(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("recon-raw") / "raw"
    synthesize(raw, clips=1, seconds=2.0, seed=41, size=(384, 480))
    data = tmp_path_factory.mktemp("recon data ü") / "data"
    preprocess(raw, data, PreprocessConfig(resolution=64, min_clip_seconds=1.5, max_clip_seconds=2.0, min_face=30,
                                           val_fraction=1.0))
    return data


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory) -> Path:
    """A U-Net "training run": a tiny random U-Net saved as its only checkpoint."""
    run = tmp_path_factory.mktemp("unet-run") / "run"
    torch.manual_seed(0)
    save_model(build_unet(model_config("unet_tiny")), run / "checkpoints" / "step-000001", model_config("unet_tiny"))
    return run


def test_regenerated_frames_keep_every_pixel_outside_the_mouth(val_data, unet_run):
    from lsync.audio.mel import load_wav_16k_mono
    from lsync.manifest import read_records
    from lsync.stages.infer_denoise import ChunkSampler, load_inference_models

    torch.set_num_threads(1)  # other processes share the cores: more threads only spin
    bundle, _ = load_inference_models("tiny", unet=unet_run)
    sampler = ChunkSampler(bundle, torch.device("cpu"), torch.float32, steps=2, num_frames=16)
    record = read_records(val_data / "clips.jsonl")[0]
    real = read_clip_frames(val_data / record["video"], 64, max_frames=20)
    fake = regenerate(sampler, bundle.audio(load_wav_16k_mono(val_data / record["audio"])), real)
    assert fake.shape == real.shape == (20, 64, 64, 3) and fake.dtype == np.uint8  # 16 + a padded chunk of 4
    keep = np.asarray(mouth_mask(64)) == 1.0
    assert np.abs(fake[:, keep].astype(int) - real[:, keep].astype(int)).max() <= 1
    assert np.abs(fake.astype(int) - real.astype(int)).max() > 1  # the mouth was repainted


def test_eval_recon_command_writes_metrics_and_an_eval_directory(val_data, unet_run, tmp_path):
    torch.manual_seed(0)
    syncnet = save_model(StableSyncNet(model_config("syncnet_tiny")).eval(), tmp_path / "syncnet",
                         model_config("syncnet_tiny"))
    out = tmp_path / "recon out"
    result = CliRunner().invoke(eval_group, ["recon", str(val_data), "--unet", str(unet_run), "--preset", "tiny",
                                             "--steps", "2", "--max-frames", "24", "--syncnet", str(syncnet),
                                             "--out", str(out), "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # warnings (random LPIPS backbone) go to stderr
    rows = json.loads((out / "results.json").read_text())
    assert rows == printed["rows"] and len(rows) == 1
    row = rows[0]
    assert row["frames"] == 24
    assert 0 <= row["lpips"] and 0 < row["psnr"] < 100 and -1 <= row["ssim"] < 1
    assert row["sync_offset"] in range(-15, 16) and row["sync_lse_c"] >= 0 and row["real_sync_lse_c"] >= 0
    manifest = read_manifest(out, kind="eval")
    summary = manifest["summary"]
    assert summary["evaluation"] == "recon" and summary["clips"] == 1
    assert summary["psnr"] == pytest.approx(row["psnr"])
    assert summary["lpips_pretrained"] is (summary["lpips_note"] is None)
    assert manifest["config"]["unet"] == str(unet_run)


def test_eval_recon_bad_inputs(val_data, unet_run, tmp_path):
    with pytest.raises(UsageError, match="no U-Net"):
        evaluate(val_data, EvalReconConfig(preset="tiny"))
    with pytest.raises(InputError, match="'train' split"):
        evaluate(val_data, EvalReconConfig(unet=str(unet_run), preset="tiny", split="train"))
    with pytest.raises(InputError, match="holds no checkpoint"):
        evaluate(val_data, EvalReconConfig(unet=str(tmp_path), preset="tiny"))
    missing = CliRunner().invoke(eval_group, ["recon", str(tmp_path / "nope"), "--unet", str(unet_run)])
    assert isinstance(missing.exception, InputError) and "\n" not in missing.exception.message
