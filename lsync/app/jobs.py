"""What the web page does, without the page (no Gradio here, so it is tested directly).

An :class:`Engine` serves every browser tab of one ``lsync app`` server:

* **Models once per server.** :class:`ModelCache` loads the networks of a preset the first time a job needs them
  and keeps them; every job then gets its own sampler over the shared networks
  (:func:`lsync.stages.infer.load_models_for` with ``reuse=``), so two tabs may use different steps, guidance,
  seeds or masks at the same time.
* **A folder per job.** Each preview, run and batch works in a new ``OUT_DIR/<kind>-<time>-<random>/`` folder
  (concurrent users never share files); a run folder is an ordinary ``lsync infer`` output folder with the
  video and its ``lsync.json``. Uploads stay in ``OUT_DIR/uploads`` (:mod:`lsync.app.page`), so every input a
  manifest names is still there.
* **The CLI's inference and its errors.** Jobs call :func:`lsync.stages.infer.run` and
  :func:`~lsync.stages.infer.preview_chunk`; what goes wrong comes back as the one line ``lsync`` would print
  (:func:`error_line`) instead of an exception, and the server carries on.
* **Face tracks by digest.** The inference's track cache (``face_cache``, keyed by the video's content digest)
  makes a second audio on the same uploaded video - or a run after a preview - skip detection.
"""

from __future__ import annotations

import csv
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsync.console import get_logger
from lsync.errors import InputError, LsyncError, UsageError
from lsync.stages.infer import NETWORK_FIELDS, InferConfig, InferenceModels, Pair

log = get_logger(__name__)

#: ``sink(fraction, text)``: where a job's progress goes (the page's progress bar); fraction in [0, 1].
Sink = Callable[[float, str], None]

PRESETS = ("latentsync-1.5", "latentsync-1.6", "tiny")
LOOP_MODES = ("pingpong", "bounce", "loop", "hold")
FACE_SELECT = ("largest", "center")
CODECS = ("h264", "h265", "ffv1", "prores")
STAGES = ("faces", "audio", "denoise", "encode")
_STAGE_UNITS = {"faces": "frames", "denoise": "frames"}
_BROWSER_PLAYABLE = {"h264"}  # Chromium and Firefox play H.264 in .mp4; H.265, FFV1 and ProRes they do not


def _ignore_progress(fraction: float, text: str) -> None:
    pass


# ================================================================================================ small pieces
def error_line(exc: BaseException) -> str:
    """The one line ``lsync`` prints for ``exc``: ``lsync: error: <what>, <fix>``."""
    if isinstance(exc, LsyncError):
        message = exc.message
    elif isinstance(exc, OSError):
        message = f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    else:
        message = f"unexpected {type(exc).__name__}: {exc}, the server's log has the traceback; please report it"
    return "lsync: error: " + " ".join(str(message).split())


def format_seconds(seconds: float) -> str:
    """``0:07``, ``1:05:03``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressReporter:
    """Turns inference progress (``on_progress(stage, done, total)``) into a bar position and a line such as
    ``denoise (3/4) · 32/50 frames · 12.5 frames/s · ETA 0:02``.

    The rate of a stage is measured from its first report, so a stage that was skipped (a cached face track)
    shows no rate. ``part=(i, n)`` places the job as the i-th (from 0) of n in one bar (a batch).
    """

    def __init__(self, sink: Sink, part: tuple[int, int] = (0, 1), prefix: str = "",
                 clock: Callable[[], float] = time.monotonic):
        self.sink, self.part, self.prefix, self.clock = sink, part, prefix, clock
        self._stage: str | None = None
        self._since = 0.0
        self._done_since = 0

    def _fraction(self, fraction: float) -> float:
        index, count = self.part
        return min(1.0, max(0.0, (index + fraction) / count))

    def say(self, text: str, fraction: float = 0.0) -> None:
        self.sink(self._fraction(fraction), f"{self.prefix}{text}")

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = self.clock()
        if stage != self._stage:
            self._stage, self._since, self._done_since = stage, now, done
        number = STAGES.index(stage) + 1 if stage in STAGES else 0
        parts = [f"{stage} ({number}/{len(STAGES)})" if number else stage]
        unit = _STAGE_UNITS.get(stage)
        if unit is not None:
            parts.append(f"{done}/{total} {unit}")
            elapsed, advanced = now - self._since, done - self._done_since
            if elapsed > 0 and advanced > 0:
                rate = advanced / elapsed
                parts += [f"{rate:.1f} {unit}/s", f"ETA {format_seconds((total - done) / rate)}"]
            elif done < total:
                parts.append("ETA -")
        self.sink(self._fraction(done / total if total else 1.0), f"{self.prefix}{' · '.join(parts)}")


def new_job_folder(out_dir: Path, kind: str) -> Path:
    """A new, empty ``out_dir/<kind>-<YYYYmmdd-HHMMSS>-<6 hex>/`` (created atomically: never shared)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    while True:
        folder = out_dir / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _remove_if_empty(folder: Path | None) -> None:
    if folder is not None:
        try:
            folder.rmdir()
        except OSError:
            pass  # something landed there: keep it


