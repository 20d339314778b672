"""`lsync demo` end to end on a smaller recipe: every stage runs, the artifacts exist, a rerun is a no-op."""

from __future__ import annotations

import json
import time

import cv2
import pytest
from click.testing import CliRunner

from lsync.cli import cli
from lsync.manifest import read_manifest
from lsync.media.probe import probe

SMALL = ["--var", "clips=4", "--var", "seconds=5", "--var", "vae_steps=2", "--var", "syncnet_steps=4",
         "--var", "unet_layers_per_block=1", "--var", "pixel_loss_every=2",
         "--var", "unet_steps=2", "--var", "unet_val_frames=16", "--var", "infer_steps=2", "--var", "seed=3"]
STEPS = ("raw", "data", "vae", "syncnet", "data_synced", "unet", "video", "eval", "eval_mouth")


@pytest.mark.slow
def test_demo_runs_every_stage_then_reruns_as_a_no_op(tmp_path):
    workdir = tmp_path / "demo ü"
    first = CliRunner().invoke(cli, ["demo", "--workdir", str(workdir), *SMALL])
    assert first.exit_code == 0, first.output
    kinds = {name: read_manifest(workdir / name)["kind"] for name in STEPS}
    assert kinds == {"raw": "raw", "data": "data", "vae": "vae-run", "syncnet": "syncnet-run", "data_synced": "data",
                     "unet": "unet-run", "video": "inference", "eval": "eval", "eval_mouth": "eval"}
    assert read_manifest(workdir / "raw")["config"]["seed"] == 3  # --var seed reaches lsync synth

    # the held-out clip's video, driven by another clip's audio, as long as that audio
    (video,) = sorted((workdir / "video").glob("*.mp4"))
    entry = read_manifest(workdir / "video")["summary"]["outputs"][video.name]
    assert entry["inputs"]["audio"]["path"].startswith(str(workdir / "data"))
    assert abs(probe(video).video_duration_s - 5.0) <= 0.04
    strip = cv2.imread(str(video.with_suffix(".strip.png")))
    assert strip is not None and strip.shape[1] > 3 * strip.shape[0]
    for run in ("vae", "syncnet", "unet"):
        assert (workdir / run / "metrics.png").stat().st_size > 0
    # inference used the VAE the recipe trained (through the U-Net run, which keeps a copy), not a random one
    models = entry["models"]
    assert models["vae"]["path"] == str((workdir / "unet" / "vae").resolve())
    assert read_manifest(workdir / "unet")["config"]["model"]["vae"] == str(workdir / "vae")
    # the U-Net trained with all four losses, at the weights the recipe names (step 2 is a pixel-loss step)
    last = json.loads((workdir / "unet" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/recon_weighted", "train/sync_weighted", "train/lpips_weighted", "train/trepa_weighted"} <= set(last)
    assert read_manifest(workdir / "unet")["config"]["loss"]["sync_weight"] == 0.05
    assert read_manifest(workdir / "unet")["config"]["loss"]["pixel_loss_every"] == 2
    assert read_manifest(workdir / "unet")["config"]["model"]["unet_overrides"] == {"layers_per_block": 1}
    assert read_manifest(workdir / "eval")["summary"]["scored"] == 1
    mouth = read_manifest(workdir / "eval_mouth")["summary"]
    assert mouth["evaluation"] == "mouth" and mouth["measured"] == 1 and 0 <= mouth["face_share"] <= 1
    for path in (video, video.with_suffix(".strip.png"), workdir / "vae" / "metrics.png",
                 workdir / "syncnet" / "metrics.png", workdir / "unet" / "metrics.png"):
        assert f": {path}\n" in first.stdout  # `lsync demo` ends by printing where each artifact is
    # ... and the scores: the mouth measure and the sync under the demo's SyncNet
    shown = "-" if mouth["r_drive"] is None else f"{mouth['r_drive']:.3f}"
    assert f"r_drive: {shown}\n" in first.stdout and "LSE-C under the demo's SyncNet: " in first.stdout

    started = time.perf_counter()
    second = CliRunner().invoke(cli, ["demo", "--workdir", str(workdir), *SMALL])
    assert second.exit_code == 0, second.output
    assert second.stdout.count("skipped") == len(STEPS) and " done " not in second.stdout
    assert time.perf_counter() - started < 30
