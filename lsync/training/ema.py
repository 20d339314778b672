"""Exponential moving average of a model's trainable parameters.

The average is kept in float32 beside the model (same device), updated after every optimizer step with the
warm-up rule ``decay_n = min(decay, (1 + n) / (10 + n))`` so that a short run is not dominated by its initial
weights. Frozen parameters never change, so they need no copy. :meth:`TrainableEMA.applied_to` swaps the
averaged weights into the model for validation and back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from lsync.errors import CheckpointError, ConfigError


class TrainableEMA:
    """EMA of ``model``'s parameters that have ``requires_grad`` (names as in ``model.named_parameters()``)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {decay}", "use e.g. 0.999 or 0.9999")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    def _live(self, model: nn.Module) -> list[torch.Tensor]:
        parameters = dict(model.named_parameters())
        return [parameters[name] for name in self.shadow]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current trainable weights."""
        weight = 1.0 - self.current_decay()
        self.num_updates += 1
        shadows = list(self.shadow.values())
        torch._foreach_lerp_(shadows, [p.detach().float() for p in self._live(model)], weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], num_updates: int) -> None:
        if set(tensors) != set(self.shadow):
            missing = sorted(set(self.shadow) - set(tensors))
            extra = sorted(set(tensors) - set(self.shadow))
            raise CheckpointError(f"the EMA weights do not match the trainable parameters ({len(missing)} missing, "
                                  f"{len(extra)} unexpected)", "resume with the trainable modules of that run")
        for name, value in tensors.items():
            self.shadow[name].copy_(value)
        self.num_updates = int(num_updates)

    @contextlib.contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block ``model`` carries the averaged weights; its own weights come back afterwards."""
        live = self._live(model)
        saved = [p.detach().clone() for p in live]
        with torch.no_grad():
            for parameter, average in zip(live, self.shadow.values()):
                parameter.copy_(average)
        try:
            yield model
        finally:
            with torch.no_grad():
                for parameter, original in zip(live, saved):
                    parameter.copy_(original)
