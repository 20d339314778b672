"""``lsync train unet`` on tiny synthetic data: the four losses in metrics.jsonl, zero weights that never run
their model, checkpoints that inference loads, exact resume with EMA, two gloo processes, one-batch overfitting."""

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
from safetensors.torch import load_file

from lsync.audio.whisper import AUDIO_ENCODER_KEY, encoder_digest
from lsync.commands.train import train
from lsync.config import resolve_config
from lsync.errors import CheckpointError, ConfigError, InputError, ManifestError
from lsync.manifest import directory_digest, read_manifest, read_records, write_manifest
from lsync.media.probe import probe
from lsync.checkpoints import load_model_config, load_model_weights, save_model
from lsync.models.presets import model_config
from lsync.models.syncnet import StableSyncNet
from lsync.stages.preprocess import PreprocessConfig, run as preprocess, split_of
from lsync.stages.train_unet import TrainUNetConfig, load_init, run as train_unet
from lsync.synth import synthesize

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_SOURCES = 4
LOSSES = ("recon", "sync", "lpips", "trepa")
# The tiny preset with one logged line per step, no loader processes and a cheap validation video.
SETTINGS = ["train.log_every=1", "train.num_workers=0", "validation.frames=16", "validation.steps=2"]
FAST = ["--preset", "tiny", *[part for setting in SETTINGS for part in ("--set", setting)]]
RECON_ONLY = ["--sync-weight", "0", "--lpips-weight", "0", "--trepa-weight", "0"]


def val_fraction_with_one_val_source(keys: list[str]) -> float:
    for percent in range(1, 100):
        if sum(split_of(k, percent / 100) == "val" for k in keys) == 1:
            return percent / 100
    raise AssertionError("no fraction gives one val source")


@pytest.fixture(scope="module")
def unet_data(tmp_path_factory) -> Path:
    """Four synthetic talking faces of 3 s at 64 px: three train clips and one val clip."""
    raw = tmp_path_factory.mktemp("unet-raw") / "raw"
    synthesize(raw, clips=NUM_SOURCES, seconds=3.0, seed=21, size=(384, 480))
    keys = [f"synth_{i:03d}.mp4" for i in range(NUM_SOURCES)]
    data = tmp_path_factory.mktemp("unet data") / "data"
    preprocess(raw, data, PreprocessConfig(resolution=64, min_clip_seconds=2.0, max_clip_seconds=3.0, min_face=30,
                                           val_fraction=val_fraction_with_one_val_source(keys)))
    return data


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("unet-cache")


@pytest.fixture(scope="module")
def syncnet_checkpoint(tmp_path_factory) -> Path:
    """A random tiny SyncNet saved as a checkpoint directory (what --syncnet accepts besides runs and .pt)."""
    from lsync.models.presets import model_config

    torch.manual_seed(0)
    towers = model_config("syncnet_tiny")
    return save_model(StableSyncNet(towers), tmp_path_factory.mktemp("syncnet") / "ckpt", towers)


def train_cli(data: Path, run: Path, *args: str):
    return CliRunner().invoke(train, ["unet", str(data), str(run), *FAST, *args], catch_exceptions=True)


class CountingSyncNet:
    """Counts StableSyncNet forward calls, in total and inside training steps (through run()'s step_hook)."""

    def __init__(self, monkeypatch):
        self.total = 0
        self.in_steps = 0
        self.steps = 0
        self.per_step: list[int] = []  # forward calls inside each step_fn call (one micro-batch), in order
        original = StableSyncNet.forward

        def forward(module, *args, **kwargs):
            self.total += 1
            return original(module, *args, **kwargs)

        monkeypatch.setattr(StableSyncNet, "forward", forward)

    def hook(self, step_fn):
        def counted(model, batch):
            before = self.total
            out = step_fn(model, batch)
            self.per_step.append(self.total - before)
            self.in_steps += self.total - before
            self.steps += 1
            return out

        return counted


