"""SyncNet training samples: 16 frames of the mouth half of the aligned face + a 52-column mel window.

A sample is a video window of ``num_frames`` frames starting at frame ``s`` of a clip, packed as the SyncNet input
(``(3 * num_frames, S/2, S)`` with channel ``3 f + c``, the lower half of the face resized to ``S x S``, in
``[-1, 1]``), and an audio window ``(1, 80, 52)`` of the Wav2Lip mel starting at column ``int(80 * a / 25)``:

* positive (label 1): the window's own audio, ``a = s`` in the same clip;
* negative (label 0): audio shifted by at least ``min_offset`` frames within the same clip, or (a share
  ``other_clip_negatives`` of the negatives) audio of another clip.

The items of an epoch are all ``(clip, s)`` windows (every ``window_stride`` frames); the label and the negative
are drawn from ``sample_rng(seed, epoch, position)``, so the dataset is a pure function of the
:class:`~lsync.training.sampling.SampleKey` it is asked for.

:class:`SyncNetGroupDataset` serves the same windows in groups of ``group_size`` from one clip, each with its own
audio: a training step then scores every video window against every audio window of its group (one positive per
window, the same-clip shifts as negatives), so one forward pass of ``G K`` windows supervises ``G K`` positives and
up to ``G K (K - 1)`` negatives instead of ``G K`` pairs.

Clips come from a data directory (``lsync preprocess``); each clip is decoded once into a
:class:`~lsync.data.cache.FeatureCache` entry (uint8 frames at the model's size, float32 mel).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lsync.audio.timing import mel_start_index, mel_window_length
from lsync.console import get_logger, progress
from lsync.data.cache import FeatureCache, clip_content_digest
from lsync.errors import InputError
from lsync.manifest import read_manifest, read_records
from lsync.training.sampling import SampleKey
from lsync.training.seeding import sample_rng

log = get_logger(__name__)

NUM_MEL_BANDS = 80
CACHE_ARRAYS = ("frames", "mel")


@dataclass
class ClipFeatures:
    """One clip, decoded: ``frames`` (T, S/2, S, 3) uint8 (the lower half of the face), ``mel`` (80, M) float32."""

    id: str
    frames: np.ndarray
    mel: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def max_start(self, window: int) -> int:
        """Last start frame whose video *and* mel windows are whole (-1 when the clip is too short)."""
        mel_length = mel_window_length(window)
        last = self.num_frames - window
        while last >= 0 and mel_start_index(last) + mel_length > self.mel.shape[1]:
            last -= 1
        return last


# ----------------------------------------------------------------------------------------------- data directory
def read_clip_records(data_dir: str | Path, split: str | None) -> list[dict[str, Any]]:
    """Clip records of a ``data`` directory, of one split (``None``: all); refuses wrong or empty directories."""
    root = Path(data_dir)
    read_manifest(root, kind="data")
    records = read_records(root / "clips.jsonl")
    if not records:
        raise InputError(f"{root} holds no clips", "preprocess some videos into it first (lsync preprocess)")
    if split is None:
        return records
    chosen = [r for r in records if r.get("split") == split]
    if not chosen:
        splits = sorted({str(r.get("split")) for r in records})
        raise InputError(f"{root} has no clips in the '{split}' split (it has: {', '.join(splits)})",
                         "preprocess with a val_fraction that gives this split some sources")
    return chosen


def decode_clip(data_dir: Path, record: dict[str, Any], image_size: int) -> dict[str, np.ndarray]:
    """Decode a clip for SyncNet: the face resized to ``image_size`` (area filter), its lower half kept as uint8,
    and the Wav2Lip mel of its audio."""
    from lsync.audio.mel import load_wav_16k_mono, melspectrogram
    from lsync.media.video import VideoReader

    reader = VideoReader(data_dir / record["video"], fps=None, size=(image_size, image_size), scale_flags="area")
    frames = np.stack([frame[image_size // 2:] for frame in reader])
    mel = melspectrogram(load_wav_16k_mono(data_dir / record["audio"])).astype(np.float32)
    return {"frames": frames, "mel": mel}


def default_cache_root(data_dir: Path) -> Path:
    """``<data>/cache`` when the data directory is writable, else ``~/.cache/lsync/features``."""
    candidate = Path(data_dir) / "cache"
    if os.access(data_dir, os.W_OK):
        return candidate
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lsync" / "features"


def load_clips(data_dir: str | Path, records: Sequence[dict[str, Any]], image_size: int,
               cache_root: str | Path | None = None, show_progress: bool = True) -> list[ClipFeatures]:
    """Every clip's features from the cache, decoding (once) the clips it lacks."""
    root = Path(data_dir)
    cache = FeatureCache(cache_root or default_cache_root(root), f"syncnet-{image_size}")
    clips = []
    keys = [(r, clip_content_digest([root / r["video"], root / r["audio"]])) for r in records]
    missing = sum(not cache.has(r["id"], digest, CACHE_ARRAYS) for r, digest in keys)
    with progress(transient=True) as bar:
        task = bar.add_task("decode clips", total=missing, unit="clips", visible=show_progress and missing > 0)
        for record, digest in keys:
            def build(record=record):
                arrays = decode_clip(root, record, image_size)
                bar.advance(task)
                return arrays

            arrays = cache.get_or_build(record["id"], digest, CACHE_ARRAYS, build)
            clips.append(ClipFeatures(record["id"], arrays["frames"], arrays["mel"]))
    return clips


