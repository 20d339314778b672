"""``lsync filter sync data/ data_synced/ --syncnet RUN_OR_CKPT``: keep clips in sync, shift their audio to offset 0.

Step 6 of the LatentSync recipe. Every clip of the input data directory is scored against its own wav
(:func:`lsync.sync_metrics.score_clip`, offsets searched in ``+/- search_offset`` frames), then:

* ``|offset| > max_offset`` -> rejected (``sync_offset``); ``confidence < min_conf`` -> rejected
  (``sync_confidence``); too short to score, or to keep a SyncNet window after the shift -> ``too_short``;
* otherwise the clip is written to the NEW directory with its audio shifted by the found offset ``d``
  (+d = audio ``d`` frames late): video frames ``[a, b)`` are kept with audio frames ``[a + d, b + d)``, where
  ``a = max(0, -d)`` and ``b = N - max(0, d)``, so the frames that have no audio after the shift are trimmed and
  the wav keeps exactly ``num_frames * 640`` samples. ``d = 0`` clips are copied byte for byte; the others are
  re-encoded (H.264 at the input's ``crf``) with the per-frame metadata (``meta`` npz) sliced to match.

The result is a ``data`` directory in the format of :mod:`lsync.stages.preprocess` (``clips.jsonl``,
``rejects.jsonl``, ``sources.jsonl``, ``config.yaml``, ``lsync.json``); clip records gain ``sync_offset`` (the
shift applied, frames), ``sync_confidence`` (LSE-C) and ``sync_distance`` (LSE-D). The input is only read.

**Confidence threshold.** ``min_conf`` defaults to 3 for ``--metric syncnet-v2`` (the recipe's value, on the
classic SyncNet's Euclidean scale). StableSyncNet scores use ``1 - cos`` distances in ``[0, 1]``, so their
confidence is far smaller. The tiny SyncNet of ``benchmarks/syncnet_synthetic_accuracy.py`` (15 min on 40
synthetic 6 s clips) gives 0.60-0.77 (median 0.68) on in-sync or shifted synthetic clips and 0.11-0.31 on faces
scored against another clip's audio (``benchmarks/filter_sync_offsets.py``); the default for ``--metric stable``,
:data:`STABLE_MIN_CONF` = 0.4, lies between. Calibrate it for another SyncNet the same way.

**Resuming.** Files are written under temp names and renamed when complete; a clip's record is appended only
after its files exist, and ``lsync.json`` is written last. A rerun removes debris and unreferenced files, skips
every clip already in ``clips.jsonl`` or ``rejects.jsonl``, and refuses a different config, other input clips or
another SyncNet unless ``force``. ``filter-inputs.json`` records the digests of the two inputs; when it is missing,
unreadable or corrupt nothing proves the outputs current, so that is refused too.
"""

from __future__ import annotations

import shutil
import time
import wave
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lsync.config import changed_config_keys, config_to_dict, load_yaml, save_config_yaml
from lsync.console import get_logger, progress
from lsync.errors import InputError, UsageError
from lsync.manifest import (
    MANIFEST_NAME,
    RecordWriter,
    atomic_output,
    atomic_write_json,
    describe_input,
    directory_digest,
    read_manifest,
    read_records,
    remove_temp_debris,
    rewrite_records,
    write_manifest,
)
from lsync.data.layout import (
    CLIPS_DIR,
    CLIPS_FILE,
    CONFIG_FILE,
    FPS,
    REJECTS_FILE,
    SAMPLES_PER_FRAME,
    SOURCES_FILE,
    summarize_records,
)
from lsync.training.checkpointing import weights_digest
from lsync.training.plateau import validation_at_chance

log = get_logger(__name__)

#: The recipe's confidence threshold, on SyncNet v2's Euclidean scale.
SYNCNET_V2_MIN_CONF = 3.0
#: Default for StableSyncNet's ``1 - cos`` scale (see the module docstring for what a tiny net gives).
STABLE_MIN_CONF = 0.4
#: Runtime settings a rerun may change freely.
RUNTIME_KEYS = ("batch_size", "device", "threads")
PROVENANCE_FILE = "filter-inputs.json"  # digests of the input data directory and the SyncNet weights


