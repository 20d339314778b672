"""``lsync train syncnet`` / ``lsync eval syncnet`` on a tiny synthetic data directory (64 px faces, 3 s clips)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from lsync.audio.mel import melspectrogram, load_wav_16k_mono, mel_window
from lsync.commands.evaluate import evaluate
from lsync.commands.train import train
from lsync.data.cache import FeatureCache
from lsync.config import config_from_dict, load_yaml
from lsync.data.syncnet_dataset import (
    SyncNetDataset,
    SyncNetGroupDataset,
    evaluation_keys,
    load_clips,
    read_clip_records,
)
from lsync.errors import CheckpointError, ConfigError, InputError, ManifestError
from lsync.manifest import directory_digest, read_manifest, read_records, write_manifest
from lsync.checkpoints import load_model_config, load_model_weights
from lsync.models.syncnet import StableSyncNet
from lsync.stages.preprocess import PreprocessConfig, run as preprocess, split_of
from lsync.stages.train_syncnet import TrainSyncNetConfig
from lsync.synth import synthesize
from lsync.training.sampling import SampleKey

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_SOURCES = 4
# A few steps of the tiny preset with small batches (one group of 4 windows), no data-loader processes and few
# validation pairs.
FAST = ["--preset", "tiny", "--batch-size", "1", "--set", "data.group_size=4", "--workers", "0",
        "--set", "data.val_samples=8",
        "--set", "train.log_every=1", "--set", "train.val_every=0", "--set", "train.warmup_steps=0"]


def val_fraction_with_one_val_source(keys: list[str]) -> float:
    """The smallest fraction of the 100 tried that puts exactly one source into the val split."""
    for percent in range(1, 100):
        if sum(split_of(k, percent / 100) == "val" for k in keys) == 1:
            return percent / 100
    raise AssertionError("no fraction gives one val source")


@pytest.fixture(scope="session")
def sync_data(tmp_path_factory) -> Path:
    """Four synthetic talking faces of 3 s, preprocessed to 64 px: three train clips, one val clip."""
    raw = tmp_path_factory.mktemp("syncnet-raw") / "raw"
    synthesize(raw, clips=NUM_SOURCES, seconds=3.0, seed=21, size=(384, 480))
    keys = [f"synth_{i:03d}.mp4" for i in range(NUM_SOURCES)]
    data = tmp_path_factory.mktemp("syncnet data ü") / "data"
    config = PreprocessConfig(resolution=64, min_clip_seconds=2.0, max_clip_seconds=3.0, min_face=30,
                              val_fraction=val_fraction_with_one_val_source(keys))
    preprocess(raw, data, config)
    return data


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("syncnet-cache")


def train_cli(data: Path, run: Path, *args: str):
    return CliRunner().invoke(train, ["syncnet", str(data), str(run), *FAST, *args], catch_exceptions=True)


# ----------------------------------------------------------------------------------------------- data
def test_samples_pair_the_mouth_half_with_the_right_mel_window(sync_data, cache_dir):
    records = read_clip_records(sync_data, "train")
    clips = load_clips(sync_data, records, 64, cache_dir, show_progress=False)
    dataset = SyncNetDataset(clips, seed=3, min_offset=5, other_clip_negatives=0.5)
    assert len(dataset) == sum(c.max_start(16) + 1 for c in clips)
    labels, kinds = [], set()
    for position in range(64):
        key = SampleKey(epoch=1, position=position, index=(position * 7) % len(dataset))
        item, plan = dataset[key], dataset.plan(key)
        assert plan == dataset.plan(key)  # a pure function of the key
        assert item["images"].shape == (48, 32, 64) and item["mel"].shape == (1, 80, 52)
        assert -1.0 <= float(item["images"].min()) and float(item["images"].max()) <= 1.0
        clip = clips[plan.audio_clip]
        expected = mel_window(clip.mel, plan.audio_start)
        assert np.array_equal(item["mel"].numpy(), expected)
        assert float(item["label"]) == plan.label
        if plan.label == 1:
            assert (plan.audio_clip, plan.audio_start) == (plan.video_clip, plan.video_start)
        elif plan.audio_clip == plan.video_clip:
            assert abs(plan.audio_start - plan.video_start) >= 5
            kinds.add("shifted")
        else:
            kinds.add("other clip")
        labels.append(plan.label)
    assert 0.25 < np.mean(labels) < 0.75
    assert kinds == {"shifted", "other clip"}


def test_groups_hold_windows_of_one_clip_with_their_own_audio(sync_data, cache_dir):
    clips = load_clips(sync_data, read_clip_records(sync_data, "train"), 64, cache_dir, show_progress=False)
    dataset = SyncNetGroupDataset(clips, seed=3, group_size=6, min_offset=5)
    pairs = SyncNetDataset(clips, seed=3, min_offset=5)
    assert len(dataset) == len(pairs)  # the same windows, each the first of its group
    for position in range(0, len(dataset), 17):
        key = SampleKey(epoch=2, position=position, index=position)
        item = dataset[key]
        clip, starts = dataset.group_starts(key)
        assert np.array_equal(starts, dataset.group_starts(key)[1])  # a pure function of the key
        assert (clip, starts[0]) == tuple(dataset.items[position])
        assert len(set(starts.tolist())) == 6 and starts.max() <= clip_max_start(clips[clip])
        # the clips are long enough for six starts 5 frames apart: every cross pair is a negative
        gaps = np.abs(starts[:, None] - starts[None, :])[~np.eye(6, dtype=bool)]
        assert gaps.min() >= 5
        assert item["images"].shape == (6, 48, 32, 64) and item["mel"].shape == (6, 1, 80, 52)
        for k, start in enumerate(starts):
            torch.testing.assert_close(item["images"][k], pairs.images(clip, int(start)))
            assert np.array_equal(item["mel"][k].numpy(), mel_window(clips[clip].mel, int(start)))
    with pytest.raises(InputError, match="group_size"):
        SyncNetGroupDataset(clips, seed=3, group_size=1)
    with pytest.raises(InputError, match="fewer than"):
        SyncNetGroupDataset(clips, seed=3, group_size=10_000)


def clip_max_start(clip) -> int:
    return clip.max_start(16)


def test_group_labels_and_loss_weigh_positives_and_negatives_equally():
    from lsync.training.syncnet_recipe import group_pair_labels, syncnet_group_step

    starts = torch.tensor([[0, 2, 10, 30]])
    labels, usable = group_pair_labels(starts, min_offset=5)
    assert torch.equal(labels[0], torch.eye(4))
    assert not usable[0, 0, 1] and not usable[0, 1, 0]  # 2 frames apart: overlapping audio, neither label
    assert usable[0, 0, 2] and usable[0, 2, 3] and usable[0].sum() == 16 - 2

    class Fixed(torch.nn.Module):  # embeddings that are perfect except for window 3, which matches audio 2
        def forward(self, images, mel):
            vision = torch.eye(4)[[0, 1, 2, 2]]
            return vision, torch.eye(4)

    batch = {"images": torch.zeros(1, 4, 1), "mel": torch.zeros(1, 4, 1), "starts": starts}
    out = syncnet_group_step(Fixed(), batch, min_offset=5, logit_scale=10.0)
    # positives: 3 of 4 right; negatives: 9 of 10 usable right (video 3 x audio 2 scores 1)
    assert float(out["accuracy"]) == pytest.approx(0.5 * (3 / 4 + 9 / 10))
    right, wrong = float(torch.nn.functional.softplus(torch.tensor(-5.0))), float(torch.nn.functional.softplus(
        torch.tensor(5.0)))  # BCE of sigmoid(10 (cos - 0.5)) at cos 1 / 0 for the right / wrong label
    assert float(out["loss"]) == pytest.approx(0.5 * ((3 * right + wrong) / 4 + (9 * right + wrong) / 10), rel=1e-5)
    # two groups: the mean of their balanced losses (a perfect second group adds a loss of `right`)
    batch2 = {"images": torch.zeros(2, 4, 1), "mel": torch.zeros(2, 4, 1), "starts": torch.cat([starts, starts])}

    class TwoGroups(torch.nn.Module):
        def forward(self, images, mel):
            return torch.cat([torch.eye(4)[[0, 1, 2, 2]], torch.eye(4)]), torch.cat([torch.eye(4), torch.eye(4)])

    both = syncnet_group_step(TwoGroups(), batch2, min_offset=5, logit_scale=10.0)
    assert float(both["loss"]) == pytest.approx(0.5 * (float(out["loss"]) + right), rel=1e-5)


def test_frames_are_the_lower_half_of_the_face_and_channels_are_frame_major(sync_data, cache_dir):
    from lsync.media.video import VideoReader

    record = read_clip_records(sync_data, "train")[0]
    clip = load_clips(sync_data, [record], 64, cache_dir, show_progress=False)[0]
    full = np.stack(list(VideoReader(sync_data / record["video"], fps=None)))
    assert clip.frames.shape == (record["num_frames"], 32, 64, 3) and clip.frames.dtype == np.uint8
    assert np.array_equal(clip.frames, full[:, 32:])  # data at 64 px: no resize, just the lower half
    samples = load_wav_16k_mono(sync_data / record["audio"])
    np.testing.assert_allclose(clip.mel, melspectrogram(samples), atol=1e-6)
    images = SyncNetDataset([clip], seed=0).images(0, 5)
    expected = torch.from_numpy(full[5:21, 32:].transpose(0, 3, 1, 2).reshape(48, 32, 64).copy()) / 127.5 - 1
    torch.testing.assert_close(images, expected.float())


def test_cache_is_keyed_by_content_not_by_file_name(sync_data, tmp_path):
    copy = tmp_path / "copy of data"
    shutil.copytree(sync_data, copy, ignore=shutil.ignore_patterns("cache"))
    cache = tmp_path / "cache"
    record = read_clip_records(copy, "train")[0]
    first = load_clips(copy, [record], 64, cache, show_progress=False)[0]
    entries = sorted((cache / "syncnet-64").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith(record["id"])
    # Same id, same content elsewhere: the same entry.
    load_clips(sync_data, [record], 64, cache, show_progress=False)
    assert sorted((cache / "syncnet-64").iterdir()) == entries
    # Same id and file name, other audio: a new entry with the new audio's mel.
    other = read_clip_records(copy, "train")[1]
    shutil.copyfile(copy / other["audio"], copy / record["audio"])
    changed = load_clips(copy, [record], 64, cache, show_progress=False)[0]
    assert len(list((cache / "syncnet-64").iterdir())) == 2
    assert not np.array_equal(changed.mel, first.mel)
    assert np.array_equal(changed.frames, first.frames)


def test_feature_cache_writes_entries_whole(tmp_path):
    cache = FeatureCache(tmp_path, "kind-8")
    built = []
    arrays = cache.get_or_build("clip/1", "sha256:abcdef", ["a"], lambda: built.append(1) or {"a": np.arange(3)})
    cache.get_or_build("clip/1", "sha256:abcdef", ["a"], lambda: built.append(1) or {"a": np.arange(3)})
    assert built == [1] and list(arrays["a"]) == [0, 1, 2]
    assert [p.name for p in (tmp_path / "kind-8").iterdir()] == ["clip_1-abcdef"]


# ----------------------------------------------------------------------------------------------- errors
def test_wrong_or_empty_data_directories_give_one_line_errors(sync_data, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_manifest(raw, "raw", {})
    empty = tmp_path / "empty"
    empty.mkdir()
    no_clips = tmp_path / "no clips"
    no_clips.mkdir()
    write_manifest(no_clips, "data", {})
    for data, error, text in ((raw, ManifestError, "is a 'raw' directory"),
                              (empty, ManifestError, "not a complete lsync directory"),
                              (no_clips, InputError, "holds no clips"),
                              (tmp_path / "missing", InputError, "does not exist")):
        result = train_cli(data, tmp_path / "run", "--max-steps", "1")
        assert isinstance(result.exception, error), result.output
        assert text in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ----------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="session")
def four_step_run(sync_data, cache_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "straight run"
    result = train_cli(sync_data, run, "--max-steps", "4", "--set", f"data.cache_dir={cache_dir}")
    assert result.exit_code == 0, (result.output, result.exception)
    return run


def test_a_run_directory_has_config_metrics_chart_checkpoint_and_manifest(four_step_run, sync_data):
    manifest = read_manifest(four_step_run, kind="syncnet-run")
    assert manifest["inputs"][0]["digest"] == directory_digest(sync_data)
    summary = manifest["summary"]
    assert summary["steps"] == 4 and summary["stopped"] == "max_steps"
    assert summary["checkpoint"] == "checkpoints/step-000004"
    assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr", "grad_norm"} <= set(summary)
    assert manifest["config"]["model"]["geometry"] == "syncnet_tiny"
    assert (four_step_run / "config.yaml").is_file()
    records = read_records(four_step_run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    # one group of 4 windows: 4 positives and 12 negatives (3 s clips spread the windows 5+ frames apart), each half
    # weighing the same, so the step's accuracy is a multiple of 1/24
    assert all(r["train/accuracy"] * 24 == pytest.approx(round(r["train/accuracy"] * 24)) and r["train/loss"] > 0
               for r in records)
    # the last validation, recomputed here pair by pair from the step-4 weights
    config = config_from_dict(TrainSyncNetConfig, load_yaml(four_step_run / "config.yaml"))
    val_set = SyncNetDataset(load_clips(sync_data, read_clip_records(sync_data, "val"), 64, config.data.cache_dir,
                                        show_progress=False), config.train.seed + 1, num_frames=16,
                             min_offset=config.data.min_offset, other_clip_negatives=config.data.other_clip_negatives,
                             positive_fraction=config.data.positive_fraction)
    cosines, labels = pair_cosines(four_step_run / "checkpoints" / "step-000004", val_set,
                                   evaluation_keys(val_set, config.data.val_samples))
    assert len(cosines) == config.data.val_samples == 8
    assert summary["val/accuracy"] == pytest.approx(float(np.mean((cosines > 0.5) == labels)), abs=1e-6)
    assert (four_step_run / "metrics.png").is_file()
    checkpoint = four_step_run / "checkpoints" / "step-000004"
    model = load_model_weights(StableSyncNet(load_model_config(checkpoint)), checkpoint)
    assert model.embed_dim == 64
    assert {p.name for p in checkpoint.iterdir()} == {"model.safetensors", "config.json", "training_state.pt",
                                                      "rng-rank0.pt"}


def test_resume_reaches_the_same_metrics_as_an_uninterrupted_run(four_step_run, sync_data, cache_dir, tmp_path):
    run = tmp_path / "stopped run"
    cache = ["--set", f"data.cache_dir={cache_dir}"]
    assert train_cli(sync_data, run, "--max-steps", "2", *cache).exit_code == 0
    assert read_manifest(run)["summary"]["steps"] == 2
    result = train_cli(sync_data, run, "--max-steps", "4", *cache)  # --resume auto is the default
    assert result.exit_code == 0, (result.output, result.exception)

    def train_values(records):
        return [{k: v for k, v in r.items() if k not in ("time_s", "samples_per_s") and not k.startswith("val/")}
                for r in records]

    resumed, straight = read_records(run / "metrics.jsonl"), read_records(four_step_run / "metrics.jsonl")
    assert train_values(resumed) == train_values(straight)  # the stopped run also validated at its last step
    assert {k: v for k, v in resumed[-1].items() if k not in ("time_s", "samples_per_s")} == \
        {k: v for k, v in straight[-1].items() if k not in ("time_s", "samples_per_s")}
    a = load_file(run / "checkpoints" / "step-000004" / "model.safetensors")
    b = load_file(four_step_run / "checkpoints" / "step-000004" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert read_manifest(run)["summary"]["val/loss"] == read_manifest(four_step_run)["summary"]["val/loss"]

    changed = train_cli(sync_data, run, "--max-steps", "6", "--lr", "0.1", *cache)
    assert isinstance(changed.exception, ConfigError) and "train.lr" in str(changed.exception)


def test_a_chance_plateau_is_warned_about_while_training(sync_data, cache_dir, tmp_path, caplog):
    """The stage feeds every validation to the watch: with a band that counts everything as chance and a patience
    of one step, the first validation warns (with what to try) and the summary records it."""
    run = tmp_path / "stuck run"
    caplog.set_level("WARNING", logger="lsync")
    result = train_cli(sync_data, run, "--max-steps", "3", "--set", f"data.cache_dir={cache_dir}",
                       "--set", "train.val_every=1", "--set", "plateau.steps=1", "--set", "plateau.band=0.51",
                       "--set", "loss.logit_scale=null", "--set", "data.other_clip_negatives=0.5")
    assert result.exit_code == 0, (result.output, result.exception)
    warnings = [r.getMessage() for r in caplog.records if "stuck at chance" in r.getMessage()]
    assert len(warnings) == 1 and "step 1:" in warnings[0]
    assert "loss.logit_scale=10" in warnings[0] and "train.lr=" in warnings[0]  # what to try, from its settings
    assert "data.other_clip_negatives=0" in warnings[0]
    summary = read_manifest(run)["summary"]
    assert [p["step"] for p in summary["chance_plateaus"]] == [1]
    records = read_records(run / "metrics.jsonl")
    assert all(0.0 <= r["val/roc_auc"] <= 1.0 for r in records)

    quiet = tmp_path / "watch off"
    caplog.clear()
    result = train_cli(sync_data, quiet, "--max-steps", "2", "--set", f"data.cache_dir={cache_dir}",
                       "--set", "train.val_every=1", "--set", "plateau.steps=0")
    assert result.exit_code == 0 and not any("stuck at chance" in r.getMessage() for r in caplog.records)
    assert "chance_plateaus" not in read_manifest(quiet)["summary"]


def test_init_loads_weights_strictly(four_step_run, sync_data, cache_dir, tmp_path):
    weights = four_step_run / "checkpoints" / "step-000004" / "model.safetensors"
    run = tmp_path / "finetune"
    result = train_cli(sync_data, run, "--init", str(weights), "--max-steps", "1", "--lr", "0",
                       "--set", f"data.cache_dir={cache_dir}")
    assert result.exit_code == 0, (result.output, result.exception)
    a, b = load_file(weights), load_file(run / "checkpoints" / "step-000001" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: the step changed nothing

    tensors = dict(a)
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, tmp_path / "one key short.safetensors")
    wrong = train_cli(sync_data, tmp_path / "wrong", "--init", str(tmp_path / "one key short.safetensors"),
                      "--max-steps", "1", "--set", f"data.cache_dir={cache_dir}")
    assert isinstance(wrong.exception, CheckpointError) and "1 missing" in str(wrong.exception)


def pair_cosines(checkpoint: Path, dataset: SyncNetDataset, keys) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and label of each pair, one pair at a time through the checkpoint's SyncNet."""
    model = load_model_weights(StableSyncNet(load_model_config(checkpoint)), checkpoint).eval()
    cosines, labels = [], []
    with torch.no_grad():
        for key in keys:
            item = dataset[key]
            vision, audio = model(item["images"][None], item["mel"][None])
            cosines.append(float(torch.nn.functional.cosine_similarity(vision, audio)[0]))
            labels.append(bool(item["label"].item()))
    return np.array(cosines), np.array(labels)


