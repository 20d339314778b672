"""``--face-select`` end to end on two-face synthetic videos (``lsync synth --faces 2``): ``--list-faces``, ``X,Y`` and
``track:N`` in ``lsync infer`` and ``lsync preprocess``, the speaker choice through the real alignment and scoring
path, the fallback to the largest face, and one-line errors.

:class:`MouthScorer` stands in for a SyncNet where a test must be fast and certain: its "embedding" of a video
window is how dark the middle of the aligned lower face is frame by frame (the synthetic mouth interior), of an
audio window the loudness per frame - a real sync measure, but not a learned one. The trained tiny SyncNet is
exercised by ``test_a_trained_tiny_syncnet_picks_the_speaker`` (trained in the fixture) and measured over many
videos by ``benchmarks/face_select_speaker.py``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lsync.manifest import read_manifest, read_records
from lsync.media.video import VideoReader
from lsync.face_select import detect_selected_track
from lsync.stages.infer import InferConfig
from lsync.synth import synthesize

SIZE = (640, 400)
SECONDS = 3.0
FAST = dict(preset="tiny", steps=1, threads=1, encode_preset="ultrafast", face_cache="off")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Three two-face clips: the left face speaks, the right one speaks, nobody speaks (closed mouths)."""
    out = tmp_path_factory.mktemp("two faces") / "raw"
    synthesize(out, clips=3, seconds=SECONDS, seed=2026, size=SIZE, faces=2, speaker=["left", "right", "none"])
    return out


def records(raw: Path) -> list[dict]:
    return read_manifest(raw, kind="raw")["summary"]["files"]


class MouthScorer:
    """A stand-in SyncNet (see the module docstring): 1 - correlation of mouth darkness and loudness windows."""

    name = "mouth-darkness"
    distance_name = "1 - correlation"
    window = 16
    face_size = 64
    floor = 0.2

    def prepare_faces(self, faces):
        lower = np.asarray(faces)[:, 34:56, 22:42].astype(np.float32)  # around the mouth of a 64 px aligned face
        return (lower.mean(axis=3) < 70).mean(axis=(1, 2))

    def _windows(self, signal):
        windows = torch.from_numpy(np.asarray(signal, np.float64)).unfold(0, self.window, 1)
        windows = windows - windows.mean(dim=1, keepdim=True)
        # A floor under the norm: a closed mouth's frame-to-frame codec noise must not become a "movement".
        return (windows / windows.norm(dim=1, keepdim=True).clamp_min(self.floor)).float()

    def embed_video(self, frames):
        return self._windows(frames)

    def embed_audio(self, samples):
        count = len(samples) // 640
        frames = np.asarray(samples[:count * 640]).reshape(count, 640)
        loudness = np.sqrt(np.mean(frames ** 2, axis=1))
        return self._windows(loudness / max(float(loudness.max()), 1e-8))

    @staticmethod
    def distance(video, audio):
        return 1 - (video * audio).sum(dim=1)


def speaker_config(**kw) -> InferConfig:
    return InferConfig(face_select="speaker", syncnet="injected", speaker_min_conf=0.3, **{**FAST, **kw})


# ------------------------------------------------------------------------------------------------ list-faces
def test_list_faces_prints_two_tracks_and_writes_the_contact_sheet(raw, tmp_path, capsys):
    from lsync.cli import main

    video = raw / records(raw)[0]["name"]
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--list-faces", str(video), "--out-dir", str(tmp_path / "listed")])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "2 face tracks" in printed
    rows = [line for line in printed.splitlines() if line.strip("│ ").split(" ")[0] in ("1", "2")]
    assert len(rows) == 2 and f"0-{int(SECONDS * 25) - 1}" in rows[0]
    sheet = cv2.imread(str(tmp_path / "listed" / f"{video.stem}.faces.png"))
    assert sheet is not None and sheet.shape[0] == 2 * (128 + 8) + 8  # one row of thumbnails per track
    # each row's thumbnails are crops of that face: the left face's crop differs from the right one's (the two
    # are the same photo at two sizes and head poses, so they differ by a few grey levels, not by tens)
    assert np.abs(sheet[8:136, 80:208].astype(int) - sheet[144:272, 80:208].astype(int)).mean() > 2