@dataclass
class FilterSyncConfig:
    syncnet: str = ""  # a SyncNet run, checkpoint dir, stable_syncnet.pt or syncnet_v2.model
    metric: Literal["stable", "syncnet-v2"] = "stable"
    min_conf: float | None = None  # None: 3 for syncnet-v2, STABLE_MIN_CONF for stable
    max_offset: int = 6  # keep clips whose |offset| is at most this many frames
    search_offset: int = 15  # frames searched on each side (> max_offset, so a far offset is seen as far)
    batch_size: int = 64
    image_size: int | None = None
    geometry: str = "syncnet_16_pixel_attn"
    device: str | None = None
    threads: int | None = None  # torch CPU threads (None: torch's default)
    crf: int | None = None  # H.264 quality of re-encoded clips (None: the input directory's)


def min_confidence(config: FilterSyncConfig) -> float:
    if config.min_conf is not None:
        return config.min_conf
    return SYNCNET_V2_MIN_CONF if config.metric == "syncnet-v2" else STABLE_MIN_CONF


# ----------------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class ShiftPlan:
    """Video frames ``[video_start, video_end)`` of the input clip go with its audio from ``audio_start``."""

    video_start: int
    video_end: int
    audio_start: int

    @property
    def num_frames(self) -> int:
        return self.video_end - self.video_start


def shift_plan(num_frames: int, offset: int) -> ShiftPlan:
    """The frames kept when the audio of a clip found ``offset`` frames late is moved to offset 0."""
    start, end = max(0, -offset), num_frames - max(0, offset)
    return ShiftPlan(start, max(start, end), start + offset)


def decide(score, num_frames: int, window: int, config: FilterSyncConfig) -> tuple[str | None, str]:
    """``(None, "")`` to keep a clip, else ``(reason, detail)``."""
    if score.offset is None:
        return "too_short", f"{num_frames} frames, a SyncNet window needs {window}"
    if abs(score.offset) > config.max_offset:
        return "sync_offset", f"offset {score.offset:+d} frames, more than --max-offset {config.max_offset}"
    threshold = min_confidence(config)
    if score.lse_c < threshold:
        return "sync_confidence", f"confidence {score.lse_c:.3f} below --min-conf {threshold:g}"
    kept = shift_plan(num_frames, score.offset).num_frames
    if kept < window:
        return "too_short", f"{kept} frames left after the {score.offset:+d}-frame shift, a window needs {window}"
    return None, ""


# ----------------------------------------------------------------------------------------------- writing
def write_shifted_clip(data_dir: Path, out_dir: Path, record: dict[str, Any], plan: ShiftPlan,
                       crf: int) -> dict[str, Any]:
    """Write the shifted clip's video, wav and meta into ``out_dir`` (atomically); returns its new record."""
    from lsync.media.video import VideoReader, VideoWriter

    rel = {key: f"{CLIPS_DIR}/{Path(record[key]).name}" for key in ("video", "audio", "meta") if record.get(key)}
    num_frames = int(record["num_frames"])
    if plan.video_start == 0 and plan.video_end == num_frames and plan.audio_start == 0:
        for key in rel:  # nothing moves: the very same bytes
            with atomic_output(out_dir / rel[key]) as tmp:
                shutil.copyfile(data_dir / record[key], tmp)
    else:
        resolution = int(record["resolution"])
        with VideoWriter(out_dir / rel["video"], FPS, resolution, resolution, crf=crf) as writer:
            for frame in VideoReader(data_dir / record["video"], fps=None, start_frame=plan.video_start,
                                     num_frames=plan.num_frames):
                writer.write(frame)
            if writer.frames_written != plan.num_frames:
                raise InputError(f"{data_dir / record['video']} has {writer.frames_written + plan.video_start} "
                                 f"decodable frames, its record says {num_frames}", "preprocess it again")
        _write_audio_frames(data_dir / record["audio"], out_dir / rel["audio"], plan.audio_start, plan.num_frames)
        if "meta" in rel:
            _write_sliced_meta(data_dir / record["meta"], out_dir / rel["meta"], num_frames, plan)
    start_frame = int(record.get("start_frame", 0)) + plan.video_start
    shifted = {**record, **rel, "num_frames": plan.num_frames, "num_samples": plan.num_frames * SAMPLES_PER_FRAME,
               "start_frame": start_frame, "end_frame": start_frame + plan.num_frames,
               "start": start_frame / FPS, "end": (start_frame + plan.num_frames) / FPS}
    return shifted


