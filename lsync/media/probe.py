"""What is in a media file: streams, size, rate, rotation, duration - or why it cannot be used.

There is no ffprobe in the ``imageio_ffmpeg`` wheel, so :func:`probe` runs ffmpeg once with the first
video and first audio stream stream-copied into the ``framecrc`` muxer:

* stderr carries ffmpeg's usual stream listing (codec, size, fps, sample rate, layout, display matrix);
* stdout lists every packet (``stream, dts, pts, duration, size, crc``) without decoding anything, which
  gives exact frame counts, exact stream durations, a variable-frame-rate guess and - because a cut-off
  file runs out of packets early - truncation detection. Demuxing a 10 s 1080p file takes ~20 ms.

Unusable inputs raise :class:`MediaInputError` (an :class:`~lsync.errors.InputError`) whose ``reason`` is
one of :data:`REASONS`, so preprocessing can map it straight onto a reject reason.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

from lsync.console import get_logger
from lsync.errors import InputError
from lsync.media.ffmpeg import ffmpeg_command, file_arg, last_error_line

log = get_logger(__name__)

UNREADABLE = "unreadable"
NO_VIDEO = "no_video"
NO_AUDIO = "no_audio"
#: Values of :attr:`MediaInputError.reason`.
REASONS = (UNREADABLE, NO_VIDEO, NO_AUDIO)

# A stream's packets must reach this fraction of the container duration (or within the slack), else the
# file is taken as cut off. Real files with an audio track a little longer than the video pass easily.
_TRUNCATION_FRACTION = 0.9
_TRUNCATION_SLACK_S = 0.5
# Relative spread of frame intervals above which a stream is called variable-frame-rate. Timebase
# rounding (e.g. 29.97 fps in a 1/1000 timebase gives 33/34 ms) stays well below it.
_VFR_SPREAD = 0.1

_CHANNEL_LAYOUTS = {
    "mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4, "quad(side)": 4,
    "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6, "6.0": 6, "6.1": 7,
    "7.0": 7, "7.1": 8, "7.1(wide)": 8, "octagonal": 8, "downmix": 2,
}


class MediaInputError(InputError):
    """A media file that cannot be used; ``reason`` is ``"unreadable"``, ``"no_video"`` or ``"no_audio"``."""

    def __init__(self, what: str, fix: str | None = None, reason: str = UNREADABLE):
        if reason not in REASONS:
            raise ValueError(f"unknown media error reason {reason!r}; expected one of {REASONS}")
        self.reason = reason
        super().__init__(what, fix)


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """The facts about one media file that preprocessing and inference need.

    ``width``/``height`` are the *display* size: already swapped when ``rotation`` is 90 or 270, i.e. the
    size of the frames :class:`~lsync.media.video.VideoReader` yields (ffmpeg applies the rotation).
    Video fields are ``None`` when ``has_video`` is false, audio fields when ``has_audio`` is false.
    """

    path: Path
    duration_s: float  # container duration (the longest stream)
    has_video: bool
    has_audio: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # average frame rate of the source
    rotation: int = 0  # display-matrix rotation as ffmpeg reports it (counter-clockwise), in {0, 90, 180, 270}
    is_vfr: bool = False  # frame intervals vary by more than 10 %
    num_frames: int | None = None  # frames in the source at its own rate (exact: counted packets)
    video_duration_s: float | None = None
    video_start_s: float | None = None  # timestamp of the first video frame (0 for almost every file)
    video_codec: str | None = None
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_duration_s: float | None = None

    def frames_at(self, fps: float = 25.0) -> int | None:
        """How many frames a constant-``fps`` decode (:func:`~lsync.media.video.iter_frames`) yields."""
        if not self.has_video or self.video_duration_s is None:
            return None
        return int(round(self.video_duration_s * fps))

    def require(self, video: bool = True, audio: bool = True) -> MediaInfo:
        """Raise :class:`MediaInputError` (reason ``no_video``/``no_audio``) if a needed stream is missing."""
        if video and not self.has_video:
            raise MediaInputError(f"{self.path} has no video stream", "pass a video file", reason=NO_VIDEO)
        if audio and not self.has_audio:
            raise MediaInputError(f"{self.path} has no audio stream", "pass a file with audio", reason=NO_AUDIO)
        return self


def probe(path: str | os.PathLike) -> MediaInfo:
    """Inspect ``path`` without decoding it.

    Raises :class:`MediaInputError` with reason ``"unreadable"`` for a missing, empty, non-media or
    truncated file, or one with neither video nor audio. A file that lacks only one of the two streams
    is returned as is (check ``has_video``/``has_audio`` or call :meth:`MediaInfo.require`).
    """
    p = Path(path)
    _check_file(p)
    # -map 0:V excludes attached pictures (cover art), which are "video" streams but not a video.
    cmd = ffmpeg_command("-i", file_arg(p), "-map", "0:V:0?", "-map", "0:a:0?", "-c", "copy", "-f", "framecrc", "-",
                         loglevel="info")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr = proc.stderr.decode("utf-8", "replace")
    header = _parse_header(stderr)
    if header is None:
        raise MediaInputError(f"{p} is not a readable media file ({last_error_line(stderr)})",
                              "check that it is a complete video or audio file")
    if header["video"] is None and header["audio"] is None:
        raise MediaInputError(f"{p} has neither a video nor an audio stream", "pass a video file")
    packets = _parse_framecrc(proc.stdout.decode("ascii", "replace"))
    return _build_info(p, header, packets, stderr)


# ----------------------------------------------------------------------------------------------- checks
def _check_file(p: Path) -> None:
    if not p.exists():
        raise MediaInputError(f"{p} does not exist", "check the path")
    if not p.is_file():
        raise MediaInputError(f"{p} is not a file", "pass a media file, not a directory")
    if p.stat().st_size == 0:
        raise MediaInputError(f"{p} is empty (0 bytes)", "re-copy or re-download it")
    if not os.access(p, os.R_OK):
        raise MediaInputError(f"{p} is not readable", "check its permissions")


# ----------------------------------------------------------------------------------------------- stderr header
_DURATION_RE = re.compile(r"Duration:\s*(?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)")
# "  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 129 kb/s"
_STREAM_RE = re.compile(
    r"^\s*Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$"
)
_SIZE_RE = re.compile(r"(?<![\w.])(\d{2,5})x(\d{2,5})(?![\w])")
_RATE_RE = re.compile(r"([\d.]+)(k?)\s+(fps|tbr)\b")
_HZ_RE = re.compile(r"(\d+)\s*Hz,\s*([^,]+)")
_ROTATION_RE = re.compile(r"rotation of\s*(-?[\d.]+)\s*degrees", re.IGNORECASE)


def _parse_header(stderr: str) -> dict | None:
    """Streams of input #0 from ffmpeg's listing; ``None`` when ffmpeg could not open the input."""
    lines = stderr.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Input #0"))
    except StopIteration:
        return None
    # The input listing ends where the output side begins.
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith(("Output #", "Stream mapping:", "[out#"))), len(lines))
    section = lines[start:end]

    duration = None
    for line in section:
        m = _DURATION_RE.search(line)
        if m and m.group(1) is not None:
            duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            break

    video = audio = None
    for i, line in enumerate(section):
        m = _STREAM_RE.match(line)
        if not m:
            continue
        kind, desc = m.group(2), m.group(3)
        # Side data (display matrix) follows the stream line, up to the next stream.
        following = []
        for extra in section[i + 1:]:
            if _STREAM_RE.match(extra):
                break
            following.append(extra)
        if kind == "Video" and video is None and "(attached pic)" not in desc:
            video = _parse_video_stream(desc, "\n".join(following))
        elif kind == "Audio" and audio is None:
            audio = _parse_audio_stream(desc)
    return {"duration": duration, "video": video, "audio": audio}


