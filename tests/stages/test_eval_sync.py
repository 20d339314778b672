"""Sync scoring (offset, LSE-D, LSE-C), the SyncNet v2 loader and ``lsync eval sync`` on a synthetic video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lsync.commands.evaluate import evaluate as eval_group
from lsync.errors import CheckpointError, InputError
from lsync.manifest import read_manifest
from lsync.checkpoints import save_model
from lsync.models.presets import model_config
from lsync.models.syncnet import StableSyncNet
from lsync.models.syncnet_v2 import SyncNetV2, load_syncnet_v2, mfcc
from lsync.sync_metrics import (StableSyncNetScorer, SyncNetV2Scorer, score_distances, score_sync, shifted_distances,
                                window_validity)

SAMPLES_PER_FRAME = 640


class EnvelopeScorer:
    """A SyncNet whose embeddings we control: a video "frame" is the mouth opening (a float), an audio window
    the loudness of each 640-sample frame; both become z-normalised 16-frame windows (distance 1 - correlation)."""

    name = "envelope"
    distance_name = "1 - correlation"
    window = 16
    face_size = 1

    def prepare_faces(self, faces):
        return np.asarray(faces, np.float64)

    def _windows(self, signal: np.ndarray) -> torch.Tensor:
        windows = torch.from_numpy(np.asarray(signal, np.float64)).unfold(0, self.window, 1)
        windows = windows - windows.mean(dim=1, keepdim=True)
        return (windows / windows.norm(dim=1, keepdim=True).clamp_min(1e-8)).float()

    def embed_video(self, frames):
        return self._windows(frames)

    def embed_audio(self, samples):
        count = len(samples) // SAMPLES_PER_FRAME
        frames = np.asarray(samples[:count * SAMPLES_PER_FRAME]).reshape(count, SAMPLES_PER_FRAME)
        return self._windows(np.sqrt(np.mean(frames ** 2, axis=1)))

    @staticmethod
    def distance(video, audio):
        return 1 - (video * audio).sum(dim=1)


def talking(num_frames: int, offset: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mouth openings and 16 kHz samples where the sound of frame t is heard at frame t + offset (lsync synth)."""
    rng = np.random.default_rng(seed)
    envelope = np.convolve(rng.random(num_frames + 2 * abs(offset) + 8), np.ones(3) / 3, mode="same")
    margin = abs(offset) + 4
    opening = envelope[margin:margin + num_frames]
    heard = envelope[margin - offset:margin - offset + num_frames]  # audio frame u carries opening[u - offset]
    carrier = rng.standard_normal(num_frames * SAMPLES_PER_FRAME)
    return opening, (carrier * np.repeat(heard, SAMPLES_PER_FRAME)).astype(np.float32)


@pytest.mark.parametrize("offset", [-5, -1, 0, 3, 7])
def test_the_offset_of_synth_is_found_with_its_sign(offset):
    opening, samples = talking(120, offset, seed=offset + 10)
    score = score_sync(EnvelopeScorer(), opening, samples, max_offset=10)
    assert score.offset == offset
    assert score.lse_d < 0.05  # windows agree almost perfectly at the right shift
    assert score.lse_c > 0.5
    assert score.windows == 120 - 15
    assert len(score.curve) == 21 and score.offsets[0] == -10


def test_unrelated_audio_gives_low_confidence():
    opening, _ = talking(150, 0, seed=1)
    _, other = talking(150, 0, seed=2)
    matched = score_sync(EnvelopeScorer(), opening, talking(150, 0, seed=1)[1], max_offset=10)
    unrelated = score_sync(EnvelopeScorer(), opening, other, max_offset=10)
    assert unrelated.lse_c < 0.5 * matched.lse_c


def test_score_distances_on_a_hand_made_matrix():
    nan = float("nan")
    # three video windows, offsets -1, 0, +1; window 2 has no audio at +1
    matrix = torch.tensor([[0.9, 0.2, 0.7], [0.7, 0.4, 0.5], [0.8, 0.3, nan]])
    score = score_distances(matrix, max_offset=1)
    assert score.offsets == [-1, 0, 1]
    np.testing.assert_allclose(score.curve, [0.8, 0.3, 0.6], atol=1e-6)
    assert score.offset == 0
    assert score.lse_d == pytest.approx(0.3)
    assert score.lse_c == pytest.approx(0.6 - 0.3)  # median of the curve minus its minimum
    empty = score_distances(torch.full((2, 3), nan), max_offset=1)
    assert empty.offset is None and empty.lse_c is None and empty.windows == 0


