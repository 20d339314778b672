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


class MouthOracle:
    """A stand-in SyncNet with a known answer: z-normalised 16-frame windows of the mouth's darkness (64 px
    aligned faces; open = dark) against the loudness per frame, distance 1 - correlation. It keeps every batch of
    faces it is asked to score, so the test can recompute each number on its own."""

    name, distance_name, window, face_size = "mouth-oracle", "1 - correlation", 16, 64

    def __init__(self):
        self.faces = []

    def prepare_faces(self, faces):
        self.faces.append(np.array(faces))
        return np.asarray(faces)

    def _windows(self, signal) -> torch.Tensor:
        windows = torch.from_numpy(np.asarray(signal, np.float64)).unfold(0, self.window, 1)
        windows = windows - windows.mean(dim=1, keepdim=True)
        return (windows / windows.norm(dim=1, keepdim=True).clamp_min(1e-8)).float()

    def embed_video(self, frames):
        return self._windows(-frames[:, 34:42, 20:46].astype(np.float64).mean(axis=(1, 2, 3)))

    def embed_audio(self, samples):
        count = len(samples) // 640
        return self._windows(np.sqrt(np.mean(np.asarray(samples[:count * 640], np.float64).reshape(count, 640) ** 2,
                                             axis=1)))

    @staticmethod
    def distance(video, audio):
        return 1 - (video * audio).sum(dim=1)


def test_eval_recon_command_writes_metrics_and_an_eval_directory(val_data, unet_run, tmp_path, monkeypatch):
    import lsync.sync_metrics
    from lsync.audio.mel import load_wav_16k_mono
    from lsync.losses import make_lpips
    from lsync.manifest import read_records
    from lsync.stages.eval_recon import box_lpips
    from lsync.sync_metrics import score_sync

    oracle = MouthOracle()
    monkeypatch.setattr(lsync.sync_metrics, "load_scorer", lambda *args, **kwargs: oracle)
    out = tmp_path / "recon out"
    torch.manual_seed(5)  # the random LPIPS backbone (no VGG weights here) is the command's first draw
    result = CliRunner().invoke(eval_group, ["recon", str(val_data), "--unet", str(unet_run), "--preset", "tiny",
                                             "--steps", "2", "--max-frames", "24", "--syncnet", "oracle",
                                             "--out", str(out), "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # warnings (random LPIPS backbone) go to stderr
    rows = json.loads((out / "results.json").read_text())
    assert rows == printed["rows"] and len(rows) == 1
    row = rows[0]
    assert row["frames"] == 24

    # every number again, computed here from the frames the command scored: generated first, then the real ones
    record = read_records(val_data / "clips.jsonl")[0]
    fake, real = oracle.faces
    np.testing.assert_array_equal(real, read_clip_frames(val_data / record["video"], 64, max_frames=24))
    assert fake.shape == real.shape and not np.array_equal(fake, real)
    region, rows_box, cols_box = mouth_region(64)
    mse = ((real[:, region].astype(np.float64) - fake[:, region]) ** 2).mean(axis=(1, 2))
    assert row["psnr"] == pytest.approx(float(np.mean(10 * np.log10(255.0 ** 2 / mse))), abs=1e-4)
    torch.manual_seed(5)
    lpips = box_lpips(make_lpips("vgg"), real, fake, rows_box, cols_box, torch.device("cpu"))
    assert row["lpips"] == pytest.approx(float(lpips.mean()), abs=1e-5)
    assert row["ssim"] == pytest.approx(float(masked_ssim(real, fake, region, rows_box, cols_box).mean()), abs=1e-4)
    samples = load_wav_16k_mono(val_data / record["audio"])
    generated = score_sync(MouthOracle(), fake, samples, max_offset=15)
    assert (row["sync_offset"], row["sync_lse_d"]) == (generated.offset, pytest.approx(generated.lse_d, abs=1e-5))
    assert row["sync_lse_c"] == pytest.approx(generated.lse_c, abs=1e-5)
    # the real faces of a clip synthesised in sync: offset 0, and far surer than the random U-Net's mouths
    assert row["real_sync_offset"] == 0 and row["real_sync_lse_c"] > 0.3
    assert row["real_sync_lse_c"] > row["sync_lse_c"]

    manifest = read_manifest(out, kind="eval")
    summary = manifest["summary"]
    assert summary["evaluation"] == "recon" and summary["clips"] == 1
    assert summary["psnr"] == pytest.approx(row["psnr"])
    assert summary["lpips_pretrained"] is False and "RANDOM" in summary["lpips_note"]  # no VGG weights here
    assert manifest["config"]["unet"] == str(unet_run)


def test_a_real_preset_without_the_lpips_backbone_is_refused(val_data, unet_run, tmp_path, monkeypatch):
    """LPIPS of a random VGG is no LPIPS: a real preset stops before loading anything, naming the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("LSYNC_WEIGHTS", raising=False)
    with pytest.raises(InputError, match=r"LPIPS backbone vgg16-397923af\.pth .* was not found, put it in one of"):
        evaluate(val_data, EvalReconConfig(unet=str(unet_run), preset="latentsync-1.5", weights_dir=str(tmp_path)))


def test_eval_recon_bad_inputs(val_data, unet_run, tmp_path):
    with pytest.raises(UsageError, match="no U-Net"):
        evaluate(val_data, EvalReconConfig(preset="tiny"))
    with pytest.raises(InputError, match="'train' split"):
        evaluate(val_data, EvalReconConfig(unet=str(unet_run), preset="tiny", split="train"))
    with pytest.raises(InputError, match="holds no checkpoint"):
        evaluate(val_data, EvalReconConfig(unet=str(tmp_path), preset="tiny"))
    missing = CliRunner().invoke(eval_group, ["recon", str(tmp_path / "nope"), "--unet", str(unet_run)])
    assert isinstance(missing.exception, InputError) and "\n" not in missing.exception.message
