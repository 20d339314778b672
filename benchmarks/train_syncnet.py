"""SyncNet training throughput as one JSON object: optimizer steps per second and peak memory per geometry, and
the data loader's samples per second alone.

Rows:

* ``train_step`` - one AdamW step (forward, BCE on the cosine, backward, clipping, update) on random batches,
  for the ``tiny`` preset everywhere and the released ``16_pixel_attn`` geometry only on CUDA (bf16 autocast,
  fp16 where bf16 is missing); ``samples_per_s`` and the row's peak memory;
* ``data_loader`` - :class:`lsync.data.syncnet_dataset.SyncNetDataset` batches through a ``DataLoader`` (no model),
  over clips decoded from ``--data`` or, without it, random clips of the same shape held in memory.

Usage::

    python benchmarks/train_syncnet.py [--device cpu|cuda] [--data DIR] [--steps N] [--batch-size B]
                                       [--workers N] [--threads N] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import (  # noqa: E402
    PeakMemory,
    autocast_dtype,
    configure_backends,
    dtype_name,
    emit_json,
    log,
    machine_info,
    release_memory,
    resolve_device,
    time_callable,
    training_step,
)

PRESETS_ON_CPU = ("tiny",)
PRESETS_ON_CUDA = ("tiny", "16_pixel_attn")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, help="a data directory for the loader row (default: random clips)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per row")
    parser.add_argument("--batch-size", type=int, help="default: 32 for tiny, 16 for the released geometry")
    parser.add_argument("--workers", type=int, default=2, help="data-loader processes for the loader row")
    parser.add_argument("--loader-batches", type=int, default=30)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="2 steps, 10 loader batches")
    parser.add_argument("--out", type=Path)
    return parser.parse_args(argv)


def preset_config(name: str):
    from lsync.config import resolve_config
    from lsync.stages.train_syncnet import TrainSyncNetConfig

    return resolve_config(TrainSyncNetConfig, "syncnet", name)


def random_batch(batch: int, image_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "images": (torch.rand(batch, 48, image_size // 2, image_size, generator=generator) * 2 - 1).to(device),
        "mel": (torch.rand(batch, 1, 80, 52, generator=generator) * 8 - 4).to(device),
        "label": (torch.arange(batch) % 2).float().to(device),
    }


def train_step_row(preset: str, device: torch.device, amp: torch.dtype | None, batch_size: int | None,
                   steps: int) -> dict[str, Any]:
    from lsync.stages.train_syncnet import build_model, syncnet_step

    config = preset_config(preset)
    batch = batch_size or (32 if preset == "tiny" else 16)
    model, _ = build_model(config.model)
    model = model.to(device).train()
    inputs = random_batch(batch, config.model.image_size, device)
    step = training_step(model, lambda m: syncnet_step(m, inputs, config.loss.logit_scale)["loss"], device, amp,
                         config.train.lr, config.train.max_grad_norm)

    release_memory(device)
    with PeakMemory(device) as memory:
        timing = time_callable(step, device, repeats=steps, warmup=1)
    row = {"row": "train_step", "preset": preset, "geometry": config.model.geometry,
           "image_size": config.model.image_size, "batch": batch, "precision": dtype_name(amp),
           "parameters": sum(p.numel() for p in model.parameters()), **timing.as_dict(),
           "samples_per_s": round(batch / timing.median_s, 2), **memory.as_dict()}
    del model, step
    release_memory(device)
    return row


def random_clips(count: int, frames: int, image_size: int):
    from lsync.data.syncnet_dataset import ClipFeatures

    rng = np.random.default_rng(0)
    mel_columns = 1 + frames * 640 // 200
    return [ClipFeatures(f"clip-{i}", rng.integers(0, 256, (frames, image_size // 2, image_size, 3), dtype=np.uint8),
                         rng.uniform(-4, 4, (80, mel_columns)).astype(np.float32)) for i in range(count)]


def loader_row(data: Path | None, image_size: int, batch: int, workers: int, batches: int) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    from lsync.data.syncnet_dataset import SyncNetDataset, load_clips, read_clip_records
    from lsync.training.sampling import EpochBatchSampler

    if data is not None:
        clips = load_clips(data, read_clip_records(data, "train"), image_size, show_progress=False)
        source = str(data)
    else:
        clips = random_clips(8, 150, image_size)
        source = "random clips in memory"
    dataset = SyncNetDataset(clips, seed=0)
    sampler = EpochBatchSampler(len(dataset), batch, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started = time.perf_counter()
    count = 0
    for _ in range(batches):
        try:
            count += len(next(iterator)["label"])
        except StopIteration:
            break
    elapsed = time.perf_counter() - started
    return {"row": "data_loader", "source": source, "image_size": image_size, "batch": batch, "workers": workers,
            "batches": count // batch, "seconds": round(elapsed, 4), "samples_per_s": round(count / elapsed, 1)}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configure_backends(device)
    amp = autocast_dtype(device)
    steps = 2 if args.quick else args.steps
    loader_batches = 10 if args.quick else args.loader_batches
    rows, skipped = [], []
    presets = PRESETS_ON_CUDA if device.type == "cuda" else PRESETS_ON_CPU
    for preset in presets:
        log(f"train_step {preset} on {device}")
        rows.append(train_step_row(preset, device, amp, args.batch_size, steps))
        log(f"  {rows[-1]['samples_per_s']} samples/s, peak {rows[-1]['peak_memory_mib']} MiB")
    if device.type != "cuda":
        skipped.append({"preset": "16_pixel_attn", "reason": "the released geometry runs only on CUDA"})
    for preset in presets:
        size = preset_config(preset).model.image_size
        log(f"data_loader at {size} px")
        rows.append(loader_row(args.data if preset == "tiny" else None, size, args.batch_size or 32, args.workers,
                               loader_batches))
        log(f"  {rows[-1]['samples_per_s']} samples/s")
    emit_json({"schema": "lsync.benchmark.train_syncnet/1",
               "settings": {"steps": steps, "quick": args.quick, "workers": args.workers,
                            "precision": dtype_name(amp)},
               "machine": machine_info(device, amp), "rows": rows, "skipped": skipped}, args.out)


if __name__ == "__main__":
    main()
