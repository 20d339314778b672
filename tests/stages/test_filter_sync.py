"""``lsync filter sync`` on synthetic clips made with known audio offsets.

The injected offsets are found with a stand-in SyncNet that reads sync off the synthetic faces (darkness of the
mouth vs. loudness of the audio), so the test checks the whole filter - scoring, sign, shift, trimming, records,
resume - independently of how well a trained SyncNet does (``benchmarks/filter_sync_offsets.py`` measures that).
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import lsync.sync_metrics
from lsync.commands.filter import filter_group
from lsync.data.syncnet_dataset import read_clip_records
from lsync.errors import InputError, ManifestError, UsageError
from lsync.manifest import read_manifest, read_records, write_manifest
from lsync.media.video import VideoReader
from lsync.sync_metrics import score_clip
from lsync.stages.filter_sync import FilterSyncConfig, run, shift_plan
from lsync.stages.preprocess import PreprocessConfig, run as preprocess
from lsync.synth import synthesize

OFFSETS = (0, 3, -2)  # one clip each, in this order
SAMPLES_PER_FRAME = 640


class MouthOracle:
    """Embeddings from the synthetic face itself: z-normalised 16-frame windows of the (negated) brightness of
    the mouth of the 64 px aligned face - the interior is dark when open - and of the audio loudness per frame."""

    name = "mouth-oracle"
    distance_name = "1 - correlation"
    window = 16
    face_size = 64

    def __init__(self):
        self.clips_scored = 0

    def prepare_faces(self, faces):
        return np.asarray(faces)

    def _windows(self, signal) -> torch.Tensor:
        windows = torch.from_numpy(np.asarray(signal, np.float64)).unfold(0, self.window, 1)
        windows = windows - windows.mean(dim=1, keepdim=True)
        return (windows / windows.norm(dim=1, keepdim=True).clamp_min(1e-8)).float()

    def embed_video(self, frames):
        self.clips_scored += 1
        return self._windows(-frames[:, 34:42, 20:46].astype(np.float64).mean(axis=(1, 2, 3)))

    def embed_audio(self, samples):
        count = len(samples) // SAMPLES_PER_FRAME
        frames = np.asarray(samples[:count * SAMPLES_PER_FRAME], np.float64).reshape(count, SAMPLES_PER_FRAME)
        return self._windows(np.sqrt(np.mean(frames ** 2, axis=1)))

    @staticmethod
    def distance(video, audio):
        return 1 - (video * audio).sum(dim=1)


@pytest.fixture(scope="module")
def offset_data(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Three 3 s clips with the audio 0, +3 (late) and -2 (early) frames off, aligned at 64 px."""
    raw = tmp_path_factory.mktemp("filter-raw") / "raw"
    synthesize(raw, clips=len(OFFSETS), seconds=3.0, seed=31, size=(384, 480), av_offset=list(OFFSETS))
    data = tmp_path_factory.mktemp("filter data ü") / "data"
    preprocess(raw, data, PreprocessConfig(resolution=64, min_clip_seconds=2.0, max_clip_seconds=3.0, min_face=30))
    injected = {f"synth_{i:03d}.mp4": k for i, k in enumerate(OFFSETS)}
    return data, injected


@pytest.fixture
def oracle(monkeypatch) -> MouthOracle:
    scorer = MouthOracle()
    monkeypatch.setattr(lsync.sync_metrics, "load_scorer", lambda *args, **kwargs: scorer)
    return scorer


def config(**changes) -> FilterSyncConfig:
    return FilterSyncConfig(**{"syncnet": "oracle", "min_conf": 0.3, "max_offset": 6, **changes})


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def test_shift_plan_trims_the_frames_without_audio():
    assert shift_plan(75, 0) == shift_plan(75, 0).__class__(0, 75, 0)
    late = shift_plan(75, 3)  # the sound of frame t is at t + 3: frames 0..71 with audio frames 3..74
    assert (late.video_start, late.video_end, late.audio_start, late.num_frames) == (0, 72, 3, 72)
    early = shift_plan(75, -2)  # frames 2..74 with audio frames 0..72
    assert (early.video_start, early.video_end, early.audio_start, early.num_frames) == (2, 75, 0, 73)


