"""Which source frame each output frame shows, and streaming those frames in output order with bounded memory.

The output lasts as long as the driving audio. When the audio is longer than the video, the source frames are
replayed by one of three rules (:func:`source_indices`):

* ``pingpong`` (default, LatentSync's rule): forward, backward, forward, ... with each turning frame shown
  twice (period ``2n``), exactly as the reference concatenates the frames and their reversed copy.
* ``bounce``: forward, backward, ... without repeating the turning frames (period ``2n - 2``): the motion
  reverses without the one-frame hold at each end.
* ``loop``: forward again from the first frame.
* ``hold``: the last frame stays on screen.

A video longer than the audio is cut (the plan simply ends early).

**Backward playback without holding the video** (:class:`FrameStream`). A decoder only runs forward, so a
backward run is read in blocks of ``block`` frames from its far end: each block is decoded with
``VideoReader(start_frame=a, num_frames=block)`` and yielded reversed. Memory stays at one block of frames
whatever the length of the video; the price is decode time, because a block at frame ``a`` is reached by
decoding (not converting or piping) the ``a`` frames before it, which makes one backward pass over ``n``
frames cost about ``n^2 / (2 block)`` frame decodes. At ~220 frames/s for 1080p HEVC on 2 cores that is ~5 s
for a 10 s video and ~2.5 min for a 60 s one. The alternative - caching every frame on disk in the run's
temp folder - costs ~6 MB per 1080p frame raw (9 GB per minute), or a lossless re-encode that is itself
slower than the re-decode at these lengths; we chose bounded RAM and disk over decode time. Face geometry is
*not* re-computed on replay: it is a per-source-frame table made once by the first pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

LoopMode = Literal["pingpong", "bounce", "loop", "hold"]
LOOP_MODES = ("pingpong", "bounce", "loop", "hold")

__all__ = ["FrameStream", "LOOP_MODES", "PlaybackRun", "crossfade_weights", "playback_runs", "source_indices"]


def source_indices(num_output: int, num_source: int, mode: LoopMode = "pingpong") -> np.ndarray:
    """(num_output,) int64: the source frame shown at each output frame.

    Output frames past the end of the source follow ``mode``; a source longer than the output is cut.
    """
    if num_source <= 0:
        raise ValueError(f"the source needs at least one frame, got {num_source}")
    if mode not in LOOP_MODES:
        raise ValueError(f"loop mode must be one of {LOOP_MODES}, got {mode!r}")
    k = np.arange(num_output, dtype=np.int64)
    if mode == "hold" or num_source == 1:
        return np.minimum(k, num_source - 1)
    if mode == "loop":
        return k % num_source
    if mode == "pingpong":  # 0 .. n-1, n-1 .. 0, 0 .. n-1, ...
        phase = k % (2 * num_source)
        return np.where(phase < num_source, phase, 2 * num_source - 1 - phase)
    period = 2 * num_source - 2  # bounce: 0 .. n-1, n-2 .. 1, 0 .. n-1, ...
    phase = k % period
    return np.where(phase < num_source, phase, period - phase)


@dataclass(frozen=True)
class PlaybackRun:
    """Output frames ``out_start .. out_start + length - 1`` show source frames ``first, first + step, ...``.

    ``step`` is +1 (forward), -1 (backward) or 0 (the same frame held).
    """

    out_start: int
    first: int
    length: int
    step: int

    @property
    def last(self) -> int:
        return self.first + self.step * (self.length - 1)


def playback_runs(indices: np.ndarray) -> list[PlaybackRun]:
    """Split a source-index plan into maximal runs of constant step (+1, -1 or 0); other jumps start a new run."""
    runs: list[PlaybackRun] = []
    start = 0
    total = len(indices)
    while start < total:
        step = 1
        if start + 1 < total and int(indices[start + 1]) - int(indices[start]) in (-1, 0, 1):
            step = int(indices[start + 1]) - int(indices[start])
        end = start + 1
        while end < total and int(indices[end]) - int(indices[end - 1]) == step:
            end += 1
        runs.append(PlaybackRun(start, int(indices[start]), end - start, step))
        start = end
    return runs


class FrameStream:
    """Frames of a video in the order of a source-index plan: ``for out_index, src_index, frame in stream``.

    Forward runs stream from one decoder each; backward runs are decoded block by block from their far end
    (see the module docstring); held frames are decoded once. At most ``block`` frames are alive at a time.

    Args:
        path: the video.
        indices: (num_output,) source frame per output frame (:func:`source_indices`).
        fps: decode frame rate (the plan's frame grid).
        block: frames per backward block.
    """

    def __init__(self, path: str | Path, indices: np.ndarray, fps: float = 25.0, block: int = 32):
        if block <= 0:
            raise ValueError(f"block must be positive, got {block}")
        self.path = Path(path)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.fps = fps
        self.block = block
        self.runs = playback_runs(self.indices)
        self.frames_decoded = 0  # frames that came through the pipe (the cost of backward playback shows here)

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, start: int, count: int) -> Iterator[np.ndarray]:
        from lsync.media.video import VideoReader

        produced = 0
        for frame in VideoReader(self.path, fps=self.fps, start_frame=start, num_frames=count):
            self.frames_decoded += 1
            produced += 1
            yield frame
        if produced < count:
            raise IndexError(f"{self.path} ended at frame {start + produced}, frame {start + count - 1} was planned")

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        last_index, last_frame = None, None
        for run in self.runs:
            out = run.out_start
            if run.step == 0:
                frame = last_frame if last_index == run.first else next(self._read(run.first, 1))
                for _ in range(run.length):
                    yield out, run.first, frame
                    out += 1
                last_index, last_frame = run.first, frame
            elif run.step == 1:
                for offset, frame in enumerate(self._read(run.first, run.length)):
                    yield out + offset, run.first + offset, frame
                    last_index, last_frame = run.first + offset, frame
            else:
                high = run.first + 1  # exclusive end of the not yet played part
                while high > run.last:
                    low = max(run.last, high - self.block)
                    frames = list(self._read(low, high - low))
                    for src in range(high - 1, low - 1, -1):
                        frame = frames.pop()  # drop each frame from the block as soon as it is played
                        yield out, src, frame
                        out += 1
                        last_index, last_frame = src, frame
                    high = low


def crossfade_weights(has_face: np.ndarray, fade: int) -> np.ndarray:
    """(N,) float32 weight of the lip-synced face per output frame: 0 where the frame passes through unchanged,
    ramping up over ``fade`` frames next to every pass-through frame, 1 elsewhere.

    A synced frame ``d`` frames away from the nearest pass-through frame gets ``min(1, d / (fade + 1))``, so the
    edit fades in and out around a gap in the face track instead of popping.
    """
    has_face = np.asarray(has_face, dtype=bool)
    total = len(has_face)
    if fade <= 0 or has_face.all():
        return has_face.astype(np.float32)
    # Distance to the nearest frame without a face, by a forward and a backward sweep.
    distance = np.full(total, np.inf)
    last = -np.inf
    for i in range(total):
        if not has_face[i]:
            last = i
        distance[i] = i - last
    last = np.inf
    for i in range(total - 1, -1, -1):
        if not has_face[i]:
            last = i
        distance[i] = min(distance[i], last - i)
    return np.clip(distance / (fade + 1), 0.0, 1.0).astype(np.float32)