def _parse_video_stream(desc: str, side_data: str) -> dict:
    size = _SIZE_RE.search(desc)
    rates = {unit: float(value) * (1000 if k else 1) for value, k, unit in _RATE_RE.findall(desc)}
    rotation = 0
    m = _ROTATION_RE.search(side_data) or _ROTATION_RE.search(desc)
    if m:
        rotation = int(round(float(m.group(1)))) % 360
        rotation = min((0, 90, 180, 270, 360), key=lambda r: abs(r - rotation)) % 360
    return {
        "codec": desc.split()[0].rstrip(","),
        "width": int(size.group(1)) if size else None,
        "height": int(size.group(2)) if size else None,
        "fps": rates.get("fps") or rates.get("tbr"),
        "rotation": rotation,
    }


def _parse_audio_stream(desc: str) -> dict:
    m = _HZ_RE.search(desc)
    channels = None
    if m:
        layout = m.group(2).strip()
        channels = _CHANNEL_LAYOUTS.get(layout)
        if channels is None:
            n = re.match(r"(\d+)\s+channels", layout)
            channels = int(n.group(1)) if n else None
    return {
        "codec": desc.split()[0].rstrip(","),
        "sample_rate": int(m.group(1)) if m else None,
        "channels": channels,
    }


# ----------------------------------------------------------------------------------------------- packets
def _parse_framecrc(text: str) -> dict[str, dict]:
    """Per media type ("video"/"audio"): timebase, packet pts list and end time in seconds."""
    timebase: dict[int, float] = {}
    media_type: dict[int, str] = {}
    pts: dict[int, list[int]] = {}
    end: dict[int, int] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            name, _, index = key.partition(" ")
            if name == "tb":
                num, den = value.strip().split("/")
                timebase[int(index)] = int(num) / int(den)
            elif name == "media_type":
                media_type[int(index)] = value.strip()
            continue
        fields = line.split(",")
        if len(fields) < 5:
            continue
        index, packet_pts, duration = int(fields[0]), int(fields[2]), int(fields[3])
        pts.setdefault(index, []).append(packet_pts)
        end[index] = max(end.get(index, packet_pts + duration), packet_pts + duration)
    streams = {}
    for index, kind in media_type.items():
        stream_pts = sorted(pts.get(index, []))
        tb = timebase.get(index, 1.0)
        # Packets before time 0 are encoder priming / pre-roll that an edit list tells decoders to drop.
        start = max(stream_pts[0], 0) if stream_pts else 0
        streams[kind] = {
            "pts": [p for p in stream_pts if p >= 0] or stream_pts,
            "timebase": tb,
            "duration_s": (end[index] - start) * tb if stream_pts else 0.0,
            "start_s": start * tb,
        }
    return streams