def run_api(data: Path, run: Path, cache: Path, *args: str, counter: CountingSyncNet | None = None,
            resume: str = "auto"):
    """``run()`` with the config the CLI would resolve from FAST + args (named flags as --set keys)."""
    overrides = [*SETTINGS, *args, f"data.cache_dir={cache}"]
    config = resolve_config(TrainUNetConfig, "unet", "tiny", None, None, overrides)
    return train_unet(data, run, config, resume=resume, step_hook=counter.hook if counter else None)


# ----------------------------------------------------------------------------------------------- errors
def test_wrong_data_missing_syncnet_and_bad_patterns_are_one_line_errors(unet_data, syncnet_checkpoint, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_manifest(raw, "raw", {})
    only_val = tmp_path / "only val"
    shutil.copytree(unet_data, only_val, ignore=shutil.ignore_patterns("cache"))
    records = read_records(only_val / "clips.jsonl")
    (only_val / "clips.jsonl").write_text("".join(json.dumps({**r, "split": "val"}) + "\n" for r in records))
    cases = [
        ((raw,), ManifestError, "is a 'raw' directory"),
        ((tmp_path / "missing",), InputError, "does not exist"),
        ((only_val, "--syncnet", str(syncnet_checkpoint)), InputError, "no clips in split 'train'"),
        ((unet_data,), ConfigError, "no SyncNet was given"),
        ((unet_data, *RECON_ONLY, "--set", "model.trainable=[motion_modulez]"), ConfigError, "match no parameter"),
        ((unet_data, *RECON_ONLY, "--recon-weight", "0"), ConfigError, "nothing to train"),
        ((unet_data, *RECON_ONLY, "--set", "loss.pixel_loss_every=0"), ConfigError, "pixel_loss_every=0 is below 1"),
        ((unet_data, "--syncnet", str(syncnet_checkpoint), "--recon-weight", "0", "--set", "loss.pixel_loss_every=2"),
         ConfigError, "leaves steps with no loss"),
    ]
    for (data, *args), error, text in cases:
        result = train_cli(data, tmp_path / "run", "--max-steps", "1", *args)
        assert isinstance(result.exception, error), (text, result.output, result.exception)
        assert text in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "run" / "checkpoints").exists()


# ----------------------------------------------------------------------------------------------- all four losses
#: (frames, mel, score) of every validation a run scored, by run directory (see ``four_loss_run``).
VALIDATION_SCORES: dict[Path, list] = {}
AUDIO_SHAPES: dict[Path, dict[str, list]] = {}  # the audio tokens a run's training steps and validation fed


@pytest.fixture(scope="module")
def four_loss_run(unet_data, cache_dir, syncnet_checkpoint, tmp_path_factory) -> Path:
    from lsync.stages.train_unet_step import UNetTrainingStep
    from lsync.stages.train_unet_val import ValidationRenderer

    run = tmp_path_factory.mktemp("runs") / "four losses"
    scored = VALIDATION_SCORES.setdefault(run, [])
    shapes = AUDIO_SHAPES.setdefault(run, {"train": [], "val": []})
    original, original_step = ValidationRenderer.score, UNetTrainingStep.__call__

    def recording(renderer, frames):
        score = original(renderer, frames)
        scored.append((np.array(frames), renderer.mel.clone(), score))
        shapes["val"].append(tuple(renderer.audio_features.shape))
        return score

    def step(self, unet, batch):
        shapes["train"].append(tuple(batch["audio_features"].shape))
        return original_step(self, unet, batch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ValidationRenderer, "score", recording)
        patch.setattr(UNetTrainingStep, "__call__", step)
        result = train_cli(unet_data, run, "--syncnet", str(syncnet_checkpoint), "--max-steps", "2", "--ema",
                           "--set", f"data.cache_dir={cache_dir}")
    assert result.exit_code == 0, (result.output, result.exception)
    return run


