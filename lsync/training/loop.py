"""The training loop every lsync trainer shares: :class:`Trainer` drives one model through AdamW steps.

A stage supplies what is particular to it and nothing else:

* the model (with ``requires_grad`` already off for frozen parts) and its constructor config (for checkpoints);
* a training dataset whose ``__getitem__`` takes a :class:`lsync.training.sampling.SampleKey`;
* ``step_fn(model, batch) -> {"loss": tensor, "accuracy": tensor, ...}``: ``loss`` is minimised, every other entry
  is logged as ``train/<name>``; it runs under the accelerator's autocast;
* optionally ``validate_fn(model) -> {"loss": float, ...}`` (logged as ``val/<name>``), run on the main process
  with the bare model in eval mode under ``torch.no_grad``.

The trainer owns the rest: accelerate (devices, processes, DDP, mixed precision with a gradient scaler for fp16),
gradient accumulation and clipping, a warm-up then constant learning rate, ``metrics.jsonl`` + chart, a progress
bar, checkpoints that resume exactly (weights, optimizer, scaler, schedule, RNG states, data position, EMA), pruning
to ``keep_last``, step and time budgets, and Ctrl-C (finish the current step, checkpoint, stop). Optional: gradient
checkpointing, an EMA of the trainable weights (validated and saved beside the weights), and checkpoints of the
trainable weights only (:mod:`lsync.training.trainable`).

Batches follow :mod:`lsync.training.sampling`: ``batch_size`` is per process and micro-step, so the global batch of
one optimizer step is ``batch_size * grad_accum * processes``, and runs with equal global batches see the same
samples in the same order.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lsync.console import get_logger, progress
from lsync.errors import ConfigError, InputError
from lsync.training import checkpointing as ckpt
from lsync.training.accelerate_setup import make_accelerator
from lsync.training.ema import TrainableEMA
from lsync.training.metrics import MetricsLog
from lsync.training.sampling import EpochBatchSampler
from lsync.training.seeding import capture_rng_state, restore_rng_state
from lsync.training.trainable import (
    BASE_FILE,
    BASE_KEY,
    EMA_FILE,
    frozen_state_dict,
    load_checkpoint_model,
    save_tensor_file,
    save_weights,
    set_gradient_checkpointing,
)

log = get_logger(__name__)

StepFn = Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]
ValidateFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass
class LoopConfig:
    """The ``train:`` section of every training preset."""

    batch_size: int = 32  # samples per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    # After the warm-up: "constant" (the reference's choice) or "cosine" down to lr_min_ratio * lr over
    # lr_decay_steps, then flat. The horizon is its own key, not max_steps, so that a run extended on resume
    # follows the same curve as one planned that long.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_decay_steps: int = 1000
    lr_min_ratio: float = 0.1
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 = no clipping (the norm is still logged)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on CUDA, fp32 on CPU
    cpu: bool = False  # train on the CPU even where CUDA is present
    max_steps: int = 1000  # optimizer steps of the whole run (a resumed run continues to this number)
    max_minutes: float | None = None  # stop (with a checkpoint) once this much wall time has passed
    log_every: int = 10  # steps between metrics.jsonl lines
    val_every: int = 200  # steps between validations (and at the end); 0 = only at the end
    checkpoint_every: int = 500  # steps between checkpoints (and at the end); 0 = only at the end
    keep_last: int = 3  # checkpoints kept (oldest pruned); 0 = keep all
    seed: int = 1247
    num_workers: int = 2  # data-loader processes per training process
    tensorboard: bool = True  # also write TensorBoard scalars when the package is installed
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more time
    ema: bool = False  # keep an exponential moving average of the trainable weights (saved as ema.safetensors)
    ema_decay: float = 0.9999
    # What model.safetensors of a checkpoint holds: "full" (everything) or "trainable" (the trained parameters;
    # the frozen rest is written once as <run>/base.safetensors or named by the caller, see training.trainable).
    checkpoint_weights: Literal["full", "trainable"] = "full"


#: LoopConfig keys that may change when a run is resumed (budgets and bookkeeping, not the learning itself).
RESUMABLE_KEYS = ("max_steps", "max_minutes", "log_every", "val_every", "checkpoint_every", "keep_last",
                  "num_workers", "tensorboard", "gradient_checkpointing", "checkpoint_weights")


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` reports back."""

    step: int  # optimizer steps done (including those before a resume)
    epoch: int
    stopped: Literal["max_steps", "max_minutes", "interrupted"]
    checkpoint: Path | None  # the last checkpoint written (main process), at ``step``
    metrics: dict[str, Any] = field(default_factory=dict)  # last train values and last validation
    elapsed_s: float = 0.0  # wall time of this invocation
    resumed_from: Path | None = None


