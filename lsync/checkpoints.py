"""The one place that reads and writes checkpoint files.

A checkpoint format is I/O, not a model: this module sits at the bottom of the house beside the manifest, so the
models, the Whisper encoder in ``lsync.audio`` and the trainers all read and write through it.

Two families of files pass through here:

* **Reference checkpoints** users bring from LatentSync and its dependencies, each a torch pickle with its own
  container: ``{"state_dict", "global_step"}`` (``latentsync_unet.pt``, ``stable_syncnet.pt``),
  ``{"dims", "model_state_dict"}`` (openai-whisper), ``{"model": ...}`` / ``{"module": ...}`` (VideoMAE-v2), or a
  bare state dict. They are loaded with ``weights_only=True`` only, and unwrapped by
  :func:`state_dict_from_reference`.
* **Our own format**: a directory with ``model.safetensors`` (weights) and ``config.json`` (the model's
  constructor config), written by :func:`save_model` and read by :func:`load_model_config` /
  :func:`load_model_weights`.

Every load into a module goes through :func:`load_state_dict_strict`, which refuses missing, unexpected or
mis-shaped tensors and names each of them: the reference loads with ``strict=False`` and silently drops what
does not fit, which hides wrong checkpoints.
"""

from __future__ import annotations

import difflib
import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lsync.errors import CheckpointError
from lsync.manifest import atomic_output, atomic_write_json

#: File names of our own checkpoint directories.
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

#: How many key names an error message lists per category before it only gives the count.
MAX_KEYS_IN_MESSAGE = 12

SAFETENSORS_SUFFIXES = (".safetensors",)


@dataclass
class ReferenceCheckpoint:
    """A state dict taken out of a reference container, with what the container said besides.

    ``container`` is one of ``"state_dict"`` (LatentSync), ``"whisper"``, ``"model"``, ``"module"`` (VideoMAE) or
    ``"bare"``. ``global_step`` is set for LatentSync files that carry one, ``dims`` for whisper files.
    """

    state_dict: dict[str, torch.Tensor]
    container: str
    global_step: int | None = None
    dims: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- reading files
def load_torch_checkpoint(path: str | Path, mmap: bool = False) -> Any:
    """``torch.load`` on CPU with ``weights_only=True``; every failure becomes a :class:`CheckpointError`.

    ``mmap=True`` maps the tensors instead of reading them into memory (only for files written by the
    zip-based ``torch.save`` of torch >= 1.6), which keeps peak RAM low for the 5 GB U-Net.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} not found", "check the path")
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # weights_only refuses pickles holding arbitrary objects; we never fall back to full unpickling.
        raise CheckpointError(
            f"{p} holds objects other than tensors and plain containers ({_first_line(exc)})",
            "re-save it as a plain state dict (torch.save(model.state_dict(), path)) or as safetensors",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds on a corrupt file; report them all alike
        raise CheckpointError(f"{p} is not a readable torch checkpoint ({_first_line(exc)})",
                              "the file may be truncated or not a checkpoint; download it again") from exc


def load_safetensors(path: str | Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file into a dict of tensors (sorted by name: the format keeps no order)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"weights file {p} not found", "check the path")
    try:
        return load_file(p, device=device)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a readable safetensors file ({_first_line(exc)})",
                              "the file may be truncated; write or download it again") from exc


def state_dict_from_reference(obj: Any, source: str = "checkpoint") -> ReferenceCheckpoint:
    """Take the state dict out of any container layout the reference checkpoints use.

    Recognised, in this order: ``{"dims", "model_state_dict"}`` (openai-whisper), ``{"state_dict", ...}``
    (LatentSync U-Net/SyncNet, optionally with ``global_step``), ``{"model": ...}`` then ``{"module": ...}``
    (VideoMAE-v2, the order the reference TREPA loader tries), and a bare ``{name: tensor}`` dict.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a dict of tensors",
                              "pass a state-dict checkpoint")
    if "model_state_dict" in obj and "dims" in obj:
        dims = dict(obj["dims"])
        return ReferenceCheckpoint(_tensor_dict(obj["model_state_dict"], source), "whisper", dims=dims)
    if "state_dict" in obj:
        step = obj.get("global_step")
        extra = {k: v for k, v in obj.items() if k not in ("state_dict", "global_step")}
        return ReferenceCheckpoint(_tensor_dict(obj["state_dict"], source), "state_dict",
                                   global_step=None if step is None else int(step), extra=extra)
    for key in ("model", "module"):
        if key in obj and isinstance(obj[key], Mapping):
            extra = {k: v for k, v in obj.items() if k != key}
            return ReferenceCheckpoint(_tensor_dict(obj[key], source), key, extra=extra)
    return ReferenceCheckpoint(_tensor_dict(obj, source), "bare")


