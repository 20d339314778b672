"""Seeds and random-number-generator state: what makes a run repeatable and a resume exact.

Two kinds of randomness appear in training, and they are handled differently:

* **Sample choice** (which window, which negative) never touches a global generator: datasets derive a fresh
  generator from ``(seed, epoch, position)`` with :func:`sample_rng`, so a sample is the same whatever the
  number of processes, data-loader workers or resumes.
* **Everything else** (weight init, dropout, noise drawn inside a step) uses the global python / numpy / torch
  generators. :func:`capture_rng_state` and :func:`restore_rng_state` carry them through a checkpoint.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's legacy global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def sample_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one sample, e.g. ``sample_rng(seed, epoch, position)``.

    numpy hashes the whole key sequence into the seed, so neighbouring keys give unrelated streams.
    """
    return np.random.default_rng([int(seed), *map(int, key)])


def capture_rng_state() -> dict[str, Any]:
    """The global generators' states as tensors and plain containers (loadable with ``weights_only=True``)."""
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put the generators back exactly as :func:`capture_rng_state` found them."""
    version, internal, gauss = state["python"]
    # Containers come back from torch.load as lists; random.setstate wants tuples.
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((
        numpy_state["bit_generator"],
        numpy_state["keys"].numpy().astype(np.uint32),
        numpy_state["pos"],
        numpy_state["has_gauss"],
        numpy_state["cached_gaussian"],
    ))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
