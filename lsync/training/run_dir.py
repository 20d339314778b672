"""The run directory every trainer keeps: ``config.yaml`` written at the start, resume only with the same config,
and, once the run reaches its end, ``lsync.json`` with the summary of final metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lsync.config import config_from_dict, config_to_dict, load_yaml, save_config_yaml
from lsync.console import say
from lsync.errors import ConfigError, UsageError
from lsync.manifest import MANIFEST_NAME, read_records, write_manifest
from lsync.training import checkpointing as ckpt
from lsync.training.loop import RESUMABLE_KEYS, Trainer
from lsync.training.metrics import METRICS_FILE

CONFIG_FILE = "config.yaml"


def changed_keys(before: dict[str, Any], after: dict[str, Any], ignore: Iterable[str] = (), prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, leaving out ``train.<budget>`` keys (:data:`RESUMABLE_KEYS`) and
    ``ignore`` (dotted keys that may change between invocations, like a cache folder)."""
    ignore = tuple(ignore)
    changed = []
    for key in sorted(set(before) | set(after)):
        dotted = f"{prefix}{key}"
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += changed_keys(a, b, ignore, f"{dotted}.")
        elif a != b and not (prefix == "train." and key in RESUMABLE_KEYS) and dotted not in ignore:
            changed.append(dotted)
    return changed


def prepare_run_dir(run_dir: Path, config: Any, resume: str | None, is_main: bool,
                    ignore: Iterable[str] = ()) -> Path | None:
    """Check that a resumed run keeps its config, record the config, and find the checkpoint to resume from.

    ``resume``: ``"auto"`` (the latest checkpoint, if any), ``None``/``"never"`` (refused when the run has
    checkpoints), or a checkpoint directory. Returns the checkpoint to resume from, or ``None``.
    """
    saved = run_dir / CONFIG_FILE
    if resume in (None, "never") and ckpt.list_checkpoints(run_dir):
        raise UsageError(f"{run_dir} already has checkpoints", "pass --resume auto to continue it, or a new directory")
    resume_from = ckpt.resolve_resume(run_dir, None if resume == "never" else resume)
    if resume_from is not None and saved.is_file():
        earlier = config_from_dict(type(config), load_yaml(saved), str(saved))
        changed = changed_keys(config_to_dict(earlier), config_to_dict(config), ignore)
        if changed:
            raise ConfigError(f"{run_dir} was trained with other settings ({', '.join(changed)})",
                              "resume with the same config (budgets like max_steps may change) or use a new directory")
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / MANIFEST_NAME).unlink(missing_ok=True)  # the run is incomplete until it finishes again
        save_config_yaml(config, saved)
    return resume_from


def run_summary(run_dir: Path, result) -> dict[str, Any]:
    """Final metrics: the last logged value of every key (read from ``metrics.jsonl``, so a resume that had
    nothing left to do reports them too), plus steps, epoch, why the run stopped and its wall time."""
    last: dict[str, Any] = {}
    for record in read_records(run_dir / METRICS_FILE):
        last.update({k: v for k, v in record.items() if k != "time_s"})
    last.update(steps=result.step, epoch=result.epoch, stopped=result.stopped, elapsed_s=round(result.elapsed_s, 2))
    last.pop("step", None)
    latest = ckpt.latest_checkpoint(run_dir)
    last["checkpoint"] = str(latest.relative_to(run_dir)) if latest else None
    return last


def fit_and_record(trainer: Trainer, resume_from: Path | None, about: str, kind: str, config: Any,
                   inputs: Callable[[], list[dict[str, Any]]],
                   finish: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """Train to the end of the run's budget, then write ``lsync.json`` (``kind``, the resolved ``config``,
    ``inputs()`` and the :func:`run_summary`); returns that summary.

    The main process says what it trains on (``about``, after the trainer's description), then, once training is
    done, runs ``finish(summary)`` (exports, extra summary entries) and takes the input digests; the other processes
    of a distributed run wait for it and return ``None``. On Ctrl-C the trainer has checkpointed its last step: say
    where and raise ``KeyboardInterrupt``, leaving no ``lsync.json``, since the run is not complete until a resume
    takes it to its end.
    """
    acc = trainer.accelerator
    if trainer.is_main_process:
        say(f"{trainer.description}: {about}; global batch {trainer.global_batch_size} on {acc.num_processes} x "
            f"{acc.device} ({acc.mixed_precision})")
    result = trainer.fit(resume_from)
    if result.stopped == "interrupted":
        if trainer.is_main_process:
            say(f"[yellow]interrupted[/] at step {result.step}; checkpoint {result.checkpoint}")
        raise KeyboardInterrupt

    summary = None
    if trainer.is_main_process:
        summary = run_summary(trainer.run_dir, result)
        if finish is not None:
            finish(summary)
        write_manifest(trainer.run_dir, kind, config_to_dict(config), inputs=inputs(), summary=summary)
    acc.wait_for_everyone()
    return summary