def _write_audio_frames(source: Path, target: Path, first_frame: int, num_frames: int) -> None:
    """Samples ``[first * 640, (first + n) * 640)`` of a 16 kHz mono wav."""
    from lsync.media.audio import write_wav

    with wave.open(str(source), "rb") as wav:
        rate = wav.getframerate()
        wav.setpos(first_frame * SAMPLES_PER_FRAME)
        pcm = np.frombuffer(wav.readframes(num_frames * SAMPLES_PER_FRAME), dtype="<i2")
    if len(pcm) != num_frames * SAMPLES_PER_FRAME:
        raise InputError(f"{source} is shorter than its record says", "preprocess the clip again")
    write_wav(target, pcm.astype(np.int16), rate)


def _write_sliced_meta(source: Path, target: Path, num_frames: int, plan: ShiftPlan) -> None:
    """Per-frame arrays (first axis = the clip's frames) cut to the kept frames; other arrays as they are."""
    with np.load(source) as meta:
        arrays = {name: (meta[name][plan.video_start:plan.video_end]
                         if meta[name].ndim and meta[name].shape[0] == num_frames else meta[name])
                  for name in meta.files}
    with atomic_output(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


# ----------------------------------------------------------------------------------------------- the run
def run(data_dir: str | Path, out_dir: str | Path, config: FilterSyncConfig, force: bool = False) -> dict[str, Any]:
    """Filter ``data_dir`` into ``out_dir``; returns the summary written to ``out_dir/lsync.json``."""
    from lsync.sampling import pick_device
    from lsync.sync_metrics import load_scorer, set_threads

    started = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    input_manifest = read_manifest(data_dir, kind="data")
    records = read_records(data_dir / CLIPS_FILE)
    if not records:
        raise InputError(f"{data_dir} holds no clips", "preprocess some videos into it first (lsync preprocess)")
    if out_dir.resolve() == data_dir.resolve():
        raise UsageError("the output directory is the input directory", "write the filtered clips to a new folder")
    if config.max_offset < 0 or config.search_offset <= config.max_offset:
        raise UsageError(f"--max-offset {config.max_offset} must be >= 0 and below the search range "
                         f"{config.search_offset}", "lower --max-offset or raise --search-offset")
    if not config.syncnet:
        raise UsageError("no SyncNet given", "pass --syncnet RUN_OR_CKPT")
    crf = config.crf if config.crf is not None else input_crf(input_manifest["config"])
    chance_warning = syncnet_at_chance_warning(Path(config.syncnet)) if config.metric == "stable" else None
    if chance_warning:
        log.warning(chance_warning)

    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = {"data": directory_digest(data_dir), "syncnet": weights_digest(Path(config.syncnet))}
    _check_or_record_config(out_dir, config, force, provenance)
    done = _recover(out_dir)
    todo = [r for r in records if r["id"] not in done]
    if todo:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until this run finishes
        log.info("%d of %d clips to score (%d already done)", len(todo), len(records), len(records) - len(todo))
        set_threads(config.threads)
        device, _ = pick_device(config.device)
        scorer = load_scorer(config.metric, config.syncnet, device, config.batch_size, config.image_size,
                             config.geometry)
        writers = {name: RecordWriter(out_dir / name) for name in (CLIPS_FILE, REJECTS_FILE)}
        try:
            with progress() as bar:
                task = bar.add_task("sync filter", total=len(todo), unit="clips")
                for record in todo:
                    _filter_clip(data_dir, out_dir, record, scorer, config, crf, writers)
                    bar.advance(task)
        finally:
            for writer in writers.values():
                writer.close()
    return _finalize(data_dir, out_dir, records, config, input_manifest, time.perf_counter() - started,
                     syncnet_at_chance=chance_warning is not None)


def syncnet_at_chance_warning(syncnet: Path) -> str | None:
    """The warning for a SyncNet run whose own last validation was at chance, else None: its offsets are noise,
    so the filter shifts the audio of in-sync clips, or drops them, at random. A warning, not an error: a smoke
    run with a few SyncNet steps still goes through, and the summary records it (``syncnet_at_chance``)."""
    summary = _syncnet_run_summary(syncnet)
    accuracy, roc_auc = summary.get("val/accuracy"), summary.get("val/roc_auc")
    if not isinstance(accuracy, (int, float)) or not validation_at_chance(accuracy, roc_auc):
        return None
    measured = f"accuracy {accuracy:.3f}" + (f", ROC AUC {roc_auc:.3f}" if isinstance(roc_auc, (int, float)) else "")
    return (f"the SyncNet run {syncnet} validated at chance ({measured}): its offsets are noise, so clips are "
            "shifted or dropped at random; train it longer (more --max-steps or --max-minutes) or filter with "
            "a SyncNet that separates in-sync from shifted audio")


def _syncnet_run_summary(syncnet: Path) -> dict[str, Any]:
    """The ``summary`` of ``syncnet/lsync.json`` when ``syncnet`` is a SyncNet run directory, else ``{}``."""
    try:
        manifest = read_manifest(syncnet, kind="syncnet-run") if syncnet.is_dir() else {}
    except (InputError, OSError, ValueError):
        return {}  # a checkpoint folder or a foreign directory: nothing recorded to check
    summary = manifest.get("summary")
    return summary if isinstance(summary, dict) else {}


def input_crf(input_config: dict[str, Any]) -> int:
    """The H.264 quality the input clips were made with (a filtered directory keeps its preprocess config)."""
    preprocess_config = input_config.get("preprocess", input_config)
    return int(preprocess_config.get("crf") or 15)


def _filter_clip(data_dir: Path, out_dir: Path, record: dict[str, Any], scorer, config: FilterSyncConfig,
                 crf: int, writers: dict[str, RecordWriter]) -> None:
    from lsync.sync_metrics import score_clip

    score = score_clip(data_dir, record, scorer, config.search_offset)
    num_frames = int(record["num_frames"])
    reason, detail = decide(score, num_frames, scorer.window, config)
    sync = {"sync_offset": score.offset, "sync_confidence": _rounded(score.lse_c),
            "sync_distance": _rounded(score.lse_d)}
    if reason is not None:
        writers[REJECTS_FILE].append({"id": record["id"], "source": record.get("source"), "split": record.get("split"),
                                      "reason": reason, "detail": detail, "start_frame": record.get("start_frame"),
                                      "end_frame": record.get("end_frame"), **sync})
        log.debug("%s rejected: %s", record["id"], detail)
        return
    shifted = write_shifted_clip(data_dir, out_dir, record, shift_plan(num_frames, score.offset), crf)
    writers[CLIPS_FILE].append({**shifted, **sync})


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 5)