def test_metrics_carry_the_four_raw_and_four_weighted_terms(four_loss_run, syncnet_checkpoint):
    records = read_records(four_loss_run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    weights = {"recon": 1.0, "sync": 0.05, "lpips": 0.1, "trepa": 10.0}
    for record in records:
        for name in LOSSES:
            assert record[f"train/{name}_weighted"] == pytest.approx(weights[name] * record[f"train/{name}"],
                                                                     rel=1e-5)
        total = sum(record[f"train/{name}_weighted"] for name in LOSSES)
        assert record["train/loss"] == pytest.approx(total, rel=1e-5)
        assert {"grad_norm", "lr", "samples_per_s"} <= set(record)
    # the validation score: the SyncNet cosine of the one 16-frame window of the frames the run wrote to its video
    from lsync.losses import syncnet_input
    from lsync.media.video import VideoReader

    frames, mel, score = VALIDATION_SCORES[four_loss_run][-1]
    assert records[-1]["val/sync_windows"] == 1
    assert records[-1]["val/sync_cosine"] == pytest.approx(score["sync_cosine"])
    syncnet = load_model_weights(StableSyncNet(load_model_config(syncnet_checkpoint)), syncnet_checkpoint).eval()
    pixels = torch.from_numpy(frames[:16]).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, 16, R, R)
    with torch.no_grad():
        vision, audio = syncnet(syncnet_input(pixels[None], 64), mel[None, None, :, :52])
    assert score["sync_cosine"] == pytest.approx(float(torch.nn.functional.cosine_similarity(vision, audio)), abs=1e-6)
    assert records[-1]["val/sync_accuracy"] == float(score["sync_cosine"] > 0.5)
    written = VideoReader(four_loss_run / "val" / "step-000002.mp4", fps=None).read_all()
    # the video holds those frames: 64 px yuv420 H.264 of noisy generated faces is ~7 levels off on average
    assert written.shape == frames.shape and np.abs(written.astype(int) - frames).mean() < 12
    assert np.corrcoef(written.reshape(-1).astype(float), frames.reshape(-1).astype(float))[0, 1] > 0.95


def test_sync_weight_is_read_back_from_the_saved_config(four_loss_run, unet_data, syncnet_checkpoint):
    import yaml

    saved = yaml.safe_load((four_loss_run / "config.yaml").read_text())
    assert saved["loss"]["sync_weight"] == 0.05 and saved["syncnet"] == str(syncnet_checkpoint)
    manifest = read_manifest(four_loss_run, kind="unet-run")
    assert manifest["config"]["loss"] == saved["loss"]
    assert manifest["inputs"][0]["digest"] == directory_digest(unet_data)
    assert manifest["inputs"][1]["kind"] == "syncnet" and manifest["inputs"][1]["digest"].startswith("sha256:")
    assert manifest["summary"]["steps"] == 2 and manifest["summary"]["checkpoint"] == "checkpoints/step-000002"
    for name in LOSSES:
        assert manifest["summary"][f"train/{name}_weighted"] > 0


def test_checkpoint_loads_for_inference_with_ema_and_the_val_video_has_audio(four_loss_run):
    from lsync.sampling import load_inference_models

    checkpoint = four_loss_run / "checkpoints" / "step-000002"
    assert {p.name for p in checkpoint.iterdir()} == {"model.safetensors", "ema.safetensors", "config.json",
                                                      "training_state.pt", "rng-rank0.pt"}
    bundle, ids = load_inference_models("tiny", unet=four_loss_run)
    assert ids["unet"]["path"] == str(checkpoint)
    # The checkpoint names the Whisper encoder its U-Net learned the tokens of: the one inference builds.
    assert load_model_config(checkpoint)[AUDIO_ENCODER_KEY] == encoder_digest(bundle.audio.encoder)
    # The tiny preset's audio context is in the checkpoint, and the run fed its U-Net tokens of that width.
    context = load_model_config(checkpoint)["audio_feat_length"]
    assert context == model_config("unet_tiny")["audio_feat_length"] == bundle.unet.config.audio_feat_length
    tokens = 2 * (sum(context) + 1) * (len(bundle.audio.encoder.blocks) + 1)
    width = bundle.unet.config.cross_attention_dim
    assert AUDIO_SHAPES[four_loss_run]["train"] == [(1, 16, tokens, width)] * 2  # two steps of batch 1
    assert AUDIO_SHAPES[four_loss_run]["val"] and all(
        shape == (16, tokens, width) for shape in AUDIO_SHAPES[four_loss_run]["val"])
    ema = load_file(checkpoint / "ema.safetensors")
    state = bundle.unet.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ema.items())  # inference uses the averaged weights
    video = four_loss_run / "val" / "step-000002.mp4"
    info = probe(video)
    assert info.has_video and info.has_audio


