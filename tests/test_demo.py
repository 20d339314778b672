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

SMALL = ["--var", "clips=4", "--var", "seconds=5", "--var", "syncnet_steps=4", "--var", "unet_steps=2",
         "--var", "infer_steps=2"]


@pytest.mark.slow
def test_demo_runs_every_stage_then_reruns_as_a_no_op(tmp_path):
    workdir = tmp_path / "demo ü"
    first = CliRunner().invoke(cli, ["demo", "--workdir", str(workdir), *SMALL])
    assert first.exit_code == 0, first.output
    kinds = {name: read_manifest(workdir / name)["kind"] for name in
             ("raw", "data", "syncnet", "data_synced", "unet", "video", "eval")}
    assert kinds == {"raw": "raw", "data": "data", "syncnet": "syncnet-run", "data_synced": "data",
                     "unet": "unet-run", "video": "inference", "eval": "eval"}

    # the held-out clip's video, driven by another clip's audio, as long as that audio
    (video,) = sorted((workdir / "video").glob("*.mp4"))
    entry = read_manifest(workdir / "video")["summary"]["outputs"][video.name]
    assert entry["inputs"]["audio"]["path"].startswith(str(workdir / "data"))
    assert abs(probe(video).video_duration_s - 5.0) <= 0.04
    strip = cv2.imread(str(video.with_suffix(".strip.png")))
    assert strip is not None and strip.shape[1] > 3 * strip.shape[0]
    for run in ("syncnet", "unet"):
        assert (workdir / run / "metrics.png").stat().st_size > 0
    # the U-Net trained with all four losses, at the weights the recipe names
    last = json.loads((workdir / "unet" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train/recon_weighted", "train/sync_weighted", "train/lpips_weighted", "train/trepa_weighted"} <= set(last)
    assert read_manifest(workdir / "unet")["config"]["loss"]["sync_weight"] == 0.05
    assert read_manifest(workdir / "eval")["summary"]["scored"] == 1
    for path in (video, video.with_suffix(".strip.png"), workdir / "syncnet" / "metrics.png",
                 workdir / "unet" / "metrics.png"):
        assert f": {path}\n" in first.stdout  # `lsync demo` ends by printing where each artifact is

    started = time.perf_counter()
    second = CliRunner().invoke(cli, ["demo", "--workdir", str(workdir), *SMALL])
    assert second.exit_code == 0, second.output
    assert second.stdout.count("skipped") == 7 and " done " not in second.stdout
    assert time.perf_counter() - started < 30
