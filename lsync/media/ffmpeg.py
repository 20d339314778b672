"""The one place that finds and runs ffmpeg.

ffmpeg comes from ``imageio_ffmpeg`` (a static build shipped as a wheel), so lsync needs no system
install; there is no ffprobe in that wheel, which is why :mod:`lsync.media.probe` reads ffmpeg's own
stream listing. Every call takes an argument list (never a shell string), so paths with spaces,
quotes or non-ASCII characters reach ffmpeg unchanged.
"""

from __future__ import annotations

import collections
import functools
import os
import subprocess
import threading
from collections.abc import Sequence

from lsync.console import get_logger
from lsync.errors import StageFailure

log = get_logger(__name__)

#: Flags that make ffmpeg's container and encoder output depend only on the input and options
#: (no encoder version strings or creation times), so equal inputs give byte-identical files.
BITEXACT_FLAGS = ("-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1")

# Flags common to every invocation: no banner, never read the terminal (a backgrounded run would stop).
_BASE_FLAGS = ("-hide_banner", "-nostdin")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio_ffmpeg``."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def file_arg(path: str | os.PathLike) -> str:
    """A path as ffmpeg must see it: ``file:`` in front, or a name like ``take 1:2.mp4`` or
    ``http:x.mp4`` is read as a protocol, and one starting with ``-`` as an option."""
    return "file:" + os.fspath(path)


def ffmpeg_command(*args: str | os.PathLike, loglevel: str = "error") -> list[str]:
    """``[ffmpeg, -hide_banner, -nostdin, -loglevel <level>, *args]`` with every argument as ``str``."""
    return [ffmpeg_exe(), *_BASE_FLAGS, "-loglevel", loglevel, *(os.fspath(a) for a in args)]


def run_ffmpeg(args: Sequence[str | os.PathLike], what: str, loglevel: str = "error") -> subprocess.CompletedProcess:
    """Run ffmpeg to completion; raise :class:`StageFailure` naming ``what`` with ffmpeg's last error lines.

    ``what`` completes the sentence "ffmpeg failed to ...", e.g. ``"mux video.mp4 with audio.wav"``.
    stdout is captured as bytes (for raw PCM), stderr as text.
    """
    cmd = ffmpeg_command(*args, loglevel=loglevel)
    log.debug("running %s", cmd)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise StageFailure(f"ffmpeg failed to {what}: {last_error_line(proc.stderr)}", "run with --verbose for details")
    return proc


def last_error_line(stderr: bytes | str, limit: int = 300) -> str:
    """The most telling line of ffmpeg's stderr (the last non-empty one), shortened to ``limit`` chars."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no error message"
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


class StderrDrain:
    """Reads a child's stderr on a thread so a chatty ffmpeg never blocks on a full pipe.

    Keeps only the last ``max_lines`` lines (memory stays flat on hour-long runs); ``text()`` returns them.
    """

    def __init__(self, stream, max_lines: int = 50):
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            self._lines.append(raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def text(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        return "\n".join(self._lines)