# ------------------------------------------------------------------------------------------------ X,Y / track:N
def test_point_and_track_number_name_the_same_face(raw):
    record = records(raw)[0]
    video = raw / record["name"]
    for side, face in enumerate(record["faces"]):
        x, y = face["center"]
        by_point, _ = detect_selected_track(video, InferConfig(face_select=f"{x:.0f},{y:.0f}", **FAST))
        selection = by_point.settings["face_selection"]
        (chosen,) = selection["chosen"]
        boxes = by_point.boxes[by_point.has_face]
        assert by_point.has_face.all() and ((boxes[:, 0] <= x) & (x <= boxes[:, 2])).all()
        assert (boxes[:, 0] >= 320).all() if side else (boxes[:, 2] <= 320).all()
        by_number, _ = detect_selected_track(video, InferConfig(face_select=f"track:{chosen}", **FAST))
        np.testing.assert_array_equal(by_number.boxes, by_point.boxes)


def test_infer_lip_syncs_only_the_named_face_and_records_the_choice(raw, tmp_path):
    from lsync.stages.infer import run

    record = records(raw)[1]
    video, driver = raw / record["name"], raw / records(raw)[0]["name"]
    x, y = record["faces"][1]["center"]  # the right face
    config = InferConfig(face_select=f"{x:.0f},{y:.0f}", codec="ffv1", **FAST)
    entry = run(video, driver, tmp_path / "out", config)
    recorded = read_manifest(tmp_path / "out", kind="inference")["summary"]["outputs"][entry["output"]]
    assert recorded["face_selection"]["rule"] == f"{x:.0f},{y:.0f}"
    assert len(recorded["face_selection"]["tracks"]) == 2 and recorded["face_selection"]["chosen"] == [2]
    source = VideoReader(video).read_all()
    output = VideoReader(tmp_path / "out" / entry["output"]).read_all()
    assert output.shape == source.shape
    np.testing.assert_array_equal(output[:, :, :320], source[:, :, :320])  # the left face untouched (lossless)
    assert np.abs(output[:, :, 320:].astype(int) - source[:, :, 320:].astype(int)).mean() > 0.5


