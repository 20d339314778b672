"""One face section: preprocess, infer and eval sync read the same FaceConfig keys, set the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from lsync.cli import cli
from lsync.config import config_to_dict, resolve_config
from lsync.face.config import FACE_KEYS, FaceConfig, VideoFaceConfig
from lsync.stages.eval_sync import EvalSyncConfig
from lsync.stages.infer import InferConfig
from lsync.stages.preprocess import PreprocessConfig

PACKAGE = Path(__file__).resolve().parents[1] / "lsync"
STAGE_CONFIGS = (PreprocessConfig, InferConfig, EvalSyncConfig)


@pytest.mark.parametrize("config_class", STAGE_CONFIGS)
def test_every_stage_config_is_a_face_config_with_the_same_flat_keys(config_class):
    assert issubclass(config_class, FaceConfig)
    names = {f.name for f in dataclasses.fields(config_class)}
    assert {f.name for f in dataclasses.fields(FaceConfig)} <= names
    resolved = resolve_config(config_class, overrides=["min_face=41", "smooth_method=none", "detector=insightface"])
    assert (resolved.min_face, resolved.smooth_method, resolved.detector) == (41, "none", "insightface")
    assert config_to_dict(resolved)["min_face"] == 41  # lsync.json keeps the flat key


def test_the_alignment_stages_add_the_video_keys():
    for config_class in (InferConfig, EvalSyncConfig):
        assert issubclass(config_class, VideoFaceConfig)
    assert not issubclass(PreprocessConfig, VideoFaceConfig)
    assert set(FACE_KEYS) == {f.name for f in dataclasses.fields(VideoFaceConfig)}


def test_training_faces_keep_their_own_minimum():
    assert PreprocessConfig().min_face > InferConfig().min_face == FaceConfig().min_face


@pytest.mark.parametrize("command", [["preprocess"], ["infer"], ["eval", "sync"]])
def test_the_face_flags_are_on_every_stage_that_finds_faces(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    for flag in ("--detector", "--detector-models", "--face-select", "--max-faces", "--min-face", "--max-gap",
                 "--smooth-method", "--smooth-strength"):
        assert flag in result.output, (command, flag)


def test_the_face_flags_are_declared_once():
    declaring = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                       if '"--min-face"' in p.read_text(encoding="utf-8"))
    assert declaring == ["cli_options.py"]