def test_filter_finds_the_injected_offsets_and_shifts_the_audio_to_zero(offset_data, oracle, tmp_path):
    data, injected = offset_data
    out = tmp_path / "synced ü"
    summary = run(data, out, config())
    inputs = {r["id"]: r for r in read_records(data / "clips.jsonl")}
    clips = read_records(out / "clips.jsonl")
    assert summary["clips"] == len(OFFSETS) == len(clips)
    assert summary["shifted_clips"] == 2 and summary["offsets"] == {"-2": 1, "0": 1, "3": 1}
    for clip in clips:
        source = inputs[clip["id"]]
        offset = injected[clip["source"]]
        assert clip["sync_offset"] == offset  # the sign of lsync synth --av-offset
        assert clip["sync_confidence"] > 0.3
        plan = shift_plan(source["num_frames"], offset)
        assert clip["num_frames"] == plan.num_frames == source["num_frames"] - abs(offset)
        assert clip["start_frame"] == source["start_frame"] + plan.video_start
        # the wav is the input's, moved by the offset, exactly num_frames * 640 samples long
        audio = read_wav(out / clip["audio"])
        expected = read_wav(data / source["audio"])[plan.audio_start * SAMPLES_PER_FRAME:
                                                    (plan.audio_start + plan.num_frames) * SAMPLES_PER_FRAME]
        np.testing.assert_array_equal(audio, expected)
        frames = VideoReader(out / clip["video"], fps=None).read_all()
        original = VideoReader(data / source["video"], fps=None).read_all()[plan.video_start:plan.video_end]
        assert frames.shape == original.shape
        assert np.abs(frames.astype(int) - original.astype(int)).mean() < 3  # re-encoded, same frames
        meta, source_meta = np.load(out / clip["meta"]), np.load(data / source["meta"])
        np.testing.assert_array_equal(meta["affines"], source_meta["affines"][plan.video_start:plan.video_end])
        if offset == 0:  # nothing to move: the very same bytes
            for key in ("video", "audio", "meta"):
                assert (out / clip[key]).read_bytes() == (data / source[key]).read_bytes()
        # scored again, the corrected clip is in sync
        assert score_clip(out, clip, MouthOracle(), max_offset=15).offset == 0

    manifest = read_manifest(out, kind="data")
    assert manifest["config"]["preprocess"]["resolution"] == 64
    assert len(read_clip_records(out, None)) == len(OFFSETS)  # what `lsync train syncnet` reads
    assert not read_records(out / "rejects.jsonl")
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(
        Path(c[k]).name for c in clips for k in ("video", "audio", "meta"))


def test_rejects_carry_reasons_and_a_rerun_resumes(offset_data, oracle, tmp_path):
    data, injected = offset_data
    out = tmp_path / "strict"
    run(data, out, config(max_offset=2))
    rejects = read_records(out / "rejects.jsonl")
    assert [(injected[r["source"]], r["reason"], r["sync_offset"]) for r in rejects] == [(3, "sync_offset", 3)]
    assert "+3 frames" in rejects[0]["detail"]
    assert {c["sync_offset"] for c in read_records(out / "clips.jsonl")} == {0, -2}

    # a rerun scores nothing again and writes no duplicates
    scored = oracle.clips_scored
    run(data, out, config(max_offset=2))
    assert oracle.clips_scored == scored
    assert len(read_records(out / "clips.jsonl")) == 2 and len(read_records(out / "rejects.jsonl")) == 1

    # a crash after the last clip's files, before its record and the manifest: only that clip is redone
    clips_file = out / "clips.jsonl"
    lines = clips_file.read_text().splitlines(keepends=True)
    clips_file.write_text("".join(lines[:-1]) + lines[-1][:20])  # a torn last line
    (out / "lsync.json").unlink()
    (out / "clips" / ".lsync-tmp-debris.mp4").write_bytes(b"half")
    with pytest.raises(ManifestError):
        read_manifest(out, kind="data")
    summary = run(data, out, config(max_offset=2))
    assert oracle.clips_scored == scored + 1
    assert summary["clips"] == 2 and summary["rejects"] == {"sync_offset": 1}
    assert not (out / "clips" / ".lsync-tmp-debris.mp4").exists()

    # another config is refused, --force starts over
    with pytest.raises(UsageError, match="different config"):
        run(data, out, config(min_conf=5.0))
    summary = run(data, out, config(min_conf=5.0), force=True)
    assert summary["clips"] == 0 and summary["rejects"] == {"sync_confidence": 3}
    assert not (out / "clips").exists()  # the kept files of the old config are gone

    # a SyncNet retrained in place is noticed: resuming would mix clips of two filterings
    weights = tmp_path / "sync net.pt"
    weights.write_bytes(b"first weights")
    run(data, out, config(syncnet=str(weights)), force=True)
    assert read_manifest(out, kind="data")["inputs"][1]["digest"].startswith("quick-sha256:")
    weights.write_bytes(b"retrained weights")
    with pytest.raises(UsageError, match="syncnet changed since"):
        run(data, out, config(syncnet=str(weights)))