def _check_or_record_config(out_dir: Path, config: FilterSyncConfig, force: bool,
                            provenance: dict[str, Any]) -> None:
    """One config and one (data, SyncNet) pair per output directory: a rerun with another config, other input
    clips or a retrained SyncNet is refused, since its clips would mix two filterings (``force`` starts over)."""
    path = out_dir / CONFIG_FILE
    current = config_to_dict(config)
    previous = load_yaml(path) if path.is_file() else None
    has_outputs = any((out_dir / name).exists() for name in (CLIPS_FILE, REJECTS_FILE, MANIFEST_NAME))
    recorded = _read_provenance(out_dir)
    if previous is not None and recorded != provenance:
        # Missing, unreadable or corrupt provenance proves nothing about the outputs: it counts as changed.
        if not force:
            if recorded is None:
                raise UsageError(f"{out_dir / PROVENANCE_FILE} is missing or unreadable, so nothing shows which "
                                 "data and SyncNet the filtered clips came from",
                                 "use another output directory, or --force to discard it and start over")
            changed = sorted(k for k in provenance if recorded.get(k) != provenance[k])
            raise UsageError(f"{out_dir} was filtered from other inputs ({' and '.join(changed)} changed since)",
                             "use another output directory, or --force to discard it and start over")
        _clear_outputs(out_dir)
        previous = None
    changed = changed_config_keys(previous, current, ignore=RUNTIME_KEYS) if previous is not None else []
    if changed:
        if not force:
            raise UsageError(f"{out_dir} was filtered with a different config ({', '.join(changed)} differ)",
                             "use another output directory, or --force to discard it and start over")
        _clear_outputs(out_dir)
    elif previous is None and has_outputs:
        if not force:
            raise UsageError(f"{out_dir} holds outputs without a config.yaml", "pass --force to start over")
        _clear_outputs(out_dir)
    # Provenance before config: a crash between the two leaves no config.yaml, which reads as a fresh start.
    atomic_write_json(out_dir / PROVENANCE_FILE, provenance)
    save_config_yaml(config, path)