def test_a_point_on_no_face_and_a_missing_track_are_one_line_errors(raw, tmp_path, capsys):
    from lsync.cli import main

    video = raw / records(raw)[0]["name"]
    for rule, message in (("5,5", "no face track contains the point 5,5"), ("track:7", "there is no track:7"),
                          ("loudest", "is not one of"), ("speaker", "pass --syncnet")):
        with pytest.raises(SystemExit) as exit_info:
            main(["infer", str(video), str(video), "--preset", "tiny", "--face-select", rule, "--face-cache", "off",
                  "--out-dir", str(tmp_path / "never")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        lines = [line for line in err.splitlines() if line.strip()]  # (a transient progress bar leaves a newline)
        assert len(lines) == 1 and lines[0].startswith("lsync: error:") and message in lines[0], err
        assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------------------------------------ speaker
def test_speaker_is_the_face_in_sync_with_the_video_s_own_audio(raw):
    for record in records(raw)[:2]:
        track, _ = detect_selected_track(raw / record["name"], speaker_config(), scorer=MouthScorer())
        report = track.settings["face_selection"]
        (shot,) = report["shots"]
        assert shot["rule"] == "speaker"
        boxes = track.boxes[track.has_face]
        speaking_left = record["speaker"] == "left"
        assert (boxes[:, 2] <= 320).all() if speaking_left else (boxes[:, 0] >= 320).all()
        scores = {row["track"]: row for row in shot["scores"]}
        assert len(scores) == 2 and all(row["windows"] > 0 for row in scores.values())
        (winner,) = shot["chosen"]
        loser = next(t for t in scores if t != winner)
        assert scores[winner]["in_sync"] and scores[winner]["offset"] in (-1, 0, 1)
        assert scores[winner]["confidence"] > scores[loser]["confidence"] + 0.2


def test_silent_faces_fall_back_to_the_largest_face_with_a_warning(raw, caplog):
    record = records(raw)[2]
    assert record["speaker"] == "none"
    with caplog.at_level(logging.WARNING):
        track, _ = detect_selected_track(raw / record["name"], speaker_config(), scorer=MouthScorer())
    (shot,) = track.settings["face_selection"]["shots"]
    assert shot["rule"] == "largest" and shot["fallback"] == "no track in sync"
    assert not any(row["in_sync"] for row in shot["scores"])
    larger = int(np.argmax([face["scale"] for face in record["faces"]]))
    boxes = track.boxes[track.has_face]
    assert (boxes[:, 0] >= 320).all() if larger else (boxes[:, 2] <= 320).all()
    assert any("falling back to the largest face" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ preprocess
def test_preprocess_keeps_the_named_face_and_records_the_choice(raw, tmp_path):
    from lsync.stages.preprocess import PreprocessConfig, run

    config = PreprocessConfig(resolution=64, min_clip_seconds=2.0, max_clip_seconds=3.0, face_select="track:2",
                              detect_size=320, min_face=32)
    summary = run(raw, tmp_path / "data", config)
    clips = read_records(tmp_path / "data" / "clips.jsonl")
    assert len(clips) == 3 and summary["clips"] == 3
    for clip in clips:
        with np.load(tmp_path / "data" / clip["meta"]) as meta:
            assert (meta["bboxes"][:, 0] >= 320).all()  # track 2 is the right face in every clip
    manifest = read_manifest(tmp_path / "data", kind="data")
    selections = manifest["summary"]["face_selection"]
    assert sorted(selections) == sorted(r["name"] for r in records(raw))
    assert all(s["rule"] == "track:2" and s["chosen"] == [2] for s in selections.values())
    sources = read_records(tmp_path / "data" / "sources.jsonl")
    assert all(s["face_selection"]["chosen"] == [2] for s in sources)


# ------------------------------------------------------------------------------------------------ a real SyncNet file
@pytest.fixture(scope="module")
def random_syncnet(tmp_path_factory) -> Path:
    """A tiny StableSyncNet with random weights in a checkpoint directory: the loading and scoring path of
    ``--syncnet`` (its verdicts mean nothing; the trained one is measured by the benchmark)."""
    from lsync.checkpoints import save_model
    from lsync.models.presets import model_config
    from lsync.models.syncnet import StableSyncNet

    torch.manual_seed(0)
    config = model_config("syncnet_tiny")
    return save_model(StableSyncNet(config).eval(), tmp_path_factory.mktemp("syncnet") / "random", config)


def test_infer_speaker_with_a_syncnet_checkpoint_records_every_score_and_caches_the_choice(raw, random_syncnet,
                                                                                          tmp_path):
    from lsync.stages.infer import run

    video = raw / records(raw)[0]["name"]
    config = replace(InferConfig(face_select="speaker", syncnet=str(random_syncnet), **FAST),
                     face_cache=str(tmp_path / "cache"))
    entry = run(video, video, tmp_path / "out", config)
    manifest = read_manifest(tmp_path / "out", kind="inference")
    selection = manifest["summary"]["outputs"][entry["output"]]["face_selection"]
    (shot,) = selection["shots"]
    assert shot["rule"] in ("speaker", "largest") and len(shot["chosen"]) == 1
    assert sorted(row["track"] for row in shot["scores"]) == [1, 2]
    for row in shot["scores"]:
        assert row["windows"] == int(SECONDS * 25) - 15 and isinstance(row["confidence"], float)
        assert -15 <= row["offset"] <= 15 and row["in_sync"] in (True, False)
    assert any(item["kind"] == "syncnet" for item in manifest["inputs"])
    # the second run on the same video reads the choice from the track cache, with its report
    again = run(video, video, tmp_path / "out", config, overwrite=True)
    assert again["frames"]["face_source"]["from"] == "cache"
    assert again["face_selection"] == selection
    assert again["frames"]["face_segments"] == entry["frames"]["face_segments"]


def test_preprocess_speaker_records_the_scores_per_source(raw, random_syncnet, tmp_path):
    import shutil

    from lsync.stages.preprocess import PreprocessConfig, run

    one = tmp_path / "raw"
    one.mkdir()
    shutil.copy(raw / records(raw)[0]["name"], one / "two people.mp4")
    config = PreprocessConfig(resolution=64, min_clip_seconds=2.0, max_clip_seconds=3.0, face_select="speaker",
                              syncnet=str(random_syncnet), detect_size=320, min_face=32)
    run(one, tmp_path / "data", config)
    selection = read_manifest(tmp_path / "data", kind="data")["summary"]["face_selection"]["two people.mp4"]
    (shot,) = selection["shots"]
    assert len(shot["scores"]) == 2 and shot["rule"] in ("speaker", "largest")
    (clip,) = read_records(tmp_path / "data" / "clips.jsonl")
    chosen = next(t for t in selection["tracks"] if t["id"] == shot["chosen"][0])
    with np.load(tmp_path / "data" / clip["meta"]) as meta:
        np.testing.assert_allclose(meta["bboxes"].mean(axis=0), chosen["mean_box"], atol=1.0)


def test_speaker_without_a_syncnet_file_is_refused_before_any_work(raw, tmp_path):
    from lsync.errors import InputError, UsageError
    from lsync.stages.preprocess import PreprocessConfig, run

    with pytest.raises(UsageError, match="--syncnet"):
        run(raw, tmp_path / "data", PreprocessConfig(face_select="speaker"))
    with pytest.raises(InputError, match="does not exist"):
        run(raw, tmp_path / "data", PreprocessConfig(face_select="speaker", syncnet=str(tmp_path / "none")))
    assert not (tmp_path / "data").exists()
