"""Released-size inference on a GPU with random weights: frames/s, model seconds and peak VRAM as JSON.

The U-Net has LatentSync's stage2 geometry (1.27 G parameters), the VAE the SD VAE's, Whisper tiny's
(all random: the released files cannot be downloaded everywhere, and speed and memory do not depend on the
values). The input is a 10 s 1080x1920 talking-face video: ``--video`` (e.g. ``shared/media/demo1_video.mp4``),
or a synthetic one (``lsync synth``'s faces at 1080x1920). Settings, each a fresh run with models loaded once:
fp16, bf16, bf16 + ``--compile``, bf16 + ``--cache-interval 3``. Run it through ``benchmarks/gpu.sh``.

Usage::

    python benchmarks/gpu_infer.py [--video FILE] [--steps 20] [--settings fp16,bf16,bf16+compile,bf16+cache3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import emit_json, log, machine_info  # noqa: E402

SETTINGS = {
    "fp16": {"dtype": "float16"},
    "bf16": {"dtype": "bfloat16"},
    "bf16+compile": {"dtype": "bfloat16", "compile": True},
    "bf16+cache3": {"dtype": "bfloat16", "cache_interval": 3},
}
#: ``stabilityai/sd-vae-ft-mse``'s architecture (its config.json), random weights.
SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
          "block_out_channels": [128, 256, 512, 512], "sample_size": 512,
          "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}


def synthetic_input(folder: Path) -> Path:
    """A 10 s synthetic 1080x1920 talking face (H.264 + AAC)."""
    from lsync.synth import synthesize

    (clip,) = synthesize(folder / "synth", clips=1, seconds=10, seed=0, size=(1080, 1920))
    return Path(clip.path)


def released_size_bundle(device):
    """A ModelBundle of random models with the released geometry, built on ``device``."""
    import torch
    from diffusers import AutoencoderKL

    from lsync.audio.whisper import WhisperFeatureExtractor, build_whisper_encoder
    from lsync.diffusion import make_scheduler
    from lsync.models.presets import ModelBundle, build_unet, model_config

    with torch.device(device):
        unet = build_unet(model_config("unet_stage2")).eval()
        vae = AutoencoderKL(**SD_VAE).eval()
    encoder = build_whisper_encoder(model_config("whisper_tiny"), seed=0)
    return ModelBundle(preset="latentsync-1.5", resolution=256, unet=unet, vae=vae,
                       audio=WhisperFeatureExtractor(encoder), scheduler=make_scheduler(), files={})


def run_setting(name: str, video: Path, steps: int) -> dict:
    import torch

    from lsync.stages.infer import InferConfig, models_from_bundle, run

    config = InferConfig(preset="latentsync-1.5", steps=steps, device="cuda", face_cache="off", **SETTINGS[name])
    bundle = released_size_bundle("cuda")
    models = models_from_bundle(bundle, {"preset": "random released-size"}, config)
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="lsync-gpu-") as out:
        tic = time.perf_counter()
        entry = run(video, video, out, config, models=models)
        wall = time.perf_counter() - tic
    frames = entry["frames"]["total"]
    return {"setting": name, "frames": frames, "wall_s": round(wall, 2), "frames_per_s": round(frames / wall, 2),
            "model_s": entry["timings_s"].get("denoise"), "stages_s": entry["timings_s"],
            "peak_vram_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        log("no CUDA device: this benchmark needs a GPU")
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="lsync-gpu-media-") as folder:
        video = args.video or synthetic_input(Path(folder))
        for name in filter(None, args.settings.split(",")):
            log(f"{name}: lsync infer {video.name}, {args.steps} steps ...")
            try:
                rows.append(run_setting(name, video, args.steps))
            except Exception as exc:  # noqa: BLE001 - one failing setting (e.g. compile) must not hide the others
                rows.append({"setting": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            log(f"  {rows[-1]}")
            torch.cuda.empty_cache()
    emit_json({"schema": "lsync.benchmark.gpu-infer/1", "machine": machine_info(torch.device("cuda"), None),
               "steps": args.steps, "results": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
