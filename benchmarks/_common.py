"""Helpers shared by the benchmark scripts: timing with warm-up, peak memory, machine info and JSON output.

Benchmarks print exactly one JSON object on stdout (so ``python benchmarks/x.py > result.json`` works) and send
progress to stderr. Times are wall-clock seconds measured around a callable with the device synchronised, so
asynchronous CUDA work is counted where it is launched.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

MIB = 1024 * 1024


# ----------------------------------------------------------------------------------------------- messages
def log(message: str) -> None:
    """Progress for the person watching: stderr, so stdout stays one clean JSON object."""
    print(message, file=sys.stderr, flush=True)


def emit_json(result: dict[str, Any], out: str | os.PathLike | None = None) -> None:
    """Print ``result`` as JSON on stdout and, when ``out`` is given, write the same text to that file atomically."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out is not None:
        from lsync.manifest import atomic_write_text

        atomic_write_text(out, text + "\n")
    print(text, flush=True)


# ----------------------------------------------------------------------------------------------- device
def resolve_device(name: str | None) -> torch.device:
    """``None`` picks CUDA when present, else CPU; asking for CUDA on a machine without it is a usage error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from lsync.errors import UsageError

        raise UsageError("--device cuda was asked for but torch sees no CUDA device", "use --device cpu")
    return device


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls on CUDA: what training runs use on Ampere and later, and several times faster than fp32."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; ``None`` (plain fp32) on CPU, where autocast mostly slows down."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def training_step(model: torch.nn.Module, loss_fn, device: torch.device, dtype: torch.dtype | None,
                  lr: float, max_grad_norm: float):
    """One optimizer step as the trainers take it (autocast, fp16 loss scaling, clipping, AdamW), as a callable.

    ``loss_fn(model) -> scalar loss``; the optimizer and scaler live in the closure.
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

    def step() -> None:
        with autocast(device, dtype):
            loss = loss_fn(model)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dtype_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


# ----------------------------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall-clock seconds of the timed calls (warm-up calls excluded)."""

    times_s: list[float]
    warmup: int

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "warmup": self.warmup,
            "repeats": len(self.times_s),
            "times_s": [round(t, 6) for t in self.times_s],
            "median_s": round(self.median_s, 6),
            "min_s": round(self.min_s, 6),
        }


def time_callable(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int = 3,
    warmup: int = 1,
    budget_s: float | None = None,
) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then up to ``repeats`` times timed.

    The first calls pay for allocator growth, kernel selection (cuDNN benchmark, oneDNN primitives) and lazy
    initialisation, hence the warm-up. ``budget_s`` bounds a slow row: once warm-up plus timed calls have used it,
    no further repeat starts (at least one timed call always runs); the result records how many ran.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    started = time.perf_counter()
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        if times and budget_s is not None and time.perf_counter() - started >= budget_s:
            break
        synchronize(device)
        tic = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - tic)
    return Timing(times_s=times, warmup=warmup)


# ----------------------------------------------------------------------------------------------- memory
def current_rss_bytes() -> int:
    """Resident set size of this process now."""
    try:
        import psutil
    except ImportError:  # psutil is a dependency, but keep the benchmarks usable on a bare torch install
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def process_peak_rss_mib() -> float:
    """Highest RSS this process has reached since it started (``getrusage``: KiB on Linux, bytes on macOS)."""
    import resource  # Unix only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


class PeakMemory:
    """Peak memory of the code run inside ``with PeakMemory(device) as mem:``.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` - tensors only, without the caching
    allocator's slack. CPU: the process RSS sampled by a background thread (the process-wide ``getrusage`` peak
    cannot be reset between rows). RSS also counts memory the allocator keeps after freeing it; call
    :func:`release_memory` before the block so that ``delta_mib`` (peak minus the level when the block started)
    measures the block's own working memory.

    After the block: ``peak_mib``, ``baseline_mib``, ``delta_mib`` and ``kind``.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.002):
        self.device = device
        self.interval_s = interval_s
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_rss_sampled"
        self.baseline_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline_bytes = self.peak_bytes = current_rss_bytes()
            self._sampler = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        # Torch kernels release the GIL, so this thread keeps sampling while the model runs.
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())

    def __exit__(self, *exc_info: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._sampler is not None
            self._sampler.join()
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MIB

    @property
    def baseline_mib(self) -> float:
        return self.baseline_bytes / MIB

    @property
    def delta_mib(self) -> float:
        return max(0, self.peak_bytes - self.baseline_bytes) / MIB

    def as_dict(self) -> dict[str, Any]:
        return {
            "memory_kind": self.kind,
            "peak_memory_mib": round(self.peak_mib, 1),
            "peak_memory_delta_mib": round(self.delta_mib, 1),
        }


def release_memory(device: torch.device) -> None:
    """Return cached blocks between rows so one row's peak does not include another's leftovers.

    On CPU, glibc keeps freed tensor memory in its heap, where it still counts as RSS; ``malloc_trim`` hands it
    back to the kernel so that the next row's RSS baseline is the memory actually in use.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        _malloc_trim()


def _malloc_trim() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim: RSS deltas are then rougher
        pass


@contextlib.contextmanager
def default_device(device: torch.device) -> Iterator[None]:
    """Create parameters directly on ``device`` (a 1.3 G-parameter model is slow to initialise on CPU)."""
    with torch.device(device):
        yield


# ----------------------------------------------------------------------------------------------- machine
def machine_info(device: torch.device, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What a reader needs to compare two result files: software, hardware, threads and numeric settings."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "device_name": _device_name(device),
        "autocast_dtype": dtype_name(amp_dtype),
        # Other processes on the CPU slow every row, and OpenMP threads that spin while waiting suffer most.
        "load_average_1min": load_average(),
    }
    try:
        from importlib import metadata

        info["diffusers"] = metadata.version("diffusers")
    except Exception:  # metadata lookups only fail on odd installs; the field is informative
        pass
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            device_memory_mib=round(props.total_memory / MIB),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), ``None`` where the OS does not report it."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_model_name() or platform.processor() or platform.machine()


def _cpu_model_name() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None