# ----------------------------------------------------------------------------------------------- the dataset
@dataclass(frozen=True)
class SamplePlan:
    """Where a sample's frames and audio come from."""

    video_clip: int
    video_start: int
    audio_clip: int
    audio_start: int
    label: int  # 1 in sync, 0 not


class SyncNetDataset(Dataset):
    """Positive and negative (frames, mel) pairs over a list of clips; indexed by :class:`SampleKey`.

    Args:
        clips: decoded clips (all must have the same frame size).
        seed: run seed (with the key's epoch and position it fixes every random choice).
        num_frames: frames per window (16 for every released geometry).
        min_offset: a same-clip negative's audio starts at least this many frames away from the video's.
        other_clip_negatives: share of negatives that take their audio from another clip.
        positive_fraction: share of positives.
        window_stride: frames between the start frames of an epoch's items.

    Items: ``{"images": (3F, S/2, S) float32 in [-1, 1], "mel": (1, 80, 52) float32, "label": () float32}``.
    """

    def __init__(self, clips: Sequence[ClipFeatures], seed: int, num_frames: int = 16, min_offset: int = 5,
                 other_clip_negatives: float = 0.5, positive_fraction: float = 0.5, window_stride: int = 1):
        self.clips = list(clips)
        self.seed = seed
        self.num_frames = num_frames
        if min_offset < 1:
            raise InputError(f"min_offset must be at least 1 frame, got {min_offset}", "use --min-offset 1 or more")
        self.min_offset = min_offset
        self.other_clip_negatives = other_clip_negatives
        self.positive_fraction = positive_fraction
        self.max_starts = np.array([clip.max_start(num_frames) for clip in self.clips])
        usable = [i for i, m in enumerate(self.max_starts) if m >= 0]
        if not usable:
            raise InputError(f"no clip has the {num_frames} frames a SyncNet window needs",
                             "preprocess longer clips")
        if len(usable) < len(self.clips):
            log.warning("%d clip(s) shorter than %d frames are skipped", len(self.clips) - len(usable), num_frames)
        self.usable_clips = np.array(usable)
        self.items = np.array([(c, s) for c in usable for s in range(0, self.max_starts[c] + 1, window_stride)],
                              dtype=np.int64)

    def __len__(self) -> int:
        return len(self.items)

    # ------------------------------------------------------------------------------------------- planning
    def plan(self, key: SampleKey | int) -> SamplePlan:
        """The sample's sources: a pure function of ``(seed, key.epoch, key.position, key.index)``."""
        key, clip, start, rng = self._item(key)
        if rng.random() < self.positive_fraction:
            return SamplePlan(clip, start, clip, start, 1)
        far_starts = self._shifted_starts(clip, start)
        others = self.usable_clips[self.usable_clips != clip]
        use_other = len(others) > 0 and (rng.random() < self.other_clip_negatives or len(far_starts) == 0)
        if use_other:
            other = int(others[rng.integers(len(others))])
            return SamplePlan(clip, start, other, int(rng.integers(self.max_starts[other] + 1)), 0)
        if len(far_starts) == 0:
            raise InputError(f"clip {self.clips[clip].id} is too short for negatives {self.min_offset} frames away "
                             "and there is no other clip", "use a smaller --min-offset or more clips")
        return SamplePlan(clip, start, clip, int(far_starts[rng.integers(len(far_starts))]), 0)

    def _item(self, key: SampleKey | int) -> tuple[SampleKey, int, int, np.random.Generator]:
        """The key (a bare index is epoch 0, position = index), its window ``(clip, start)`` and its generator."""
        if not isinstance(key, SampleKey):
            key = SampleKey(0, int(key), int(key))
        clip, start = (int(v) for v in self.items[key.index])
        return key, clip, start, sample_rng(self.seed, key.epoch, key.position)

    def _shifted_starts(self, clip: int, start: int) -> np.ndarray:
        starts = np.arange(self.max_starts[clip] + 1)
        return starts[np.abs(starts - start) >= self.min_offset]

    # ------------------------------------------------------------------------------------------- tensors
    def images(self, clip: int, start: int) -> torch.Tensor:
        """(3F, S/2, S) float32 in [-1, 1], channel ``3 f + c`` (the order of ``pack_frames_for_syncnet``)."""
        frames = np.asarray(self.clips[clip].frames[start:start + self.num_frames])  # (F, S/2, S, 3)
        packed = torch.from_numpy(frames.transpose(0, 3, 1, 2).copy())  # (F, 3, S/2, S)
        packed = packed.reshape(-1, *packed.shape[2:])
        return packed.float().div_(127.5).sub_(1.0)

    def mel(self, clip: int, start: int) -> torch.Tensor:
        """(1, 80, 52) float32: mel columns ``int(80 s / 25)`` onwards."""
        first = mel_start_index(start)
        window = np.asarray(self.clips[clip].mel[:, first:first + mel_window_length(self.num_frames)])
        return torch.from_numpy(window.copy())[None]

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor]:
        plan = self.plan(key)
        return {
            "images": self.images(plan.video_clip, plan.video_start),
            "mel": self.mel(plan.audio_clip, plan.audio_start),
            "label": torch.tensor(float(plan.label)),
        }