def browser_copy(video: Path, codec: str) -> Path:
    """``video`` itself when a browser plays it, else an H.264 ``<stem>.browser.mp4`` beside it for the player
    (the download link keeps the real output)."""
    from lsync.manifest import atomic_output
    from lsync.media.ffmpeg import file_arg, run_ffmpeg

    if codec in _BROWSER_PLAYABLE:
        return video
    target = video.with_name(f"{video.stem}.browser.mp4")
    with atomic_output(target) as tmp:
        run_ffmpeg(["-i", file_arg(video), "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart",
                    "-y", file_arg(tmp)], f"make a browser copy of {video}")
    return target


# ================================================================================================ settings
@dataclass
class JobSettings:
    """What the page lets a user choose for a job (everything else comes from the server's config)."""

    preset: str = "latentsync-1.5"
    steps: int = 20
    guidance: float = 1.5
    seed: int = 1247
    loop: str = "pingpong"
    face_select: str = "largest"
    codec: str = "h264"
    mask: str | None = None  # PNG of the aligned face, white keep / black repaint

    def apply(self, base: InferConfig) -> InferConfig:
        """``base`` with these settings, each checked (values from a web form may be missing or of any type)."""
        choices = {"preset": PRESETS, "loop": LOOP_MODES, "face_select": FACE_SELECT, "codec": CODECS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name.replace('_', ' ')} must be one of {', '.join(allowed)}, "
                                 f"got {getattr(self, name)!r}", "pick one from the list")
        steps = _number("steps", self.steps, int, low=1)
        guidance = _number("guidance", self.guidance, float, low=0.0)
        seed = _number("seed", self.seed, int)
        mask = self.mask or None
        if mask is not None and Path(mask).suffix.lower() != ".png":
            raise InputError(f"mask {Path(mask).name} is not a PNG", "upload a PNG: white keeps, black is repainted")
        return dataclasses.replace(base, preset=self.preset, steps=steps, guidance=guidance, seed=seed,
                                   loop=self.loop, face_select=self.face_select, codec=self.codec, mask=mask)


def _number(name: str, value: Any, kind: type, low: float | None = None):
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}",
                         f"enter a {name}") from None
    if low is not None and number < low:
        raise UsageError(f"{name} must be at least {low:g}, got {number}", f"enter a larger {name}")
    return number


# ================================================================================================ models
class ModelCache:
    """The networks of each preset (each distinct set of :data:`~lsync.stages.infer.NETWORK_FIELDS`), loaded the
    first time a job needs them and kept for the server's lifetime; every job gets its own sampler."""

    def __init__(self):
        self._loaded: dict[tuple, InferenceModels] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times networks were loaded (tests check that it stays at one per preset)

    def get(self, config: InferConfig, report: ProgressReporter | None = None) -> InferenceModels:
        from lsync.stages.infer import load_models_for

        key = tuple(getattr(config, name) for name in NETWORK_FIELDS)
        loaded_now = 0.0
        with self._lock:  # one load per key, even when two tabs ask for it at once
            base = self._loaded.get(key)
            if base is None:
                if report is not None:
                    report.say(f"loading the {config.preset} models (once per server)")
                base = load_models_for(config)
                self._loaded[key] = base
                self.loads += 1
                loaded_now = base.load_seconds
        models = load_models_for(config, reuse=base)
        return dataclasses.replace(models, load_seconds=models.load_seconds + loaded_now)


