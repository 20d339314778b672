"""``lsync infer video.mp4 audio.wav``: a lip-synced video that lasts as long as the audio, in two streaming passes.

1. **Faces**: a face track (:mod:`lsync.face.track_file`: three alignment points and a box per source frame)
   comes from ``--faces FILE``, from the track cache (keyed by the video's digest and the detector settings),
   or from detection (:func:`lsync.face.video.detect_track`: decode every frame at 25 fps, detect in
   batches with the preprocessing detector, track one subject); ``--save-faces`` writes it out. Its landmarks
   are smoothed and one alignment matrix is fitted per frame with the reference's ``smooth=True`` smoother
   (:func:`lsync.face.video.geometry_from_track`).
2. **Audio**: Whisper features of the whole driving audio at 16 kHz (small: ~0.4 MB per second), cut into
   per-frame windows chunk by chunk (:meth:`lsync.sampling.ChunkSampler.audio_window`: the Whisper positions
   of the U-Net's ``audio_feat_length``).
3. **Render**: the output frames are planned (:mod:`lsync.stages.infer_frames`: loop the video when the audio
   is longer - ``pingpong``, ``bounce``, ``loop`` or ``hold`` - or cut it when shorter) and streamed in
   16-frame chunks on the reference's chunk grid (:func:`model_frame_count`):
   align the faces, lip-sync the chunk (:class:`lsync.sampling.ChunkSampler`), paste each face
   back with the feathered mask (:func:`lsync.face.align.restore_face`) and pipe the frame to the encoder,
   which muxes the driving audio at its own sample rate and channel count. The per-frame steps of the next and
   previous chunks run on helper threads while the U-Net works (:mod:`lsync.stages.infer_render`). At most one chunk of frames (plus
   one block when playing backwards) is in memory, so RAM does not grow with the length of the video.

Frames whose source has no tracked face pass through unchanged; the edit fades in and out over
``crossfade`` frames around each gap. Only a video with no face at all is an error.

**LatentSync parity.** With the same weights, ``--faces`` points, ``--mask`` and ``--dtype float32`` the frames
equal the reference ``LipsyncPipeline``'s (the golden test in ``tests/stages/test_infer_parity.py``): the same
shared initial noise, 13-channel input, guidance, DDIM, mask paste, ping-pong order, chunk grid and restore.
The reference's defaults that we change for users - landmark smoothing (``smooth_method``), the procedural mask
and the overlapping Whisper windows - are each one flag away (README, "Matching LatentSync exactly").

**Outputs.** ``OUT_DIR/<video-stem>.mp4`` (``.mkv`` for ``--codec ffv1``, ``.mov`` for ``prores``; or the name
given per pair) and ``OUT_DIR/lsync.json`` (kind
``inference``). Several runs may share one output folder: ``lsync.json`` is the folder's manifest and keeps
one entry per output file under ``summary.outputs`` (inputs with digests, model ids, parameters, timings and
frame counts); a run replaces only its own entry, under an exclusive lock on the folder. All work happens in a
per-run temp folder inside ``OUT_DIR``; the video appears by rename only when complete, and an existing one is
replaced only with ``overwrite``.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lsync.config import config_to_dict
from lsync.console import get_logger, progress, say
from lsync.errors import InputError, ManifestError, UsageError
from lsync.face.config import VideoFaceConfig
from lsync.manifest import MANIFEST_NAME, TEMP_PREFIX

log = get_logger(__name__)

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
CHUNK_FRAMES = 16  # frames the U-Net denoises together (the released models were trained on 16)

__all__ = ["ChunkPreview", "InferConfig", "InferenceModels", "NETWORK_FIELDS", "Pair", "ProgressCallback",
           "least_similar_driver", "load_models_for", "models_from_bundle", "pairs_from_data", "preview_chunk",
           "read_pairs", "run", "run_pairs"]

#: ``on_progress(stage, done, total)``, called as the work advances, from whichever thread does it: ``faces``
#: (source frames analysed), ``audio`` (0 or 1 of 1), ``denoise`` (output frames lip-synced and written),
#: ``encode`` (the encoder finishing, 0 or 1 of 1). A stage whose work is skipped (a cached face track) reports
#: done at once.
ProgressCallback = Callable[[str, int, int], None]

#: InferConfig fields that decide the loaded networks: configs that agree on them can share one load
#: (``load_models_for(config, reuse=models)``); the others (steps, scheduler, guidance, seed, mask, ...) shape only
#: the sampler.
NETWORK_FIELDS = ("preset", "weights_dir", "unet", "audio_windowing", "device", "dtype", "resolution")


@dataclass
class InferConfig(VideoFaceConfig):
    """Everything that shapes an inference output (recorded in ``lsync.json``); the face keys are
    :class:`~lsync.face.config.VideoFaceConfig`'s."""

    preset: Literal["latentsync-1.5", "latentsync-1.6", "tiny"] = "latentsync-1.5"
    unet: str | None = None  # our own U-Net: run dir, checkpoint dir, or a released-format .pt
    vae: str | None = None  # our own VAE (lsync train vae run or diffusers folder); default: the U-Net's, or the preset's
    weights_dir: str | None = None
    steps: int = 20
    scheduler: Literal["ddim", "dpm++"] = "ddim"
    guidance: float = 1.5
    chunk_frames: int = CHUNK_FRAMES
    seed: int = 1247
    loop: Literal["pingpong", "bounce", "loop", "hold"] = "pingpong"
    cache_interval: int = 1  # reuse the deep U-Net features for this many steps (1: off)
    compile: bool = False
    device: str | None = None  # None: CUDA when present
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: bf16 on CUDA and on bf16-native CPUs
    threads: int | None = None  # torch CPU threads (None: torch's default)
    resolution: int | None = None  # aligned face size R (None: the preset's, 256 for 1.5, 512 for 1.6)
    mask: str | None = None  # PNG mask, white keep / black repaint (None: the procedural LatentSync shape)
    audio_windowing: Literal["overlap", "reference"] = "overlap"  # Whisper windows for audio over 30 s
    # face tracks
    faces: str | None = None  # a track file (--save-faces) or a (frames, 3, 2) point array: skips detection
    save_faces: str | None = None  # write the face track here
    face_cache: str = "auto"  # track cache folder; auto: ~/.cache/lsync/face-tracks; off: no cache
    crossfade: int = 4  # frames over which the edit fades in/out next to frames without a face
    # output
    codec: Literal["h264", "h265", "ffv1", "prores"] = "h264"
    crf: int = 18
    encode_preset: str = "medium"
    reverse_block: int = 32  # frames decoded per block when the video plays backwards
    # What overlaps the denoising: "full" (decode + align of the next chunk, paste-back + encode of the previous),
    # "io" (only decoding and encoding: the warps stay on the model's thread), "off"; auto: full on CUDA, io on CPU
    pipeline: Literal["auto", "full", "io", "off"] = "auto"
    frame_strip: bool = False  # also write <name>.strip.png: input, mask, generated, blended for one frame


