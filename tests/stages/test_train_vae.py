"""``lsync train vae`` on tiny synthetic data: falling losses, validation images, an exported diffusers VAE whose
scaling gives unit-variance latents, exact resume; a U-Net run trained with it keeps it and inference uses it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lsync.commands.train import train
from lsync.errors import InputError, LsyncError
from lsync.manifest import read_manifest, read_records
from lsync.models.vae import checkpoint_vae, encode, load_vae, resolve_vae_folder
from lsync.stages.preprocess import PreprocessConfig, run as preprocess, split_of
from lsync.synth import synthesize

pytestmark = pytest.mark.slow

FAST = ["--set", "train.log_every=1", "--set", "data.val_frames=16", "--batch-size", "8", "--lr", "3e-3",
        "--set", "train.warmup_steps=0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("vae-raw") / "raw"
    synthesize(raw, clips=3, seconds=3.0, seed=3, size=(384, 480))
    out = tmp_path_factory.mktemp("vae data") / "data"
    keys = [f"synth_{i:03d}.mp4" for i in range(3)]
    fraction = next(p / 100 for p in range(1, 100) if sum(split_of(k, p / 100) == "val" for k in keys) == 1)
    preprocess(raw, out, PreprocessConfig(resolution=64, min_clip_seconds=2.0, max_clip_seconds=3.0, min_face=30,
                                          val_fraction=fraction))
    splits = sorted(r["split"] for r in read_records(out / "clips.jsonl"))
    assert "train" in splits and "val" in splits, splits
    return out


def train_vae(data: Path, run: Path, *args: str):
    result = CliRunner().invoke(train, ["vae", str(data), str(run), *FAST, *args], catch_exceptions=True)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def vae_run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vae run ü") / "run"
    train_vae(data, run, "--max-steps", "40", "--val-every", "20", "--checkpoint-every", "20")
    return run


def test_losses_fall_and_validation_images_are_written(vae_run):
    records = read_records(vae_run / "metrics.jsonl")
    first, last = records[0], records[-1]
    for term in ("l1", "mouth_l1"):
        assert last[f"train/{term}"] < 0.7 * first[f"train/{term}"], term
    assert "train/kl" in last and "val/psnr" in last and "val/mouth_psnr" in last
    val = [r for r in records if "val/loss" in r]
    assert [r["step"] for r in val] == [20, 40] and val[-1]["val/loss"] < val[0]["val/loss"]
    assert sorted(p.name for p in (vae_run / "val").glob("*.png")) == ["step-000020.png", "step-000040.png"]
    assert (vae_run / "metrics.png").stat().st_size > 0


def test_the_export_is_a_diffusers_vae_whose_scaled_latents_have_unit_variance(vae_run, data):
    from lsync.data.frame_dataset import FrameDataset

    manifest = read_manifest(vae_run, kind="vae-run")
    folder = resolve_vae_folder(vae_run)
    assert folder == vae_run / "vae"
    config = json.loads((folder / "config.json").read_text())
    assert config["scaling_factor"] == pytest.approx(manifest["summary"]["scaling_factor"], rel=1e-5)
    vae = load_vae(vae_run)  # a run directory works where a diffusers folder does
    frames = FrameDataset(data, 64, "train")
    pixels = torch.stack([frames[i]["pixels"] for i in range(0, len(frames), 7)])  # (N, 3, 64, 64)
    with torch.no_grad():
        latents = encode(vae, pixels.permute(1, 0, 2, 3)[None])
    assert latents.shape[1:3] == (4, len(pixels)) and latents.shape[-1] == 8
    assert abs(float(latents.mean())) < 0.15 and float(latents.std()) == pytest.approx(1.0, abs=0.15)


def test_a_finished_run_reruns_as_a_no_op_and_a_longer_one_resumes(vae_run, data, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(vae_run, copy)
    train_vae(data, copy, "--max-steps", "40", "--val-every", "20", "--checkpoint-every", "20")
    assert read_manifest(copy)["summary"]["steps"] == 40
    assert len(read_records(copy / "metrics.jsonl")) == len(read_records(vae_run / "metrics.jsonl"))
    train_vae(data, copy, "--max-steps", "42", "--val-every", "20", "--checkpoint-every", "20")
    steps = [r["step"] for r in read_records(copy / "metrics.jsonl")]
    assert steps[-3:] == [40, 41, 42] and read_manifest(copy)["summary"]["steps"] == 42
    changed = CliRunner().invoke(train, ["vae", str(data), str(copy), *FAST, "--max-steps", "44",
                                         "--set", "loss.kl_weight=0.1"])
    assert isinstance(changed.exception, LsyncError) and "other settings" in changed.exception.message


def test_an_unfinished_run_or_a_wrong_folder_is_a_clear_error(tmp_path, vae_run):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(InputError, match="has not finished"):
        resolve_vae_folder(tmp_path / "run")
    with pytest.raises(InputError, match="neither"):
        resolve_vae_folder(tmp_path)
    bad = CliRunner().invoke(train, ["vae", str(tmp_path), str(tmp_path / "r2"), "--max-steps", "1"])
    assert isinstance(bad.exception, LsyncError) and "lsync.json" in bad.exception.message


def test_a_unet_run_keeps_its_vae_and_inference_uses_it(vae_run, data, tmp_path):
    from lsync.checkpoints import save_model
    from lsync.models.presets import model_config
    from lsync.models.syncnet import StableSyncNet
    from lsync.sampling import load_inference_models

    towers = model_config("syncnet_tiny")
    syncnet = save_model(StableSyncNet(towers), tmp_path / "syncnet", towers)
    run = tmp_path / "unet"

    def train_unet(vae: Path, steps: int):
        return CliRunner().invoke(train, ["unet", str(data), str(run), "--preset", "tiny", "--vae", str(vae),
                                          "--syncnet", str(syncnet), "--max-steps", str(steps),
                                          "--set", "validation.frames=0", "--set", "train.num_workers=0"])

    result = train_unet(vae_run, 1)
    assert result.exit_code == 0, result.output
    (checkpoint,) = (run / "checkpoints").glob("step-*")
    assert checkpoint_vae(checkpoint) == (run / "vae").resolve()
    assert any(i["kind"] == "vae" for i in read_manifest(run)["inputs"])
    bundle, ids = load_inference_models("tiny", unet=run)
    assert ids["vae"]["path"] == str((run / "vae").resolve())
    assert bundle.vae.config.scaling_factor == pytest.approx(load_vae(vae_run).config.scaling_factor)
    # a resumed run may not switch to another VAE
    other = load_vae(vae_run)
    other.register_to_config(scaling_factor=0.5)
    other.save_pretrained(tmp_path / "other-vae")
    resumed = train_unet(tmp_path / "other-vae", 2)
    assert isinstance(resumed.exception, LsyncError) and "model.vae" in resumed.exception.message
