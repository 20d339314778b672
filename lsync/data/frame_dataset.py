"""Single aligned face frames of a data directory, for training the image autoencoder (``lsync train vae``).

Item ``index`` is frame ``index % num_frames`` of the concatenated frames of every clip (clips in record order,
``frame_stride`` apart), so a :class:`lsync.training.sampling.SampleKey` names one frame whatever the number of
processes or workers. Frames come from the same content-addressed cache the U-Net dataset fills
(``<cache>/frames/<mp4 sha256>-<R>px-v1.npy``, :class:`lsync.data.unet_dataset.UNetDataCache`): each clip is
decoded once at the training resolution, then memory-mapped, and the U-Net trained next finds it already there.

A sample::

    pixels  (3, R, R)  float32 in [-1, 1], (x / 255 - 0.5) / 0.5 like every other lsync model input
    mask    (1, R, R)  the mouth mask (1 = keep, 0 = the region the U-Net repaints)
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lsync.console import progress
from lsync.data.mask_batch import mask_tensor
from lsync.data.unet_dataset import UNetDataCache, load_clips
from lsync.errors import InputError
from lsync.manifest import file_digest


class FrameDataset(Dataset):
    """Aligned frames of the clips of one split of a data directory.

    Args:
        data_dir: output of ``lsync preprocess`` (kind ``data``).
        resolution: face size the frames are decoded at.
        split: ``"train"``, ``"val"`` or None (all clips).
        cache_dir: the derived-data cache (default ``<data_dir>/cache``).
        frame_stride: keep every n-th frame of a clip (neighbouring frames are nearly identical).
        max_clips: only the first n clips (validation sets).
    """

    def __init__(self, data_dir: str | os.PathLike, resolution: int, split: str | None = "train",
                 cache_dir: str | os.PathLike | None = None, frame_stride: int = 1, max_clips: int | None = None):
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
        self.data_dir = Path(data_dir)
        self.resolution = int(resolution)
        self.frame_stride = frame_stride
        self.cache = UNetDataCache(cache_dir if cache_dir is not None else self.data_dir / "cache")
        self.records = load_clips(self.data_dir, split)[:max_clips]
        if not self.records:
            raise InputError(f"{self.data_dir} has no clips" + (f" in split '{split}'" if split else ""),
                             "preprocess more videos into it")
        self.mask = mask_tensor(self.resolution)
        self._frames: list[np.ndarray] | None = None
        self._index: np.ndarray | None = None  # (N, 2): clip, frame

    def prepare(self, show_progress: bool = True) -> None:
        """Decode every clip into the cache (once) and memory-map them; called before the first item."""
        frames = []
        with progress() if show_progress else contextlib.nullcontext() as bar:
            task = bar.add_task("cache frames", total=len(self.records), unit="clips") if bar else None
            for record in self.records:
                video = self.data_dir / record["video"]
                frames.append(self.cache.load_frames(video, file_digest(video), self.resolution,
                                                     int(record["num_frames"])))
                if bar:
                    bar.update(task, advance=1)
        self._frames = frames
        self._index = np.array([(c, f) for c, clip in enumerate(frames)
                                for f in range(0, len(clip), self.frame_stride)], dtype=np.int64)

    def _ready(self) -> None:
        if self._frames is None:
            self.prepare(show_progress=False)

    def __len__(self) -> int:
        self._ready()
        return len(self._index)

    def frame(self, index: int) -> np.ndarray:
        """uint8 (R, R, 3) of item ``index``."""
        self._ready()
        clip, frame = self._index[index % len(self._index)]
        return np.asarray(self._frames[clip][frame])

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        index = int(key.index) if hasattr(key, "index") else int(key)
        pixels = torch.from_numpy(self.frame(index).transpose(2, 0, 1).astype(np.float32)) / 127.5 - 1.0
        return {"pixels": pixels, "mask": self.mask}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_frames"], state["_index"] = None, None  # workers memory-map the cache themselves
        return state
