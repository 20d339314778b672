"""``lsync preprocess raw/ data/``: sources in, aligned 25 fps / 16 kHz clips out - resumable and parallel.

Per source (one worker process each, taken from a dynamic queue, :mod:`lsync.stages.preprocess_pool`):

1. **probe** - unusable files become ``rejects.jsonl`` lines (``unreadable``, ``no_video``, ``no_audio``,
   ``too_short``) instead of crashing the run; so do entries named like videos that are no files
   (``dangling_symlink``, ``not_a_file``, also logged as a warning);
2. **audio** - extracted to a 16 kHz wav; a source quieter than -60 dBFS RMS is rejected as ``silent_audio``;
3. **analysis pass** - decode at 25 fps on a small copy (long side ``detect_size``): shot cuts, faces per frame;
4. **track** - follow one subject so identity cannot switch mid-clip, fill short gaps, split on long ones;
5. **plan** - clips of ``min..max`` seconds inside one shot and one track segment (:mod:`lsync.data.clip_plan`);
6. **write pass** - decode again at full size and stream each planned clip's frames through the alignment
   (:mod:`lsync.face.align`) into its own encoder; cut its audio sample-exactly (640 samples per frame).

Two decoding passes keep memory flat: nothing holds more than one frame, whatever the video's length.

Crash safety: every file is written under a temp name and renamed when complete; a source's records are
appended in one write *after* its files exist, and ``sources.jsonl`` (one line per finished source) is
appended last. A rerun removes temp debris, records of unfinished sources and files no record points
to, then processes only what is not finished - so a kill at any moment and a rerun give the same result
as one uninterrupted run. A worker process that dies (the out-of-memory killer, a crash in native code) takes
only its source with it: that source is rejected as ``worker_crashed`` (the signal in ``detail``), the run goes
on, and a rerun tries it again. Ctrl-C or ``kill`` stops every worker and ffmpeg child before the command exits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import shutil
import tempfile
import time
import unicodedata
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsync.config import changed_config_keys, config_to_dict, load_yaml, save_config_yaml
from lsync.console import get_logger, progress
from lsync.data.layout import (
    CLIPS_DIR,
    CLIPS_FILE,
    CONFIG_FILE,
    FPS,
    REJECTS_FILE,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    SOURCES_FILE,
    VIDEO_EXTENSIONS,
    summarize_records,
)
from lsync.errors import InputError, UsageError
from lsync.face.config import FaceConfig
from lsync.face.track import smooth_landmarks
from lsync.manifest import (
    MANIFEST_NAME,
    TEMP_PREFIX,
    RecordWriter,
    atomic_output,
    quick_file_digest,
    read_records,
    remove_temp_debris,
    rewrite_records,
    write_manifest,
)
from lsync.face_select import face_select_rule
from lsync.stages.preprocess_pool import WorkerCrash, WorkerPool, sigterm_as_interrupt

log = get_logger(__name__)

# Config keys that change how the work is spread, not what it produces: a rerun may change them freely.
RUNTIME_KEYS = ("workers",)
#: A source whose audio stays below this loudness (RMS over the whole source, dB full scale) has no speech.
SILENCE_DBFS = -60.0
WORKER_CRASHED = "worker_crashed"  # the worker process died on the source; a rerun tries it again
#: Entries of the input folder that look like videos but cannot be read as files (reported, not skipped silently).
DANGLING_SYMLINK, NOT_A_FILE = "dangling_symlink", "not_a_file"
LISTING_REJECTS = (DANGLING_SYMLINK, NOT_A_FILE)


@dataclass
class PreprocessConfig(FaceConfig):
    """Everything that shapes a data directory. Defaults follow the LatentSync recipe; the face keys
    (``detector`` ... ``smooth_strength``) are :class:`~lsync.face.config.FaceConfig`'s."""

    min_face: int = 50  # training faces must be larger than what inference accepts (FaceConfig: 32)
    resolution: int = 256  # aligned face size (256 for LatentSync 1.5, 512 for 1.6)
    min_clip_seconds: float = 5.0
    max_clip_seconds: float = 10.0
    shot_threshold: float = 3.0  # adaptive content-detector ratio
    shot_min_content: float = 15.0
    val_fraction: float = 0.1  # share of sources in the val split (by a hash of the source path)
    crf: int = 15  # H.264 quality of the aligned clips (lower is better; <= 15 keeps detail for training)
    workers: int = 1
    shard: str | None = None  # "i/n": process only the i-th of n deterministic partitions of the sources


