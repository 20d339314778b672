"""Logging and progress bars, all on stderr so stdout stays clean for JSON and tables a user pipes on.

``lsync.cli`` calls :func:`configure` once with the ``--quiet``/``--verbose`` flags; everything else asks
for :func:`get_logger` and :func:`progress` and never looks at the flags itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Logs, progress and messages go to stderr ...
console = Console(stderr=True)
#: ... results a user asked for (tables of ``inspect``, ``weights list``) go to stdout.
result_console = Console()


@dataclass
class _Verbosity:
    quiet: bool = False
    verbose: bool = False


_verbosity = _Verbosity()


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """Set the process-wide verbosity: quiet hides progress and info logs, verbose shows debug logs."""
    _verbosity.quiet = quiet
    _verbosity.verbose = verbose
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("lsync")
    root.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=console, show_time=False, show_path=verbose, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.propagate = False


def say(message: str) -> None:
    """A short status line for the user on stderr (rich markup allowed); silent under ``--quiet``."""
    if not _verbosity.quiet:
        console.print(message)


def is_verbose() -> bool:
    return _verbosity.verbose


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``lsync`` hierarchy (``name`` is usually ``__name__``)."""
    return logging.getLogger(name if name.startswith("lsync") else f"lsync.{name}")


class _RateColumn(ProgressColumn):
    """Items per second, with the unit of the task (``frames/s``, ``clips/s``)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        text = f"{speed:,.1f} {unit}/s" if speed else f"- {unit}/s"
        return Text(text, style="progress.data.speed")


def progress(transient: bool = False) -> Progress:
    """A rich progress bar with count, rate and ETA; silent under ``--quiet``.

    Use as ``with progress() as bar: task = bar.add_task("decode", total=n, unit="frames")``.
    """
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        disable=_verbosity.quiet,
        transient=transient,
    )