@dataclass
class InferenceModels:
    """Models loaded once and reused across runs (``--pairs``)."""

    bundle: Any
    ids: dict[str, Any]
    sampler: Any
    load_seconds: float
    networks: tuple = ()  # the NETWORK_FIELDS values they were loaded with


def _network_key(config: InferConfig) -> tuple:
    return tuple(getattr(config, name) for name in NETWORK_FIELDS)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class Pair:
    video: Path
    audio: Path
    name: str  # output file name inside out_dir


# ================================================================================================ helpers
class StageTimer:
    """Wall-clock seconds per stage, summed over every entry of ``with timer("stage"):``."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - tic

    def as_dict(self) -> dict[str, float]:
        return {stage: round(seconds, 3) for stage, seconds in self.seconds.items()}


def _check_inputs(video: Path, audio: Path, config: InferConfig | None = None):
    """Probe both inputs (and the ``--faces`` / ``--mask`` files) before anything is created; every problem is
    a one-line :class:`InputError`."""
    from lsync.media.probe import probe

    for path, what in ((video, "video"), (audio, "audio")):
        if not Path(path).exists():
            raise InputError(f"{what} file {path} does not exist", "check the path")
    video_info = probe(video).require(video=True, audio=False)
    audio_info = probe(audio).require(video=False, audio=True)
    if config is not None:
        from lsync.face_select import face_select_rule

        rule = face_select_rule(config)
        if rule.mode == "speaker" and config.faces is None:
            if not Path(config.syncnet).expanduser().exists():
                raise InputError(f"--syncnet {config.syncnet} does not exist", "pass a SyncNet run or checkpoint")
            if not video_info.has_audio:
                raise InputError(f"--face-select speaker scores the faces of {video} against its own soundtrack, "
                                 "and it has no audio stream", "choose the face with --face-select X,Y or track:N")
        for path, what, fix in ((config.faces, "--faces", "pass a track saved with --save-faces or a .npy array"),
                                (config.mask, "--mask", "pass a PNG: white keeps, black is repainted")):
            if path is not None and not Path(path).expanduser().is_file():
                raise InputError(f"{what} file {path} does not exist", fix)
    return video_info, audio_info


def output_name(video: Path, name: str | None = None, codec: str = "h264") -> str:
    """``<video-stem>`` + the codec's container (``.mp4``, ``.mkv`` for ffv1, ``.mov`` for prores) unless a name is
    given (the container is added when it has no suffix); a suffix that cannot hold ``codec`` is refused."""
    from lsync.media.video import get_codec

    container = get_codec(codec)
    if name:
        if Path(name).name != name:
            raise UsageError(f"output name {name!r} must be a file name, not a path", "drop the folders")
        name = name if Path(name).suffix else f"{name}{container.extensions[0]}"
    else:
        name = f"{Path(video).stem}{container.extensions[0]}"
    container.check_extension(name)
    return name


def _check_out_dir(out_dir: Path, names: list[str], overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {out_dir} is a file", "pass a folder")
    manifest = out_dir / MANIFEST_NAME
    if manifest.is_file():
        from lsync.manifest import read_manifest

        try:
            read_manifest(out_dir, kind="inference")
        except ManifestError as exc:
            raise UsageError(f"{out_dir} holds another kind of lsync output ({exc.what})",
                             "choose another --out-dir") from None
    if len(set(names)) != len(names):
        raise UsageError("two runs would write the same output file", "give each pair its own output name")
    existing = [name for name in names if (out_dir / name).exists()]
    if existing and not overwrite:
        raise UsageError(f"{out_dir / existing[0]} already exists", "pass --overwrite to replace it")


def load_models_for(config: InferConfig, reuse: InferenceModels | None = None) -> InferenceModels:
    """Load the models of ``config`` once (device, dtype, threads, resolution and mask applied).

    ``reuse``: models loaded before with the same :data:`NETWORK_FIELDS`; their networks are shared, not loaded
    again, and only the sampler (steps, scheduler, guidance, seed, mask, ...) and the scheduler it configures are
    new, so runs with different sampler settings can use them at once. (``cache_interval > 1`` and ``compile``
    change the shared U-Net itself; such samplers must not run at the same time as others.)
    """
    from lsync.sampling import load_inference_models

    tic = time.perf_counter()
    if reuse is not None:
        if reuse.networks != _network_key(config):
            raise ValueError(f"cannot reuse models loaded with {dict(zip(NETWORK_FIELDS, reuse.networks))} for "
                             f"{dict(zip(NETWORK_FIELDS, _network_key(config)))}")
        # The DDIM sampler steps the bundle's scheduler, which keeps state: each sampler gets its own copy.
        bundle = dataclasses.replace(reuse.bundle, scheduler=copy.deepcopy(reuse.bundle.scheduler))
        ids = copy.deepcopy(reuse.ids)
    else:
        bundle, ids = load_inference_models(config.preset, config.weights_dir, config.unet, config.vae,
                                            windowing=config.audio_windowing)
    return models_from_bundle(bundle, ids, config, started=tic)


def models_from_bundle(bundle, ids: dict[str, Any], config: InferConfig, started: float | None = None) -> InferenceModels:
    """Ready a :class:`~lsync.models.presets.ModelBundle` for ``config``: device, dtype, threads, resolution, mask
    and the sampler (for bundles built in code, e.g. random released-size models in ``benchmarks/gpu.sh``)."""
    import torch

    from lsync.face.mask import load_mask_image
    from lsync.sampling import ChunkSampler, choose_dtype, pick_device

    started = time.perf_counter() if started is None else started
    if config.threads:
        torch.set_num_threads(config.threads)
    if not 1 <= config.chunk_frames <= 24:
        raise UsageError(f"chunk_frames must be 1..24, got {config.chunk_frames}",
                         "the motion modules' position table holds 24 frames; use 16")
    device, _ = pick_device(config.device)
    dtype, dtype_reason = choose_dtype(device, config.dtype, cpu_bf16=True)
    if config.resolution is not None:
        if config.resolution <= 0 or config.resolution % 64:
            raise UsageError(f"resolution must be a positive multiple of 64, got {config.resolution}",
                             "use 256 (LatentSync 1.5) or 512 (1.6)")
        bundle.resolution = config.resolution
    mask = load_mask_image(Path(config.mask).expanduser(), bundle.resolution) if config.mask else None
    sampler = ChunkSampler(bundle, device, dtype, steps=config.steps, guidance=config.guidance, seed=config.seed,
                           cache_interval=config.cache_interval, compile=config.compile, num_frames=config.chunk_frames,
                           mask=mask, scheduler=config.scheduler)
    ids = {**ids, "device": str(device), "dtype": str(dtype).removeprefix("torch."), "dtype_reason": dtype_reason,
           "resolution": bundle.resolution,
           "mask": str(Path(config.mask).expanduser().resolve()) if config.mask else "procedural"}
    return InferenceModels(bundle=bundle, ids=ids, sampler=sampler, load_seconds=time.perf_counter() - started,
                           networks=_network_key(config))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Exclusive lock on a folder (flock on its descriptor: nothing is left behind)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _record_output(out_dir: Path, entry: dict[str, Any], config: InferConfig) -> dict[str, Any]:
    """Add (or replace) this output's entry in the folder's ``lsync.json``; entries of deleted files are dropped."""
    from lsync.manifest import read_manifest, write_manifest

    with _locked(out_dir):
        outputs: dict[str, Any] = {}
        if (out_dir / MANIFEST_NAME).is_file():
            with contextlib.suppress(ManifestError):
                outputs = dict(read_manifest(out_dir, kind="inference")["summary"].get("outputs", {}))
        outputs = {name: e for name, e in outputs.items() if (out_dir / name).is_file()}
        outputs[entry["output"]] = entry
        inputs, seen = [], set()
        for e in outputs.values():
            for item in e["inputs"].values():
                key = (item["path"], item["digest"])
                if key not in seen:
                    seen.add(key)
                    inputs.append(item)
        summary = {
            "outputs": outputs,
            "frames_total": sum(e["frames"]["total"] for e in outputs.values()),
            "frames_synced": sum(e["frames"]["synced"] for e in outputs.values()),
            "frames_passed_through": sum(e["frames"]["passed_through"] for e in outputs.values()),
        }
        return write_manifest(out_dir, "inference", config_to_dict(config), inputs=inputs, summary=summary)


# ================================================================================================ one run
def run(video: str | Path, audio: str | Path, out_dir: str | Path, config: InferConfig,
        models: InferenceModels | None = None, name: str | None = None, overwrite: bool = False,
        on_progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Lip-sync ``video`` to ``audio`` into ``out_dir``; returns this output's ``lsync.json`` entry.

    ``on_progress`` (:data:`ProgressCallback`) follows the work stage by stage, besides the progress bars.
    """
    video, audio, out_dir = Path(video), Path(audio), Path(out_dir)
    _check_inputs(video, audio, config)
    name = output_name(video, name, config.codec)
    _check_out_dir(out_dir, [name], overwrite)
    models = models or load_models_for(config)
    return _run_checked(Pair(video, audio, name), out_dir, config, models, on_progress or _no_progress)