def _read_provenance(out_dir: Path) -> dict[str, Any] | None:
    """The recorded ``{"data", "syncnet"}`` digests, or None when the file is missing, unreadable or not that."""
    import json

    try:
        recorded = json.loads((out_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("data"), str) or \
            not isinstance(recorded.get("syncnet", 0), (str, type(None))):  # None: a SyncNet given by name only
        return None
    return recorded


def _clear_outputs(out_dir: Path) -> None:
    for name in (CLIPS_FILE, REJECTS_FILE, SOURCES_FILE, MANIFEST_NAME, CONFIG_FILE, PROVENANCE_FILE):
        (out_dir / name).unlink(missing_ok=True)
    shutil.rmtree(out_dir / CLIPS_DIR, ignore_errors=True)


def _recover(out_dir: Path) -> set[str]:
    """Remove debris and files no record points to; the ids already decided (kept or rejected)."""
    remove_temp_debris(out_dir)
    clips = read_records(out_dir / CLIPS_FILE)
    referenced = {out_dir / c[k] for c in clips for k in ("video", "audio", "meta") if c.get(k)}
    folder = out_dir / CLIPS_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and path not in referenced:
                path.unlink()
    return {c["id"] for c in clips} | {r["id"] for r in read_records(out_dir / REJECTS_FILE)}


def _finalize(data_dir: Path, out_dir: Path, records: list[dict[str, Any]], config: FilterSyncConfig,
              input_manifest: dict[str, Any], elapsed: float, syncnet_at_chance: bool = False) -> dict[str, Any]:
    """Records in input order (no duplicates), ``sources.jsonl``, then ``lsync.json``."""
    order = {r["id"]: i for i, r in enumerate(records)}
    clips = _in_order(read_records(out_dir / CLIPS_FILE), order)
    rejects = _in_order(read_records(out_dir / REJECTS_FILE), order)
    rewrite_records(out_dir / CLIPS_FILE, clips)
    rewrite_records(out_dir / REJECTS_FILE, rejects)
    kept_sources = Counter(c.get("source") for c in clips)
    sources = []
    for source in dict.fromkeys(r.get("source") for r in records):
        status = "accepted" if kept_sources[source] else "rejected"
        sources.append({"source": source, "status": status, "clips": kept_sources[source]})
    rewrite_records(out_dir / SOURCES_FILE, sources)

    resolution = input_manifest["summary"].get("resolution")
    summary = summarize_records(clips, rejects, sources, resolution)
    confidences = [c["sync_confidence"] for c in clips]
    summary.update({
        "input_clips": len(records),
        "shifted_clips": sum(1 for c in clips if c["sync_offset"] != 0),
        "offsets": {str(k): v for k, v in sorted(Counter(c["sync_offset"] for c in clips).items())},
        "mean_confidence": round(float(np.mean(confidences)), 5) if confidences else None,
        "min_conf": min_confidence(config),
        "metric": config.metric,
        "syncnet_at_chance": syncnet_at_chance,
        "elapsed_s": round(elapsed, 2),
    })
    inputs = [describe_input(data_dir)]
    syncnet = Path(config.syncnet)
    if syncnet.exists():
        inputs.append({"path": str(syncnet.resolve()), "kind": "syncnet", "digest": weights_digest(syncnet)})
    # The preprocessing config travels along: consumers of a data directory read resolution, crf, ... from it.
    preprocess_config = input_manifest["config"].get("preprocess", input_manifest["config"])
    write_manifest(out_dir, "data", {**config_to_dict(config), "preprocess": preprocess_config}, inputs=inputs,
                   summary=summary)
    return summary


def _in_order(records: list[dict[str, Any]], order: dict[str, int]) -> list[dict[str, Any]]:
    unique = {r["id"]: r for r in records}  # a record appended twice by a crash-and-rerun counts once
    return sorted(unique.values(), key=lambda r: order.get(r["id"], len(order)))
