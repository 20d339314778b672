"""Training samples for the U-Net, drawn from a preprocessed data directory (``lsync preprocess``).

A sample is one 16-frame window of one clip, with everything the trainer needs::

    frames          (3, F, R, R)   ground-truth aligned faces, float32 in [-1, 1]
    ref_frames      (3, F, R, R)   another F-frame window of the same clip that does not overlap ``frames``
    masked_frames   (3, F, R, R)   frames * mask (mouth region zeroed)
    mask            (1, R, R)      the fixed mouth mask, 1 = keep, 0 = repaint
    mel             (1, 80, 52)    Wav2Lip mel window of the frames (SyncNet loss)
    audio_features  (F, P (L+1), D)  per-frame Whisper tokens of the frames, P = 2 (left + right + 1) positions of
                    the U-Net's ``audio_feat_length`` ((16, 50, 384) for whisper-tiny and the reference's (2, 2))
    clip_index, start_frame, ref_start_frame, sample_index (ints), clip_id (str)
    epoch, position (ints)  the key's place in the epoch order: the trainer seeds the sample's noise from them

**Deterministic sampling.** A sample depends only on its key: item ``index`` always maps to clip
``index % num_clips``, and ``numpy.random.default_rng([seed, epoch, position])`` draws its windows. Keys are the
``SampleKey(epoch, position, index)`` of :class:`lsync.training.sampling.EpochBatchSampler` (the SyncNet
dataset's scheme: exact mid-epoch resume, any number of ranks and workers), or plain ints ``i`` meaning
``(epoch set by`` :meth:`UNetDataset.set_epoch` ``, i, i)``. The reference instead ignores the index and draws
a random clip.

**Windows.** The ground-truth window starts at least ``edge_margin`` frames (default 2) from both ends of the
clip, so its Whisper chunks (positions ``2i-4 .. 2i+5`` for the reference's ``audio_feat_length`` (2, 2); a
margin of ``max(left, right)`` frames suffices for any context) never need clamping, and its 52-column mel window
is complete. The reference window is drawn among all windows of the clip that do not overlap it (the reference's
rule; it may touch the clip ends). A clip with no such pair (fewer than 2 x 16 + ``edge_margin`` frames) is
skipped and counted in the log, unless ``allow_overlap=True``, which lets the reference window be any window of
the clip (then 16 + 2 x ``edge_margin`` frames suffice).

**Caches** (content-addressed, under ``cache_dir``, default ``<data_dir>/cache``; never keyed by file name, so two
clips with the same name never share data and an edited file is recomputed):

* ``whisper/<sha256(wav digest, encoder identity)>.safetensors`` - the Whisper features ``(T50, L+1, D)`` of the
  whole clip wav (computed once per clip with the given :class:`~lsync.audio.whisper.WhisperFeatureExtractor`);
  the encoder identity hashes its dims, windowing and every weight, so another checkpoint never reuses them. A
  sample reads only the positions of its window (safetensors slices), so one cache serves every audio context.
* ``mel/<wav sha256>.npy`` - the Wav2Lip mel ``(80, T)`` of the whole clip wav, float32.
* ``frames/<mp4 sha256>-<R>px.npy`` (``frame_cache="disk"``, the default) - the clip decoded once at the
  training resolution, uint8 ``(N, R, R, 3)``; samples memory-map it and copy two windows, so a sample costs no
  video decoding. It takes ``N x R x R x 3`` bytes per clip (49 MB for 10 s at 256 px, about 10x the mp4).
  ``frame_cache="memory"`` keeps the last ``memory_clips`` decoded clips in RAM per worker instead (small data
  sets); ``"none"`` decodes the two windows with ffmpeg for every sample (no space, slowest).

Call :meth:`UNetDataset.prepare` once before training (main process): it hashes the files and fills every cache
with a progress bar, so data-loader workers only read. Workers started with ``spawn`` do not receive the Whisper
encoder (it is not pickled) and therefore need the prepared cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lsync.audio.timing import (
    SAMPLES_PER_FRAME,
    DEFAULT_AUDIO_FEAT_LENGTH,
    SYNCNET_NUM_FRAMES,
    audio_context,
    mel_start_index,
    mel_window_length,
    num_wav2lip_mel_frames,
)
from lsync.console import get_logger, progress
from lsync.data.mask_batch import apply_mask, mask_tensor
from lsync.errors import InputError
from lsync.manifest import atomic_output, file_digest, read_manifest, read_records

log = get_logger(__name__)

FrameCache = Literal["disk", "memory", "none"]
#: Part of every cache key: bump it when what a cache file holds changes, so old files are ignored.
CACHE_VERSION = 1
#: Frames kept between the ground-truth window and the clip ends so its Whisper chunks are never clamped.
DEFAULT_EDGE_MARGIN = 2
CLIPS_FILE = "clips.jsonl"


# ============================================================================================ clips and windows
@dataclass(frozen=True)
class ClipInfo:
    """One usable clip of the data directory."""

    id: str
    video: Path
    audio: Path
    num_frames: int
    num_samples: int


@dataclass(frozen=True)
class SamplePlan:
    """What a key reads: item ``sample_index`` (which fixes the clip) drawn at ``position`` of ``epoch``, and the
    two window starts (frames) that draw picked."""

    epoch: int
    position: int
    sample_index: int
    clip_index: int
    start_frame: int
    ref_start_frame: int


def gt_window_starts(num_frames: int, num_samples: int, window: int = SYNCNET_NUM_FRAMES,
                     edge_margin: int = DEFAULT_EDGE_MARGIN) -> np.ndarray:
    """Start frames a ground-truth window may take: ``edge_margin`` frames from both ends of the clip, and a
    complete mel window (``mel_window_length(window)`` columns of the clip's ``num_samples`` samples)."""
    starts = np.arange(edge_margin, num_frames - window - edge_margin + 1)
    mel_columns = num_wav2lip_mel_frames(num_samples)
    full_mel = np.array([mel_start_index(int(s)) + mel_window_length(window) <= mel_columns for s in starts],
                        dtype=bool)
    return starts[full_mel] if starts.size else starts


def reference_window_starts(num_frames: int, gt_start: int, window: int = SYNCNET_NUM_FRAMES,
                            allow_overlap: bool = False) -> np.ndarray:
    """Start frames of the reference window: every window of the clip that shares no frame with
    ``[gt_start, gt_start + window)`` (or every window at all with ``allow_overlap``)."""
    starts = np.arange(0, num_frames - window + 1)
    if allow_overlap:
        return starts
    return starts[np.abs(starts - gt_start) >= window]


def _pairable_gt_starts(clip: ClipInfo, window: int, edge_margin: int, allow_overlap: bool) -> np.ndarray:
    """Ground-truth starts that have at least one reference window."""
    starts = gt_window_starts(clip.num_frames, clip.num_samples, window, edge_margin)
    if allow_overlap:
        return starts
    last = clip.num_frames - window
    # Non-overlapping windows before s: starts 0 .. s - window; after: s + window .. last.
    before = np.maximum(starts - window + 1, 0)
    after = np.maximum(last - (starts + window) + 1, 0)
    return starts[(before + after) > 0]


def load_clips(data_dir: str | os.PathLike, split: str | None = "train") -> list[dict[str, Any]]:
    """The ``clips.jsonl`` records of a complete data directory, optionally of one split."""
    root = Path(data_dir)
    read_manifest(root, kind="data")
    records = read_records(root / CLIPS_FILE)
    if split is not None:
        records = [r for r in records if r.get("split") == split]
    return records


# ============================================================================================ the cache
def encoder_identity(extractor: Any) -> str:
    """``sha256:<hex>`` naming what a :class:`~lsync.audio.whisper.WhisperFeatureExtractor` computes: the encoder
    (:func:`~lsync.audio.whisper.encoder_digest`: dims and weights), the windowing and its margin."""
    from lsync.audio.whisper import encoder_digest

    setup = {"encoder": encoder_digest(extractor.encoder), "windowing": extractor.windowing,
             "margin": extractor.margin, "cache_version": CACHE_VERSION}
    return f"sha256:{hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()}"


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


class UNetDataCache:
    """Content-addressed files the U-Net dataset derives from clips (see the module docstring for the layout).

    Every ``*_path`` method names a file from content digests only; every ``load_*`` method returns the cached
    data, computing and writing it (atomically, so concurrent workers are safe) on a miss. ``hits`` and
    ``misses`` count lookups per kind (``frames``, ``mel``, ``whisper``) in this process.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    # -------------------------------------------------------------------------------------------- names
    def frames_path(self, video_digest: str, resolution: int) -> Path:
        return self.root / "frames" / f"{_hex(video_digest)}-{resolution}px-v{CACHE_VERSION}.npy"

    def mel_path(self, audio_digest: str) -> Path:
        return self.root / "mel" / f"{_hex(audio_digest)}-v{CACHE_VERSION}.npy"

    def whisper_path(self, audio_digest: str, encoder_id: str) -> Path:
        key = hashlib.sha256(f"{audio_digest}|{encoder_id}|{CACHE_VERSION}".encode()).hexdigest()
        return self.root / "whisper" / f"{key}.safetensors"

    def _lookup(self, kind: str, path: Path) -> bool:
        found = path.is_file()
        (self.hits if found else self.misses)[kind] += 1
        return found

    # -------------------------------------------------------------------------------------------- frames
    def load_frames(self, video: Path, video_digest: str, resolution: int, num_frames: int) -> np.ndarray:
        """The clip decoded at ``resolution``: a read-only memory map, uint8 (num_frames, R, R, 3)."""
        path = self.frames_path(video_digest, resolution)
        if not self._lookup("frames", path):
            frames = decode_clip(video, resolution, num_frames)
            with atomic_output(path) as tmp, open(tmp, "wb") as f:
                np.save(f, frames)
        frames = np.load(path, mmap_mode="r")
        if frames.shape[0] < num_frames or frames.shape[1:] != (resolution, resolution, 3):
            raise InputError(f"cached frames {path} have shape {frames.shape}, expected ({num_frames}, "
                             f"{resolution}, {resolution}, 3)", "delete the file; it is recomputed")
        return frames

    # -------------------------------------------------------------------------------------------- mel
    def load_mel(self, audio: Path, audio_digest: str) -> np.ndarray:
        """The Wav2Lip mel of the whole clip wav, float32 (80, 1 + num_samples // 200), memory-mapped."""
        from lsync.audio.mel import load_wav_16k_mono, melspectrogram

        path = self.mel_path(audio_digest)
        if not self._lookup("mel", path):
            mel = melspectrogram(load_wav_16k_mono(audio)).astype(np.float32)
            with atomic_output(path) as tmp, open(tmp, "wb") as f:
                np.save(f, mel)
        return np.load(path, mmap_mode="r")

    # -------------------------------------------------------------------------------------------- whisper
    def ensure_whisper(self, audio: Path, audio_digest: str, extractor: Any | None, encoder_id: str) -> Path:
        """Path of the Whisper features of the clip wav, computing them with ``extractor`` on a miss."""
        from safetensors.torch import save_file

        from lsync.audio.mel import load_wav_16k_mono

        path = self.whisper_path(audio_digest, encoder_id)
        if not self._lookup("whisper", path):
            if extractor is None:
                raise InputError(f"Whisper features of {audio} are not cached in {self.root} and no encoder is "
                                 "available in this process",
                                 "call UNetDataset.prepare() before starting data-loader workers")
            features = extractor(load_wav_16k_mono(audio)).to("cpu", torch.float32).contiguous()
            with atomic_output(path) as tmp:
                save_file({"features": features}, str(tmp),
                          metadata={"audio_digest": audio_digest, "encoder": encoder_id})
        return path

    @staticmethod
    def whisper_window(path: Path, start_frame: int, num_frames: int,
                       context: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH) -> torch.Tensor:
        """Frames ``start_frame ..`` of a cached feature file as (num_frames, P (L+1), D) for the audio
        ``context`` (a U-Net's ``audio_feat_length``; P = 2 (left + right + 1)), reading only the positions the
        window needs; equal to :func:`lsync.audio.whisper.feature_window` on the whole array."""
        from safetensors import safe_open

        from lsync.audio.whisper import frame_chunk_indices

        with safe_open(str(path), framework="pt") as f:
            features = f.get_slice("features")
            positions = features.get_shape()[0]
            indices = frame_chunk_indices(range(start_frame, start_frame + num_frames), positions, context=context)
            low, high = int(indices.min()), int(indices.max()) + 1
            block = features[low:high]  # (high - low, L+1, D)
        return block[indices - low].reshape(num_frames, -1, block.shape[-1])


def decode_clip(video: Path, resolution: int, num_frames: int, start_frame: int = 0) -> np.ndarray:
    """``num_frames`` frames of an aligned clip from ``start_frame``, uint8 (num_frames, R, R, 3), scaled to
    ``R`` when the file has another size."""
    from lsync.media.video import VideoReader

    reader = VideoReader(video, fps=None, start_frame=start_frame, num_frames=num_frames)
    if (reader.width, reader.height) != (resolution, resolution):
        reader = VideoReader(video, fps=None, size=(resolution, resolution), start_frame=start_frame,
                             num_frames=num_frames, scale_flags="area" if reader.width > resolution else "bicubic")
    frames = reader.read_all()
    if frames.shape[0] < num_frames:
        raise InputError(f"{video} has {frames.shape[0]} decodable frames from frame {start_frame}, its record "
                         f"says {start_frame + num_frames}", "rerun lsync preprocess on this data directory")
    return frames[:num_frames]


# ============================================================================================ the dataset
class UNetDataset(Dataset):
    """U-Net training samples over a data directory; see the module docstring.

    Args:
        data_dir: output of ``lsync preprocess`` (kind ``data``).
        feature_extractor: the Whisper feature extractor the U-Net is trained with (its identity keys the cache).
            May be None only when every clip's features are already cached for ``encoder_id``.
        cache_dir: where derived data is cached (default ``<data_dir>/cache``).
        split: clips of this split only (``"train"``, ``"val"``), or None for all.
        resolution: training face size (default: the clips' own resolution).
        num_frames: frames per window (16).
        seed: sampling seed.
        samples_per_clip: indices per clip and epoch (``len = num_clips * samples_per_clip``).
        allow_overlap: let the reference window overlap the ground truth (keeps short clips).
        edge_margin: frames between the ground-truth window and the clip ends.
        frame_cache: ``"disk"``, ``"memory"`` or ``"none"`` (see the module docstring).
        memory_clips: decoded clips kept per process with ``frame_cache="memory"``.
        encoder_id: identity of the encoder when ``feature_extractor`` is None.
        audio_feat_length: ``(left, right)`` video frames of audio context per frame's tokens - the trained
            U-Net's ``config.audio_feat_length`` (default the reference's (2, 2)).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        feature_extractor: Any | None,
        *,
        cache_dir: str | os.PathLike | None = None,
        split: str | None = "train",
        resolution: int | None = None,
        num_frames: int = SYNCNET_NUM_FRAMES,
        seed: int = 0,
        samples_per_clip: int = 1,
        allow_overlap: bool = False,
        edge_margin: int = DEFAULT_EDGE_MARGIN,
        frame_cache: FrameCache = "disk",
        memory_clips: int = 8,
        encoder_id: str | None = None,
        audio_feat_length: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH,
    ):
        if frame_cache not in ("disk", "memory", "none"):
            raise ValueError(f"frame_cache must be 'disk', 'memory' or 'none', got {frame_cache!r}")
        if samples_per_clip < 1 or num_frames < 1 or edge_margin < 0 or seed < 0:
            raise ValueError("samples_per_clip and num_frames must be >= 1, edge_margin and seed >= 0")
        if feature_extractor is None and encoder_id is None:
            raise ValueError("pass a feature_extractor, or the encoder_id of already cached features")
        self.data_dir = Path(data_dir)
        self.cache = UNetDataCache(cache_dir if cache_dir is not None else self.data_dir / "cache")
        self.num_frames = num_frames
        self.audio_feat_length = audio_context(audio_feat_length)
        self.seed = seed
        self.epoch = 0
        self.samples_per_clip = samples_per_clip
        self.allow_overlap = allow_overlap
        self.edge_margin = edge_margin
        self.frame_cache = frame_cache
        self.memory_clips = memory_clips
        self.feature_extractor = feature_extractor
        self.encoder_id = encoder_id if encoder_id is not None else encoder_identity(feature_extractor)

        records = load_clips(self.data_dir, split)
        if not records:
            raise InputError(f"{self.data_dir} has no clips" + (f" in split '{split}'" if split else ""),
                             "preprocess more videos, or choose another split")
        resolutions = {int(r["resolution"]) for r in records}
        if resolution is None and len(resolutions) > 1:
            raise InputError(f"{self.data_dir} mixes face sizes {sorted(resolutions)}", "pass a training resolution")
        self.resolution = int(resolution) if resolution is not None else resolutions.pop()
        self.clips: list[ClipInfo] = []
        self._gt_starts: list[np.ndarray] = []
        self.skipped: list[str] = []
        for record in records:
            clip = ClipInfo(id=record["id"], video=self.data_dir / record["video"],
                            audio=self.data_dir / record["audio"], num_frames=int(record["num_frames"]),
                            num_samples=int(record.get("num_samples", int(record["num_frames"]) * SAMPLES_PER_FRAME)))
            starts = _pairable_gt_starts(clip, num_frames, edge_margin, allow_overlap)
            if starts.size == 0:
                self.skipped.append(clip.id)
                continue
            self.clips.append(clip)
            self._gt_starts.append(starts)
        if self.skipped:
            need = "one" if allow_overlap else "two non-overlapping"
            log.warning("skipped %d of %d clips too short for %s %d-frame windows (%d frames from the edges)",
                        len(self.skipped), len(records), need, num_frames, edge_margin)
        if not self.clips:
            raise InputError(f"none of the {len(records)} clips of {self.data_dir} is long enough for training",
                             "preprocess longer clips, or allow overlapping reference windows")
        self.mask = mask_tensor(self.resolution)
        self._digests: dict[Path, str] = {}
        self._memory: OrderedDict[int, np.ndarray] = OrderedDict()

    # -------------------------------------------------------------------------------------------- sampling
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that plain int keys draw in (a ``SampleKey`` carries its own epoch).

        Call it before ``iter(loader)`` each epoch: data-loader workers copy the dataset when the iterator
        starts, so with ``persistent_workers=True`` they would keep the first epoch - use SampleKeys there.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips) * self.samples_per_clip

    def plan(self, key: int | Any) -> SamplePlan:
        """The clip and windows a key reads; pure (no I/O).

        ``key`` is an int index (drawn in the epoch set by :meth:`set_epoch`, at position = index) or a
        :class:`lsync.training.sampling.SampleKey` ``(epoch, position, index)`` from the trainer's
        ``EpochBatchSampler``. The item index fixes the clip (``index % num_clips``); the windows come from
        ``numpy.random.default_rng([seed, epoch, position])`` (= ``lsync.training.seeding.sample_rng``).
        """
        epoch, position, index = _key_parts(key, self.epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        clip_index = index % len(self.clips)
        rng = np.random.default_rng([self.seed, epoch, position])
        start = int(rng.choice(self._gt_starts[clip_index]))
        references = reference_window_starts(self.clips[clip_index].num_frames, start, self.num_frames,
                                             self.allow_overlap)
        return SamplePlan(epoch, position, index, clip_index, start, int(rng.choice(references)))

    # -------------------------------------------------------------------------------------------- reading
    def digest(self, path: Path) -> str:
        """Content digest of a clip file, computed once per process."""
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def _windows(self, clip_index: int, starts: Sequence[int]) -> list[np.ndarray]:
        """uint8 (num_frames, R, R, 3) windows of a clip, one per start frame."""
        clip = self.clips[clip_index]
        count = self.num_frames
        if self.frame_cache == "none":
            return [decode_clip(clip.video, self.resolution, count, start) for start in starts]
        if self.frame_cache == "disk":
            frames = self.cache.load_frames(clip.video, self.digest(clip.video), self.resolution, clip.num_frames)
        else:
            frames = self._memory.pop(clip_index, None)
            if frames is None:
                frames = decode_clip(clip.video, self.resolution, clip.num_frames)
            self._memory[clip_index] = frames
            while len(self._memory) > self.memory_clips:
                self._memory.popitem(last=False)
        return [np.array(frames[start:start + count]) for start in starts]

    def _whisper_path(self, clip: ClipInfo) -> Path:
        return self.cache.ensure_whisper(clip.audio, self.digest(clip.audio), self.feature_extractor,
                                         self.encoder_id)

    def __getitem__(self, key: int | Any) -> dict[str, Any]:
        plan = self.plan(key)
        clip = self.clips[plan.clip_index]
        gt, ref = (_to_pixels(w) for w in self._windows(plan.clip_index, (plan.start_frame, plan.ref_start_frame)))
        mel = self.cache.load_mel(clip.audio, self.digest(clip.audio))
        column = mel_start_index(plan.start_frame)
        mel_window = torch.from_numpy(np.array(mel[:, column:column + mel_window_length(self.num_frames)]))
        features = self.cache.whisper_window(self._whisper_path(clip), plan.start_frame, self.num_frames,
                                             self.audio_feat_length)
        return {
            "frames": gt,
            "ref_frames": ref,
            "masked_frames": apply_mask(gt, self.mask),
            "mask": self.mask.clone(),
            "mel": mel_window[None],
            "audio_features": features,
            "clip_index": plan.clip_index,
            "start_frame": plan.start_frame,
            "ref_start_frame": plan.ref_start_frame,
            "sample_index": plan.sample_index,
            "epoch": plan.epoch,
            "position": plan.position,
            "clip_id": clip.id,
        }

    # -------------------------------------------------------------------------------------------- setup
    def prepare(self) -> dict[str, int]:
        """Hash every clip file and fill every cache (frames with ``frame_cache="disk"``, mel, Whisper), with a
        progress bar. Returns how many entries were computed (misses) and found (hits) per kind."""
        before_hits, before_misses = Counter(self.cache.hits), Counter(self.cache.misses)
        with progress() as bar:
            task = bar.add_task("cache clips", total=len(self.clips), unit="clips")
            for index, clip in enumerate(self.clips):
                if self.frame_cache == "disk":
                    self.cache.load_frames(clip.video, self.digest(clip.video), self.resolution, clip.num_frames)
                self.cache.load_mel(clip.audio, self.digest(clip.audio))
                self._whisper_path(clip)
                bar.update(task, advance=1)
        summary = {}
        for kind in ("frames", "mel", "whisper"):
            summary[f"{kind}_computed"] = self.cache.misses[kind] - before_misses[kind]
            summary[f"{kind}_cached"] = self.cache.hits[kind] - before_hits[kind]
        log.info("U-Net data cache %s: %s", self.cache.root, summary)
        return summary

    def __getstate__(self) -> dict[str, Any]:
        # Workers started with spawn get no encoder (possibly on the GPU) and no decoded clips: they read caches.
        state = dict(self.__dict__)
        state["feature_extractor"] = None
        state["_memory"] = OrderedDict()
        return state


def _key_parts(key: int | Any, epoch: int) -> tuple[int, int, int]:
    """(epoch, position, index) of an int index (in ``epoch``) or of a ``SampleKey``-like triple."""
    if isinstance(key, (int, np.integer)):
        return epoch, int(key), int(key)
    try:
        return int(key.epoch), int(key.position), int(key.index)
    except AttributeError:
        raise TypeError(f"dataset keys are ints or SampleKey(epoch, position, index), got {key!r}") from None


def _to_pixels(window: np.ndarray) -> torch.Tensor:
    """uint8 (F, R, R, 3) -> float32 (3, F, R, R) in [-1, 1], as the reference maps pixels: (x / 255 - 0.5) / 0.5."""
    # numpy, single-threaded: per-sample work this small only loses to torch's thread pool in a loader worker.
    pixels = np.ascontiguousarray(window.transpose(3, 0, 1, 2), dtype=np.float32)
    pixels /= np.float32(255.0)
    pixels -= np.float32(0.5)
    pixels /= np.float32(0.5)
    return torch.from_numpy(pixels)


def collate_unet_batch(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: tensors gain a leading B (``frames`` (B, 3, F, R, R), ``mask`` (B, 1, R, R),
    ``mel`` (B, 1, 80, 52), ``audio_features`` (B, F, P (L+1), D)), ints become int64 (B,) tensors, strings lists."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {}
    for key, value in samples[0].items():
        values = [sample[key] for sample in samples]
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(value, (int, np.integer)):
            batch[key] = torch.tensor([int(v) for v in values], dtype=torch.int64)
        else:
            batch[key] = list(values)
    return batch


__all__ = [
    "CACHE_VERSION", "DEFAULT_EDGE_MARGIN", "ClipInfo", "SamplePlan", "UNetDataCache", "UNetDataset",
    "collate_unet_batch", "decode_clip", "encoder_identity", "gt_window_starts", "load_clips",
    "reference_window_starts",
]
