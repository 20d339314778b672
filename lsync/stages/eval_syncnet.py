"""``lsync eval syncnet RUN_OR_CKPT data/``: how well a SyncNet tells sync from not.

Three numbers on one split of a data directory:

* **accuracy** - ``(cos > 0.5) == label`` over a fixed, balanced set of positive and negative pairs (the pairs the
  trainer validates on, drawn with the run's data settings);
* **roc_auc** - the area under the ROC curve of the cosine similarity on the same pairs (threshold-free);
* **offset_accuracy** - for video windows every ``offset_stride`` frames, the audio offset in
  ``[-max_offset, +max_offset]`` frames with the highest similarity is found; the share where it is 0 (the
  true offset). ``offset_accuracy_within_1`` allows one frame of error; ``mean_abs_offset`` is the mean error.

The model comes from a run directory (its latest checkpoint), a checkpoint directory (``model.safetensors`` +
``config.json``) or a weights file such as the released ``stable_syncnet.pt`` (``geometry`` names its towers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsync.config import config_from_dict, load_yaml
from lsync.console import get_logger, progress
from lsync.errors import InputError
from lsync.manifest import atomic_write_json

log = get_logger(__name__)

#: Face sizes tried when neither the run nor the user says which one a checkpoint's geometry takes.
CANDIDATE_IMAGE_SIZES = (256, 64, 128, 512, 32)


@dataclass
class EvalSyncNetConfig:
    split: str = "val"
    batch_size: int = 64
    pairs: int = 2048  # balanced (positive, negative) pairs for accuracy and ROC AUC
    max_offset: int = 15  # frames searched on each side for the offset accuracy
    offset_stride: int = 4  # frames between the video windows of the offset search
    min_offset: int | None = None  # negatives' minimum shift (default: the run's, else 5)
    seed: int = 0
    image_size: int | None = None  # face size (default: the run's config, else found from the geometry)
    geometry: str = "syncnet_16_pixel_attn"  # towers of a bare weights file (stable_syncnet.pt)
    cpu: bool = False


@dataclass
class LoadedSyncNet:
    model: Any
    image_size: int
    source: Path
    run_config: Any | None  # the TrainSyncNetConfig of the run, when known


# ----------------------------------------------------------------------------------------------- the model
def load_for_eval(source: str | Path, config: EvalSyncNetConfig, device: torch.device) -> LoadedSyncNet:
    """A StableSyncNet in eval mode from a run directory, a checkpoint directory or a weights file."""
    from lsync.checkpoints import WEIGHTS_NAME, load_model_config, load_model_weights
    from lsync.models.syncnet import StableSyncNet
    from lsync.stages.train_syncnet import (
        CONFIG_FILE, SyncNetModelSection, TrainSyncNetConfig, load_init_weights, model_config)
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
        towers = model_config(SyncNetModelSection(geometry=config.geometry))
        model = StableSyncNet(towers)
        load_init_weights(model, path)
    image_size = config.image_size or (run_config.model.image_size if run_config else _find_image_size(towers))
    return LoadedSyncNet(model.to(device).eval(), image_size, path, run_config)


def _find_image_size(towers: dict[str, Any]) -> int:
    from lsync.errors import ConfigError
    from lsync.stages.train_syncnet import check_geometry

    for size in CANDIDATE_IMAGE_SIZES:
        try:
            check_geometry(towers, size)
        except ConfigError:
            continue
        return size
    raise ConfigError("cannot tell which face size this SyncNet takes", "pass --image-size")


# ----------------------------------------------------------------------------------------------- metrics
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


@torch.no_grad()
def offset_errors(model, dataset, max_offset: int, stride: int, batch_size: int, device: torch.device) -> list[int]:
    """Per video window, the offset (frames) of the best-matching audio window minus the true one (0)."""
    errors = []
    offsets = np.arange(-max_offset, max_offset + 1)
    with progress(transient=True) as bar:
        task = bar.add_task("offsets", total=len(dataset.usable_clips), unit="clips")
        for clip in dataset.usable_clips:
            last = int(dataset.max_starts[clip])
            starts = list(range(max_offset, last - max_offset + 1, stride))
            if starts:
                audio = _embed(lambda s: dataset.mel(clip, s), model.embed_audio, range(last + 1), batch_size, device)
                vision = _embed(lambda s: dataset.images(clip, s), model.embed_images, starts, batch_size, device)
                for row, start in enumerate(starts):
                    sims = audio[start + offsets] @ vision[row]
                    errors.append(int(offsets[int(torch.argmax(sims))]))
            bar.advance(task)
    return errors


def _embed(make_input, embed, starts, batch_size: int, device: torch.device) -> torch.Tensor:
    starts = list(starts)
    out = []
    for first in range(0, len(starts), batch_size):
        batch = torch.stack([make_input(s) for s in starts[first:first + batch_size]]).to(device)
        out.append(embed(batch).float().cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------------------------- the stage
def evaluate(source: str | Path, data_dir: str | Path, config: EvalSyncNetConfig,
             out: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a SyncNet on ``config.split`` of ``data_dir``; writes the JSON to ``out`` (default: beside the
    model, ``eval-syncnet-<split>.json``) and returns it."""
    from lsync.data.syncnet_dataset import SyncNetDataset, evaluation_keys, load_clips, read_clip_records
    from lsync.stages.train_syncnet import NUM_FRAMES, evaluate_pairs

    device = torch.device("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
    records = read_clip_records(data_dir, config.split)
    loaded = load_for_eval(source, config, device)
    data_section = loaded.run_config.data if loaded.run_config else None
    cache_root = data_section.cache_dir if data_section else None
    clips = load_clips(data_dir, records, loaded.image_size, cache_root)
    min_offset = config.min_offset or (data_section.min_offset if data_section else 5)
    other = data_section.other_clip_negatives if data_section else 0.5
    dataset = SyncNetDataset(clips, config.seed, num_frames=NUM_FRAMES, min_offset=min_offset,
                             other_clip_negatives=other, positive_fraction=0.5)
    keys = evaluation_keys(dataset, config.pairs)
    with torch.no_grad():
        pairs = evaluate_pairs(loaded.model, dataset, keys, config.batch_size, device)
    errors = np.array(offset_errors(loaded.model, dataset, config.max_offset, config.offset_stride,
                                    config.batch_size, device))
    result = {
        "model": str(loaded.source),
        "data": str(Path(data_dir).resolve()),
        "split": config.split,
        "clips": len(clips),
        "pairs": len(keys),
        "accuracy": pairs["accuracy"],
        "loss": pairs["loss"],
        "roc_auc": roc_auc(pairs["similarity"].numpy(), pairs["label"].numpy()),
        "offset_windows": int(errors.size),
        "offset_accuracy": float((errors == 0).mean()) if errors.size else None,
        "offset_accuracy_within_1": float((np.abs(errors) <= 1).mean()) if errors.size else None,
        "mean_abs_offset": float(np.abs(errors).mean()) if errors.size else None,
        "max_offset": config.max_offset,
        "image_size": loaded.image_size,
    }
    target = Path(out) if out is not None else _default_out(loaded.source, config.split)
    atomic_write_json(target, result)
    result["written_to"] = str(target)
    return result


def _default_out(model_source: Path, split: str) -> Path:
    folder = model_source if model_source.is_dir() else model_source.parent
    if folder.parent.name == "checkpoints":  # runs/x/checkpoints/step-N -> runs/x
        folder = folder.parent.parent
    return folder / f"eval-syncnet-{split}.json"
