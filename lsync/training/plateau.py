"""Notice, while training, that a sync expert is stuck at chance ("SyncNet loss stuck at 0.69").

A two-tower SyncNet that has not found the audio-visual correspondence scores every pair alike: validation
accuracy sits at 0.5, the ROC AUC at 0.5 and the BCE at ln 2 = 0.693. Early in training that is normal; it is a
problem when it lasts. :class:`ChancePlateau` is fed each validation and says so once the model has been at chance
for ``patience_steps`` optimizer steps in a row, with what to try; a model that leaves chance and falls back
(a collapse) is reported again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


DEFAULT_CHANCE_BAND = 0.05


def validation_at_chance(accuracy: float, roc_auc: float | None, band: float = DEFAULT_CHANCE_BAND) -> bool:
    """Whether a validation tells pairs apart no better than a coin: ``|accuracy - 0.5|`` and (when measured)
    ``|roc_auc - 0.5|`` both below ``band``."""
    if abs(accuracy - 0.5) >= band:
        return False
    return roc_auc is None or math.isnan(roc_auc) or abs(roc_auc - 0.5) < band


@dataclass
class ChancePlateau:
    """Watches (step, accuracy, ROC AUC, loss) of successive validations for a run stuck at chance.

    Args:
        patience_steps: optimizer steps at chance (counted from the last validation above it, or from step 0)
            after which the plateau is reported; 0 switches the watch off.
        band: a validation is "at chance" when both ``|accuracy - 0.5|`` and ``|roc_auc - 0.5|`` are below it.
        hints: what to try, appended to the message (the stage knows its own knobs).
    """

    patience_steps: int
    band: float = DEFAULT_CHANCE_BAND
    hints: list[str] = field(default_factory=list)
    since_step: int = 0  # the last step that was not at chance (0 = the start)
    reported: bool = False
    reports: list[dict] = field(default_factory=list)

    def at_chance(self, accuracy: float, roc_auc: float | None) -> bool:
        return validation_at_chance(accuracy, roc_auc, self.band)

    def update(self, step: int, accuracy: float, roc_auc: float | None = None,
               loss: float | None = None) -> str | None:
        """Feed one validation; returns the warning text the first time the plateau lasts long enough."""
        if not self.patience_steps:
            return None
        if not self.at_chance(accuracy, roc_auc):
            self.since_step, self.reported = step, False
            return None
        if self.reported or step - self.since_step < self.patience_steps:
            return None
        self.reported = True
        self.reports.append({"step": step, "since_step": self.since_step, "accuracy": accuracy,
                             "roc_auc": roc_auc, "loss": loss})
        measured = f"validation accuracy {accuracy:.3f}"
        if roc_auc is not None and not math.isnan(roc_auc):
            measured += f", ROC AUC {roc_auc:.3f}"
        if loss is not None:
            measured += f", loss {loss:.3f} (ln 2 = 0.693)"
        text = (f"stuck at chance for {step - self.since_step} steps (step {step}: {measured}): "
                "the model tells no pair from another yet")
        if self.hints:
            text += ". Try: " + "; ".join(self.hints)
        return text
