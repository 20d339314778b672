"""One Hugging Face ``Accelerator`` per run: device, processes, mixed precision.

The same code runs as one CPU process, one GPU, or many processes started by ``accelerate launch`` or
``torchrun`` (accelerate reads their environment; on CPU it joins a ``gloo`` process group).

``mixed_precision="auto"`` picks bf16 on GPUs that have it, fp16 with a gradient scaler on older GPUs, and plain
float32 on CPU (where autocast mostly slows training down).

The trainer only asks accelerate to wrap the model (DDP) and the optimizer (gradient scaler); batches, learning
rate schedules and gradient accumulation are driven by :mod:`lsync.training.loop` itself, so that the schedule steps
once per optimizer step whatever the number of processes, and a resume knows exactly where the data stood.
"""

from __future__ import annotations

from typing import Literal

import torch

from lsync.console import get_logger
from lsync.errors import UsageError

log = get_logger(__name__)

MixedPrecision = Literal["auto", "no", "fp16", "bf16"]


def resolve_mixed_precision(requested: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` / ``fp16`` on CUDA (bf16 where supported), ``no`` elsewhere; explicit values checked."""
    if requested not in ("auto", "no", "fp16", "bf16"):
        raise UsageError(f"mixed_precision={requested!r} is not one of auto, no, fp16, bf16", "pick one of those")
    if requested == "auto":
        if device_type != "cuda":
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if requested == "fp16" and device_type == "cpu":
        raise UsageError("mixed_precision=fp16 needs a CUDA device", "use auto or no on CPU")
    return requested


def make_accelerator(mixed_precision: str = "auto", cpu: bool = False):
    """An ``accelerate.Accelerator`` for this process (``cpu=True`` forces the CPU even when CUDA is present).

    accelerate keeps its state in a process-wide singleton; a single-process caller that builds a second
    accelerator with other settings (tests, benchmarks) gets a fresh state instead of accelerate's error.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    # accelerate only forms a multi-process CPU group (gloo) under torchrun when told it runs on the CPU.
    cpu = cpu or not torch.cuda.is_available()
    precision = resolve_mixed_precision(mixed_precision, "cpu" if cpu else "cuda")
    try:
        return Accelerator(mixed_precision=precision, cpu=cpu, gradient_accumulation_steps=1)
    except ValueError:
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()  # only reached in single-process runs that change settings
        return Accelerator(mixed_precision=precision, cpu=cpu, gradient_accumulation_steps=1)