# ================================================================================================ sources
@dataclass(frozen=True)
class Source:
    path: Path  # absolute path to read
    key: str  # stable name in records: path relative to the input folder (or as listed)
    problem: str | None = None  # DANGLING_SYMLINK or NOT_A_FILE: named like a video, but no file to read


def list_sources(inputs: Path, out_dir: Path) -> list[Source]:
    """Video files under a folder (recursive, never inside ``out_dir``) or listed in a text file.

    Entries named like videos that are not readable files - a symlink whose target is gone, a folder called
    ``take.mp4`` - are listed with a ``problem`` so the run reports them (a warning and a reject) instead of
    passing over them without a word.
    """
    if not inputs.exists():
        raise InputError(f"{inputs} does not exist", "pass a folder of videos or a text file of paths")
    if inputs.is_dir():
        out_resolved = out_dir.resolve()
        found = []
        for path in sorted(inputs.rglob("*")):
            if path.suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            real = Path(os.path.realpath(path))  # never raises, not even on a symlink loop
            if out_resolved == real or out_resolved in real.parents:
                continue  # our own outputs when data/ lives inside raw/
            key = path.relative_to(inputs).as_posix()
            if path.is_file():
                found.append(Source(path.resolve(), key))
            elif path.is_symlink() and not path.exists():
                found.append(Source(path.absolute(), key, DANGLING_SYMLINK))
            elif path.is_dir():
                found.append(Source(path.absolute(), key, NOT_A_FILE))
        return found
    lines = inputs.read_text(encoding="utf-8").splitlines()
    sources = []
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        path = path if path.is_absolute() else inputs.parent / path
        if path.is_symlink() and not path.exists():
            sources.append(Source(path.absolute(), entry, DANGLING_SYMLINK))
        elif path.is_dir():
            sources.append(Source(path.absolute(), entry, NOT_A_FILE))
        else:
            sources.append(Source(path.resolve(), entry))  # a missing file is probed: an `unreadable` reject
    return sources


