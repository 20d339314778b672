"""Inference pass 2, chunk by chunk: align, denoise, paste back - with the per-frame work overlapping the model.

A chunk goes through three steps (:class:`ChunkRenderer`):

1. **prepare** - decode its frames, align the faces (:func:`lsync.face.video.align_crop`), cut its audio
   window;
2. **denoise** - the U-Net (:class:`lsync.sampling.ChunkSampler`);
3. **finish** - paste the faces back into the frames (:func:`lsync.face.video.paste_face`) and hand
   them to the encoder.

:func:`pipelined` runs step 1 of the next chunk and step 3 of the previous one on two helper threads while the
calling thread denoises, so on a GPU the per-frame work disappears behind the model. On a CPU the warps would
take cores from the U-Net (measured: the denoising 60-100 % slower on 2 cores), so there the helpers only move
frames through the ffmpeg pipes (decoding ahead, encoding behind) and the warps run beside the model. At most
``depth`` chunks wait between two steps, so memory stays a few chunks of frames whatever the length of the video.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["ChunkRenderer", "PreparedChunk", "chunks_of", "pipelined"]

Row = tuple[int, int, np.ndarray]  # (output index, source index, (H, W, 3) uint8 frame)


def chunks_of(rows: Iterable[Row], size: int, timer=None) -> Iterator[list[Row]]:
    """Consecutive lists of ``size`` rows (the last may be shorter); the time spent pulling rows is ``decode``."""
    iterator = iter(rows)
    chunk: list[Row] = []
    try:
        while True:
            if timer is not None:
                with timer("decode"):
                    row = next(iterator, None)
            else:
                row = next(iterator, None)
            if row is None:
                break
            chunk.append(row)
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # stops the decoder of a stream that was not played to the end


# ================================================================================================ the three steps
@dataclass
class PreparedChunk:
    """A chunk ready for the U-Net.

    rows: the chunk's (output index, source index, frame); synced: rows that get a face; faces: their aligned
    (R, R, 3) uint8 faces; stack: (F, R, R, 3) the U-Net's input (rows without a face borrow the nearest face);
    audio: (F, S, D) audio tokens (S = the sampler's ``audio_tokens``). ``stack`` and ``audio`` are None when no
    row is lip-synced.
    """

    rows: list[Row]
    synced: list[int] = field(default_factory=list)
    faces: dict[int, np.ndarray] = field(default_factory=dict)
    stack: np.ndarray | None = None
    audio: torch.Tensor | None = None


class ChunkRenderer:
    """The three steps of one chunk (module docstring); ``prepare`` and ``finish`` are safe on helper threads.

    Args:
        geometry: :class:`~lsync.face.video.FaceGeometry` of the source video.
        features: (T50, L+1, D) Whisper features of the driving audio.
        sampler: a :class:`~lsync.sampling.ChunkSampler`.
        weights: (num_rendered,) blend weight of the face per output frame (0: the frame passes through).
        timer: a ``StageTimer`` (stage names ``align``, ``audio_features``, ``denoise``, ``restore``).
    """

    def __init__(self, geometry, features: torch.Tensor, sampler, weights: np.ndarray, timer):
        self.geometry, self.features, self.sampler = geometry, features, sampler
        self.weights, self.timer = weights, timer
        self.resolution = geometry.resolution
        self.touched: list[int] | None = None  # union (x0, y0, x1, y1) of the frame areas faces were pasted into
        self.strip = None  # a FrameStrip to fill, if any

    def region(self) -> list[int] | None:
        """``[x0, y0, x1, y1)`` of frame pixels the paste-back may have changed (None: no frame was edited)."""
        return self.touched

    def prepare(self, rows: list[Row]) -> PreparedChunk:
        from lsync.face.video import align_crop

        chunk = PreparedChunk(rows, synced=[row for row, (out, _, _) in enumerate(rows) if self.weights[out] > 0])
        if not chunk.synced:
            return chunk
        with self.timer("align"):
            chunk.faces = {row: align_crop(rows[row][2], self.geometry.affines[rows[row][1]], self.resolution)
                           for row in chunk.synced}
            # Rows without a face borrow the nearest face (their outputs are dropped), so the U-Net sees every
            # frame of the chunk. The last chunk may be shorter than 16 frames: it is denoised as it is, like the
            # reference does, not padded.
            synced = np.array(chunk.synced)
            chunk.stack = np.stack([chunk.faces[int(synced[np.abs(synced - row).argmin()])]
                                    for row in range(len(rows))])
        with self.timer("audio_features"):
            chunk.audio = self.sampler.audio_window(self.features, rows[0][0], len(rows))  # the U-Net's context
        return chunk

    def denoise(self, chunk: PreparedChunk) -> torch.Tensor | None:
        """(F, 3, R, R) generated faces, or None for a chunk without faces."""
        if chunk.stack is None:
            return None
        with self.timer("denoise"):
            # Not clamped: the paste-back clamps after un-warping, as the reference does (clamping first would
            # change the bicubic resize's overshoot along the mask edge).
            return self.sampler(chunk.stack, chunk.audio, clamp=False)

    def finish(self, chunk: PreparedChunk, generated: torch.Tensor | None) -> list[Row]:
        """Paste the generated faces into the chunk's frames (in place); returns the rows."""
        from lsync.face.video import align_crop, paste_face

        if generated is None:
            return chunk.rows
        with self.timer("restore"):
            for row in chunk.synced:
                out, src, frame = chunk.rows[row]
                affine = self.geometry.affines[src]
                paste_face(frame, generated[row], affine, float(self.weights[out]))
                self._touch(frame, affine)
                if self.strip is not None and self.strip.wants(out):
                    blended = align_crop(frame, affine, self.resolution)
                    self.strip.capture(chunk.faces[row], generated[row].clamp(-1, 1).numpy(), blended)
        return chunk.rows

    def render(self, rows: list[Row]) -> list[Row]:
        """All three steps on the calling thread."""
        chunk = self.prepare(rows)
        return self.finish(chunk, self.denoise(chunk))

    def _touch(self, frame: np.ndarray, affine: np.ndarray) -> None:
        from lsync.face.video import face_window, paste_margin

        rows, cols = face_window(affine, self.resolution, frame.shape[:2], paste_margin(affine, self.resolution))
        box = [cols.start, rows.start, cols.stop, rows.stop]
        if self.touched is None:
            self.touched = box
        else:
            self.touched = [min(self.touched[0], box[0]), min(self.touched[1], box[1]),
                            max(self.touched[2], box[2]), max(self.touched[3], box[3])]


# ================================================================================================ the pipeline
_END = object()


def pipelined(items: Iterable[Any], prepare: Callable[[Any], Any], compute: Callable[[Any], Any],
              finish: Callable[[Any, Any], None], depth: int = 1, overlap: bool = True) -> None:
    """``finish(p, compute(p))`` for ``p = prepare(item)`` of every item, in order.

    With ``overlap``, iterating ``items`` and ``prepare`` run on one helper thread and ``finish`` on another while
    ``compute`` runs on the calling thread (where CUDA work and Ctrl-C belong); at most ``depth`` items wait
    between two steps. The first exception of any step stops all three (``items`` is closed, so a decoder stops)
    and is raised here once the helpers have ended. Without ``overlap`` everything runs here, one item at a time.
    """
    if not overlap:
        for item in items:
            prepared = prepare(item)
            finish(prepared, compute(prepared))
        return
    stop = threading.Event()
    ready: queue.Queue = queue.Queue(maxsize=depth)
    done: queue.Queue = queue.Queue(maxsize=depth)
    errors: list[BaseException] = []

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        stop.set()

    def put(channel: queue.Queue, value: Any) -> bool:
        while not stop.is_set():
            try:
                channel.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(channel: queue.Queue) -> Any:
        while True:
            try:
                return channel.get(timeout=0.05)
            except queue.Empty:
                if stop.is_set():
                    return _END

    def feed() -> None:
        _single_threaded_torch()
        iterator = iter(items)
        try:
            for item in iterator:
                if stop.is_set() or not put(ready, prepare(item)):
                    return
            put(ready, _END)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            fail(exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def drain() -> None:
        _single_threaded_torch()
        try:
            while (entry := get(done)) is not _END:
                finish(*entry)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            fail(exc)

    helpers = [threading.Thread(target=feed, name="lsync-prepare", daemon=True),
               threading.Thread(target=drain, name="lsync-finish", daemon=True)]
    for thread in helpers:
        thread.start()
    try:
        while (prepared := get(ready)) is not _END:
            if not put(done, (prepared, compute(prepared))):
                break
        put(done, _END)
    except BaseException as exc:
        fail(exc)
    finally:
        for thread in helpers:
            thread.join()
    if errors:
        raise errors[0]


def _single_threaded_torch() -> None:
    """This helper thread's CPU torch ops (warps, paste-back) use one thread: the intra-op thread count is per
    thread, and the model's team on the calling thread keeps every core (more threads than cores would slow it)."""
    torch.set_num_threads(1)