# ----------------------------------------------------------------------------------------------- zero weights, resume
def test_sync_weight_0_never_runs_the_syncnet_in_a_step_and_resume_is_exact(unet_data, cache_dir, syncnet_checkpoint,
                                                                           tmp_path, monkeypatch):
    """Recon only, with a SyncNet named (it scores the validation video only); the motion modules train, EMA on.
    Two steps straight equal one step, then a resume to two: metrics, weights and EMA."""
    counter = CountingSyncNet(monkeypatch)
    args = ["loss.sync_weight=0", "loss.lpips_weight=0", "loss.trepa_weight=0", f"syncnet={syncnet_checkpoint}",
            "validation.steps=1",
            "model.trainable=[motion_modules.]", "train.ema=true", "train.max_steps=2"]
    straight = tmp_path / "straight"
    run_api(unet_data, straight, cache_dir, *args, counter=counter)
    assert counter.steps == 2 and counter.in_steps == 0
    validation_windows = sum(r.get("val/sync_windows", 0) for r in read_records(straight / "metrics.jsonl"))
    assert counter.total == validation_windows == 1
    records = read_records(straight / "metrics.jsonl")
    assert all("train/sync" not in r and "train/recon" in r for r in records)

    split = tmp_path / "split"
    run_api(unet_data, split, cache_dir, *args[:-1], "train.max_steps=1")
    run_api(unet_data, split, cache_dir, *args)

    def values(run):
        return [{k: v for k, v in r.items() if k not in ("time_s", "samples_per_s")}
                for r in read_records(run / "metrics.jsonl")]

    def train_values(run):  # the stopped run also validated at its last step
        return [{k: v for k, v in r.items() if not k.startswith("val/")} for r in values(run)]

    assert train_values(split) == train_values(straight)
    assert values(split)[-1] == values(straight)[-1]  # the final validation scored the same video
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = (load_file(run / "checkpoints" / "step-000002" / name) for run in (straight, split))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert all("motion_modules." in k for k in a)  # trainable-only weights
    with pytest.raises(ConfigError, match="loss.mixed_noise_alpha"):
        run_api(unet_data, split, cache_dir, *args, "loss.mixed_noise_alpha=0.5")


def test_a_resumed_run_keeps_the_whisper_encoder_its_checkpoint_names(tmp_path):
    """A resume whose Whisper differs from the one the checkpoint recorded (e.g. the tiny preset's random encoder
    of another lsync version) is refused: the U-Net would go on learning from other tokens."""
    from lsync.audio.whisper import WhisperFeatureExtractor, build_whisper_encoder
    from lsync.stages.train_unet import record_audio_encoder

    extractor = WhisperFeatureExtractor(build_whisper_encoder(model_config("whisper_tiny"), seed=0))
    recorded: dict = {}
    record_audio_encoder(recorded, extractor, resume_from=None)
    assert recorded == {AUDIO_ENCODER_KEY: encoder_digest(extractor.encoder)}
    config = model_config("unet_tiny")
    checkpoint = save_model(torch.nn.Linear(1, 1), tmp_path / "step-000001", {**config, **recorded})
    again: dict = {}
    record_audio_encoder(again, extractor, resume_from=checkpoint)
    assert again == recorded
    other = WhisperFeatureExtractor(build_whisper_encoder(model_config("whisper_tiny"), seed=5))
    with pytest.raises(ConfigError, match="another Whisper encoder"):
        record_audio_encoder({}, other, resume_from=checkpoint)
    # A checkpoint of an lsync that did not record it resumes with any encoder.
    older = save_model(torch.nn.Linear(1, 1), tmp_path / "older", config)
    record_audio_encoder({}, other, resume_from=older)