def _listing_problem(source: Source) -> str:
    if source.problem == DANGLING_SYMLINK:
        return f"symlink to {os.readlink(source.path)}, which does not exist"
    return "a folder, not a video file"


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", shard.strip())
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise UsageError(f"--shard {shard!r} is not of the form i/n with 0 <= i < n", "write e.g. --shard 0/4")
    return int(match[1]), int(match[2])


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic partition by a hash of the source key, the same on every machine."""
    return shard is None or _stable_hash(key) % shard[1] == shard[0]


def split_of(key: str, val_fraction: float) -> str:
    return "val" if (_stable_hash("split:" + key) % 10_000) / 10_000 < val_fraction else "train"


def clip_id(source_key: str, index: int) -> str:
    """``<readable stem>-<8 hex of the source key>-<index>``: stable across reruns, unique per source."""
    stem = unicodedata.normalize("NFKD", Path(source_key).stem).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_")[:40] or "clip"
    return f"{stem}-{_stable_hash(source_key):016x}"[: len(stem) + 9] + f"-{index:03d}"


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


# ================================================================================================ one source
@dataclass
class SourceResult:
    source: dict[str, Any]
    clips: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


def process_source(source: Source, out_dir: Path, config: PreprocessConfig, digest: str,
                   frame_counter=None) -> SourceResult:
    """Everything for one source; returns its records (the parent process appends them)."""
    from lsync.media.probe import MediaInputError, probe

    started = time.perf_counter()
    base = {"source": source.key, "source_digest": digest}
    if source.problem is not None:
        return _rejected(base, source.problem, _listing_problem(source), started)
    try:
        info = probe(source.path)
        info.require(video=True, audio=True)
    except MediaInputError as exc:
        return _rejected(base, exc.reason, exc.message, started)
    duration = min(info.video_duration_s or info.duration_s, info.audio_duration_s or info.duration_s)
    if duration < config.min_clip_seconds:
        return _rejected(base, "too_short", f"{duration:.2f} s of audio and video, a clip needs "
                                            f"{config.min_clip_seconds:g} s", started)
    try:
        return _process_video(source, info, out_dir, config, base, started, frame_counter)
    except MediaInputError as exc:  # e.g. a file that probes fine but fails mid-decode
        return _rejected(base, exc.reason, exc.message, started)


def _rejected(base: dict[str, Any], reason: str, detail: str, started: float) -> SourceResult:
    reject = {**base, "reason": reason, "detail": detail}
    source = {**base, "status": "rejected", "reason": reason, "clips": 0,
              "seconds": round(time.perf_counter() - started, 3)}
    return SourceResult(source=source, rejects=[reject])


def _process_video(source, info, out_dir, config, base, started, frame_counter) -> SourceResult:
    from lsync.data.clip_plan import plan_clips
    from lsync.face.track import track_faces
    from lsync.media.shots import shot_ranges

    # The audio first: a silent source is rejected before the expensive face detection.
    with _temp_wav(source.path, out_dir) as wav_path:
        loudness = wav_loudness_dbfs(wav_path)
        if loudness < SILENCE_DBFS:
            level = "digital silence" if loudness == -math.inf else f"{loudness:.1f} dBFS"
            return _rejected(base, "silent_audio", f"audio is silent ({level} RMS, below {SILENCE_DBFS:g} dBFS)",
                             started)
        shots, per_frame_faces = _analysis_pass(source, config, frame_counter)
        num_frames = len(per_frame_faces)
        usable = min(num_frames, _wav_length(wav_path) // SAMPLES_PER_FRAME)
        selection = None
        if face_select_rule(config).multi_track:
            try:
                selected = _choose_face(source, per_frame_faces[:usable], shots.cuts(), (info.width, info.height),
                                        config, wav_path)
            except InputError as exc:
                return _rejected(base, "no_selected_face", exc.what, started)
            tracks, selection = selected.segments, selected.report
        else:
            tracks = track_faces(per_frame_faces[:usable], face_select=config.face_select,
                                 frame_size=(info.width, info.height), max_gap=config.max_gap,
                                 min_face=config.min_face)
        if not tracks:
            reason, detail = _no_track_reason(per_frame_faces[:usable], config.min_face)
            return _rejected(base, reason, detail, started)

        min_frames = round(config.min_clip_seconds * FPS)
        max_frames = round(config.max_clip_seconds * FPS)
        plan, dropped = plan_clips(shot_ranges(usable, shots.cuts()), [(t.start, t.end) for t in tracks],
                                   min_frames, max_frames)
        rejects = [{**base, "reason": d.reason, "detail": d.detail, "start_frame": d.start, "end_frame": d.end}
                   for d in dropped]
        if not plan:
            result = _rejected(base, "no_clip", "no stretch of one face in one shot is long enough", started)
            result.rejects = rejects + result.rejects
            return result
        split = split_of(source.key, config.val_fraction)
        clips = _write_clips(source, out_dir, config, plan, tracks, wav_path, split, base)

    record = {**base, "status": "accepted", "clips": len(clips), "frames": num_frames,
              "shots": len(shots.cuts()) + 1, "seconds": round(time.perf_counter() - started, 3)}
    if selection is not None:
        record["face_selection"] = selection
    return SourceResult(source=record, clips=clips, rejects=rejects, frames=num_frames,
                        seconds=num_frames / FPS)


def _choose_face(source: Source, per_frame_faces, cuts, frame_size, config: PreprocessConfig, wav_path: Path):
    """``speaker`` / ``X,Y`` / ``track:N``: every face tracked, the named one kept (its segments and the report)."""
    from lsync.audio.mel import load_wav_16k_mono
    from lsync.face_select import choose_face

    return choose_face(source.path, per_frame_faces, cuts, frame_size, config, lambda: load_wav_16k_mono(wav_path))


def _analysis_pass(source: Source, config: PreprocessConfig, frame_counter):
    """Shot cuts and faces of every frame, decoded at 25 fps (the detector downscales, landmarks are full-size)."""
    from lsync.face.detect import detector_from_config
    from lsync.media.shots import ShotDetector, ShotDetectorConfig
    from lsync.media.video import VideoReader

    shots = ShotDetector(ShotDetectorConfig(adaptive_threshold=config.shot_threshold,
                                            min_content=config.shot_min_content))
    per_frame_faces = []
    with detector_from_config(config) as detector:
        for frame in VideoReader(source.path, fps=FPS):
            shots.push(frame)
            per_frame_faces.append(detector.detect(frame))
            if frame_counter is not None:
                frame_counter.value += 1  # one writer per counter: no lock
    return shots, per_frame_faces


def _no_track_reason(per_frame_faces, min_face: int) -> tuple[str, str]:
    sizes = [min(f.width, f.height) for faces in per_frame_faces for f in faces]
    if not sizes:
        return "no_face", f"no face found in any of {len(per_frame_faces)} frames"
    return "small_face", f"largest face {max(sizes):.0f} px, below --min-face {min_face}"


def _write_clips(source, out_dir, config, plan, tracks, wav_path, split, base) -> list[dict[str, Any]]:
    """Second pass: stream full-size frames through the alignment into one encoder per clip."""
    from lsync.face.align import align_face
    from lsync.media.video import VideoReader, VideoWriter

    clips_dir = out_dir / CLIPS_DIR
    clips_dir.mkdir(parents=True, exist_ok=True)
    first, last = plan[0].start, plan[-1].end
    frames = iter(VideoReader(source.path, fps=FPS, start_frame=first, num_frames=last - first))
    position = first
    records = []
    for clip in plan:
        for _ in range(clip.start - position):  # frames between clips: decoded, not used
            next(frames)
        track = tracks[clip.track]
        window = slice(clip.start - track.start, clip.end - track.start)
        # Smooth within the clip only, so a clip's crops never depend on frames outside it.
        raw = track.landmarks3[window]
        landmarks = smooth_landmarks(raw, config.smooth_method, config.smooth_strength, fps=FPS)
        cid = clip_id(source.key, clip.index)
        video_rel, audio_rel, meta_rel = (f"{CLIPS_DIR}/{cid}.mp4", f"{CLIPS_DIR}/{cid}.wav", f"{CLIPS_DIR}/{cid}.npz")
        affines = []
        with VideoWriter(out_dir / video_rel, FPS, config.resolution, config.resolution, crf=config.crf) as writer:
            for points in landmarks:
                aligned, affine = align_face(next(frames), points, config.resolution)
                affines.append(affine)
                writer.write(aligned[None])
        position = clip.end
        _write_audio_slice(wav_path, out_dir / audio_rel, clip.start, clip.end)
        with atomic_output(out_dir / meta_rel) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, affines=np.stack(affines).astype(np.float32), landmarks3=landmarks.astype(np.float32),
                         raw_landmarks3=raw.astype(np.float32), bboxes=track.bboxes[window].astype(np.float32),
                         interpolated=track.interpolated[window])
        records.append({
            "id": cid, **base, "index": clip.index, "split": split,
            "start_frame": clip.start, "end_frame": clip.end, "num_frames": clip.end - clip.start,
            "start": clip.start / FPS, "end": clip.end / FPS, "fps": FPS, "sample_rate": SAMPLE_RATE,
            "num_samples": (clip.end - clip.start) * SAMPLES_PER_FRAME, "resolution": config.resolution,
            "video": video_rel, "audio": audio_rel, "meta": meta_rel, "face": _face_stats(track, window),
        })
    return records


def _face_stats(track, window: slice) -> dict[str, Any]:
    boxes = track.bboxes[window]
    sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    scores = track.scores[window]
    return {
        "mean_size_px": round(float(sizes.mean()), 1),
        "min_size_px": round(float(sizes.min()), 1),
        "interpolated_frames": int(track.interpolated[window].sum()),
        "mean_score": round(float(np.nanmean(scores)), 4) if np.isfinite(scores).any() else None,
    }


# ================================================================================================ audio
@contextlib.contextmanager
def _temp_wav(source: Path, out_dir: Path) -> Iterator[Path]:
    """The source's audio as 16 kHz mono 16-bit wav, in scratch space removed afterwards.

    The temp prefix makes a file left by a killed worker count as debris that the next run deletes.
    """
    from lsync.media.ffmpeg import run_ffmpeg

    folder = out_dir / CLIPS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}audio-", suffix=".wav", dir=folder)
    os.close(fd)
    path = Path(name)
    try:
        run_ffmpeg(["-i", source, "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
                    "-c:a", "pcm_s16le", "-y", path], what=f"extract the audio of {source}")
        yield path
    finally:
        path.unlink(missing_ok=True)


def wav_loudness_dbfs(path: Path, chunk_frames: int = 1 << 20) -> float:
    """RMS level of a 16-bit wav over its whole length in dB full scale (a full-scale square wave is 0 dBFS,
    digital silence ``-inf``); read in chunks, so memory stays flat for hour-long sources."""
    total, count = 0.0, 0
    with wave.open(str(path), "rb") as wav:
        while chunk := wav.readframes(chunk_frames):
            samples = np.frombuffer(chunk, dtype="<i2").astype(np.float64) / 32768.0
            total += float(np.dot(samples, samples))
            count += len(samples)
    if count == 0 or total == 0.0:
        return -math.inf
    return 10.0 * math.log10(total / count)


def _wav_length(path: Path) -> int:
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes()


def _write_audio_slice(wav_path: Path, out_path: Path, start_frame: int, end_frame: int) -> None:
    """Samples ``[start * 640, end * 640)``: exactly the clip's frames, nothing more."""
    from lsync.media.audio import write_wav

    with wave.open(str(wav_path), "rb") as wav:
        wav.setpos(start_frame * SAMPLES_PER_FRAME)
        pcm = np.frombuffer(wav.readframes((end_frame - start_frame) * SAMPLES_PER_FRAME), dtype="<i2")
    write_wav(out_path, pcm.astype(np.int16), SAMPLE_RATE)


