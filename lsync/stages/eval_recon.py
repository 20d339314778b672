"""``lsync eval recon data/ --unet RUN``: how well a U-Net rebuilds the mouth of held-out clips from their own audio.

For every clip of one split (``val`` by default) the aligned faces are lip-synced to the clip's own audio with
the inference sampler (:class:`lsync.sampling.ChunkSampler`: masked frames + reference frames +
Whisper features, DDIM, guidance), in 16-frame chunks (the last one padded by repeating its last frame). The
data-directory clips are already aligned faces, so no detection or paste-back happens. The output is compared
with the real frames over the mouth region (the pixels the mask repaints, :func:`lsync.face.mask.mouth_mask`):

* ``psnr`` - per frame over the repainted pixels (dB, capped at 100 for identical pixels), averaged;
* ``ssim`` - the SSIM map of the box around the region (skimage's uniform 7x7 windows) averaged over the
  repainted pixels, per frame, averaged;
* ``lpips`` - LPIPS (VGG) of the box around the region. It needs the ImageNet VGG weights (see
  :func:`lsync.losses.make_lpips`); without them a real preset is refused, as in training. Only the ``tiny`` test
  preset runs with a random backbone, and its summary says so (``lpips_pretrained: false``);
* with ``syncnet``: the offset / LSE-C / LSE-D of the generated faces against the clip's audio
  (:mod:`lsync.sync_metrics`), and of the real faces for reference (``real_sync_*``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lsync.console import get_logger, progress
from lsync.errors import UsageError

log = get_logger(__name__)

CHUNK_FRAMES = 16
PSNR_CAP_DB = 100.0


@dataclass
class EvalReconConfig:
    unet: str = ""  # a U-Net run, checkpoint directory or released-format .pt
    preset: Literal["latentsync-1.5", "latentsync-1.6", "tiny"] = "latentsync-1.5"  # VAE + Whisper (+ sizes)
    weights_dir: str | None = None
    split: str = "val"
    steps: int = 20
    guidance: float = 1.5
    seed: int = 1247
    max_clips: int | None = None
    max_frames: int | None = None  # per clip (None: all)
    syncnet: str | None = None  # sync confidence of the results when given
    sync_metric: Literal["stable", "syncnet-v2"] = "stable"
    max_offset: int = 15
    lpips_net: Literal["vgg", "alex", "squeeze"] = "vgg"
    device: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default)


# ----------------------------------------------------------------------------------------------- metrics
def mouth_region(resolution: int) -> tuple[np.ndarray, slice, slice]:
    """(R, R) bool of the repainted pixels and the rows/cols of their bounding box."""
    from lsync.face.mask import mouth_mask

    repaint = np.asarray(mouth_mask(resolution)) < 0.5
    rows, cols = np.nonzero(repaint.any(axis=1))[0], np.nonzero(repaint.any(axis=0))[0]
    return repaint, slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def masked_psnr(real: np.ndarray, fake: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(T, R, R, 3) uint8 pairs -> (T,) PSNR (dB) over the pixels where ``region`` (R, R) is True."""
    diff = real[:, region].astype(np.float64) - fake[:, region].astype(np.float64)  # (T, P, 3)
    mse = np.mean(diff ** 2, axis=(1, 2))
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0 ** 2 / mse)
    return np.minimum(psnr, PSNR_CAP_DB)