# ================================================================================================ results
@dataclass
class PreviewResult:
    error: str | None = None
    folder: Path | None = None
    strip: Path | None = None  # PNG: input face, mask, generated face, blended frame
    summary: str = ""


@dataclass
class RunResult:
    error: str | None = None
    folder: Path | None = None
    video: Path | None = None  # the output, for the download link
    playable: Path | None = None  # what the page's player shows (a browser copy for ffv1/prores/h265)
    manifest: dict[str, Any] | None = None  # the run folder's lsync.json
    entry: dict[str, Any] | None = None  # this output's entry in it
    summary: str = ""


@dataclass
class BatchResult:
    error: str | None = None  # the batch could not start (or every pair failed: the first error)
    folder: Path | None = None
    outputs: list[Path] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)  # one per pair, the columns of BATCH_COLUMNS
    manifest: dict[str, Any] | None = None
    summary: str = ""


BATCH_COLUMNS = ["output", "video", "audio", "frames", "lip-synced", "passed through", "seconds", "error"]


def describe_run(entry: dict[str, Any]) -> str:
    """One line for the page: frames synced and passed through, where the faces came from, stage timings."""
    frames, timings = entry["frames"], entry["timings_s"]
    stages = {
        "models": timings.get("load_models", 0.0),
        "faces": timings.get("decode", 0.0) + timings.get("detect", 0.0) + timings.get("align_fit", 0.0),
        "audio": timings.get("audio_features", 0.0),
        "denoise": sum(timings.get(k, 0.0) for k in ("align", "denoise", "restore")),
        "encode": timings.get("encode", 0.0),
    }
    face_source = frames.get("face_source", {}).get("from", "detection")
    return (f"{entry['output']}: {frames['total']} frames, {frames['synced']} lip-synced, "
            f"{frames['passed_through']} passed through; faces from {face_source}; {entry['elapsed_s']:.1f} s ("
            + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in stages.items()) + ")")


