"""Speed and memory of the lsync networks: the 3D U-Net and StableSyncNet, per config, as one JSON object.

For every (model, config) the script measures three rows:

* ``forward`` - eval mode under ``torch.no_grad`` (inference, one denoising step for the U-Net);
* ``forward_backward`` - train mode, ``loss = output.mean()``, backward (a training step without the optimizer);
* ``forward_backward_checkpointing`` - the same with gradient checkpointing on (less memory, more compute).

Each row has the timed calls, median/min seconds, samples per second and the peak memory of the row.
On CPU it runs the tiny configs and a mid-size U-Net (256 px faces); the released geometries (the 1.3 G-parameter
stage2 U-Net and the 16-frame pixel SyncNet with attention) run only on CUDA and are listed under ``skipped``
otherwise. On CUDA every model runs under bf16 autocast (fp16 where bf16 is unsupported) with TF32 matmuls.

Usage::

    python benchmarks/models.py [--quick] [--device cpu|cuda] [--repeats N] [--out FILE]
                                [--warmup N] [--threads N] [--row-budget SECONDS] [--no-checkpointing]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import (  # noqa: E402
    PeakMemory,
    autocast,
    autocast_dtype,
    configure_backends,
    default_device,
    dtype_name,
    emit_json,
    load_average,
    log,
    machine_info,
    process_peak_rss_mib,
    release_memory,
    resolve_device,
    time_callable,
)
from lsync.audio.timing import DEFAULT_AUDIO_FEAT_LENGTH, whisper_chunk_positions  # noqa: E402
from lsync.config import load_yaml  # noqa: E402
from lsync.errors import LsyncError  # noqa: E402
from lsync.models.syncnet import StableSyncNet  # noqa: E402
from lsync.models.unet3d import UNet3DConditionModel  # noqa: E402

MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models"

#: Hidden states of whisper-tiny, the encoder every preset uses (stem + 4 blocks).
WHISPER_HIDDEN_STATES = load_yaml(MODEL_CONFIGS / "whisper_tiny.yaml")["n_audio_layer"] + 1
#: A Wav2Lip mel window of 16 video frames: 80 mel bins x 52 steps.
MEL_WINDOW = (1, 80, 52)
#: Frames per clip, as LatentSync trains and infers.
NUM_FRAMES = 16

#: Mid-size U-Net: the stage2 layout (heads, audio width, motion modules) at a fifth of its channel widths.
MID_UNET_OVERRIDES = {"block_out_channels": [64, 128, 256, 256], "attention_head_dim": 8, "cross_attention_dim": 384}

SCHEMA = "lsync.benchmark.models/1"


# ----------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One model in one config, with the inputs of one batch.

    ``make_inputs(device)`` returns the positional arguments of ``model.forward``; ``shapes`` describes them.
    """

    model: str
    config: str
    build: Callable[[], nn.Module]
    make_inputs: Callable[[torch.device], tuple[torch.Tensor, ...]]
    batch: int
    shapes: dict[str, list[int]]
    needs_cuda: bool = False
    frames_per_sample: int = 1
    notes: dict[str, Any] = field(default_factory=dict)


def model_config(name: str) -> dict[str, Any]:
    return load_yaml(MODEL_CONFIGS / f"{name}.yaml")


def unet_case(config_name: str, config: Mapping[str, Any], latent_size: int, batch: int = 1,
              num_frames: int = NUM_FRAMES, needs_cuda: bool = False) -> Case:
    """U-Net inputs: sample (B, 13, F, h, w), timestep (B,), audio tokens (B, F, S, cross_attention_dim) with the
    S tokens per frame the config's ``audio_feat_length`` cuts (50 for the released (2, 2), 10 for the tiny [0, 0])."""
    config = dict(config, sample_size=latent_size)
    channels, audio_dim = config["in_channels"], config["cross_attention_dim"]
    context = config.get("audio_feat_length", DEFAULT_AUDIO_FEAT_LENGTH)
    shapes = {
        "sample": [batch, channels, num_frames, latent_size, latent_size],
        "timestep": [batch],
        "encoder_hidden_states": [batch, num_frames, whisper_chunk_positions(context) * WHISPER_HIDDEN_STATES,
                                  audio_dim],
    }

    def make_inputs(device: torch.device) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator(device="cpu").manual_seed(0)
        sample = torch.randn(shapes["sample"], generator=generator)
        timestep = torch.randint(0, 1000, shapes["timestep"], generator=generator)
        audio = torch.randn(shapes["encoder_hidden_states"], generator=generator)
        return sample.to(device), timestep.to(device), audio.to(device)

    return Case(
        model="unet3d",
        config=config_name,
        build=lambda: UNet3DConditionModel.from_config(config),
        make_inputs=make_inputs,
        batch=batch,
        shapes=shapes,
        needs_cuda=needs_cuda,
        frames_per_sample=num_frames,
        notes={"face_px": latent_size * 8, "block_out_channels": list(config["block_out_channels"])},
    )


