"""The run's learning curves: ``metrics.jsonl`` (one JSON object per logged step), a PNG chart, and
TensorBoard when it is installed.

Keys are ``train/<name>`` for values of the step's batch (``train/loss``, ``train/accuracy``), ``val/<name>``
for validation, plus ``step``, ``epoch``, ``lr``, ``grad_norm``, ``samples_per_s``, ``time_s``. On resume the
records of steps after the checkpoint (logged by the interrupted run, about to be redone) are dropped, so the
file reads like one uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lsync.console import get_logger
from lsync.manifest import RecordWriter, atomic_output, read_records, rewrite_records

log = get_logger(__name__)

METRICS_FILE = "metrics.jsonl"
CHART_FILE = "metrics.png"
#: Logged keys that are no curve of their own: weighted copies of a loss term, and counts.
NOT_CHARTED = ("_weighted", "_windows")


class MetricsLog:
    """Appends metric records of one run; only the main process of a distributed run should make one.

    Args:
        run_dir: the run directory.
        resume_step: the checkpoint step a run resumes from (later records are dropped); ``None`` for a fresh
            start, which clears records of an earlier attempt in the same directory.
        tensorboard: also write TensorBoard scalars under ``<run_dir>/tensorboard`` if the package is installed.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        kept = [r for r in read_records(self.path) if resume_step is not None and r.get("step", 0) <= resume_step]
        rewrite_records(self.path, kept)
        self._writer = RecordWriter(self.path)
        self._tensorboard = _tensorboard_writer(self.run_dir / "tensorboard") if tensorboard else None

    def log(self, step: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Append one record ``{"step": step, **values}`` (floats rounded to 7 significant digits)."""
        record = {"step": int(step), **{k: _clean(v) for k, v in values.items()}}
        self._writer.append(record)
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, step)
        return record

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.path)

    def plot(self, path: str | Path | None = None) -> Path:
        """Draw the chart of everything logged so far (default ``<run_dir>/metrics.png``)."""
        target = Path(path) if path is not None else self.run_dir / CHART_FILE
        plot_metrics(self.records(), target)
        return target

    def close(self) -> None:
        self._writer.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.7g}")
    return value


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: without it the JSONL file and the chart remain
        return None
    return SummaryWriter(log_dir=str(folder))


# ----------------------------------------------------------------------------------------------- chart
def ema(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average (TensorBoard-style smoothing, debiased at the start)."""
    smoothed, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**i))
    return smoothed


def series(records: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of the records that carry a finite ``key``."""
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def chart_panels(records: list[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """Which keys share a panel: one panel per metric name, its ``train/`` curve with its ``val/`` markers.

    ``loss`` comes first, then ``accuracy``, then every other term in the order it first appears (so each loss
    term of a trainer - ``recon``, ``sync``, ``lpips``, ``trepa`` - gets its own axis and scale). ``<name>_weighted``
    copies are left out (they are the raw term times a constant), and so are counts logged beside a metric
    (``<name>_windows``).
    """
    names: dict[str, list[str]] = {}
    for record in records:
        for key, value in record.items():
            if "/" not in key or not isinstance(value, (int, float)) or key.endswith(NOT_CHARTED):
                continue
            panel = _panel_of(key.split("/", 1)[1])
            names.setdefault(panel, [])
            if key not in names[panel]:
                names[panel].append(key)
    order = sorted(names, key=lambda n: (n != "loss", n != "accuracy", list(names).index(n)))
    return [(name, sorted(names[name], key=lambda k: k.startswith("val/"))) for name in order]


def _panel_of(name: str) -> str:
    """Curves compared on one axis: ``<x>_r_drive`` and ``<x>_r_source`` (how well the mouth follows the driving
    and the source audio) share the panel ``<x>_r``."""
    for suffix in ("_r_drive", "_r_source"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + "_r"
    return name


def plot_metrics(records: list[Mapping[str, Any]], path: str | Path) -> None:
    """One panel per metric (see :func:`chart_panels`) - train curves faint with their smoothed trend on top,
    validation as markers - in a grid of up to three columns. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = chart_panels(records) or [("loss", [])]
    columns = 1 if len(panels) == 1 else 2 if len(panels) <= 4 else 3
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns + 1, 2.8 * rows), sharex=True, squeeze=False)
    for ax, (name, panel_keys) in zip(axes.flat, panels):
        for key in panel_keys:
            steps, values = series(records, key)
            if not steps:
                continue
            if key.startswith("val/"):
                ax.plot(steps, values, "o-", markersize=3, label=key)
            else:
                line, = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
                ax.plot(steps, ema(values), color=line.get_color(), label=key)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