def test_eval_reports_accuracy_auc_and_offset_accuracy(four_step_run, sync_data):
    result = CliRunner().invoke(evaluate, ["syncnet", str(four_step_run), str(sync_data), "--pairs", "32",
                                           "--max-offset", "8", "--offset-stride", "8"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "roc_auc" in result.output and "offset_accuracy" in result.output
    written = json.loads((four_step_run / "eval-syncnet-val.json").read_text())
    assert written["pairs"] == 32 and written["clips"] == 1
    assert written["offset_windows"] > 0 and written["max_offset"] == 8

    # Every number again, from their definitions, with the run's data settings and the eval's seed 0.
    config = config_from_dict(TrainSyncNetConfig, load_yaml(four_step_run / "config.yaml"))
    clips = load_clips(sync_data, read_clip_records(sync_data, "val"), 64, config.data.cache_dir, show_progress=False)
    dataset = SyncNetDataset(clips, 0, num_frames=16, min_offset=config.data.min_offset,
                             other_clip_negatives=config.data.other_clip_negatives, positive_fraction=0.5)
    checkpoint = four_step_run / "checkpoints" / "step-000004"
    cosines, labels = pair_cosines(checkpoint, dataset, evaluation_keys(dataset, 32))
    assert written["accuracy"] == pytest.approx(float(np.mean((cosines > 0.5) == labels)), abs=1e-6)
    pairs = [(p, n) for p in cosines[labels] for n in cosines[~labels]]  # each positive against each negative
    auc = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert written["roc_auc"] == pytest.approx(auc, abs=1e-9)
    # offset search: the audio window (shifted -8 .. +8 frames) most similar to each video window every 8 frames
    model = load_model_weights(StableSyncNet(load_model_config(checkpoint)), checkpoint).eval()
    errors = []
    with torch.no_grad():
        for clip in range(len(clips)):
            last = clips[clip].max_start(16)
            for start in range(8, last - 8 + 1, 8):
                vision = model.embed_images(dataset.images(clip, start)[None])[0]
                sims = [float(model.embed_audio(dataset.mel(clip, start + d)[None])[0] @ vision) for d in range(-8, 9)]
                errors.append(int(np.argmax(sims)) - 8)
    assert written["offset_windows"] == len(errors)
    assert written["offset_accuracy"] == pytest.approx(np.mean(np.array(errors) == 0), abs=1e-9)
    assert written["offset_accuracy_within_1"] == pytest.approx(np.mean(np.abs(errors) <= 1), abs=1e-9)
    assert written["mean_abs_offset"] == pytest.approx(np.mean(np.abs(errors)), abs=1e-9)


def test_roc_auc_counts_ties_as_half():
    from lsync.training.syncnet_recipe import roc_auc

    assert roc_auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0])) == 0.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5