def test_shifted_distances_leave_out_missing_audio_and_faceless_windows():
    video = torch.nn.functional.normalize(torch.rand(5, 4), dim=1)
    audio = torch.nn.functional.normalize(torch.rand(4, 4), dim=1)
    valid = torch.tensor([True, True, False, True, True])
    matrix = shifted_distances(video, audio, StableSyncNetScorer.distance, max_offset=2, video_valid=valid)
    assert matrix.shape == (5, 5)
    assert torch.isnan(matrix[2]).all()
    assert torch.isnan(matrix[0, :2]).all() and not torch.isnan(matrix[0, 2:]).any()  # audio -2, -1 missing
    assert torch.isnan(matrix[4, 2:]).all()  # audio windows 4, 5, 6 do not exist
    assert matrix[1, 3] == pytest.approx(1 - float(video[1] @ audio[2]), abs=1e-6)  # float32: 1 - cos cancels


def test_window_validity():
    has_face = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)
    np.testing.assert_array_equal(window_validity(has_face, 3), [True, False, False, False, True, True])
    assert window_validity(has_face[:2], 3).shape == (0,)


def tiny_syncnet() -> StableSyncNet:
    torch.manual_seed(0)
    return StableSyncNet(model_config("syncnet_tiny")).eval()


def test_stable_syncnet_scorer_shapes():
    scorer = StableSyncNetScorer(tiny_syncnet(), image_size=64, device=torch.device("cpu"), batch_size=8)
    faces = np.random.default_rng(0).integers(0, 255, (24, 96, 96, 3), dtype=np.uint8)
    prepared = scorer.prepare_faces(faces)
    assert prepared.shape == (24, 32, 64, 3) and prepared.dtype == np.uint8
    samples = (0.1 * np.random.default_rng(1).standard_normal(24 * SAMPLES_PER_FRAME)).astype(np.float32)
    video = scorer.embed_video(prepared)
    audio = scorer.embed_audio(samples)
    # mel columns 1 + 15360 // 200 = 77; window a starts at int(3.2 a) and needs 52 columns: a <= 8
    assert video.shape[0] == 9 and audio.shape[0] == 9
    torch.testing.assert_close(video.norm(dim=1), torch.ones(9))
    score = score_sync(scorer, prepared, samples, max_offset=3)

    # The same numbers from the embeddings by hand: the mean 1 - cosine of window i with audio window i + d
    # over the windows that have one, per offset d; the offset is the lowest, LSE-C the median minus it.
    cosine = (video.double() @ audio.double().T).numpy()  # (9, 9)
    curve = np.array([np.mean([1 - cosine[i, i + d] for i in range(9) if 0 <= i + d < 9]) for d in range(-3, 4)])
    assert score.windows == 9
    np.testing.assert_allclose(score.curve, curve, atol=1e-6)
    assert score.offset == int(np.argmin(curve)) - 3
    assert score.lse_d == pytest.approx(curve.min(), abs=1e-6)
    assert score.lse_c == pytest.approx(np.median(curve) - curve.min(), abs=1e-6)


# ----------------------------------------------------------------------------------------------- SyncNet v2
def test_syncnet_v2_loads_the_released_key_format(tmp_path):
    torch.manual_seed(0)
    reference = SyncNetV2()
    state = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "netcnnaud.0.weight" in state and "netcnnlip.18.weight" in state and "netfclip.3.weight" in state
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    model = load_syncnet_v2(path)
    for name, tensor in state.items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    assert not model.training

    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.model")
    with pytest.raises(CheckpointError, match="unexpected"):
        load_syncnet_v2(tmp_path / "extra.model")
    torch.save({**state, "netfcaud.3.weight": torch.zeros(3, 3)}, tmp_path / "shape.model")
    with pytest.raises(CheckpointError, match="shape"):
        load_syncnet_v2(tmp_path / "shape.model")
    torch.save({"model": SyncNetV2Scorer}, tmp_path / "pickle.model")  # not loadable with weights_only
    with pytest.raises(CheckpointError):
        load_syncnet_v2(tmp_path / "pickle.model")
    with pytest.raises(InputError):
        load_syncnet_v2(tmp_path / "missing.model")