def _guess_vfr(pts: list[int]) -> bool:
    if len(pts) < 3:
        return False
    intervals = sorted(b - a for a, b in zip(pts, pts[1:]))
    median = intervals[len(intervals) // 2]
    if median <= 0:
        return False
    # Ignore the extreme 1 % on each side: a single odd interval (an edit point) is not VFR.
    trim = len(intervals) // 100
    core = intervals[trim: len(intervals) - trim]
    return (core[-1] - core[0]) / median > _VFR_SPREAD


# ----------------------------------------------------------------------------------------------- assembly
def _build_info(p: Path, header: dict, packets: dict[str, dict], stderr: str) -> MediaInfo:
    video, audio = header["video"], header["audio"]
    vpk, apk = packets.get("video"), packets.get("audio")
    if (video and not (vpk and vpk["pts"])) or (audio and not (apk and apk["pts"])):
        raise MediaInputError(f"{p} lists a stream without any data (truncated or damaged)",
                              "re-copy or re-encode the file")
    stream_ends = [s["duration_s"] for s in (vpk, apk) if s]
    duration = header["duration"] if header["duration"] is not None else max(stream_ends)
    cut_off = max(stream_ends) < _TRUNCATION_FRACTION * duration - _TRUNCATION_SLACK_S
    if "partial file" in stderr or cut_off:
        raise MediaInputError(
            f"{p} is truncated (data ends at {max(stream_ends):.2f} s of {duration:.2f} s)",
            "re-copy or re-download it",
        )

    fields: dict = {"path": p, "duration_s": float(duration), "has_video": video is not None,
                    "has_audio": audio is not None}
    if video is not None:
        width, height = video["width"], video["height"]
        if video["rotation"] in (90, 270):
            width, height = height, width
        num_frames = len(vpk["pts"])
        fps = video["fps"] or (num_frames / vpk["duration_s"] if vpk["duration_s"] > 0 else None)
        fields.update(width=width, height=height, fps=fps, rotation=video["rotation"],
                      is_vfr=_guess_vfr(vpk["pts"]), num_frames=num_frames,
                      video_duration_s=vpk["duration_s"], video_start_s=vpk["start_s"], video_codec=video["codec"])
    if audio is not None:
        fields.update(audio_codec=audio["codec"], audio_sample_rate=audio["sample_rate"],
                      audio_channels=audio["channels"], audio_duration_s=apk["duration_s"])
    return MediaInfo(**fields)