@pytest.mark.parametrize("damage", ["missing", "not json", "a list", "no syncnet digest"])
def test_unreadable_provenance_counts_as_changed(offset_data, oracle, tmp_path, damage):
    """Without a readable record of which data and SyncNet made the outputs, resuming over them is refused."""
    data, _ = offset_data
    out = tmp_path / "synced"
    run(data, out, config(max_offset=2))
    provenance = out / "filter-inputs.json"
    recorded = json.loads(provenance.read_text())
    if damage == "missing":
        provenance.unlink()
    else:
        text = {"not json": '{"data": "sha2', "a list": "[1, 2]",
                "no syncnet digest": json.dumps({"data": recorded["data"]})}[damage]
        provenance.write_text(text)
    (out / "lsync.json").unlink()  # an interrupted run: a rerun would resume over the clips already there
    scored = oracle.clips_scored
    with pytest.raises(UsageError, match="filter-inputs.json is missing or unreadable.*--force"):
        run(data, out, config(max_offset=2))
    assert oracle.clips_scored == scored and len(read_records(out / "clips.jsonl")) == 2  # nothing touched
    summary = run(data, out, config(max_offset=2), force=True)
    assert oracle.clips_scored == scored + len(OFFSETS)  # started over
    assert summary["clips"] == 2 and json.loads(provenance.read_text()) == recorded


def test_bad_inputs_are_one_line_errors(offset_data, tmp_path):
    data, _ = offset_data
    with pytest.raises(UsageError, match="input directory"):
        run(data, data, config())
    with pytest.raises(UsageError, match="search range"):
        run(data, tmp_path / "x", config(max_offset=15, search_offset=15))
    runner = CliRunner()
    missing = runner.invoke(filter_group, ["sync", str(tmp_path / "nope"), str(tmp_path / "out"), "--syncnet", "x"])
    assert isinstance(missing.exception, InputError) and "\n" not in missing.exception.message
    not_data = tmp_path / "run"
    not_data.mkdir()
    (not_data / "lsync.json").write_text('{"kind": "eval", "schema": 1}')
    wrong = runner.invoke(filter_group, ["sync", str(not_data), str(tmp_path / "out"), "--syncnet", "x"])
    assert isinstance(wrong.exception, ManifestError) and "expected 'data'" in wrong.exception.message


def _syncnet_run(directory: Path, accuracy: float, roc_auc: float) -> Path:
    """A SyncNet run directory as far as the filter reads it: the manifest of a finished run."""
    write_manifest(directory, "syncnet-run", config={},
                   summary={"val/accuracy": accuracy, "val/roc_auc": roc_auc, "steps": 200})
    return directory


def test_a_syncnet_run_that_validated_at_chance_is_warned_about_and_recorded(offset_data, oracle, tmp_path,
                                                                           caplog):
    data, _ = offset_data
    caplog.set_level("WARNING", logger="lsync")
    stuck = _syncnet_run(tmp_path / "sync stuck", accuracy=0.488, roc_auc=0.513)
    summary = run(data, tmp_path / "out stuck", config(syncnet=str(stuck)))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("validated at chance (accuracy 0.488, ROC AUC 0.513)" in w for w in warnings), warnings
    assert summary["syncnet_at_chance"] is True
    caplog.clear()
    trained = _syncnet_run(tmp_path / "sync trained", accuracy=0.83, roc_auc=0.86)
    summary = run(data, tmp_path / "out trained", config(syncnet=str(trained)))
    assert summary["syncnet_at_chance"] is False
    assert not any("at chance" in r.getMessage() for r in caplog.records)


def test_filter_command(offset_data, oracle, tmp_path):
    data, _ = offset_data
    out = tmp_path / "cli out"
    result = CliRunner().invoke(filter_group, ["sync", str(data), str(out), "--syncnet", "oracle", "--min-conf",
                                               "0.3", "--max-offset", "2"])
    assert result.exit_code == 0, result.output
    assert "sync_offset: 1" in result.output and "min conf" in result.output
    decided = read_records(out / "clips.jsonl") + read_records(out / "rejects.jsonl")
    assert sorted(r["id"] for r in decided) == sorted(r["id"] for r in read_records(data / "clips.jsonl"))
    summary = read_manifest(out, kind="data")["summary"]
    assert summary["min_conf"] == 0.3 and summary["clips"] == 2