@dataclass
class _DataPosition:
    epoch: int = 0
    batch: int = 0  # global micro-batches of ``epoch`` consumed


class Trainer:
    """Train ``model`` on ``train_data`` with ``step_fn``; see the module docstring for the contract.

    Args:
        run_dir: where checkpoints, ``metrics.jsonl`` and the chart go.
        model: the module to train (parameters with ``requires_grad=False`` stay frozen and get no optimizer state).
        model_config: the model's constructor config, stored as ``config.json`` beside each checkpoint's weights.
            With ``checkpoint_weights="trainable"`` its ``_base`` entry may name the files holding the frozen
            weights (e.g. the init file); without it the trainer writes ``<run>/base.safetensors`` and names that.
        config: the loop settings.
        train_data: a map-style dataset indexed by :class:`~lsync.training.sampling.SampleKey`.
        step_fn: ``(model, batch) -> {"loss": ..., ...}``.
        validate_fn: ``(bare model) -> {name: float}`` or ``None``.
        collate_fn: the data loader's collate function (default: torch's).
        accelerator: an ``accelerate.Accelerator`` made by the caller (e.g. to place frozen helper models on its
            device first); by default one is made from ``config.mixed_precision`` / ``config.cpu``.
        description: label of the progress bar.
        on_step_end: ``(trainer, step)`` called after every optimizer step (tests use it to simulate Ctrl-C).
    """

    def __init__(self, run_dir: str | Path, model: nn.Module, model_config: Mapping[str, Any], config: LoopConfig,
                 train_data: Dataset, step_fn: StepFn, validate_fn: ValidateFn | None = None,
                 collate_fn: Callable | None = None, accelerator=None, description: str = "train",
                 on_step_end: Callable[[Trainer, int], None] | None = None):
        self.run_dir = Path(run_dir)
        self.model = model
        self.model_config = dict(model_config)
        self.config = config
        self.train_data = train_data
        self.step_fn = step_fn
        self.validate_fn = validate_fn
        self.collate_fn = collate_fn
        self.accelerator = accelerator or make_accelerator(config.mixed_precision, cpu=config.cpu)
        self.description = description
        self.on_step_end = on_step_end
        self.step = 0
        self.position = _DataPosition()
        self.ema = None  # a TrainableEMA once fit() starts with config.ema
        self._stop_requested = False
        self._validate_arguments()

    # ------------------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def global_batch_size(self) -> int:
        return self.config.batch_size * self.config.grad_accum * self.accelerator.num_processes

    def _validate_arguments(self) -> None:
        c = self.config
        for name in ("batch_size", "grad_accum", "max_steps", "log_every"):
            if getattr(c, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(c, name)}", f"set train.{name} >= 1")
        if len(self.train_data) < self.global_batch_size:
            raise InputError(
                f"the training set has {len(self.train_data)} samples, fewer than one global batch of "
                f"{self.global_batch_size}", "use a smaller batch_size or grad_accum, or more data")

    # ------------------------------------------------------------------------------------------- the loop
    def fit(self, resume_from: str | Path | None = None) -> FitResult:
        """Train until ``max_steps``, ``max_minutes`` or Ctrl-C; resume first from ``resume_from`` (a checkpoint
        directory, see :func:`lsync.training.checkpointing.resolve_resume`)."""
        acc, c = self.accelerator, self.config
        started = time.perf_counter()
        resume_path = Path(resume_from) if resume_from is not None else None
        if resume_path is not None:
            self._load_weights(resume_path)  # before prepare: DDP then broadcasts identical weights
        if c.gradient_checkpointing:
            set_gradient_checkpointing(self.model, True)
        if c.checkpoint_weights == "trainable":
            self._record_base_weights()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        # The fused kernel updates every tensor in one pass: ~5x faster than the per-tensor loop for the many small
        # tensors of a U-Net (0.07 -> 0.012 s per step for the tiny one on 2 CPU cores); same state dict.
        fused = self.device.type in ("cpu", "cuda") and all(p.dtype.is_floating_point for p in trainable)
        optimizer = torch.optim.AdamW(trainable, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay,
                                      fused=fused or None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(c))
        # The schedule is stepped here once per optimizer step; accelerate's wrapper would step it once per process.
        model, optimizer = acc.prepare(self.model, optimizer)
        self._wrapped, self._optimizer, self._scheduler = model, optimizer, scheduler
        if c.ema:
            self.ema = TrainableEMA(acc.unwrap_model(model), c.ema_decay)
        if resume_path is not None:
            self._load_training_state(resume_path)
            log.info("resumed from %s at step %d (epoch %d)", resume_path, self.step, self.position.epoch)
        elif self.is_main_process:
            ckpt.clear_staging(self.run_dir)

        metrics = MetricsLog(self.run_dir, self.step if resume_path else None, c.tensorboard) \
            if self.is_main_process else None
        last_checkpoint, last_val_step, stopped = None, None, "max_steps"
        last_values: dict[str, Any] = {}
        window_started, window_samples = time.perf_counter(), 0
        batches = self._micro_batches()
        try:
            with self._interrupt_handler(), self._progress_bar() as bar:
                while self.step < c.max_steps:
                    values = self._optimizer_step(model, optimizer, scheduler, batches)
                    if values is None:  # the data loader died under Ctrl-C before the step began
                        stopped = "interrupted"
                        last_checkpoint = self.save_checkpoint()
                        break
                    self.step += 1
                    window_samples += self.global_batch_size
                    if self.on_step_end is not None:
                        self.on_step_end(self, self.step)
                    stop = self._agree_to_stop(started)
                    final = self.step >= c.max_steps or stop is not None
                    record: dict[str, Any] = {}
                    if self.step % c.log_every == 0 or final:
                        elapsed = time.perf_counter() - window_started
                        record.update(self._reduce_values(values))
                        record.update(epoch=self.position.epoch, lr=scheduler.get_last_lr()[0],
                                      samples_per_s=window_samples / max(elapsed, 1e-9),
                                      time_s=time.perf_counter() - started)
                        window_started, window_samples = time.perf_counter(), 0
                        last_values.update(record)
                    # A Ctrl-C stop skips the final validation: the user wants out quickly.
                    if (c.val_every and self.step % c.val_every == 0) or (final and stop != "interrupted"):
                        val = self._validate()
                        record.update(val)
                        last_values.update(val)
                        last_val_step = self.step
                    if metrics is not None and record:
                        metrics.log(self.step, record)
                        if last_val_step == self.step:
                            metrics.plot()
                    if (c.checkpoint_every and self.step % c.checkpoint_every == 0) or final:
                        last_checkpoint = self.save_checkpoint()
                    if bar is not None:
                        bar.update(self._bar_task, completed=self.step, description=_bar_text(self, last_values))
                    if stop is not None:
                        stopped = stop
                        break
        finally:
            if metrics is not None:
                metrics.close()
        acc.wait_for_everyone()
        return FitResult(step=self.step, epoch=self.position.epoch, stopped=stopped, checkpoint=last_checkpoint,
                         metrics={k: v for k, v in last_values.items() if k != "time_s"},
                         elapsed_s=time.perf_counter() - started, resumed_from=resume_path)

    def _optimizer_step(self, model, optimizer, scheduler, batches) -> dict[str, torch.Tensor] | None:
        """``grad_accum`` micro-steps, clipping, one optimizer step; returns the step's mean values."""
        acc, c = self.accelerator, self.config
        model.train()
        totals: dict[str, torch.Tensor] = {}
        for micro in range(c.grad_accum):
            try:
                batch = next(batches)
            except RuntimeError:
                if self._stop_requested:  # workers killed by the terminal's Ctrl-C: stop at the last step
                    optimizer.zero_grad(set_to_none=True)
                    return None
                raise
            batch = _to_device(batch, self.device)
            last = micro == c.grad_accum - 1
            # Gradients are all-reduced once per optimizer step, on its last micro-step.
            with contextlib.nullcontext() if last else acc.no_sync(model):
                with acc.autocast():
                    outputs = self.step_fn(model, batch)
                if "loss" not in outputs:
                    raise KeyError("step_fn must return a dict with a 'loss' entry")
                acc.backward(outputs["loss"] / c.grad_accum)
            for name, value in outputs.items():
                value = value.detach().float() / c.grad_accum
                totals[name] = totals[name] + value if name in totals else value
        grad_norm = acc.clip_grad_norm_(model.parameters(), c.max_grad_norm if c.max_grad_norm > 0 else math.inf)
        optimizer.step()
        if not acc.optimizer_step_was_skipped:  # an fp16 overflow skips the update; the schedule waits with it
            scheduler.step()
            if self.ema is not None:
                self.ema.update(acc.unwrap_model(model))
        optimizer.zero_grad(set_to_none=True)
        self.position = self._pending_position
        totals["grad_norm"] = grad_norm.detach().float() if torch.is_tensor(grad_norm) else torch.tensor(grad_norm)
        return totals

    def _micro_batches(self) -> Iterator[Any]:
        """Endless micro-batches for this process, epoch after epoch, from the current data position.

        ``self._pending_position`` follows the batches handed out; it becomes ``self.position`` (what checkpoints
        record) only when an optimizer step completes, so a checkpoint never counts half-used batches.
        """
        c, acc = self.config, self.accelerator
        epoch, batch = self.position.epoch, self.position.batch
        self._pending_position = _DataPosition(epoch, batch)
        while True:
            sampler = EpochBatchSampler(len(self.train_data), c.batch_size, c.seed, epoch=epoch, start_batch=batch,
                                        rank=acc.process_index, world_size=acc.num_processes,
                                        accumulation=c.grad_accum)
            # A private generator: a loader draws its workers' base seed when it starts, and from the global
            # RNG that draw would land at another point of the stream in a resumed run than in a straight one.
            generator = torch.Generator().manual_seed(c.seed * 100_003 + epoch)
            loader = DataLoader(self.train_data, batch_sampler=sampler, num_workers=c.num_workers,
                                collate_fn=self.collate_fn, pin_memory=self.device.type == "cuda",
                                worker_init_fn=_ignore_sigint if c.num_workers else None, generator=generator)
            for item in loader:
                batch += 1
                self._pending_position = _DataPosition(epoch, batch)
                yield item
            epoch, batch = epoch + 1, 0

    # ------------------------------------------------------------------------------------------- pieces
    def _reduce_values(self, values: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Average the step's values over processes (equal batches, so this is the global batch's mean)."""
        names = sorted(values)
        stacked = torch.stack([values[n].reshape(()).to(self.device) for n in names])
        if self.accelerator.num_processes > 1:
            stacked = self.accelerator.reduce(stacked, reduction="mean")
        out = {}
        for name, value in zip(names, stacked.tolist()):
            out[name if name == "grad_norm" else f"train/{name}"] = value
        return out

    def _validate(self) -> dict[str, float]:
        acc = self.accelerator
        results: dict[str, float] = {}
        if self.validate_fn is not None and self.is_main_process:
            bare = acc.unwrap_model(self._wrapped)
            bare.eval()
            # With EMA the averaged weights are the ones worth judging (and the ones inference loads).
            averaged = self.ema.applied_to(bare) if self.ema is not None else contextlib.nullcontext()
            with averaged, torch.no_grad(), acc.autocast():
                results = {f"val/{k}": float(v) for k, v in self.validate_fn(bare).items()}
            bare.train()
        acc.wait_for_everyone()
        return results

    def _agree_to_stop(self, started: float) -> str | None:
        """``"interrupted"``, ``"max_minutes"`` or ``None``, decided together by all processes."""
        reason = 0
        if self._stop_requested:
            reason = 2
        elif self.config.max_minutes is not None and time.perf_counter() - started >= 60 * self.config.max_minutes:
            reason = 1
        if self.accelerator.num_processes > 1:  # every rank must leave the loop after the same step
            flag = torch.tensor([reason], device=self.device)
            reason = int(self.accelerator.gather(flag).max().item())
        return {0: None, 1: "max_minutes", 2: "interrupted"}[reason]

    @contextlib.contextmanager
    def _interrupt_handler(self):
        """First Ctrl-C: finish the step, checkpoint, stop. A second one interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGINT)

        def handle(signum, frame):
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.is_main_process:
                log.warning("Ctrl-C: stopping after this step with a checkpoint (press again to abort at once)")

        signal.signal(signal.SIGINT, handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def _progress_bar(self):
        if not self.is_main_process:
            yield None
            return
        with progress() as bar:
            self._bar_task = bar.add_task(self.description, total=self.config.max_steps, completed=self.step,
                                          unit="steps")
            yield bar

    # ------------------------------------------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-NNNNNN`` (all processes must call this); returns its path on the main process."""
        acc = self.accelerator
        staging = ckpt.staging_dir(self.run_dir, self.step)
        if self.is_main_process:
            ckpt.clear_staging(self.run_dir)
            staging.mkdir(parents=True)
        acc.wait_for_everyone()
        ckpt.save_tensors(capture_rng_state(), ckpt.rng_file(staging, acc.process_index))
        acc.wait_for_everyone()
        final = None
        if self.is_main_process:
            save_weights(acc.unwrap_model(self._wrapped), staging, self.model_config,
                         trainable_only=self.config.checkpoint_weights == "trainable")
            if self.ema is not None:
                save_tensor_file(self.ema.state_dict(), staging / EMA_FILE, "ema")
            scaler = getattr(acc, "scaler", None)
            state = {
                "step": self.step,
                "epoch": self.position.epoch,
                "batch_in_epoch": self.position.batch,
                "optimizer": self._optimizer.state_dict(),
                "lr_scheduler": self._scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "num_processes": acc.num_processes,
                "batch_size": self.config.batch_size,
                "grad_accum": self.config.grad_accum,
                "seed": self.config.seed,
                "ema_updates": self.ema.num_updates if self.ema is not None else None,
            }
            ckpt.save_tensors(state, staging / ckpt.STATE_NAME)
            final = ckpt.publish_checkpoint(staging, self.run_dir, self.step, self.config.keep_last or None)
            log.debug("checkpoint %s", final)
        acc.wait_for_everyone()
        return final

    def _load_weights(self, checkpoint: Path) -> None:
        # Full or trainable-only (then composed with the base files its config.json names), loaded strictly.
        load_checkpoint_model(self.model, checkpoint)

    def _record_base_weights(self) -> None:
        """Make trainable-only checkpoints loadable alone: name the frozen weights' files in ``config.json``.

        A caller may name them itself (``model_config["_base"]``, e.g. the init file every frozen weight came
        from); otherwise the frozen parameters and buffers are written once to ``<run>/base.safetensors``.
        """
        if self.model_config.get(BASE_KEY):
            return
        base = self.run_dir / BASE_FILE
        if self.is_main_process and not base.is_file():
            base.parent.mkdir(parents=True, exist_ok=True)
            save_tensor_file(frozen_state_dict(self.model), base, "base")
        self.model_config[BASE_KEY] = [f"../../{BASE_FILE}"]  # relative to checkpoints/step-N/

    def _load_training_state(self, checkpoint: Path) -> None:
        from lsync.errors import CheckpointError

        state = ckpt.load_training_state(checkpoint)
        global_micro = self.config.batch_size * self.accelerator.num_processes
        saved_micro = state["batch_size"] * state["num_processes"]
        if saved_micro != global_micro or state["seed"] != self.config.seed:
            raise CheckpointError(
                f"{checkpoint} was written with global micro-batch {saved_micro} and seed {state['seed']}, this run "
                f"has {global_micro} and {self.config.seed}: the data position would not carry over",
                "resume with the same batch_size x processes and seed, or start a new run directory")
        self._optimizer.load_state_dict(state["optimizer"])
        self._scheduler.load_state_dict(state["lr_scheduler"])
        if self.ema is not None:
            self._load_ema(checkpoint, state.get("ema_updates"))
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.position = _DataPosition(int(state["epoch"]), int(state["batch_in_epoch"]))
        rng = ckpt.load_rng_state(checkpoint, self.accelerator.process_index)
        if rng is None:
            log.warning("%s has no RNG state for process %d; its generators start fresh",
                        checkpoint, self.accelerator.process_index)
        else:
            restore_rng_state(rng)


    def _load_ema(self, checkpoint: Path, num_updates: int | None) -> None:
        from lsync.checkpoints import load_safetensors

        path = checkpoint / EMA_FILE
        if path.is_file() and num_updates is not None:
            self.ema.load_state_dict(load_safetensors(path, device=str(self.device)), num_updates)
        else:  # EMA switched on for a run that had none: start averaging from the resumed weights
            log.warning("%s has no EMA weights; the average starts from the resumed weights", checkpoint)


# ----------------------------------------------------------------------------------------------- helpers
def lr_factor(config: LoopConfig) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` at optimizer step ``step`` (0-based): warm-up, then the schedule."""
    warmup, horizon, floor = config.warmup_steps, max(1, config.lr_decay_steps), config.lr_min_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / horizon)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C in a terminal reaches every process of the group; the loader's workers leave it to the trainer,
    # which finishes its step and checkpoints, instead of dying and breaking the batch in flight.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _bar_text(trainer: Trainer, values: Mapping[str, Any]) -> str:
    parts = [trainer.description]
    for key in ("train/loss", "train/accuracy", "val/loss", "val/accuracy"):
        if isinstance(values.get(key), float):
            parts.append(f"{key.replace('train/', '')} {values[key]:.3f}")
    return "  ".join(parts)