def test_mfcc_and_syncnet_v2_windows():
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    ceps = mfcc(samples)
    assert ceps.shape == (13, 1 + int(np.ceil((16000 - 400) / 160)))  # 99 columns at 100 Hz
    assert np.isfinite(ceps).all()
    loud = mfcc(samples * 10)
    # coefficient 0 is the log frame energy: 10x the amplitude adds log(100)
    np.testing.assert_allclose(loud[0] - ceps[0], np.log(100.0), atol=1e-3)

    model = SyncNetV2().eval()
    scorer = SyncNetV2Scorer(model, torch.device("cpu"), batch_size=4)
    faces = scorer.prepare_faces(rng.integers(0, 255, (7, 64, 64, 3), dtype=np.uint8))
    assert faces.shape == (7, 224, 224, 3)
    assert scorer.embed_video(faces).shape == (3, 1024)  # 5-frame windows starting at frames 0, 1, 2
    # 7 frames = 0.28 s: 1 + ceil((4480 - 400) / 160) = 27 columns; windows of 20 every 4 -> starts 0, 1
    assert scorer.embed_audio(samples[:7 * SAMPLES_PER_FRAME]).shape == (2, 1024)


# ----------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory) -> Path:
    from lsync.synth import synthesize

    out = tmp_path_factory.mktemp("eval sync ü")
    return synthesize(out, clips=1, seconds=1.4, seed=5, size=(384, 480))[0].path


@pytest.fixture(scope="module")
def syncnet_checkpoint(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("syncnet") / "checkpoint"
    return save_model(tiny_syncnet(), directory, model_config("syncnet_tiny"))


def test_eval_sync_scores_a_raw_video_and_writes_an_eval_directory(synthetic_video, syncnet_checkpoint, tmp_path):
    out = tmp_path / "sync results"
    result = CliRunner().invoke(eval_group, ["sync", str(synthetic_video), "--syncnet", str(syncnet_checkpoint),
                                             "--image-size", "64", "--max-offset", "5", "--out", str(out),
                                             "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "LSE-C" in result.output
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1
    row = rows[0]
    assert row["frames"] == 35 and row["frames_with_face"] == 35
    assert row["windows"] == 35 - 15  # every 16-frame window has a face
    # offset, LSE-D and LSE-C as their definitions give them from the reported curve over offsets -5 .. +5
    assert sorted(map(int, row["curve"])) == list(range(-5, 6))
    offsets, curve = zip(*sorted((int(d), v) for d, v in row["curve"].items()))
    curve = np.array(curve, dtype=float)
    assert np.isfinite(curve).all()
    assert row["offset"] == offsets[int(np.argmin(curve))]
    assert row["lse_d"] == pytest.approx(curve.min(), abs=1e-5)
    assert row["lse_c"] == pytest.approx(np.median(curve) - curve.min(), abs=1e-5)
    manifest = read_manifest(out, kind="eval")
    assert manifest["summary"]["evaluation"] == "sync"
    assert manifest["summary"]["lse_c"] == pytest.approx(row["lse_c"])
    assert manifest["summary"]["distance"] == "1 - cosine similarity"

    as_json = CliRunner().invoke(eval_group, ["sync", str(synthetic_video.parent), "--syncnet",
                                              str(syncnet_checkpoint), "--image-size", "64", "--max-offset", "5",
                                              "--json", "--threads", "1"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["rows"][0]["lse_d"] == pytest.approx(row["lse_d"])


def test_eval_sync_bad_inputs_are_one_line_errors(synthetic_video, syncnet_checkpoint, tmp_path):
    from lsync.media.video import VideoWriter

    runner = CliRunner()
    missing = runner.invoke(eval_group, ["sync", str(tmp_path / "nope.mp4"), "--syncnet", str(syncnet_checkpoint)])
    assert isinstance(missing.exception, InputError) and "\n" not in missing.exception.message
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, 25, 64, 64) as writer:
        writer.write(np.zeros((20, 64, 64, 3), np.uint8))
    no_audio = runner.invoke(eval_group, ["sync", str(silent), "--syncnet", str(syncnet_checkpoint)])
    assert isinstance(no_audio.exception, InputError) and "no audio stream" in no_audio.exception.message
    no_model = runner.invoke(eval_group, ["sync", str(synthetic_video), "--syncnet", str(tmp_path / "none")])
    assert isinstance(no_model.exception, InputError) and "does not exist" in no_model.exception.message
    no_flag = runner.invoke(eval_group, ["sync", str(synthetic_video)])
    assert no_flag.exit_code == 2 and "--syncnet" in no_flag.output
