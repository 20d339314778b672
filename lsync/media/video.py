"""Streaming video decode and encode through ffmpeg pipes.

Decoding: :class:`VideoReader` / :func:`iter_frames` start one ffmpeg per pass that decodes, resamples to a
constant frame rate (the ``fps`` filter: a 30 fps source comes out at 25 fps, frames duplicated or dropped
on the output time grid, like the reference's ``ffmpeg -r 25`` re-encode), applies the container
rotation (ffmpeg autorotates), optionally scales, and writes raw RGB24 to a pipe. Python reads one frame
at a time, so memory does not grow with the length of the video.

Encoding: :class:`VideoWriter` pipes RGB frames into one of :data:`CODECS` (H.264 yuv420p by default, so web
players accept it; H.265; lossless FFV1 RGB; ProRes 422 HQ for editing) and can mux an audio file in the same pass; it writes to a temp name and renames on success
(:func:`lsync.manifest.atomic_output`), so an interrupted write leaves nothing at the final path.
:func:`mux` puts a new audio track on an existing video without re-encoding the picture.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from lsync.console import get_logger
from lsync.errors import StageFailure, UsageError
from lsync.manifest import atomic_output
from lsync.media.ffmpeg import BITEXACT_FLAGS, StderrDrain, ffmpeg_command, file_arg, last_error_line, run_ffmpeg
from lsync.media.probe import MediaInfo, MediaInputError, probe

log = get_logger(__name__)

#: The frame rate everything in lsync works at (SyncNet, the U-Net and the Whisper chunking assume it).
DEFAULT_FPS = 25.0


# ================================================================================================ decoding
class VideoReader:
    """Frames of a video as RGB ``uint8`` arrays of shape (H, W, 3), decoded by a streaming ffmpeg pipe.

    Args:
        path: the video file (probed on construction; unusable files raise
            :class:`~lsync.media.probe.MediaInputError`, reason ``unreadable`` or ``no_video``).
        fps: output frame rate; frames are resampled onto a constant ``fps`` grid starting at the first
            frame. ``None`` keeps the source frames as they are (no duplication or dropping).
        size: ``(width, height)`` to scale to inside ffmpeg (cuts pipe bandwidth), or ``None`` for the
            display size (rotation applied).
        start_frame: index, on the output ``fps`` grid, of the first frame to return. Frame-exact: the
            frames before it are decoded and dropped inside ffmpeg (never sent through the pipe), so a
            late start costs decode time (~80 frames/s for 1080p HEVC on 2 cores).
        num_frames: how many frames to return at most (``None``: to the end).
        scale_flags: swscale interpolation for ``size`` (``"bicubic"``, ``"area"``, ``"lanczos"``, ...).
        threads: decoder threads (``0`` lets ffmpeg choose).

    Iterating starts a fresh ffmpeg each time (a reader can be iterated more than once); breaking out of
    the loop or an exception stops that ffmpeg at once. ``len(reader)`` is the expected frame count
    (from the packet timestamps; the decode yields exactly this many for well-formed files).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | None = DEFAULT_FPS,
        size: tuple[int, int] | None = None,
        start_frame: int = 0,
        num_frames: int | None = None,
        scale_flags: str = "bicubic",
        threads: int = 0,
    ):
        if start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {start_frame}")
        if num_frames is not None and num_frames < 0:
            raise ValueError(f"num_frames must be >= 0, got {num_frames}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.info: MediaInfo = probe(self.path).require(video=True, audio=False)
        self.fps = fps
        self.start_frame = start_frame
        self.num_frames = num_frames
        self.scale_flags = scale_flags
        self.threads = threads
        if size is None:
            self.width, self.height = self.info.width, self.info.height
        else:
            self.width, self.height = int(size[0]), int(size[1])
            if self.width <= 0 or self.height <= 0:
                raise ValueError(f"size must be positive (width, height), got {size}")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of every frame this reader yields."""
        return (self.height, self.width, 3)

    def __len__(self) -> int:
        total = self.info.frames_at(self.fps) if self.fps is not None else self.info.num_frames
        available = max(0, (total or 0) - self.start_frame)
        return available if self.num_frames is None else min(available, self.num_frames)

    def _filter_graph(self) -> str:
        filters = []
        if self.fps is not None:
            filters.append(f"fps={self.fps!r}")
        first = self.start_frame
        if first or self.num_frames is not None:
            trim = f"trim=start_frame={first}"
            if self.num_frames is not None:
                trim += f":end_frame={first + self.num_frames}"
            filters += [trim, "setpts=PTS-STARTPTS"]
        if (self.width, self.height) != (self.info.width, self.info.height):
            filters.append(f"scale={self.width}:{self.height}:flags={self.scale_flags}")
        filters.append("format=rgb24")
        return ",".join(filters)

    def _command(self) -> list[str]:
        # No input seeking (-ss) for start_frame: after a seek, rate conversion of non-25 fps sources
        # can pick different frames than a decode from the start, and frame-exact slices matter more.
        args = ["-threads", str(self.threads), "-i", file_arg(self.path), "-map", "0:V:0", "-an", "-sn", "-dn",
                "-vf", self._filter_graph()]
        # passthrough: the filter graph already set the frame timing; do not let the muxer re-time frames.
        args += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        return ffmpeg_command(*args)

    def __iter__(self) -> Iterator[np.ndarray]:
        if self.num_frames == 0:
            return
        frame_bytes = self.width * self.height * 3
        # Unbuffered pipe: each frame is read straight into its own array, no intermediate copies.
        proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        drain = StderrDrain(proc.stderr)
        finished = False
        try:
            while True:
                frame = np.empty(self.frame_shape, dtype=np.uint8)
                if not _read_exactly(proc.stdout, memoryview(frame).cast("B")):
                    break  # EOF (a short tail would be a frame cut by a crash; it is never yielded)
                yield frame
                del frame  # the consumer owns it now; do not keep it alive while reading the next
            finished = True
        finally:
            if not finished:
                proc.kill()  # the consumer stopped early or raised: do not decode the rest
            proc.stdout.close()
            returncode = proc.wait()
            stderr = drain.text()
        if returncode != 0:
            raise MediaInputError(f"{self.path} could not be decoded ({last_error_line(stderr)})",
                                  "check that the video is complete")

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Frames stacked into arrays of shape (B, H, W, 3), B = ``batch_size`` except for the last batch."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        batch: list[np.ndarray] = []
        for frame in self:
            batch.append(frame)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)

    def read_all(self) -> np.ndarray:
        """Every frame as one (N, H, W, 3) array - only for short clips; prefer iterating."""
        frames = list(self)
        if not frames:
            return np.zeros((0, *self.frame_shape), dtype=np.uint8)
        return np.stack(frames)


def _read_exactly(stream, buffer: memoryview) -> bool:
    """Fill ``buffer`` from ``stream``; False if the stream ended first."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:])
        if not n:
            return False
        filled += n
    return True


def iter_frames(
    path: str | os.PathLike,
    fps: float | None = DEFAULT_FPS,
    size: tuple[int, int] | None = None,
    start_frame: int = 0,
    num_frames: int | None = None,
) -> Iterator[np.ndarray]:
    """Shorthand for ``iter(VideoReader(path, fps, size, start_frame, num_frames))``: (H, W, 3) uint8 RGB."""
    return iter(VideoReader(path, fps=fps, size=size, start_frame=start_frame, num_frames=num_frames))


# ================================================================================================ codecs
@dataclass(frozen=True)
class VideoCodec:
    """How one ``--codec`` choice is encoded: ffmpeg video/audio arguments and the containers that hold it."""

    name: str
    extensions: tuple[str, ...]  # the first is the default for outputs named without a suffix
    video_args: tuple[str, ...]
    audio_args: tuple[str, ...]
    lossless: bool = False
    needs_even_size: bool = True  # chroma subsampling: odd sizes are padded by one column / row
    tunable: bool = False  # takes -crf and -preset

    def check_extension(self, path: str | os.PathLike) -> None:
        """Refuse a file name whose container cannot hold this codec (one line naming the fix)."""
        suffix = Path(path).suffix.lower()
        if suffix not in self.extensions:
            raise UsageError(f"{Path(path).name}: --codec {self.name} is written to {' or '.join(self.extensions)}, "
                             f"not '{suffix or 'no extension'}'",
                             f"name the output {Path(path).stem}{self.extensions[0]} or pick another --codec")


#: Output codecs: H.264 and H.265 for delivery (AAC audio), FFV1 for exact comparisons and post-processing (RGB,
#: bit-exact, FLAC audio), ProRes 422 HQ for studios' editing software (10-bit 4:2:2, PCM audio).
CODECS: dict[str, VideoCodec] = {
    "h264": VideoCodec("h264", (".mp4", ".mkv", ".mov"), ("-c:v", "libx264", "-pix_fmt", "yuv420p"),
                       ("-c:a", "aac"), tunable=True),
    "h265": VideoCodec("h265", (".mp4", ".mkv", ".mov"),
                       # hvc1 is the tag Apple players require; x265 logs every frame unless told not to.
                       ("-c:v", "libx265", "-pix_fmt", "yuv420p", "-tag:v", "hvc1", "-x265-params", "log-level=error"),
                       ("-c:a", "aac"), tunable=True),
    "ffv1": VideoCodec("ffv1", (".mkv",), ("-c:v", "ffv1", "-level", "3", "-pix_fmt", "bgr0"), ("-c:a", "flac"),
                       lossless=True, needs_even_size=False),
    "prores": VideoCodec("prores", (".mov", ".mkv"),
                         ("-c:v", "prores_ks", "-profile:v", "3", "-pix_fmt", "yuv422p10le", "-vendor", "apl0"),
                         ("-c:a", "pcm_s16le")),
}


def get_codec(name: str) -> VideoCodec:
    if name not in CODECS:
        raise UsageError(f"unknown codec '{name}'", f"choose one of: {', '.join(CODECS)}")
    return CODECS[name]


# ================================================================================================ encoding
class VideoWriter:
    """Encode RGB frames through an ffmpeg pipe (H.264 mp4 by default), atomically.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=25, width=512, height=512, audio_path="speech.wav") as writer:
            for frame in frames:          # (H, W, 3) uint8 RGB, or a (B, H, W, 3) batch
                writer.write(frame)

    The file appears at ``path`` only when the block ends without an exception and ffmpeg succeeded.

    Args:
        path: output file; its extension must suit ``codec`` (:meth:`VideoCodec.check_extension`).
        fps: frame rate of the frames written.
        width, height: frame size. Chroma-subsampled codecs need even sizes; odd ones are padded by one black
            column/row at the right/bottom (the frames themselves must be ``width`` x ``height``).
        crf, preset: H.264 / H.265 quality and speed (crf 18 is visually lossless, like the reference).
        codec: a key of :data:`CODECS`.
        audio_path: optional audio (or video with audio) file muxed in the same pass, its first audio
            stream encoded with the codec's audio codec at its own sample rate and channel count.
        audio_bitrate: AAC bitrate.
        frame_digest: keep a sha256 of the raw RGB bytes of every frame written (:attr:`frames_sha256`), so a
            lossless output can be checked against what was produced.
        shortest: with audio, end the output at the shorter of video and audio.
        threads: x264 threads (``0``: ffmpeg's choice). x264 output depends on the thread count, so
            fix it when files must be byte-identical across machines.
        bitexact: leave encoder/version strings and timestamps out of the file so equal inputs give
            equal bytes.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = "medium",
        audio_path: str | os.PathLike | None = None,
        audio_bitrate: str = "192k",
        shortest: bool = True,
        threads: int = 0,
        bitexact: bool = False,
        codec: str = "h264",
        frame_digest: bool = False,
    ):
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps, self.width, self.height = fps, int(width), int(height)
        self.crf, self.preset = crf, preset
        self.audio_path = Path(audio_path) if audio_path is not None else None
        self.audio_bitrate, self.shortest = audio_bitrate, shortest
        self.threads, self.bitexact = threads, bitexact
        self.codec = get_codec(codec)
        self.codec.check_extension(self.path)
        self._digest = hashlib.sha256() if frame_digest else None
        self.frames_written = 0
        self._atomic = None
        self._proc: subprocess.Popen | None = None
        self._drain: StderrDrain | None = None

    def _command(self, tmp: Path) -> list[str]:
        args: list = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
                      "-framerate", repr(float(self.fps)), "-i", "-"]
        if self.audio_path is not None:
            args += ["-i", file_arg(self.audio_path), "-map", "0:v:0", "-map", "1:a:0"]
        if self.codec.needs_even_size and (self.width % 2 or self.height % 2):
            args += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        args += [*self.codec.video_args, "-threads", str(self.threads)]
        if self.codec.tunable:
            args += ["-preset", self.preset, "-crf", str(self.crf)]
        if self.audio_path is not None:
            args += list(self.codec.audio_args)
            if "aac" in self.codec.audio_args:
                args += ["-b:a", self.audio_bitrate]
            if self.shortest:
                args.append("-shortest")
        if self.bitexact:
            args += list(BITEXACT_FLAGS)
        if self.path.suffix.lower() in (".mp4", ".mov"):
            args += ["-movflags", "+faststart"]  # the index first: players start before the whole file arrives
        args += ["-y", file_arg(tmp)]
        return ffmpeg_command(*args)

    @property
    def frames_sha256(self) -> str | None:
        """sha256 of the raw (H, W, 3) RGB bytes of every frame written so far (with ``frame_digest``)."""
        return f"sha256:{self._digest.hexdigest()}" if self._digest is not None else None

    def __enter__(self) -> VideoWriter:
        if self.audio_path is not None:
            probe(self.audio_path).require(video=False, audio=True)
        self._atomic = atomic_output(self.path)
        tmp = self._atomic.__enter__()
        self._proc = subprocess.Popen(self._command(tmp), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        self._drain = StderrDrain(self._proc.stderr)
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append one (H, W, 3) frame or a (B, H, W, 3) batch of uint8 RGB frames."""
        if self._proc is None:
            raise RuntimeError("VideoWriter.write() outside its `with` block")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"expected frames of shape (H, W, 3) = ({self.height}, {self.width}, 3), "
                             f"got {tuple(frames.shape)}")
        if frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frames.dtype}")
        data = memoryview(np.ascontiguousarray(frames)).cast("B")
        if self._digest is not None:
            self._digest.update(data)
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:
            self._proc.wait()
            raise StageFailure(f"ffmpeg stopped while encoding {self.path}: {last_error_line(self._drain.text())}",
                               "run with --verbose for details") from None
        self.frames_written += len(frames)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc, atomic = self._proc, self._atomic
        self._proc = self._atomic = None
        failure: BaseException | None = exc
        try:
            if exc is not None:
                proc.kill()
            else:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            returncode = proc.wait()
            stderr = self._drain.text()
            if failure is None and returncode != 0:
                failure = StageFailure(f"ffmpeg failed to encode {self.path}: {last_error_line(stderr)}",
                                       "run with --verbose for details")
            if failure is None and self.frames_written == 0:
                failure = StageFailure(f"no frames were written to {self.path}", "check the frame source")
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            if failure is None:
                atomic.__exit__(None, None, None)  # rename the finished temp file onto the target
            else:
                atomic.__exit__(type(failure), failure, failure.__traceback__)  # removes the temp file
        if failure is not None and failure is not exc:
            raise failure