# ================================================================================================ the run
def run(inputs: Path, out_dir: Path, config: PreprocessConfig, force: bool = False) -> dict[str, Any]:
    """Preprocess every source under ``inputs`` into ``out_dir``; returns the summary written to lsync.json."""
    started = time.perf_counter()
    face_select_rule(config)  # a bad --face-select (or speaker without --syncnet) fails before any work
    if face_select_rule(config).mode == "speaker" and not Path(config.syncnet).expanduser().exists():
        raise InputError(f"--syncnet {config.syncnet} does not exist", "pass a SyncNet run or checkpoint")
    shard = parse_shard(config.shard)
    sources = [s for s in list_sources(inputs, out_dir) if in_shard(s.key, shard)]
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_or_record_config(out_dir, config, force)
    done = _recover(out_dir)

    todo, digests = [], {}
    for source in sources:
        digests[source.key] = _source_digest(source.path)
        if _needs_processing(done.get(source.key), digests[source.key]):
            todo.append(source)
    stale = [key for key, rec in done.items() if key in digests and _needs_processing(rec, digests[key])]
    if stale:
        _forget_sources(out_dir, set(stale))
    if todo:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # the directory is not complete until we finish
        log.info("%d of %d sources to process (%d already done)", len(todo), len(sources), len(sources) - len(todo))
        _process_all(todo, out_dir, config, digests)

    summary = _finalize(out_dir, config, sources, digests, time.perf_counter() - started)
    return summary


