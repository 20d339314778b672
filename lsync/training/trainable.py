"""Which parameters train, gradient checkpointing, and checkpoints that hold only the trained weights.

**Name patterns.** A parameter trains when its name matches any pattern: a pattern with a glob character
(``*?[``) is matched against the whole name with :func:`fnmatch.fnmatchcase` (``"*"`` matches everything), any
other pattern as a substring (``"motion_modules."`` - LatentSync's ``trainable_modules`` rule). A pattern that
matches nothing is an error: it is almost always a typo.

**Trainable-only checkpoints.** ``model.safetensors`` of a checkpoint may hold only the trainable parameters
(safetensors metadata ``lsync_weights: trainable``). The rest of the model - frozen parameters and persistent
buffers - comes from the **base** files listed under ``_base`` in the checkpoint's ``config.json``: paths that are
absolute (e.g. the released ``latentsync_unet.pt`` a run was initialised from) or relative to the checkpoint
directory (``../../base.safetensors``, the frozen weights a run saved once at its start).
:func:`compose_state_dict` puts base, checkpoint and (optionally) EMA weights together, and
:func:`load_checkpoint_model` loads that union strictly, so a checkpoint that does not add up to the whole model
is refused by name.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lsync.errors import CheckpointError, ConfigError
from lsync.manifest import atomic_output, atomic_write_json

#: safetensors metadata key saying whether ``model.safetensors`` is ``full`` or ``trainable`` only.
WEIGHTS_KIND_KEY = "lsync_weights"
#: ``config.json`` key listing the base weight files of a trainable-only checkpoint.
BASE_KEY = "_base"
#: The frozen weights a run writes once when no init file provides them.
BASE_FILE = "base.safetensors"
#: EMA weights of the trainable parameters, beside ``model.safetensors`` in a checkpoint.
EMA_FILE = "ema.safetensors"


# ----------------------------------------------------------------------------------------------- patterns
def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a parameter name matches any pattern (glob on the whole name, else substring)."""
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            if fnmatch.fnmatchcase(name, pattern):
                return True
        elif pattern in name:
            return True
    return False


def select_trainable(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Turn ``requires_grad`` on for parameters matching ``patterns`` and off for all others.

    Returns the names of the trainable parameters. Raises :class:`ConfigError` when a pattern matches no
    parameter or when nothing trains.
    """
    if not patterns:
        raise ConfigError("no trainable-module patterns given", "list name patterns, or '*' to train everything")
    names = [name for name, _ in model.named_parameters()]
    unused = [p for p in patterns if not any(matches(name, [p]) for name in names)]
    if unused:
        raise ConfigError(f"trainable pattern(s) {', '.join(map(repr, unused))} match no parameter of "
                          f"{type(model).__name__}", "check the names (e.g. 'motion_modules.', 'attn2.', '*')")
    chosen = []
    for name, parameter in model.named_parameters():
        train = matches(name, patterns)
        parameter.requires_grad_(train)
        if train:
            chosen.append(name)
    return chosen


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return trainable, total


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Switch activation recomputation on or off: diffusers models (``enable_/disable_gradient_checkpointing``)
    and lsync models with ``enable_gradient_checkpointing(enabled)`` (StableSyncNet)."""
    if not hasattr(model, "enable_gradient_checkpointing"):
        if enabled:
            raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing",
                              "set train.gradient_checkpointing=false")
        return
    if enabled:
        model.enable_gradient_checkpointing()
    elif hasattr(model, "disable_gradient_checkpointing"):
        model.disable_gradient_checkpointing()
    else:
        model.enable_gradient_checkpointing(False)


# ----------------------------------------------------------------------------------------------- state dicts
def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (detached, on their device)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def frozen_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every ``state_dict`` entry that is not a trainable parameter: frozen parameters and persistent buffers."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {name: t for name, t in model.state_dict().items() if name not in trainable}


def save_tensor_file(tensors: Mapping[str, torch.Tensor], path: str | Path, kind: str) -> Path:
    """Write tensors as safetensors atomically (contiguous CPU copies, no shared storage), tagged ``kind``."""
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(plain, str(tmp), metadata={"format": "pt", WEIGHTS_KIND_KEY: kind})
    return Path(path)


def save_weights(model: nn.Module, directory: str | Path, config: Mapping[str, Any], trainable_only: bool) -> Path:
    """Write ``model.safetensors`` (all of ``state_dict`` or only the trainable parameters) and ``config.json``.

    A trainable-only file needs ``config[_base]`` to be loadable on its own; the trainer sees to that.
    """
    from lsync.checkpoints import CONFIG_NAME, WEIGHTS_NAME

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = trainable_state_dict(model) if trainable_only else model.state_dict()
    save_tensor_file(tensors, out / WEIGHTS_NAME, "trainable" if trainable_only else "full")
    atomic_write_json(out / CONFIG_NAME, dict(config))
    return out


def weights_kind(path: str | Path) -> str:
    """``full`` or ``trainable``: what a ``model.safetensors`` holds (files without the tag are full)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(WEIGHTS_KIND_KEY, "full")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a checkpoint problem
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})", "write the checkpoint again") \
            from exc


def base_files(checkpoint: str | Path) -> list[Path]:
    """The base weight files a checkpoint's ``config.json`` lists, resolved against the checkpoint directory."""
    from lsync.checkpoints import load_model_config

    directory = Path(checkpoint)
    entries = load_model_config(directory).get(BASE_KEY) or []
    return [(directory / entry).resolve() if not Path(entry).is_absolute() else Path(entry) for entry in entries]


def compose_state_dict(checkpoint: str | Path, use_ema: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's weights from a checkpoint directory: its base files, then ``model.safetensors``, then
    (``use_ema`` and present) ``ema.safetensors`` on top."""
    from lsync.checkpoints import WEIGHTS_NAME, load_safetensors, read_state_dict

    directory = Path(checkpoint)
    weights = directory / WEIGHTS_NAME
    state: dict[str, torch.Tensor] = {}
    if weights_kind(weights) == "trainable":
        bases = base_files(directory)
        if not bases:
            raise CheckpointError(f"{weights} holds only the trained weights and its config.json names no base "
                                  f"files ({BASE_KEY})", "load it through its run directory, or save full weights")
        for base in bases:
            if not base.is_file():
                raise CheckpointError(f"{directory} needs its base weights {base}, which are missing",
                                      "put the file back (the run's init file or base.safetensors)")
            state.update(read_state_dict(base, mmap=base.suffix != ".safetensors").state_dict)
    state.update(load_safetensors(weights))
    if use_ema and (directory / EMA_FILE).is_file():
        state.update(load_safetensors(directory / EMA_FILE))
    return state


def load_checkpoint_model(model: nn.Module, checkpoint: str | Path, use_ema: bool = False,
                          assign: bool = False) -> nn.Module:
    """Strictly load a full or trainable-only checkpoint (see :func:`compose_state_dict`) into ``model``."""
    from lsync.checkpoints import load_state_dict_strict

    state = compose_state_dict(checkpoint, use_ema=use_ema)
    return load_state_dict_strict(model, state, source=str(checkpoint), assign=assign)