def read_state_dict(path: str | Path, mmap: bool = False) -> ReferenceCheckpoint:
    """Read any supported weights file: safetensors (``bare``) or a torch pickle in a reference container."""
    p = Path(path)
    if p.suffix in SAFETENSORS_SUFFIXES:
        return ReferenceCheckpoint(load_safetensors(p), "bare")
    return state_dict_from_reference(load_torch_checkpoint(p, mmap=mmap), source=str(p))


# ----------------------------------------------------------------------------------------------- strict loading
def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the model's keys and shapes.

    The message lists missing keys, unexpected keys and shape mismatches with counts, and for a missing key
    the unexpected key with the closest name (what a rename looks like).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        guesses = [_with_guess(k, tuple(expected[k].shape), unexpected, state_dict) for k in missing]
        parts.append(_listing(f"{len(missing)} missing", guesses))
    if unexpected:
        parts.append(_listing(f"{len(unexpected)} unexpected", unexpected))
    if mismatched:
        parts.append(_listing(f"{len(mismatched)} with the wrong shape",
                              [f"{k} {list(got)} (model wants {list(want)})" for k, got, want in mismatched]))
    raise CheckpointError(
        f"{source} does not match {type(model).__name__}: " + "; ".join(parts),
        "use the checkpoint made for this model and config (nothing is loaded partially)",
    )


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint", assign: bool = False
) -> nn.Module:
    """Load every tensor of ``state_dict`` into ``model`` after :func:`check_state_dict`; returns ``model``.

    Tensors are cast to the model's dtypes by ``load_state_dict``. ``assign=True`` swaps the tensors in instead
    of copying (for models built on the meta device).
    """
    check_state_dict(model, state_dict, source)
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    return model


# ----------------------------------------------------------------------------------------------- our format
def save_model(model: nn.Module, directory: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``model.safetensors`` (the full state dict) and ``config.json`` (``config``) into ``directory``.

    Both files are written atomically, weights first, so a directory with a config always has its weights.
    Returns the directory.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = _contiguous_unshared(model.state_dict())
    with atomic_output(out / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "lsync_model": type(model).__name__})
    atomic_write_json(out / CONFIG_NAME, dict(config))
    return out


def load_model_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory written by :func:`save_model`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{Path(directory)} has no {CONFIG_NAME}", "pass a directory written by lsync")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.msg})", "write the checkpoint again") from exc


def load_model_weights(model: nn.Module, directory: str | Path, assign: bool = False) -> nn.Module:
    """Strictly load ``model.safetensors`` of a checkpoint directory into ``model``; returns ``model``."""
    path = Path(directory) / WEIGHTS_NAME
    return load_state_dict_strict(model, load_safetensors(path), source=str(path), assign=assign)


# ----------------------------------------------------------------------------------------------- internals
def _tensor_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: the state dict is a {type(obj).__name__}, not a dict",
                              "pass a state-dict checkpoint")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} entries are not tensors ({', '.join(bad[:5])})",
                              "pass a state-dict checkpoint")
    return dict(obj)


def _listing(title: str, names: list[str]) -> str:
    shown = names[:MAX_KEYS_IN_MESSAGE]
    more = f", ... and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return f"{title}: {', '.join(shown)}{more}"


def _with_guess(missing_key: str, shape: tuple[int, ...], unexpected: list[str],
                state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the unexpected key that most looks like a rename of ``missing_key``: a similar name, preferring
    keys of the same shape."""
    same_shape = [k for k in unexpected if tuple(state_dict[k].shape) == shape]
    close = (difflib.get_close_matches(missing_key, same_shape, n=1, cutoff=0.4)
             or difflib.get_close_matches(missing_key, unexpected, n=1, cutoff=0.6))
    return f"{missing_key} (checkpoint has {close[0]}?)" if close else missing_key


def _contiguous_unshared(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; give each its own contiguous CPU copy where needed."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[name] = t
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__