def mux(
    video_path: str | os.PathLike,
    audio_path: str | os.PathLike,
    out_path: str | os.PathLike,
    shortest: bool = True,
    audio_codec: str = "aac",
    audio_bitrate: str = "192k",
    audio_offset_s: float = 0.0,
) -> Path:
    """Write ``out_path`` = the video stream of ``video_path`` (copied, not re-encoded) + the first audio
    stream of ``audio_path``, atomically.

    The audio keeps its sample rate and channel count; ``audio_codec="aac"`` encodes it (at
    ``audio_bitrate``), ``"copy"`` copies it when the container allows. ``shortest`` ends the output
    with the shorter stream. ``audio_offset_s`` delays the audio (positive) or advances it (negative).
    Returns ``Path(out_path)``.
    """
    probe(video_path).require(video=True, audio=False)
    probe(audio_path).require(video=False, audio=True)
    args: list = ["-i", file_arg(video_path)]
    if audio_offset_s:
        args += ["-itsoffset", repr(float(audio_offset_s))]
    args += ["-i", file_arg(audio_path), "-map", "0:V:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", audio_codec]
    if audio_codec != "copy":
        args += ["-b:a", audio_bitrate]
    if shortest:
        args.append("-shortest")
    out = Path(out_path)
    with atomic_output(out) as tmp:
        run_ffmpeg([*args, "-movflags", "+faststart", "-y", file_arg(tmp)], what=f"mux {video_path} with {audio_path}")
    return out