def masked_ssim(real: np.ndarray, fake: np.ndarray, region: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """(T,) SSIM of the box ``rows x cols``, averaged over the region's pixels inside it."""
    from skimage.metrics import structural_similarity

    inside = region[rows, cols]
    values = []
    for a, b in zip(real[:, rows, cols], fake[:, rows, cols]):
        _, ssim_map = structural_similarity(a, b, channel_axis=2, data_range=255, full=True)
        values.append(float(ssim_map.mean(axis=2)[inside].mean()))
    return np.array(values)


def box_lpips(lpips_model, real: np.ndarray, fake: np.ndarray, rows: slice, cols: slice, device,
              batch_size: int = 16) -> np.ndarray:
    """(T,) LPIPS of the box ``rows x cols`` (images to [-1, 1])."""
    import torch

    def to_tensor(frames: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(frames[:, rows, cols])).permute(0, 3, 1, 2)
        return tensor.to(device).float().div(127.5).sub(1.0)

    values = []
    with torch.no_grad():
        for first in range(0, len(real), batch_size):
            batch = slice(first, first + batch_size)
            values.append(lpips_model(to_tensor(real[batch]), to_tensor(fake[batch])).flatten().float().cpu())
    return torch.cat(values).numpy()


# ----------------------------------------------------------------------------------------------- generation
def read_clip_frames(path: Path, resolution: int, max_frames: int | None) -> np.ndarray:
    """(T, R, R, 3) uint8 aligned faces of a clip at the model's resolution."""
    from lsync.media.video import VideoReader

    reader = VideoReader(path, fps=None, num_frames=max_frames)
    size = None if (reader.width, reader.height) == (resolution, resolution) else (resolution, resolution)
    if size is not None:
        reader = VideoReader(path, fps=None, num_frames=max_frames, size=size, scale_flags="area")
    return reader.read_all()


def regenerate(sampler, audio_features, frames: np.ndarray) -> np.ndarray:
    """Lip-sync ``frames`` (T, R, R, 3) uint8 to the audio features ``(T50, L+1, D)``; (T, R, R, 3) uint8."""
    import torch

    out = []
    for start in range(0, len(frames), CHUNK_FRAMES):
        chunk = frames[start:start + CHUNK_FRAMES]
        count = len(chunk)
        if count < CHUNK_FRAMES:  # the U-Net always sees 16 frames; the padding rows are dropped
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], CHUNK_FRAMES - count, axis=0)])
        audio = sampler.audio_window(audio_features, start, CHUNK_FRAMES)  # cut for the U-Net's audio_feat_length
        generated = sampler(chunk, audio)  # (16, 3, R, R) [-1, 1]
        pixels = ((generated[:count].permute(0, 2, 3, 1).float() + 1) * 127.5).round().clamp(0, 255)
        out.append(pixels.to(torch.uint8).numpy())
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------------- the stage
def evaluate(data_dir: str | Path, config: EvalReconConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Regenerate the clips of ``config.split`` and score them; returns ``{"rows", "summary"}`` (and writes
    ``results.json`` + the ``eval`` manifest into ``out_dir`` when given)."""
    from lsync.audio.mel import load_wav_16k_mono
    from lsync.data.syncnet_dataset import read_clip_records
    from lsync.losses import make_lpips
    from lsync.eval_results import check_out_dir, write_results
    from lsync.sampling import ChunkSampler, load_inference_models, pick_device
    from lsync.sync_metrics import set_threads

    started = time.perf_counter()
    data_dir = Path(data_dir)
    if not config.unet:
        raise UsageError("no U-Net given", "pass --unet RUN (a U-Net run, checkpoint directory or .pt file)")
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    records = read_clip_records(data_dir, config.split)[:config.max_clips]
    set_threads(config.threads)
    device, dtype = pick_device(config.device, config.dtype)
    # First, before the big models load: a random backbone is only acceptable for the tiny test preset, as in
    # training; for a real preset its numbers would be reported as LPIPS while meaning nothing.
    lpips_model = make_lpips(config.lpips_net, config.weights_dir, require_pretrained=config.preset != "tiny",
                             device=device)
    bundle, model_ids = load_inference_models(config.preset, config.weights_dir, config.unet)
    sampler = ChunkSampler(bundle, device, dtype, steps=config.steps, guidance=config.guidance, seed=config.seed,
                           num_frames=CHUNK_FRAMES)
    resolution = bundle.resolution
    region, rows_box, cols_box = mouth_region(resolution)
    scorer = _sync_scorer(config, device)
    if records and int(records[0].get("resolution", resolution)) != resolution:
        log.warning("clips are %s px, the %s models %d px: faces are resized", records[0].get("resolution"),
                    config.preset, resolution)

    rows = []
    with progress(transient=True) as bar:
        task = bar.add_task("regenerate", total=len(records), unit="clips")
        for record in records:
            real = read_clip_frames(data_dir / record["video"], resolution, config.max_frames)
            samples = load_wav_16k_mono(data_dir / record["audio"])
            fake = regenerate(sampler, bundle.audio(samples), real)
            row = {"id": record["id"], "video": record["video"], "frames": int(len(real)),
                   "lpips": float(box_lpips(lpips_model, real, fake, rows_box, cols_box, device).mean()),
                   "psnr": float(masked_psnr(real, fake, region).mean()),
                   "ssim": float(masked_ssim(real, fake, region, rows_box, cols_box).mean())}
            if scorer is not None:
                row.update(_sync_columns(scorer, real, fake, samples, config.max_offset))
            rows.append({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
            bar.advance(task)

    summary = {"clips": len(rows), "split": config.split, "frames": sum(r["frames"] for r in rows),
               "lpips_pretrained": bool(lpips_model.pretrained_backbone),
               "lpips_note": None if lpips_model.pretrained_backbone else
               "LPIPS backbone is RANDOM (ImageNet VGG weights not found): compare only with runs made the same way",
               "region": "pixels the mouth mask repaints (PSNR, SSIM); their bounding box (LPIPS)",
               "unet": model_ids.get("unet", {}).get("path"), "preset": config.preset, "resolution": resolution,
               "elapsed_s": None}
    for key in ("lpips", "psnr", "ssim", "sync_offset", "sync_lse_c", "sync_lse_d", "real_sync_lse_c",
                "real_sync_lse_d"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            summary[key] = round(float(np.mean(values)), 5)
    summary["elapsed_s"] = round(time.perf_counter() - started, 2)
    result = {"summary": summary, "rows": rows}
    if out_dir is not None:
        result["written_to"] = str(write_results(Path(out_dir), "recon", config, data_dir, config.unet, result,
                                                 from_data_dir=True, videos=None))
    return result


def _sync_scorer(config: EvalReconConfig, device):
    if config.syncnet is None:
        return None
    from lsync.sync_metrics import load_scorer

    return load_scorer(config.sync_metric, config.syncnet, device)


def _sync_columns(scorer, real: np.ndarray, fake: np.ndarray, samples: np.ndarray, max_offset: int) -> dict:
    from lsync.sync_metrics import score_sync

    generated = score_sync(scorer, scorer.prepare_faces(fake), samples, max_offset)
    reference = score_sync(scorer, scorer.prepare_faces(real), samples, max_offset)

    def value(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    return {"sync_offset": generated.offset, "sync_lse_c": value(generated.lse_c), "sync_lse_d": value(generated.lse_d),
            "real_sync_offset": reference.offset, "real_sync_lse_c": value(reference.lse_c),
            "real_sync_lse_d": value(reference.lse_d)}