def _needs_processing(previous: dict[str, Any] | None, digest: str) -> bool:
    """Not finished yet, changed on disk since, or lost with a worker that died on it (worth another try: the
    cause, e.g. the out-of-memory killer while other workers were busy, is rarely the source itself)."""
    return previous is None or previous["source_digest"] != digest or previous.get("reason") == WORKER_CRASHED


def _source_digest(path: Path) -> str:
    try:
        return quick_file_digest(path)
    except OSError:
        return "unreadable"


def _check_or_record_config(out_dir: Path, config: PreprocessConfig, force: bool) -> None:
    """Refuse to mix outputs of two configs in one directory, unless ``--force`` (which starts over)."""
    path = out_dir / CONFIG_FILE
    current = config_to_dict(config)
    if path.is_file():
        changed = changed_config_keys(load_yaml(path), current, ignore=RUNTIME_KEYS)
        if changed:
            if not force:
                raise UsageError(f"{out_dir} was made with a different config ({', '.join(changed)} differ)",
                                 "use another output directory, or --force to discard it and start over")
            _clear_outputs(out_dir)
    elif any((out_dir / name).exists() for name in (CLIPS_FILE, REJECTS_FILE, SOURCES_FILE, MANIFEST_NAME)):
        if not force:
            raise UsageError(f"{out_dir} holds outputs without a config.yaml", "pass --force to start over")
        _clear_outputs(out_dir)
    save_config_yaml(config, path)