class SyncNetGroupDataset(SyncNetDataset):
    """Groups of ``group_size`` windows of one clip, each with its own audio, for in-group negatives.

    Item ``(clip, s)`` is the group of window ``s`` and ``group_size - 1`` other start frames of the same clip,
    drawn without replacement from ``sample_rng(seed, epoch, position)`` and preferring starts at least
    ``min_offset`` frames from every start already chosen (so that most of the group's cross pairs are usable
    negatives). Labels are not drawn: :func:`lsync.training.syncnet_recipe.group_pair_labels` derives them from
    the starts.

    Items: ``{"images": (K, 3F, S/2, S), "mel": (K, 1, 80, 52), "starts": (K,) int64}``.
    """

    def __init__(self, clips: Sequence[ClipFeatures], seed: int, group_size: int, num_frames: int = 16,
                 min_offset: int = 5, window_stride: int = 1):
        super().__init__(clips, seed, num_frames=num_frames, min_offset=min_offset, other_clip_negatives=0.0,
                         window_stride=window_stride)
        if group_size < 2:
            raise InputError(f"data.group_size must be at least 2 windows, got {group_size}",
                             "use --set data.group_size=8, or 1 for single pairs")
        self.group_size = group_size
        short = [self.clips[c].id for c in self.usable_clips if self.max_starts[c] + 1 < group_size]
        if short:
            raise InputError(f"clip {short[0]} has fewer than {group_size} windows for a group",
                             "use a smaller data.group_size or longer clips")

    def group_starts(self, key: SampleKey | int) -> tuple[int, np.ndarray]:
        """(clip, the group's K start frames): the item's own start first, then the drawn ones."""
        _, clip, start, rng = self._item(key)
        others = [int(c) for c in rng.permutation(self.max_starts[clip] + 1) if c != start]
        chosen = [start]
        # first pass: starts far from all chosen ones; then fill up with the rest (short clips)
        for candidate in others:
            if len(chosen) < self.group_size and all(abs(candidate - c) >= self.min_offset for c in chosen):
                chosen.append(candidate)
        for candidate in others:
            if len(chosen) < self.group_size and candidate not in chosen:
                chosen.append(candidate)
        return clip, np.array(chosen, dtype=np.int64)

    def __getitem__(self, key: SampleKey | int) -> dict[str, torch.Tensor]:
        clip, starts = self.group_starts(key)
        return {
            "images": torch.stack([self.images(clip, int(s)) for s in starts]),
            "mel": torch.stack([self.mel(clip, int(s)) for s in starts]),
            "starts": torch.from_numpy(starts),
        }


def evaluation_keys(dataset: SyncNetDataset, max_samples: int) -> list[SampleKey]:
    """A fixed set of keys spread evenly over the windows, for validation: the same samples every time."""
    count = min(max_samples, len(dataset))
    items = np.linspace(0, len(dataset) - 1, count).round().astype(np.int64) if count else []
    return [SampleKey(epoch=0, position=i, index=int(item)) for i, item in enumerate(items)]
