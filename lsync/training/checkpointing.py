"""Training checkpoints that resume exactly: ``<run>/checkpoints/step-000500/``.

A checkpoint directory holds

* ``model.safetensors`` + ``config.json`` - the weights and the model's constructor config
  (:func:`lsync.checkpoints.save_model`, so any lsync loader reads a checkpoint like a released model);
* ``training_state.pt`` - optimizer, gradient scaler, learning-rate schedule, step, data position (epoch and
  micro-batches consumed) and whatever else the trainer records; plain tensors and containers only, loaded with
  ``weights_only=True``;
* ``rng-rank<r>.pt`` - the python / numpy / torch generator states of each process.

It is assembled under a temporary name (``checkpoints/.lsync-tmp-step-000500``) and renamed when complete, so a
directory named ``step-*`` is always whole; :func:`list_checkpoints` ignores anything else. ``keep_last`` prunes
the oldest complete checkpoints after a new one is published.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from lsync.console import get_logger
from lsync.errors import CheckpointError
from lsync.manifest import TEMP_PREFIX, atomic_output
from lsync.checkpoints import CONFIG_NAME, WEIGHTS_NAME, load_torch_checkpoint

log = get_logger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "training_state.pt"
_STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, path)``, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_DIR.fullmatch(path.name)
        if match and path.is_dir() and (path / STATE_NAME).is_file():
            found.append((int(match[1]), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_resume(run_dir: str | Path, resume: str | Path | None) -> Path | None:
    """``None`` -> start fresh; ``"auto"`` -> the run's latest checkpoint, if any; else a checkpoint directory."""
    if resume is None:
        return None
    if str(resume) == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / STATE_NAME).is_file():
        raise CheckpointError(f"{path} is not a training checkpoint (no {STATE_NAME})",
                              f"pass a {CHECKPOINTS_DIR}/step-NNNNNN directory of a run, or --resume auto")
    return path


# ----------------------------------------------------------------------------------------------- writing
def staging_dir(run_dir: str | Path, step: int) -> Path:
    """Where a checkpoint is assembled before it is published under its final name."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"{TEMP_PREFIX}{checkpoint_name(step)}"


def clear_staging(run_dir: str | Path) -> None:
    """Remove half-written checkpoints left by a killed run."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if folder.is_dir():
        for path in folder.glob(f"{TEMP_PREFIX}*"):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def save_tensors(obj: Any, path: Path) -> None:
    """``torch.save`` through a temp file (a crash never leaves a truncated state file)."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def rng_file(directory: Path, rank: int) -> Path:
    return directory / f"rng-rank{rank}.pt"


def publish_checkpoint(staging: Path, run_dir: str | Path, step: int, keep_last: int | None) -> Path:
    """Rename a fully written staging directory to ``step-NNNNNN`` and prune old checkpoints."""
    for name in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME):
        if not (staging / name).is_file():
            raise CheckpointError(f"{staging} lacks {name}", "this is a bug in the trainer")
    final = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    if final.exists():  # the same step saved again (a resume that stopped at once): replace it whole
        shutil.rmtree(final)
    staging.rename(final)
    if keep_last:
        prune_checkpoints(run_dir, keep_last)
    return final


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; returns the deleted paths."""
    checkpoints = list_checkpoints(run_dir)
    doomed = [path for _, path in checkpoints[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


# ----------------------------------------------------------------------------------------------- reading
def load_training_state(checkpoint: str | Path) -> dict[str, Any]:
    """The ``training_state.pt`` of a checkpoint (``weights_only=True``)."""
    state = load_torch_checkpoint(Path(checkpoint) / STATE_NAME)
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{checkpoint} has a malformed {STATE_NAME}", "resume from another checkpoint")
    return state


def load_rng_state(checkpoint: str | Path, rank: int) -> dict[str, Any] | None:
    """This process's generator states, or ``None`` when the checkpoint was written by fewer processes."""
    path = rng_file(Path(checkpoint), rank)
    return load_torch_checkpoint(path) if path.is_file() else None


def weights_digest(source: str | Path) -> str | None:
    """Quick digest of the weights a model argument resolves to: a run directory's newest checkpoint, a
    checkpoint directory's ``model.safetensors``, or a weights file. ``None`` when there are none."""
    from lsync.manifest import quick_file_digest
    from lsync.checkpoints import WEIGHTS_NAME

    path = Path(source)
    if path.is_dir():
        path = (latest_checkpoint(path) or path) / WEIGHTS_NAME
    return quick_file_digest(path) if path.is_file() else None