def _clear_outputs(out_dir: Path) -> None:
    """Remove what preprocessing writes (and nothing else a user may keep in the folder)."""
    for name in (CLIPS_FILE, REJECTS_FILE, SOURCES_FILE, MANIFEST_NAME, CONFIG_FILE):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / CLIPS_DIR, ignore_errors=True)


def _recover(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Bring the directory to a consistent state after a crash; return finished sources by key."""
    removed = remove_temp_debris(out_dir)
    if removed:
        log.info("removed %d half-written files from an interrupted run", len(removed))
    done = {r["source"]: r for r in read_records(out_dir / SOURCES_FILE)}
    clips = read_records(out_dir / CLIPS_FILE)
    rejects = read_records(out_dir / REJECTS_FILE)
    kept_clips = [c for c in clips if c["source"] in done]
    kept_rejects = [r for r in rejects if r["source"] in done]
    if len(kept_clips) != len(clips):
        rewrite_records(out_dir / CLIPS_FILE, kept_clips)
    if len(kept_rejects) != len(rejects):
        rewrite_records(out_dir / REJECTS_FILE, kept_rejects)
    _remove_orphan_files(out_dir, kept_clips)
    return done


def _remove_orphan_files(out_dir: Path, clips: list[dict[str, Any]]) -> None:
    referenced = {out_dir / c[k] for c in clips for k in ("video", "audio", "meta")}
    folder = out_dir / CLIPS_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and path not in referenced:
                path.unlink()


def _forget_sources(out_dir: Path, keys: set[str]) -> None:
    """Drop every record of sources that changed on disk, so they are processed again."""
    for name in (SOURCES_FILE, CLIPS_FILE, REJECTS_FILE):
        records = read_records(out_dir / name)
        rewrite_records(out_dir / name, [r for r in records if r["source"] not in keys])
    _remove_orphan_files(out_dir, read_records(out_dir / CLIPS_FILE))


def _process_all(todo: list[Source], out_dir: Path, config: PreprocessConfig, digests: dict[str, str]) -> None:
    writers = {name: RecordWriter(out_dir / name) for name in (CLIPS_FILE, REJECTS_FILE, SOURCES_FILE)}
    try:
        with progress() as bar, sigterm_as_interrupt():
            sources_task = bar.add_task("sources", total=len(todo), unit="sources")
            frames_task = bar.add_task("frames", total=None, unit="frames")

            def show_frames(count: int) -> None:
                bar.update(frames_task, completed=count)

            # closing() stops the workers at once whatever interrupts the loop (Ctrl-C, kill), not at exit
            with contextlib.closing(_results(todo, out_dir, config, digests, show_frames)) as results:
                for result in results:
                    # Files first (already renamed into place), then clip and reject records, then the source
                    # line: a crash between these leaves the source unfinished, and the rerun redoes it cleanly.
                    if result.source.get("reason") in LISTING_REJECTS:
                        log.warning("%s: %s", result.source["source"], result.rejects[0]["detail"])
                    if result.clips:
                        writers[CLIPS_FILE].append(*result.clips)
                    if result.rejects:
                        writers[REJECTS_FILE].append(*result.rejects)
                    writers[SOURCES_FILE].append(result.source)
                    bar.update(sources_task, advance=1)
    finally:
        for writer in writers.values():
            writer.close()
    # A worker that died mid-source leaves its temp files and the clips it had renamed into place without records.
    remove_temp_debris(out_dir)
    _remove_orphan_files(out_dir, read_records(out_dir / CLIPS_FILE))


class _LocalCounter:
    """Frames decoded, for the in-process path (workers count into a shared ``RawValue``)."""

    def __init__(self):
        self.value = 0


def _results(todo, out_dir, config, digests, show_frames) -> Iterator[SourceResult]:
    """Each source's result, in completion order: in this process, or one worker process per source at a time."""
    if config.workers <= 1:
        counter = _LocalCounter()
        for source in todo:
            yield process_source(source, out_dir, config, digests[source.key], counter)
            show_frames(counter.value)
        return
    tasks = [(source, digests[source.key]) for source in todo]
    with WorkerPool(config.workers, functools.partial(_work, out_dir=out_dir, config=config)) as pool:
        for (source, digest), result in pool.run(tasks, on_wait=lambda: show_frames(pool.counted)):
            if isinstance(result, WorkerCrash):
                result = _rejected({"source": source.key, "source_digest": digest}, WORKER_CRASHED, result.detail,
                                   time.perf_counter())
            show_frames(pool.counted)
            yield result


def _work(task: tuple[Source, str], counter, out_dir: Path, config: PreprocessConfig) -> SourceResult:
    source, digest = task
    return process_source(source, out_dir, config, digest, counter)


def _finalize(out_dir: Path, config: PreprocessConfig, sources: list[Source], digests: dict[str, str],
              elapsed: float) -> dict[str, Any]:
    """Sort records into a canonical order (same bytes whatever the worker timing) and write lsync.json."""
    order = {s.key: i for i, s in enumerate(sources)}

    def by_source(record):
        return (order.get(record["source"], len(order)), record.get("index", -1), record.get("start_frame", -1))

    clips = sorted(read_records(out_dir / CLIPS_FILE), key=by_source)
    rejects = sorted(read_records(out_dir / REJECTS_FILE), key=by_source)
    finished = sorted(read_records(out_dir / SOURCES_FILE), key=by_source)
    for name, records in ((CLIPS_FILE, clips), (REJECTS_FILE, rejects), (SOURCES_FILE, finished)):
        rewrite_records(out_dir / name, records)

    summary = summarize_records(clips, rejects, finished, config.resolution)
    selections = {r["source"]: r["face_selection"] for r in finished if "face_selection" in r}
    if selections:  # the choice and every track's score, per source (also in sources.jsonl)
        summary["face_selection"] = selections
    summary["elapsed_s"] = round(elapsed, 2)
    inputs = [{"path": str(s.path), "kind": "video", "digest": digests[s.key]} for s in sources]
    write_manifest(out_dir, "data", config_to_dict(config), inputs=inputs, summary=summary)
    return summary