# ================================================================================================ the engine
class Engine:
    """Previews, runs and batches for every tab of one server (thread-safe: Gradio calls it from worker threads).

    Args:
        out_dir: every job's folder goes here.
        base: the server's inference config (device, weights, detector, ...); the page's :class:`JobSettings`
            are applied on top of it per job.
        allow_server_paths: let a pairs CSV name files on the server's disk (only when the page is served on
            localhost: a remote user could otherwise read any video the server can).
    """

    def __init__(self, out_dir: str | Path, base: InferConfig | None = None, allow_server_paths: bool = False):
        self.out_dir = Path(out_dir)
        self.base = base or InferConfig()
        self.allow_server_paths = allow_server_paths
        self.models = ModelCache()

    # ------------------------------------------------------------------------------------------ inputs
    def describe_media(self, path: str | None, role: str) -> tuple[str, float | None]:
        """A line about an uploaded ``video`` or ``audio`` (size, rate, length) or its error; and its duration."""
        if not path:
            return "", None
        from lsync.media.probe import probe

        try:
            info = probe(path).require(video=role == "video", audio=role == "audio")
        except LsyncError as exc:
            return error_line(exc), None
        if role == "video":
            return (f"video {Path(path).name}: {info.width}x{info.height}, {info.fps:g} fps, "
                    f"{info.video_duration_s:.2f} s"), info.video_duration_s
        return (f"audio {Path(path).name}: {info.audio_sample_rate} Hz, {info.audio_channels} channel(s), "
                f"{info.audio_duration_s:.2f} s"), info.audio_duration_s

    def _config(self, settings: JobSettings) -> InferConfig:
        return settings.apply(self.base)

    def _single_job(self, video: str | None, audio: str | None,
                    settings: JobSettings) -> tuple[Path, Path, InferConfig]:
        """What a preview or a run starts from: both uploads (a missing one is the error) and the job's config."""
        if not video:
            raise UsageError("no video", "upload a video with a face")
        if not audio:
            raise UsageError("no audio", "upload the audio to lip-sync to (any file with sound)")
        return Path(video), Path(audio), self._config(settings)

    # ------------------------------------------------------------------------------------------ preview
    def preview(self, video: str | None, audio: str | None, settings: JobSettings, at_seconds: float | None,
                sink: Sink = _ignore_progress) -> PreviewResult:
        """Lip-sync the 16-frame chunk around ``at_seconds`` and write its frame strip into a new folder."""
        from lsync.stages.infer import preview_chunk

        folder = None
        report = ProgressReporter(sink)
        try:
            video_path, audio_path, config = self._single_job(video, audio, settings)
            at = _number("preview time", at_seconds if at_seconds is not None else 0.0, float, low=0.0)
            models = self.models.get(config, report)
            started = time.perf_counter()
            preview = preview_chunk(video_path, audio_path, config, models, at, on_progress=report)
            folder = new_job_folder(self.out_dir, "preview")
            strip = folder / f"{video_path.stem}.strip-{preview.frame:06d}.png"
            preview.strip.write(strip)
            start, end = preview.chunk
            summary = (f"frame {preview.frame} ({preview.frame / 25:.2f} s) of chunk {start}-{end - 1}, "
                       f"faces from {preview.face_source['from']}, {time.perf_counter() - started:.1f} s: "
                       "input face | what the U-Net sees (grey: repainted) | generated | blended")
            return PreviewResult(folder=folder, strip=strip, summary=summary)
        except Exception as exc:
            return PreviewResult(error=self._failed("preview", exc, folder))

    # ------------------------------------------------------------------------------------------ run
    def run(self, video: str | None, audio: str | None, settings: JobSettings,
            sink: Sink = _ignore_progress) -> RunResult:
        """The whole video, in a new run folder; the result carries the output, a playable copy and lsync.json."""
        from lsync.manifest import read_manifest
        from lsync.stages.infer import run

        folder = None
        report = ProgressReporter(sink)
        try:
            video_path, audio_path, config = self._single_job(video, audio, settings)
            models = self.models.get(config, report)
            folder = new_job_folder(self.out_dir, "run")
            entry = run(video_path, audio_path, folder, config, models=models, on_progress=report)
            output = folder / entry["output"]
            playable = browser_copy(output, config.codec)
            return RunResult(folder=folder, video=output, playable=playable, entry=entry,
                             manifest=read_manifest(folder, kind="inference"), summary=describe_run(entry))
        except Exception as exc:
            return RunResult(error=self._failed("run", exc, folder), folder=None)

    # ------------------------------------------------------------------------------------------ batch
    def batch(self, videos: Sequence[str] | None, audios: Sequence[str] | None, pairs_csv: str | None,
              settings: JobSettings, sink: Sink = _ignore_progress) -> BatchResult:
        """Every pair with one set of models into one batch folder (one ``lsync.json``); a pair that fails is
        reported in its row and the others still run."""
        from lsync.manifest import read_manifest
        from lsync.stages.infer import run

        folder = None
        try:
            config = self._config(settings)
            pairs = self.pairs(videos or [], audios or [], pairs_csv, config.codec)
            models = self.models.get(config, ProgressReporter(sink))
            folder = new_job_folder(self.out_dir, "batch")
        except Exception as exc:
            return BatchResult(error=self._failed("batch", exc, folder))
        result = BatchResult(folder=folder)
        errors = []
        for number, pair in enumerate(pairs):
            report = ProgressReporter(sink, part=(number, len(pairs)), prefix=f"pair {number + 1}/{len(pairs)} · ")
            started = time.perf_counter()
            try:
                entry = run(pair.video, pair.audio, folder, config, models=models, name=pair.name,
                            on_progress=report)
            except Exception as exc:
                errors.append(self._failed(f"batch pair {number + 1}", exc, None))
                result.rows.append([pair.name, pair.video.name, pair.audio.name, None, None, None,
                                    round(time.perf_counter() - started, 1), errors[-1]])
                continue
            frames = entry["frames"]
            result.outputs.append(folder / entry["output"])
            result.rows.append([entry["output"], pair.video.name, pair.audio.name, frames["total"], frames["synced"],
                                frames["passed_through"], round(entry["elapsed_s"], 1), ""])
        done = len(result.outputs)
        result.summary = f"{done} of {len(pairs)} pairs done" + (f", {len(errors)} failed" if errors else "")
        if done:
            result.manifest = read_manifest(folder, kind="inference")
        else:
            result.error = errors[0]
            _remove_if_empty(folder)
            result.folder = None
        return result

    def pairs(self, videos: Sequence[str], audios: Sequence[str], pairs_csv: str | None, codec: str) -> list[Pair]:
        """The pairs of a batch: the rows of a pairs CSV, or the uploads paired by count - as many videos as
        audios (in order), one video with every audio, or every video with one audio."""
        from lsync.stages.infer import output_name

        videos, audios = [Path(v) for v in videos], [Path(a) for a in audios]
        if pairs_csv:
            return self._pairs_from_csv(Path(pairs_csv), videos, audios, codec)
        if not videos or not audios:
            raise UsageError("a batch needs videos and audios", "upload both, or a pairs CSV (video,audio[,name])")
        if len(videos) == len(audios):
            combos = list(zip(videos, audios))
        elif len(videos) == 1 or len(audios) == 1:
            combos = [(v, a) for v in videos for a in audios]
        else:
            raise UsageError(f"{len(videos)} videos and {len(audios)} audios cannot be paired",
                             "upload as many of each, one video with several audios, several videos with one "
                             "audio, or a pairs CSV")
        pairs, taken = [], set()
        for video, audio in combos:
            stem = f"{video.stem}-with-{audio.stem}"
            name, copy = stem, 2
            while name in taken:
                name, copy = f"{stem}-{copy}", copy + 1
            taken.add(name)
            pairs.append(Pair(video, audio, output_name(video, name, codec)))
        return pairs

    def _pairs_from_csv(self, path: Path, videos: list[Path], audios: list[Path], codec: str) -> list[Pair]:
        """Rows of ``video,audio[,name]``: a cell names an uploaded file (by file name) or, on a localhost
        server, a file on the server's disk."""
        from lsync.stages.infer import output_name

        uploaded = {p.name: p for p in [*videos, *audios]}
        pairs = []
        with open(path, newline="", encoding="utf-8") as f:
            rows = [[cell.strip() for cell in row] for row in csv.reader(f)]
        for number, row in enumerate(rows, start=1):
            if not any(row) or row[0].startswith("#") or (number == 1 and row[0].lower() == "video"):
                continue
            if len(row) not in (2, 3) or not row[0] or not row[1]:
                raise UsageError(f"{path.name} line {number}: expected video,audio[,output name], got "
                                 f"{len(row)} fields", "fix the CSV row")
            video, audio = (self._resolve_cell(cell, uploaded, path.name, number) for cell in row[:2])
            pairs.append(Pair(video, audio, output_name(video, row[2] if len(row) == 3 else None, codec)))
        if not pairs:
            raise UsageError(f"{path.name} lists no pairs", "add video,audio rows")
        names = [pair.name for pair in pairs]
        if len(set(names)) != len(names):
            raise UsageError(f"{path.name}: two rows would write the same output file",
                             "give each row its own output name in the third column")
        return pairs

    def _resolve_cell(self, cell: str, uploaded: dict[str, Path], csv_name: str, line: int) -> Path:
        if Path(cell).name in uploaded:
            return uploaded[Path(cell).name]
        if self.allow_server_paths and Path(cell).expanduser().is_absolute() and Path(cell).expanduser().is_file():
            return Path(cell).expanduser()
        fix = "upload it with the videos and audios" + (", or give its absolute path on this machine"
                                                          if self.allow_server_paths else "")
        raise InputError(f"{csv_name} line {line}: {cell} is not among the uploaded files", fix)

    # ------------------------------------------------------------------------------------------ errors
    @staticmethod
    def _failed(job: str, exc: BaseException, folder: Path | None) -> str:
        """Log ``exc`` (with its traceback when it is a bug), tidy an empty job folder, return the page's line."""
        line = error_line(exc)
        if isinstance(exc, LsyncError):
            log.warning("%s failed: %s", job, line)
        else:
            log.error("%s failed: %s", job, line, exc_info=exc)
        _remove_if_empty(folder)
        return line

