"""``lsync train syncnet data/ runs/sync``: train (or fine-tune) the StableSyncNet sync expert.

The run directory is a manifest directory of kind ``syncnet-run``::

    config.yaml                 the resolved config, written at the start (a resume must match it)
    metrics.jsonl, metrics.png  learning curves (train loss/accuracy, validation loss/accuracy, lr, grad norm)
    checkpoints/step-000500/    model.safetensors + config.json + everything needed to resume exactly
    lsync.json                  written when the run finishes (inputs: the data directory; summary: final metrics)

The model, its input size and the optimisation come from a preset in ``configs/syncnet/`` (``16_pixel_attn`` is
the released geometry); the loop is the shared :class:`lsync.training.loop.Trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lsync.config import CONFIGS_DIR, config_to_dict, load_yaml
from lsync.console import get_logger, say
from lsync.errors import ConfigError
from lsync.manifest import describe_input, write_manifest
from lsync.training.loop import LoopConfig
from lsync.training.run_dir import CONFIG_FILE, prepare_run_dir, run_summary

log = get_logger(__name__)

RUN_KIND = "syncnet-run"
NUM_FRAMES = 16


@dataclass
class SyncNetModelSection:
    """Which StableSyncNet to build and what size of face it sees."""

    geometry: str = "syncnet_16_pixel_attn"  # configs/models/<name>.yaml or a YAML path (audio/visual towers)
    audio_encoder: dict | None = None  # embed the towers here instead of naming a geometry
    visual_encoder: dict | None = None
    image_size: int = 256  # face size S: the model sees the lower half, S/2 x S
    # GroupNorm groups of both towers (default: the geometry's, 32). Narrow towers need fewer: with 64 channels in
    # 32 groups the last norm sees pairs of values, turns them into +-1 and passes almost no gradient.
    norm_num_groups: int | None = None
    gradient_checkpointing: bool = False


@dataclass
class SyncNetDataSection:
    min_offset: int = 5  # frames between a same-clip negative's audio and the video window
    other_clip_negatives: float = 0.5  # share of negatives whose audio comes from another clip
    positive_fraction: float = 0.5
    window_stride: int = 1  # frames between the start frames of an epoch's windows
    val_samples: int = 1024  # fixed validation windows (spread over the val split)
    cache_dir: str | None = None  # decoded-clip cache (default: <data>/cache, or ~/.cache/lsync/features)


@dataclass
class TrainSyncNetConfig:
    model: SyncNetModelSection = field(default_factory=SyncNetModelSection)
    data: SyncNetDataSection = field(default_factory=SyncNetDataSection)
    train: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-5, batch_size=256))
    init: str | None = None  # weights to fine-tune from (stable_syncnet.pt, safetensors, or a checkpoint dir)


# ----------------------------------------------------------------------------------------------- the model
def model_config(section: SyncNetModelSection) -> dict[str, Any]:
    """The StableSyncNet constructor dict: the embedded towers, or those of the named geometry file."""
    name = section.geometry
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONFIGS_DIR / "models" / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in (CONFIGS_DIR / "models").glob("syncnet_*.yaml"))
        raise ConfigError(f"model.geometry '{name}' not found", f"choose one of: {', '.join(choices)}")
    geometry = load_yaml(path)
    towers = {k: geometry[k] for k in ("audio_encoder", "visual_encoder") if k in geometry}
    for key in ("audio_encoder", "visual_encoder"):  # an embedded tower overrides the file's
        if getattr(section, key) is not None:
            towers[key] = dict(getattr(section, key))
    if section.norm_num_groups is not None:
        towers = {name: {**tower, "norm_num_groups": section.norm_num_groups} for name, tower in towers.items()}
    return towers


def build_model(section: SyncNetModelSection):
    """A randomly initialised StableSyncNet, checked against the face size it will see."""
    from lsync.models.syncnet import StableSyncNet

    config = model_config(section)
    check_geometry(config, section.image_size)
    model = StableSyncNet(config)
    if section.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model, config


def check_geometry(config: dict[str, Any], image_size: int) -> None:
    """Both towers must end at 1 x 1 for this face size; found with a shape-only (meta device) forward."""
    from lsync.models.syncnet import StableSyncNet

    if image_size < 2 or image_size % 2:
        raise ConfigError(f"model.image_size must be an even number of pixels, got {image_size}", "use e.g. 64 or 256")
    with torch.device("meta"):
        model = StableSyncNet(config)
        channels = config["visual_encoder"]["in_channels"]
        vision, audio = model.encode_towers(torch.empty(1, channels, image_size // 2, image_size),
                                            torch.empty(1, 1, 80, 52))
    if channels != 3 * NUM_FRAMES:
        raise ConfigError(f"the visual tower takes {channels} channels, not {3 * NUM_FRAMES} (16 RGB frames)",
                          "use a pixel-space SyncNet geometry")
    if tuple(vision.shape[2:]) != (1, 1) or tuple(audio.shape[2:]) != (1, 1):
        raise ConfigError(
            f"with model.image_size={image_size} the towers end at {tuple(vision.shape[2:])} (visual) and "
            f"{tuple(audio.shape[2:])} (audio) instead of 1 x 1",
            "set model.image_size to the face size this geometry was made for (256 released, 64 tiny)")


def load_init_weights(model, path: str | Path) -> None:
    """Strictly load released (``stable_syncnet.pt``), safetensors or checkpoint-directory weights."""
    from lsync.checkpoints import load_model_weights, load_state_dict_strict, read_state_dict

    p = Path(path)
    if p.is_dir():
        load_model_weights(model, p)
    else:
        load_state_dict_strict(model, read_state_dict(p).state_dict, source=str(p))


# ----------------------------------------------------------------------------------------------- step functions
def syncnet_step(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One micro-batch: BCE of the cosine similarity against the label, and the accuracy at 0.5."""
    from lsync.models.syncnet import cosine_loss, sync_accuracy

    vision, audio = model(batch["images"], batch["mel"])
    label = batch["label"]
    return {"loss": cosine_loss(vision, audio, label), "accuracy": sync_accuracy(vision, audio, label)}