def test_pixel_loss_every_k_runs_the_syncnet_on_every_kth_step_also_across_accumulation_and_resume(
        unet_data, cache_dir, syncnet_checkpoint, tmp_path, monkeypatch):
    """k = 2 with two micro-batches a step: steps 2 and 4 (both of their micro-batches) run the pixel losses, steps
    1 and 3 recon alone - in a straight run and in one stopped after step 1 and resumed."""
    counter = CountingSyncNet(monkeypatch)
    args = [f"syncnet={syncnet_checkpoint}", "loss.pixel_loss_every=2", "train.grad_accum=2", "train.batch_size=1",
            "validation.steps=1", "train.val_every=0", "train.max_steps=4"]
    straight = tmp_path / "straight"
    run_api(unet_data, straight, cache_dir, *args, counter=counter)
    assert [calls > 0 for calls in counter.per_step] == [False, False, True, True] * 2
    records = [r for r in read_records(straight / "metrics.jsonl") if "train/recon" in r]
    assert [r["step"] for r in records if "train/sync" in r] == [2, 4]
    assert all(("train/lpips" in r) == ("train/trepa" in r) == ("train/sync" in r) for r in records)

    counter.per_step.clear()
    split = tmp_path / "split"
    run_api(unet_data, split, cache_dir, *args[:-1], "train.max_steps=1", counter=counter)
    run_api(unet_data, split, cache_dir, *args, counter=counter)
    assert [calls > 0 for calls in counter.per_step] == [False, False, True, True, False, False, True, True]


def test_partial_init_needs_allow_partial_and_reports_what_it_left(tmp_path, capsys):
    from safetensors.torch import save_file

    from lsync.models.presets import build_unet, model_config

    torch.manual_seed(1)
    weights = build_unet(model_config("unet_tiny")).state_dict()
    partial = {k: v.contiguous() for k, v in weights.items() if "motion_modules." not in k}
    path = tmp_path / "no motion modules.safetensors"
    save_file(partial, str(path))
    with pytest.raises(CheckpointError, match="missing"):
        load_init(build_unet(model_config("unet_tiny")), path, allow_partial=False)
    torch.manual_seed(2)
    unet = build_unet(model_config("unet_tiny"))
    assert load_init(unet, path, allow_partial=True) == set(partial)
    printed = " ".join(capsys.readouterr().err.split())
    assert f"loaded {len(partial)} of {len(weights)} tensors" in printed
    assert "left at their initial value: down_blocks.0.motion_modules (" in printed
    assert torch.equal(unet.state_dict()["conv_in.weight"], weights["conv_in.weight"])


