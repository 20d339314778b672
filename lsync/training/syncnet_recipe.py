"""The StableSyncNet recipe below the stages that share it: its config sections, the model they build, the loss
step, validation pairs, and loading a trained one.

``lsync train syncnet`` trains with it, ``lsync eval syncnet`` and the sync metrics (``eval sync``, ``filter sync``,
the U-Net's sync loss) load what it trained, so it lives in ``training/`` instead of in one of those stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsync.config import config_from_dict, load_model_config, load_yaml, section
from lsync.errors import ConfigError, InputError
from lsync.training.loop import LoopConfig
from lsync.training.run_dir import CONFIG_FILE

NUM_FRAMES = 16  # frames per video window
#: Face sizes tried when neither the run nor the user says which one a checkpoint's geometry takes.
CANDIDATE_IMAGE_SIZES = (256, 64, 128, 512, 32)


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
    # > 1: train on groups of this many windows of one clip, every video window scored against every audio
    # window of its group (syncnet_group_step); train.batch_size then counts groups. 1: single pairs (reference)
    group_size: int = 1
    val_samples: int = 1024  # fixed validation windows (spread over the val split)
    cache_dir: str | None = None  # decoded-clip cache (default: <data>/cache, or ~/.cache/lsync/features)


@dataclass
class SyncNetLossSection:
    """The sync loss. ``logit_scale: null`` is the reference (BCE on the raw cosine, LatentSync's recipe)."""

    # BCE on sigmoid(logit_scale * (cos - 0.5)): same threshold, gradients that do not vanish (models.syncnet)
    logit_scale: float | None = None


@dataclass
class SyncNetPlateauSection:
    """Warn while training when validation stays at chance (accuracy and ROC AUC within ``band`` of 0.5)."""

    steps: int = 2000  # optimizer steps at chance before the warning; 0 = never warn
    band: float = 0.05


@dataclass
class TrainSyncNetConfig:
    """A SyncNet run's ``config.yaml``: presets (``configs/syncnet/``), ``--config`` files and ``--set`` fill it.

    The dataclass defaults are LatentSync's recipe (raw-cosine BCE, AdamW 1e-5, batch 256); ``16_pixel_attn`` adds
    the released geometry to them, ``tiny`` is the fast CPU recipe (logit-scaled loss, same-clip negatives, in
    groups of windows).
    """

    model: SyncNetModelSection = section(SyncNetModelSection)
    data: SyncNetDataSection = section(SyncNetDataSection)
    loss: SyncNetLossSection = section(SyncNetLossSection)
    plateau: SyncNetPlateauSection = section(SyncNetPlateauSection)
    train: LoopConfig = section(LoopConfig, lr=1e-5, batch_size=256)
    init: str | None = None  # weights to fine-tune from (stable_syncnet.pt, safetensors, or a checkpoint dir)


# ----------------------------------------------------------------------------------------------- the model
def model_config(section: SyncNetModelSection) -> dict[str, Any]:
    """The StableSyncNet constructor dict: the embedded towers, or those of the named geometry file."""
    geometry = load_model_config(section.geometry, "model.geometry", "syncnet")
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
def syncnet_step(model, batch: dict[str, torch.Tensor], logit_scale: float | None = None
                 ) -> dict[str, torch.Tensor]:
    """One micro-batch: the sync loss (BCE, see :func:`~lsync.models.syncnet.cosine_loss`) and the accuracy at
    cos 0.5."""
    from lsync.models.syncnet import cosine_loss, sync_accuracy

    vision, audio = model(batch["images"], batch["mel"])
    label = batch["label"]
    return {"loss": cosine_loss(vision, audio, label, logit_scale=logit_scale),
            "accuracy": sync_accuracy(vision, audio, label)}


def group_pair_labels(starts: torch.Tensor, min_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of a group's video x audio pairs from their start frames ``(G, K)``: ``(labels, usable)``, both
    ``(G, K, K)``; a window with its own audio is 1, with audio ``min_offset`` or more frames away 0, pairs nearer
    than that are not usable (their audio still overlaps the video's)."""
    distance = (starts[:, :, None] - starts[:, None, :]).abs()
    positive = distance == 0
    usable = positive | (distance >= min_offset)
    return positive.float(), usable


def syncnet_group_step(model, batch: dict[str, torch.Tensor], min_offset: int,
                       logit_scale: float | None = None) -> dict[str, torch.Tensor]:
    """One micro-batch of :class:`~lsync.data.syncnet_dataset.SyncNetGroupDataset` groups.

    ``batch``: images (G, K, 3F, S/2, S), mel (G, K, 1, 80, 52), starts (G, K). Every video window meets every
    audio window of its group. Within a group positives and negatives weigh the same (the balance of the
    validation pairs, so the decision threshold stays where :func:`syncnet_step` puts it), and every group weighs
    the same: the loss is a mean over groups, so processes with ``G / n`` groups each average to the loss of one
    process with ``G``.
    """
    from lsync.models.syncnet import pair_loss

    groups, size = batch["starts"].shape
    vision, audio = model(batch["images"].flatten(0, 1), batch["mel"].flatten(0, 1))  # (G K, D) each
    with torch.autocast(device_type=vision.device.type, enabled=False):
        vision = torch.nn.functional.normalize(vision.float(), dim=1).reshape(groups, size, -1)
        audio = torch.nn.functional.normalize(audio.float(), dim=1).reshape(groups, size, -1)
        sims = torch.einsum("gid,gjd->gij", vision, audio).clamp(0.0, 1.0)  # (G, K, K) video i x audio j
        labels, usable = group_pair_labels(batch["starts"], min_offset)
        positive, negative = labels, (usable & ~labels.bool()).float()
        loss = _balanced_group_mean(pair_loss(sims, labels, logit_scale), positive, negative)
        accuracy = _balanced_group_mean(((sims > 0.5).float() == labels).float(), positive, negative)
    return {"loss": loss, "accuracy": accuracy.detach()}


def _balanced_group_mean(values: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean over groups of (mean over positives + mean over negatives) / 2; all (G, K, K), masks as 0/1 floats.
    A group without a usable negative (a clip too short to spread its windows) counts its positives only."""
    positive_mean = (values * positive).sum((1, 2)) / positive.sum((1, 2))
    negatives = negative.sum((1, 2))
    negative_mean = (values * negative).sum((1, 2)) / negatives.clamp(min=1)
    per_group = torch.where(negatives > 0, 0.5 * (positive_mean + negative_mean), positive_mean)
    return per_group.mean()


def evaluate_pairs(model, dataset, keys, batch_size: int, device: torch.device,
                   logit_scale: float | None = None) -> dict[str, Any]:
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
        losses.append(cosine_loss(vision, audio, label, reduction="none", logit_scale=logit_scale).cpu())
    sim, label = torch.cat(sims), torch.cat(labels)
    return {"similarity": sim, "label": label, "loss": float(torch.cat(losses).mean()),
            "accuracy": float(((sim > 0.5) == label.bool()).float().mean())}


@dataclass
class LoadedSyncNet:
    model: Any
    image_size: int
    source: Path
    run_config: Any | None  # the TrainSyncNetConfig of the run, when known


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive outscores a random negative (ties 1/2),
    computed from ranks (Mann-Whitney U)."""
    from scipy.stats import rankdata

    positives = labels.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ----------------------------------------------------------------------------------------------- a trained one
def load_syncnet(source: str | Path, device: torch.device, image_size: int | None = None,
                 geometry: str = "syncnet_16_pixel_attn") -> LoadedSyncNet:
    """A StableSyncNet in eval mode from a run directory, a checkpoint directory or a weights file.

    ``geometry`` names the towers of a bare weights file (``stable_syncnet.pt``); ``image_size`` overrides the
    face size (default: the run's, else the first of :data:`CANDIDATE_IMAGE_SIZES` the geometry fits).
    """
    from lsync.checkpoints import WEIGHTS_NAME, load_model_config, load_model_weights
    from lsync.models.syncnet import StableSyncNet
    from lsync.training.checkpointing import latest_checkpoint

    path = Path(source)
    if not path.exists():
        raise InputError(f"{path} does not exist", "pass a run directory, a checkpoint directory or a weights file")
    run_config = None
    if path.is_dir() and (path / CONFIG_FILE).is_file():  # a run directory
        run_config = config_from_dict(TrainSyncNetConfig, load_yaml(path / CONFIG_FILE), str(path / CONFIG_FILE))
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise InputError(f"run {path} has no checkpoint yet", "train it first (lsync train syncnet)")
        path = checkpoint
    elif path.is_dir() and (path.parent.parent / CONFIG_FILE).is_file():  # runs/x/checkpoints/step-N
        parent = path.parent.parent / CONFIG_FILE
        run_config = config_from_dict(TrainSyncNetConfig, load_yaml(parent), str(parent))
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            raise InputError(f"{path} holds no {WEIGHTS_NAME}", "pass a run or checkpoint directory of lsync")
        towers = load_model_config(path)
        model = load_model_weights(StableSyncNet(towers), path)
    else:
        towers = model_config(SyncNetModelSection(geometry=geometry))
        model = StableSyncNet(towers)
        load_init_weights(model, path)
    image_size = image_size or (run_config.model.image_size if run_config else _find_image_size(towers))
    return LoadedSyncNet(model.to(device).eval(), image_size, path, run_config)


def _find_image_size(towers: dict[str, Any]) -> int:
    for size in CANDIDATE_IMAGE_SIZES:
        try:
            check_geometry(towers, size)
        except ConfigError:
            continue
        return size
    raise ConfigError("cannot tell which face size this SyncNet takes", "pass --image-size")