def _run_checked(pair: Pair, out_dir: Path, config: InferConfig, models: InferenceModels,
                 on_progress: ProgressCallback = _no_progress) -> dict[str, Any]:
    from lsync.manifest import describe_input

    created_out_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}infer-", dir=out_dir))
    started = time.perf_counter()
    inputs = {"video": describe_input(pair.video, "video"), "audio": describe_input(pair.audio, "audio")}
    for role, path in (("faces", config.faces), ("mask", config.mask)):
        if path is not None:
            inputs[role] = describe_input(Path(path).expanduser(), role)
    if config.face_select.strip().lower() == "speaker" and config.faces is None:
        from lsync.training.checkpointing import weights_digest

        syncnet = Path(config.syncnet).expanduser()  # a run, a checkpoint folder or a weights file
        inputs["syncnet"] = {"path": str(syncnet.resolve()), "kind": "syncnet", "digest": weights_digest(syncnet)}
    try:
        timer = StageTimer()
        timer.seconds["load_models"] = models.load_seconds
        frames = _synthesize(pair, work / pair.name, config, models, timer, video_digest=inputs["video"]["digest"],
                             on_progress=on_progress)
        if frames.get("frame_strip"):
            os.replace(work / frames["frame_strip"], out_dir / frames["frame_strip"])
        os.replace(work / pair.name, out_dir / pair.name)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if created_out_dir:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if nothing else landed there
        raise
    shutil.rmtree(work, ignore_errors=True)
    entry = {
        "output": pair.name,
        "inputs": inputs,
        "models": models.ids,
        "parameters": config_to_dict(config),
        "frames": frames,
        **({"face_selection": frames["face_source"].pop("face_selection")}
           if "face_selection" in frames["face_source"] else {}),
        "timings_s": timer.as_dict(),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    _record_output(out_dir, entry, config)
    say(f"[green]wrote[/] {out_dir / pair.name} ({frames['total']} frames, {frames['synced']} lip-synced, "
        f"{frames['passed_through']} passed through)")
    if models.ids.get("vae", {}).get("random"):
        log.warning(models.ids["vae"]["warning"])
    return entry


def model_frame_count(num_output: int, num_positions: int) -> int:
    """Frames the U-Net renders for an output of ``num_output`` frames whose audio has ``num_positions`` Whisper
    positions: the reference's chunk count ``num_positions // 2 + 2`` (its loop runs two frames past the audio).

    Rendering on that grid keeps every chunk - the last, shorter one included - the same frames as LatentSync's,
    so the result matches it frame for frame; the frames past the audio are dropped before encoding.
    """
    from lsync.audio.timing import num_whisper_chunks

    return max(num_output, num_whisper_chunks(num_positions, FPS))


@dataclass
class _OutputPlan:
    """Pass 1 and the audio of one pair, and which source frame each rendered output frame shows."""

    geometry: Any  # FaceGeometry
    face_source: dict[str, Any]
    samples: np.ndarray  # (S,) float32 driving audio at 16 kHz
    features: Any  # (T50, L+1, D) Whisper features
    num_output: int  # frames written (the audio's length)
    num_rendered: int  # frames the U-Net renders (the reference chunk grid, >= num_output)
    indices: np.ndarray  # (num_rendered,) source frame per output frame
    weights: np.ndarray  # (num_rendered,) weight of the lip-synced face per output frame (0: passed through)


def _plan_output(pair: Pair, config: InferConfig, models: InferenceModels, timer: StageTimer,
                 video_digest: str | None, on_progress: ProgressCallback) -> _OutputPlan:
    from lsync.media.audio import load_audio
    from lsync.stages.infer_frames import crossfade_weights, source_indices

    geometry, face_source = _face_geometry(pair.video, config, models.bundle.resolution, video_digest, timer,
                                           on_progress)
    if geometry.num_frames == 0:
        raise InputError(f"{pair.video} has no decodable frames", "check that the video is complete")
    if not geometry.has_face.any():
        raise InputError(f"no face found in any of the {geometry.num_frames} frames of {pair.video}",
                         f"pass a video that shows a face of at least {config.min_face} px (--set min_face=...)")

    on_progress("audio", 0, 1)
    with timer("audio_features"):
        samples = load_audio(pair.audio, sample_rate=SAMPLE_RATE, mono=True)
        features = models.bundle.audio(samples)  # (T50, L+1, D) float32, CPU
    on_progress("audio", 1, 1)
    num_output = max(1, int(round(len(samples) / SAMPLES_PER_FRAME)))
    num_rendered = model_frame_count(num_output, len(features))
    indices = source_indices(num_rendered, geometry.num_frames, config.loop)
    weights = crossfade_weights(geometry.has_face[indices], config.crossfade)
    return _OutputPlan(geometry, face_source, samples, features, num_output, num_rendered, indices, weights)


def _synthesize(pair: Pair, out_path: Path, config: InferConfig, models: InferenceModels,
                timer: StageTimer, video_digest: str | None = None,
                on_progress: ProgressCallback = _no_progress) -> dict[str, Any]:
    """Both passes for one pair; writes ``out_path`` (video + driving audio) and returns the frame counts."""
    from lsync.media.video import VideoWriter, get_codec
    from lsync.stages.infer_frames import FrameStream
    from lsync.stages.infer_render import ChunkRenderer, chunks_of, pipelined

    sampler = models.sampler
    plan = _plan_output(pair, config, models, timer, video_digest, on_progress)
    geometry, face_source, samples, features = plan.geometry, plan.face_source, plan.samples, plan.features
    num_output, num_rendered, indices, weights = plan.num_output, plan.num_rendered, plan.indices, plan.weights

    width, height = geometry.frame_size
    stream = FrameStream(pair.video, indices, fps=FPS, block=config.reverse_block)
    renderer = ChunkRenderer(geometry, features, sampler, weights, timer)
    if config.frame_strip:
        renderer.strip = FrameStrip(at=_strip_frame(weights[:num_output]), mask=sampler.mask)
    codec = get_codec(config.codec)
    with progress(transient=True) as bar:
        task = bar.add_task("lip-sync", total=num_output, unit="frames")
        written = 0
        on_progress("denoise", written, num_output)
        with VideoWriter(out_path, FPS, width, height, crf=config.crf, preset=config.encode_preset,
                         audio_path=pair.audio, shortest=False, codec=codec.name,
                         frame_digest=codec.lossless) as writer:

            def encode(rows) -> None:
                nonlocal written
                rows = [row for row in rows if row[0] < num_output]  # the reference grid's frames past the audio
                with timer("encode"):
                    for _, _, frame in rows:
                        writer.write(frame)
                written += len(rows)
                bar.update(task, completed=written)
                on_progress("denoise", written, num_output)

            chunks = chunks_of(stream, config.chunk_frames, timer)
            mode = _pipeline_mode(config.pipeline, sampler.device)
            if mode == "full":
                # Decoding + alignment of the next chunk and paste-back + encoding of the previous one overlap the
                # denoising of this one.
                pipelined(chunks, renderer.prepare, renderer.denoise,
                          lambda chunk, generated: encode(renderer.finish(chunk, generated)))
            else:
                # On a CPU the warps would take cores from the U-Net: only the ffmpeg pipes overlap it ("io").
                pipelined(chunks, lambda rows: rows, renderer.render, lambda _, rows: encode(rows),
                          overlap=mode == "io")
            on_progress("encode", 0, 1)
            encode_tic = time.perf_counter()
        timer.seconds["encode"] += time.perf_counter() - encode_tic  # the encoder draining on close
        on_progress("encode", 1, 1)
    synced = int((weights[:num_output] > 0).sum())
    strip_name = None
    if renderer.strip is not None and renderer.strip.panels:
        strip_name = f"{Path(pair.name).stem}.strip.png"
        renderer.strip.write(out_path.parent / strip_name)
    return {
        "total": num_output,
        "synced": synced,
        "passed_through": num_output - synced,
        "rendered": num_rendered,
        "source_frames": geometry.num_frames,
        "source_frames_with_face": geometry.frames_with_face,
        "source_frames_interpolated": int(geometry.interpolated.sum()),
        "face_segments": [list(s) for s in geometry.segments],
        "face_source": face_source,
        "face_region": renderer.region(),
        "frames_read_pass2": stream.frames_decoded,
        "loop": config.loop if num_output > geometry.num_frames else None,
        "audio_seconds": round(len(samples) / SAMPLE_RATE, 4),
        "codec": codec.name,
        "frames_sha256": writer.frames_sha256,
        "frame_strip": strip_name,
    }


def _pipeline_mode(mode: str, device) -> str:
    """``auto``: ``full`` on CUDA (the per-frame work hides behind the GPU), ``io`` elsewhere."""
    if mode != "auto":
        return mode
    return "full" if device.type == "cuda" else "io"


# ================================================================================================ preview
@dataclass
class ChunkPreview:
    """One lip-synced chunk of an output, before the whole video is rendered."""

    strip: FrameStrip  # input face, mask, generated face, blended frame of ``frame``
    frame: int  # the output frame the strip shows
    chunk: tuple[int, int]  # output frames [start, end) that were lip-synced
    num_output: int  # frames the whole output would have
    face_source: dict[str, Any]
    timings_s: dict[str, float]


def preview_chunk(video: str | Path, audio: str | Path, config: InferConfig, models: InferenceModels,
                  at_seconds: float, on_progress: ProgressCallback | None = None) -> ChunkPreview:
    """Lip-sync only the chunk of the output that holds ``at_seconds`` and return the frame strip of the frame
    closest to that time that shows a face.

    Pass 1 runs on the whole video (its face track goes to the track cache, so the full run skips detection) and
    the whole audio is encoded, so the chunk is the one a full :func:`run` with the same settings renders: the
    same chunk grid, faces, audio window and initial noise, hence the same frames.
    """
    from lsync.manifest import file_digest
    from lsync.stages.infer_frames import FrameStream
    from lsync.stages.infer_render import ChunkRenderer

    video, audio = Path(video), Path(audio)
    _check_inputs(video, audio, config)
    on_progress = on_progress or _no_progress
    timer = StageTimer()
    plan = _plan_output(Pair(video, audio, output_name(video, None, config.codec)), config, models, timer,
                        file_digest(video), on_progress)
    target = min(max(0, int(round(at_seconds * FPS))), plan.num_output - 1)
    start = target // config.chunk_frames * config.chunk_frames  # the chunk grid of a full run
    end = min(start + config.chunk_frames, plan.num_rendered)
    synced = [out for out in range(start, min(end, plan.num_output)) if plan.weights[out] > 0]
    if not synced:
        raise InputError(f"{video} shows no face from {start / FPS:.2f} s to {end / FPS:.2f} s (those frames pass "
                         "through unchanged)", "preview another time")
    shown = min(synced, key=lambda out: (abs(out - target), out))

    on_progress("denoise", 0, end - start)
    renderer = ChunkRenderer(plan.geometry, plan.features, models.sampler, plan.weights, timer)
    renderer.strip = FrameStrip(at=shown, mask=models.sampler.mask)
    with timer("decode"):
        stream = FrameStream(video, plan.indices[start:end], fps=FPS, block=config.reverse_block)
        chunk = [(start + out, src, frame) for out, src, frame in stream]
    renderer.render(chunk)
    on_progress("denoise", end - start, end - start)
    return ChunkPreview(strip=renderer.strip, frame=shown, chunk=(start, end), num_output=plan.num_output,
                        face_source=plan.face_source, timings_s=timer.as_dict())


def _face_geometry(video: Path, config: InferConfig, resolution: int, video_digest: str | None,
                   timer: StageTimer, on_progress: ProgressCallback = _no_progress):
    """Pass 1: the video's face track (``--faces``, the cache, or detection), then one alignment per frame.

    Returns ``(FaceGeometry, face_source)`` where ``face_source`` records where the track came from.
    """
    from lsync.face.track_file import load_face_track
    from lsync.media.probe import probe
    from lsync.face.video import geometry_from_track

    info = probe(video)
    frame_size = (info.width, info.height)
    cache_path = _track_cache_path(config, video_digest)
    if config.faces is not None:
        faces_path = Path(config.faces).expanduser()
        track = load_face_track(faces_path)
        track.check_video(video, info.frames_at(FPS), frame_size, video_digest, faces_path)
        source = {"from": "file", "path": str(faces_path.resolve())}
        log.info("face track of %s read from %s: detection skipped", video, faces_path)
    elif (track := _cached_track(cache_path, video, frame_size, video_digest)) is not None:
        source = {"from": "cache", "path": str(cache_path)}
        log.info("face track of %s found in the track cache (%s): detection skipped", video, cache_path)
    else:
        track = _detect(video, config, info, timer, on_progress)
        source = {"from": "detection"}
        if cache_path is not None:
            _store_in_cache(track, cache_path, video_digest)
    track.frame_size = track.frame_size or frame_size
    track.video_digest = track.video_digest or video_digest
    if config.save_faces:
        saved = track.save(Path(config.save_faces).expanduser())
        source["saved_to"] = str(saved.resolve())
        log.info("face track saved to %s", saved)
    on_progress("faces", track.num_frames, track.num_frames)
    source.update(track.counts())
    if "face_selection" in track.settings:
        source["face_selection"] = track.settings["face_selection"]
    with timer("align_fit"):
        geometry = geometry_from_track(track, config, resolution, fps=FPS, frame_size=frame_size)
    return geometry, source


def _detect(video: Path, config: InferConfig, info, timer: StageTimer,
            on_progress: ProgressCallback = _no_progress):
    from lsync.face.video import detect_track
    from lsync.face_select import detect_selected_track, face_select_rule

    detect = detect_selected_track if face_select_rule(config).multi_track else detect_track

    total = info.frames_at(FPS)
    with progress(transient=True) as bar:
        faces_task = bar.add_task("faces", total=total, unit="frames")
        done = 0

        def advance(frames: int) -> None:
            nonlocal done
            done += frames
            bar.update(faces_task, completed=done)
            on_progress("faces", min(done, total), total)

        on_progress("faces", 0, total)
        track, timings = detect(video, config, fps=FPS, on_frames=advance)
    timer.seconds["decode"] += timings.pop("decode", 0.0)
    timer.seconds["detect"] += sum(timings.values())
    return track


def _track_cache_path(config: InferConfig, video_digest: str | None) -> Path | None:
    """The track cache entry of this video and detector settings (None: cache off or no digest)."""
    from lsync.face.track_file import cached_track_path
    from lsync.face.video import detector_settings
    from lsync.weights import default_cache_dir

    from lsync.face_select import selection_settings

    if config.face_cache == "off" or video_digest is None:
        return None
    root = default_cache_dir() / "face-tracks" if config.face_cache == "auto" else Path(config.face_cache).expanduser()
    settings = detector_settings(config)
    if config.faces is None and (chosen := selection_settings(config))["face_select"] not in ("largest", "center"):
        settings = {**settings, **chosen}  # the SyncNet and its thresholds decide the face too
    return cached_track_path(root, video_digest, settings)


def _cached_track(path: Path | None, video: Path, frame_size: tuple[int, int], video_digest: str | None):
    """The cached track at ``path`` if there is a sound one for this video; a damaged entry is ignored."""
    from lsync.face.track_file import load_face_track

    if path is None or not path.is_file():
        return None
    try:
        track = load_face_track(path)
        track.check_video(video, track.num_frames, frame_size, video_digest, path)
    except InputError as exc:
        log.warning("ignoring the cached face track %s (%s); detecting again", path, exc.what)
        return None
    return track


def _store_in_cache(track, path: Path, video_digest: str | None) -> None:
    track.video_digest = video_digest
    try:
        track.save(path)
    except OSError as exc:  # a read-only or full cache only costs the next run its detection
        log.warning("could not write the face track cache %s (%s)", path, exc)


def _strip_frame(weights: np.ndarray) -> int | None:
    """The output frame the strip shows: the middle one of those fully lip-synced (None: none is)."""
    full = np.flatnonzero(weights >= 1)
    return int(full[len(full) // 2]) if len(full) else None


class FrameStrip:
    """Four panels of one output frame, side by side: the aligned input face, what the U-Net sees (mouth
    masked out), the generated face, and the final frame after paste-back (aligned the same way)."""

    min_panel = 160  # small faces (the tiny 64 px preset) are enlarged so the strip is readable

    def __init__(self, at: int | None, mask: np.ndarray | None = None):
        self.at = at
        self.mask = mask  # (R, R) 1 = keep; None: the procedural mouth mask
        self.panels: list[np.ndarray] = []

    def wants(self, output_index: int) -> bool:
        return self.at is not None and output_index == self.at and not self.panels

    def capture(self, face: np.ndarray, generated: np.ndarray, blended: np.ndarray) -> None:
        """face, blended: (R, R, 3) uint8; generated: (3, R, R) float in [-1, 1]."""
        from lsync.face.mask import mouth_mask

        keep = (self.mask if self.mask is not None else mouth_mask(face.shape[0]))[..., None]
        masked = (face * keep + 128 * (1 - keep)).astype(np.uint8)  # grey where the U-Net repaints
        generated = np.asarray(generated, np.float32).transpose(1, 2, 0)
        generated = np.clip((generated + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        self.panels = [face, masked, generated, blended]

    def write(self, path: Path) -> None:
        import cv2

        from lsync.manifest import atomic_output

        size = max(self.min_panel, self.panels[0].shape[0])
        panels = [cv2.resize(p, (size, size), interpolation=cv2.INTER_NEAREST) for p in self.panels]
        gap = np.full((size, 4, 3), 255, np.uint8)
        strip = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
        with atomic_output(path) as tmp:  # the temp name keeps .png, which cv2 needs to pick the codec
            if not cv2.imwrite(str(tmp), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")


# ================================================================================================ batches
def read_pairs(path: str | Path, codec: str = "h264") -> list[Pair]:
    """Rows ``video, audio[, output name]`` of a CSV file (an optional header row starting with ``video``;
    blank lines and ``#`` comments skipped; relative paths are relative to the CSV's folder)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file {path} does not exist", "pass a CSV of video,audio[,output name] rows")
    pairs = []
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            row = [cell.strip() for cell in row]
            if not any(row) or row[0].startswith("#"):
                continue
            if number == 1 and row[0].lower() == "video":
                continue
            if len(row) not in (2, 3) or not row[0] or not row[1]:
                raise UsageError(f"{path} line {number}: expected video,audio[,output name], got {len(row)} fields",
                                 "fix the CSV row")
            video, audio = (Path(cell).expanduser() for cell in row[:2])
            video = video if video.is_absolute() else path.parent / video
            audio = audio if audio.is_absolute() else path.parent / audio
            pairs.append(Pair(video, audio, output_name(video, row[2] if len(row) == 3 else None, codec)))
    if not pairs:
        raise UsageError(f"{path} lists no pairs", "add video,audio rows")
    return pairs


def pairs_from_data(data_dir: str | Path, split: str = "val", count: int = 1, codec: str = "h264") -> list[Pair]:
    """Pairs for a held-out check: the source videos of ``count`` clips of ``split`` in a data directory
    (``lsync preprocess``), each driven by the audio of a clip from another source: the one whose loudness follows
    the source's own soundtrack least (:func:`least_similar_driver`).

    A clip's ``source`` is relative to the raw folder; its file is found among the data directory's recorded
    inputs by content digest, so a moved raw folder is reported rather than silently mismatched.
    """
    from lsync.manifest import read_manifest, read_records
    from lsync.media.audio import frame_loudness

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir, kind="data")
    clips = sorted(read_records(data_dir / "clips.jsonl"), key=lambda r: r["id"])
    chosen = [clip for clip in clips if clip["split"] == split][:count]
    if not chosen:
        raise InputError(f"{data_dir} has no '{split}' clips", "preprocess more sources or pick another --split")
    by_digest = {item.get("digest"): Path(item["path"]) for item in manifest.get("inputs", [])}
    # Every chosen clip compares against every other source's clips: decode each file's loudness once.
    loudness = functools.cache(frame_loudness)
    pairs = []
    for clip in chosen:
        video = by_digest.get(clip.get("source_digest"))
        if video is None or not video.is_file():
            raise InputError(f"the source of clip {clip['id']} ({clip['source']}) is not where {data_dir} recorded it",
                             "rerun lsync preprocess, or pass VIDEO AUDIO explicitly")
        others = [c for c in clips if c["source"] != clip["source"]]
        if not others:
            raise InputError(f"{data_dir} has clips of one source only", "preprocess at least two sources")
        driver = least_similar_driver(video, others, data_dir, loudness)
        audio = data_dir / driver["audio"]
        name = f"{Path(clip['source']).stem}-with-{Path(driver['source']).stem}"
        pairs.append(Pair(video, audio, output_name(video, name, codec)))
    return pairs


def least_similar_driver(video: Path, candidates: list[dict[str, Any]], data_dir: Path,
                         loudness: Callable[[Path], np.ndarray] | None = None) -> dict[str, Any]:
    """The candidate clip (a ``clips.jsonl`` record of ``data_dir``) whose audio is least like ``video``'s own
    soundtrack, by the mouth measure's loudness correlation (:mod:`lsync.mouth_metrics`, best of +-3 frames).

    Why: a held-out video shows lip-sync only if its mouth follows the new audio *rather than* the source's own.
    The loudness of two speech clips correlates by chance (r ~0.1-0.3), and a driver that happens to resemble the
    source would make a model that copies the source's mouth look as if it followed the driver. Ties go to the
    earliest id; a candidate the correlation is undefined for (silent audio) comes last. ``loudness`` maps a media
    file to its ``(frames,)`` loudness (default :func:`lsync.media.audio.frame_loudness`; pass a cached one when
    calling this repeatedly).
    """
    from lsync.media.audio import frame_loudness
    from lsync.mouth_metrics import best_lag_correlation

    loudness = loudness or frame_loudness
    own = loudness(video)

    def similarity(candidate: dict[str, Any]) -> float:
        path = data_dir / candidate["audio"]
        if not path.is_file():
            raise InputError(f"{path} (the audio of clip {candidate['id']}) is missing", "rerun lsync preprocess")
        r = best_lag_correlation(own, loudness(path)).r
        return float("inf") if r is None else r

    return min(sorted(candidates, key=lambda c: c["id"]), key=similarity)


def run_pairs(pairs: list[Pair], out_dir: str | Path, config: InferConfig, overwrite: bool = False,
              models: InferenceModels | None = None,
              on_progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
    """Run every pair with one set of models; all inputs are checked before the first run starts."""
    out_dir = Path(out_dir)
    for pair in pairs:
        _check_inputs(pair.video, pair.audio, config)
    _check_out_dir(out_dir, [pair.name for pair in pairs], overwrite)
    models = models or load_models_for(config)
    entries = []
    for number, pair in enumerate(pairs, start=1):
        log.info("pair %d of %d: %s + %s", number, len(pairs), pair.video, pair.audio)
        entries.append(_run_checked(pair, out_dir, config, models, on_progress or _no_progress))
    return entries