def test_the_checkpoint_config_always_records_the_audio_context(tmp_path):
    """config.json names audio_feat_length even when the U-Net yaml leaves it out (the released stage2 files):
    inference cuts the audio with it; an impossible value is a config error."""
    import yaml

    from lsync.models.presets import build_unet as build_unet_model
    from lsync.stages.train_unet import build_unet as build_run_unet

    without = {k: v for k, v in model_config("unet_tiny").items() if k != "audio_feat_length"}
    (tmp_path / "no context.yaml").write_text(yaml.safe_dump(without))
    cases = [([f"model.unet={tmp_path / 'no context.yaml'}"], [2, 2]),
             ([], model_config("unet_tiny")["audio_feat_length"]),
             (["model.unet_overrides={audio_feat_length: [1, 2]}"], [1, 2])]
    for overrides, expected in cases:
        config = resolve_config(TrainUNetConfig, "unet", "tiny", None, None, overrides)
        unet, checkpoint_config = build_run_unet(config, resume_from=None)
        assert unet.config.audio_feat_length == checkpoint_config["audio_feat_length"] == expected, overrides
    config = resolve_config(TrainUNetConfig, "unet", "tiny", None, None,
                            ["model.unet_overrides={audio_feat_length: [1, -2]}"])
    with pytest.raises(ConfigError, match="audio_feat_length"):
        build_run_unet(config, resume_from=None)
    # Resuming a checkpoint of another context (here one from before the key: the reference's) is refused.
    checkpoint = save_model(build_unet_model(without), tmp_path / "old checkpoint", without)
    narrow = resolve_config(TrainUNetConfig, "unet", "tiny", None, None,
                            ["model.unet_overrides={audio_feat_length: [0, 0]}"])
    with pytest.raises(ConfigError, match=r"trained with audio_feat_length \[2, 2\]"):
        build_run_unet(narrow, resume_from=checkpoint)
    same = resolve_config(TrainUNetConfig, "unet", "tiny", None, None,
                          ["model.unet_overrides={audio_feat_length: [2, 2]}"])
    assert build_run_unet(same, resume_from=checkpoint)[1]["audio_feat_length"] == [2, 2]


# ----------------------------------------------------------------------------------------------- two processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_match_one_process_with_the_same_global_batch(unet_data, cache_dir, tmp_path):
    """torchrun: two gloo processes with batch 1 each end where one process with batch 2 ends (per-sample noise)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    common = ["unet", str(unet_data), *FAST, *RECON_ONLY, "--max-steps", "1", "--cpu", "-q",
              "--set", f"data.cache_dir={cache_dir}", "--set", "validation.frames=0",
              "--set", "model.trainable=[attn2.]"]
    two = tmp_path / "two processes"
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "lsync.commands.train", *common, str(two), "--batch-size", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = tmp_path / "one process"
    single = subprocess.run([sys.executable, "-m", "lsync.commands.train", *common, str(one), "--batch-size", "2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    a = load_file(two / "checkpoints" / "step-000001" / "model.safetensors")
    b = load_file(one / "checkpoints" / "step-000001" / "model.safetensors")
    assert set(a) == set(b) and all("attn2." in k for k in a)
    # Adam's first step moves a weight by about lr * sign(gradient): where a gradient is ~0, summation order
    # (all-reduce vs one batch) may flip it. All but a few weights must agree, and those within 2 lr.
    difference = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    assert (difference > 2e-5).float().mean() < 1e-3 and difference.max() <= 2 * 5e-4
    loss_two = read_records(two / "metrics.jsonl")[0]["train/recon"]
    assert loss_two == pytest.approx(read_records(one / "metrics.jsonl")[0]["train/recon"], rel=1e-4)


# ----------------------------------------------------------------------------------------------- overfitting
def test_overfitting_one_batch_halves_the_reconstruction_loss_within_200_steps(unet_data, cache_dir):
    """The tiny U-Net learns one fixed batch (same windows, noise and timesteps every step)."""
    from lsync.data.unet_dataset import UNetDataset, collate_unet_batch
    from lsync.diffusion import make_scheduler
    from lsync.losses import LossModels, LossWeights
    from lsync.models.presets import load_models
    from lsync.stages.train_unet_step import UNetTrainingStep

    bundle = load_models("tiny")
    dataset = UNetDataset(unet_data, bundle.audio, cache_dir=cache_dir, seed=0)
    batch = collate_unet_batch([dataset[0]])
    step = UNetTrainingStep(bundle.vae, make_scheduler(), LossWeights(recon=1, sync=0, lpips=0, trepa=0),
                            LossModels(), seed=0)
    unet = bundle.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    losses = []
    for _ in range(200):
        loss = step(unet, batch)["loss"]
        losses.append(float(loss.detach()))
        if losses[-1] <= 0.5 * losses[0]:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] <= 0.5 * losses[0], losses