def syncnet_case(config_name: str, config: Mapping[str, Any], face_size: int, batch: int,
                 needs_cuda: bool = False) -> Case:
    """SyncNet inputs: 16 frames of the lower face half packed as (B, 48, face/2, face), mel (B, 1, 80, 52)."""
    in_channels = config["visual_encoder"]["in_channels"]
    shapes = {
        "image_sequences": [batch, in_channels, face_size // 2, face_size],
        "audio_sequences": [batch, *MEL_WINDOW],
    }

    def make_inputs(device: torch.device) -> tuple[torch.Tensor, ...]:
        generator = torch.Generator(device="cpu").manual_seed(0)
        images = torch.rand(shapes["image_sequences"], generator=generator) * 2 - 1
        mel = torch.randn(shapes["audio_sequences"], generator=generator)
        return images.to(device), mel.to(device)

    return Case(
        model="syncnet",
        config=config_name,
        build=lambda: StableSyncNet(config),
        make_inputs=make_inputs,
        batch=batch,
        shapes=shapes,
        needs_cuda=needs_cuda,
        notes={"face_px": face_size},
    )


def plan_cases(quick: bool) -> list[Case]:
    """Every case the script knows; those with ``needs_cuda`` are skipped on CPU.

    Tiny: the CPU test geometry (64 px faces). Mid: stage2's layout at a fifth of its width on 256 px faces
    (LatentSync 1.5's resolution), the largest U-Net a 2-core CPU runs in seconds. stage2: the released U-Net at
    256 px (1.5) and 512 px (1.6). SyncNet: the released 16-frame pixel geometry with attention at 256 px.
    """
    unet_tiny, syncnet_tiny = model_config("unet_tiny"), model_config("syncnet_tiny")
    cases = [
        unet_case("unet_tiny", unet_tiny, latent_size=8),
        syncnet_case("syncnet_tiny", syncnet_tiny, face_size=64, batch=8),
    ]
    if quick:
        return cases
    stage2 = model_config("unet_stage2")
    cases += [
        unet_case("unet_mid", dict(stage2, **MID_UNET_OVERRIDES), latent_size=32),
        unet_case("unet_stage2", stage2, latent_size=32, needs_cuda=True),
        unet_case("unet_stage2_512", stage2, latent_size=64, needs_cuda=True),
        syncnet_case("syncnet_16_pixel_attn", model_config("syncnet_16_pixel_attn"), face_size=256, batch=32,
                     needs_cuda=True),
    ]
    return cases


# ----------------------------------------------------------------------------------------------- measuring
def training_loss(output: Any) -> torch.Tensor:
    """``output.mean()`` for any model output: a tensor, a diffusers output with ``.sample``, or a tuple of them."""
    if torch.is_tensor(output):
        return output.float().mean()
    if hasattr(output, "sample"):
        return output.sample.float().mean()
    if isinstance(output, (tuple, list)):
        return sum(training_loss(item) for item in output)
    raise TypeError(f"cannot take the mean of a {type(output).__name__}")


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """The U-Net uses diffusers' enable/disable pair; StableSyncNet takes a flag."""
    if hasattr(model, "disable_gradient_checkpointing"):
        if enabled:
            model.enable_gradient_checkpointing()
        else:
            model.disable_gradient_checkpointing()
    else:
        model.enable_gradient_checkpointing(enabled)


def forward_step(model: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
                 amp_dtype: torch.dtype | None) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad(), autocast(device, amp_dtype):
            model(*inputs)

    return step


def train_step(model: nn.Module, inputs: tuple[torch.Tensor, ...], device: torch.device,
               amp_dtype: torch.dtype | None) -> Callable[[], None]:
    def step() -> None:
        # Freeing the previous gradients first is what optimizer.zero_grad() does in a real training loop.
        model.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = training_loss(model(*inputs))
        loss.backward()

    return step


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def measure_row(mode: str, make_step: Callable[[], Callable[[], None]], case: Case, device: torch.device,
                repeats: int, warmup: int, budget_s: float | None) -> dict[str, Any]:
    """Time one mode of one case and record its peak memory; running out of memory becomes an ``error`` row."""
    row: dict[str, Any] = {"model": case.model, "config": case.config, "mode": mode, "batch": case.batch}
    step = make_step()
    release_memory(device)
    try:
        with PeakMemory(device) as memory:
            timing = time_callable(step, device, repeats=repeats, warmup=warmup, budget_s=budget_s)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        log(f"  {mode}: out of memory")
        release_memory(device)
        return row | {"error": f"out of memory: {str(error).splitlines()[0][:200]}"}
    row |= timing.as_dict()
    row["samples_per_s"] = round(case.batch / timing.median_s, 4)
    if case.frames_per_sample > 1:
        row["frames_per_s"] = round(case.batch * case.frames_per_sample / timing.median_s, 3)
    row |= memory.as_dict()
    log(f"  {mode:<31} median {timing.median_s * 1000:9.1f} ms over {len(timing.times_s)} "
        f"| peak {memory.peak_mib:8.1f} MiB (+{memory.delta_mib:.1f})")
    return row


def benchmark_case(case: Case, device: torch.device, amp_dtype: torch.dtype | None, repeats: int, warmup: int,
                   budget_s: float | None, checkpointing: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Build the model once, then measure forward, forward+backward and (optionally) the checkpointed variant.

    Returns the case description (parameters, input shapes) and its rows.
    """
    log(f"{case.model} / {case.config}: building")
    with default_device(device):
        model = case.build()
    model.to(device)
    inputs = case.make_inputs(device)
    description = {
        "model": case.model,
        "config": case.config,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": case.batch,
        "input_shapes": case.shapes,
        **case.notes,
    }
    log(f"{case.model} / {case.config}: {description['parameters'] / 1e6:.1f} M parameters, inputs "
        + ", ".join(f"{name} {tuple(shape)}" for name, shape in case.shapes.items()))

    # Each mode starts without the previous row's gradients, so they do not count in its memory.
    def train(enabled: bool) -> Callable[[], None]:
        model.zero_grad(set_to_none=True)
        set_gradient_checkpointing(model, enabled)
        model.train()
        return train_step(model, inputs, device, amp_dtype)

    def infer() -> Callable[[], None]:
        model.zero_grad(set_to_none=True)
        model.eval()
        return forward_step(model, inputs, device, amp_dtype)

    modes: list[tuple[str, Callable[[], Callable[[], None]]]] = [
        ("forward", infer),
        ("forward_backward", lambda: train(False)),
    ]
    if checkpointing:
        modes.append(("forward_backward_checkpointing", lambda: train(True)))
    rows = [measure_row(mode, make_step, case, device, repeats, warmup, budget_s) for mode, make_step in modes]
    del model, inputs
    release_memory(device)
    return description, rows


# ----------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny configs only, one warm-up and one timed call per row (a smoke run)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per row after the warm-up (default 3; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per row before timing (default 1)")
    parser.add_argument("--row-budget", type=float, default=None, metavar="SECONDS",
                        help="start no further repeat once a row has run this long, warm-up included "
                             "(default 30 on CPU, none on CUDA; 0 = no limit)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice, one per core). On a CPU that other "
                             "processes also use, fewer threads than cores avoids OpenMP threads waiting on each "
                             "other")
    parser.add_argument("--no-checkpointing", action="store_true",
                        help="skip the forward+backward row with gradient checkpointing")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be 0 or more")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    configure_backends(device)
    amp_dtype = autocast_dtype(device)
    budget = args.row_budget if args.row_budget is not None else (30.0 if device.type == "cpu" else None)
    budget = budget or None  # 0 means no limit

    load_before = load_average()
    cases, skipped, results = [], [], []
    for case in plan_cases(args.quick):
        if case.needs_cuda and device.type != "cuda":
            skipped.append({"model": case.model, "config": case.config,
                            "reason": "needs CUDA: too large to time on CPU in minutes"})
            continue
        description, rows = benchmark_case(case, device, amp_dtype, args.repeats, args.warmup, budget,
                                           checkpointing=not args.no_checkpointing)
        cases.append(description)
        results += rows
    return {
        "schema": SCHEMA,
        "benchmark": "models",
        "settings": {
            "quick": args.quick,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "row_budget_s": budget,
            "threads": torch.get_num_threads(),
            "precision": dtype_name(amp_dtype) + (" autocast" if amp_dtype is not None else ""),
            "loss": "output.mean()",
        },
        "machine": machine_info(device, amp_dtype) | {
            "load_average_1min": {"start": load_before, "end": load_average()},
            "process_peak_rss_mib": round(process_peak_rss_mib(), 1),
        },
        "cases": cases,
        "results": results,
        "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except LsyncError as error:
        print(f"models.py: error: {error.message}", file=sys.stderr)
        return error.exit_code
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
