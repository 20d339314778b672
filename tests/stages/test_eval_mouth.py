"""``lsync eval mouth``: a synthetic face follows its own audio (high r), not another clip's; a video whose audio
was replaced follows its source (r_source); lsync infer folders are read through their manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lsync.cli import cli
from lsync.errors import InputError, UsageError
from lsync.manifest import describe_input, read_manifest, write_manifest
from lsync.media.video import mux
from lsync.stages.eval_mouth import EvalMouthConfig, evaluate
from lsync.synth import synthesize


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("mouth raw")
    return [clip.path for clip in synthesize(out, clips=2, seconds=4.0, seed=5, size=(384, 480))]


def test_a_synthetic_face_follows_its_own_audio_and_not_another_clips(clips, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "mouth", str(clips[0]), "--source", str(clips[1]), "--out",
                                      str(tmp_path / "eval ü"), "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["rows"][0]
    assert row["frames"] == 100 and row["face_share"] == 1.0
    assert row["r_drive"] > 0.8 and abs(row["lag_drive"]) <= 1
    assert row["r_source"] < 0.5 and row["margin"] == pytest.approx(row["r_drive"] - row["r_source"], abs=1e-4)
    manifest = read_manifest(tmp_path / "eval ü", kind="eval")
    assert manifest["summary"]["evaluation"] == "mouth" and manifest["summary"]["r_drive"] == row["r_drive"]
    series = json.loads((tmp_path / "eval ü" / "results.json").read_text())[0]["series"]
    assert len(series["lip_gap"]) == 100 and len(series["driving_rms"]) == 100


def test_an_inference_folder_scores_each_output_against_its_recorded_audio_and_source(clips, tmp_path):
    # "Lip-synced" output that kept the source's mouth: clip 0's frames with clip 1's audio (a copying model).
    out_dir = tmp_path / "video"
    out_dir.mkdir()
    copied = mux(clips[0], clips[1], out_dir / "copy.mp4")
    entry = {"output": "copy.mp4", "inputs": {"video": describe_input(clips[0], "video"),
                                              "audio": describe_input(clips[1], "audio")}}
    write_manifest(out_dir, "inference", {}, summary={"outputs": {"copy.mp4": entry}})
    result = evaluate(out_dir, EvalMouthConfig())
    (row,) = result["rows"]
    assert row["video"] == str(copied) and row["source"] == str(clips[0])
    assert row["r_source"] > 0.8 and row["r_drive"] < 0.5
    assert result["summary"]["margin"] < -0.3 and result["summary"]["measured"] == 1


def test_bad_inputs_are_one_line_errors(clips, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        evaluate(tmp_path / "missing.mp4", EvalMouthConfig())
    with pytest.raises(InputError, match="not an lsync infer output folder"):
        evaluate(tmp_path, EvalMouthConfig())
    with pytest.raises(UsageError, match="single video"):
        evaluate(tmp_path, EvalMouthConfig(), source=clips[1])