# ----------------------------------------------------------------------------------------------- two processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_match_one_process_with_the_same_global_batch(sync_data, cache_dir, tmp_path):
    """torchrun starts two gloo processes with batch 2 each; one process with batch 4 must end at the same weights."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    common = ["syncnet", str(sync_data), "--max-steps", "2", *FAST[:2], "--workers", "0", "--cpu", "-q",
              "--set", f"data.cache_dir={cache_dir}", "--set", "data.val_samples=4", "--set", "train.log_every=1"]
    two = tmp_path / "two processes"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "lsync.commands.train", *common, str(two), "--batch-size", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = tmp_path / "one process"
    single = subprocess.run([sys.executable, "-m", "lsync.commands.train", *common, str(one), "--batch-size", "4"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]

    assert {p.name for p in (two / "checkpoints" / "step-000002").iterdir()} >= {"rng-rank0.pt", "rng-rank1.pt"}
    a = load_file(two / "checkpoints" / "step-000002" / "model.safetensors")
    b = load_file(one / "checkpoints" / "step-000002" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=2e-4, rtol=1e-3)
    losses_two = [r["train/loss"] for r in read_records(two / "metrics.jsonl")]
    losses_one = [r["train/loss"] for r in read_records(one / "metrics.jsonl")]
    assert losses_two == pytest.approx(losses_one, rel=1e-4)
    assert read_manifest(two, kind="syncnet-run")["summary"]["steps"] == 2