def evaluate_pairs(model, dataset, keys, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Cosine similarities and labels of ``dataset[key]`` for ``keys``, with mean loss and accuracy."""
    from lsync.models.syncnet import cosine_loss, cosine_similarity

    sims, labels, losses = [], [], []
    for first in range(0, len(keys), batch_size):
        items = [dataset[k] for k in keys[first:first + batch_size]]
        images = torch.stack([i["images"] for i in items]).to(device)
        mel = torch.stack([i["mel"] for i in items]).to(device)
        label = torch.stack([i["label"] for i in items]).to(device)
        vision, audio = model(images, mel)
        sims.append(cosine_similarity(vision.float(), audio.float()).cpu())
        labels.append(label.cpu())
        losses.append(cosine_loss(vision, audio, label, reduction="none").cpu())
    sim, label = torch.cat(sims), torch.cat(labels)
    return {"similarity": sim, "label": label, "loss": float(torch.cat(losses).mean()),
            "accuracy": float(((sim > 0.5) == label.bool()).float().mean())}


# ----------------------------------------------------------------------------------------------- the stage
def run(data_dir: str | Path, run_dir: str | Path, config: TrainSyncNetConfig, resume: str | None = "auto",
        on_step_end=None) -> dict[str, Any] | None:
    """Train a SyncNet on ``data_dir`` into ``run_dir``; returns the summary written to ``lsync.json`` (``None``
    on the other processes of a distributed run).

    ``resume``: ``"auto"`` continues from the run's latest checkpoint if there is one, ``None``/``"never"``
    starts fresh (refused if the run has checkpoints), anything else is a checkpoint directory.
    Ctrl-C stops after the current step with a checkpoint and raises ``KeyboardInterrupt``.
    """
    from lsync.data.syncnet_dataset import SyncNetDataset, evaluation_keys, load_clips, read_clip_records
    from lsync.training import checkpointing as ckpt
    from lsync.training.accelerate_setup import make_accelerator
    from lsync.training.loop import Trainer
    from lsync.training.seeding import seed_everything

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    train_records = read_clip_records(data_dir, "train")  # wrong kind / empty directory: one-line errors
    val_records = _val_records(data_dir)
    accelerator = make_accelerator(config.train.mixed_precision, cpu=config.train.cpu)
    resume_from = prepare_run_dir(run_dir, config, resume, accelerator.is_main_process,
                                  ignore=("init", "data.cache_dir"))

    seed_everything(config.train.seed)
    model, towers = build_model(config.model)
    if config.init is not None and resume_from is None:
        load_init_weights(model, config.init)

    # The main process decodes missing clips into the cache; the others then read the finished entries.
    cache_root = config.data.cache_dir
    with accelerator.main_process_first():
        train_clips = load_clips(data_dir, train_records, config.model.image_size, cache_root,
                                 show_progress=accelerator.is_main_process)
        val_clips = load_clips(data_dir, val_records, config.model.image_size, cache_root,
                               show_progress=accelerator.is_main_process) if val_records else []
    d = config.data
    dataset_args = dict(num_frames=NUM_FRAMES, min_offset=d.min_offset, other_clip_negatives=d.other_clip_negatives,
                        positive_fraction=d.positive_fraction)
    train_set = SyncNetDataset(train_clips, config.train.seed, window_stride=d.window_stride, **dataset_args)
    validate = None
    if val_clips:
        val_set = SyncNetDataset(val_clips, config.train.seed + 1, **dataset_args)
        val_keys = evaluation_keys(val_set, d.val_samples)

        def validate(bare_model):
            result = evaluate_pairs(bare_model, val_set, val_keys, config.train.batch_size, accelerator.device)
            return {"loss": result["loss"], "accuracy": result["accuracy"]}

    trainer = Trainer(run_dir, model, towers, config.train, train_set, syncnet_step, validate_fn=validate,
                      accelerator=accelerator, description="syncnet", on_step_end=on_step_end)
    if accelerator.is_main_process:
        say(f"syncnet: {len(train_clips)} train clips ({len(train_set)} windows), {len(val_clips)} val clips; "
            f"global batch {trainer.global_batch_size} on {accelerator.num_processes} x {accelerator.device} "
            f"({accelerator.mixed_precision})")
    result = trainer.fit(resume_from)
    if result.stopped == "interrupted":
        if accelerator.is_main_process:
            say(f"[yellow]interrupted[/] at step {result.step}; checkpoint {result.checkpoint}")
        raise KeyboardInterrupt

    summary = None
    if accelerator.is_main_process:
        summary = run_summary(run_dir, result)
        latest = ckpt.latest_checkpoint(run_dir)
        summary["checkpoint"] = str(latest.relative_to(run_dir)) if latest else None
        write_manifest(run_dir, RUN_KIND, config_to_dict(config), inputs=[describe_input(data_dir)], summary=summary)
    accelerator.wait_for_everyone()
    return summary


def _val_records(data_dir: Path) -> list[dict[str, Any]]:
    from lsync.data.syncnet_dataset import read_clip_records

    records = [r for r in read_clip_records(data_dir, None) if r.get("split") == "val"]
    if not records:
        log.warning("%s has no 'val' clips: training runs without validation", data_dir)
    return records
