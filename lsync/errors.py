"""The small exception family the CLI renders as one line: ``lsync: error: <what>, <fix>``.

Raise these anywhere in the package; ``lsync.cli`` turns them into a one-line message on stderr and an
exit code (2 for bad usage or bad input, 1 for failures while doing the work). Tracebacks only appear
with ``--verbose``.
"""

from __future__ import annotations


class LsyncError(Exception):
    """Base class. ``what`` says what went wrong, ``fix`` says what the user can do about it."""

    exit_code = 1

    def __init__(self, what: str, fix: str | None = None):
        self.what = what
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.what}, {self.fix}" if self.fix else self.what


class UsageError(LsyncError):
    """The command line or a config is wrong (unknown key, wrong type, conflicting flags)."""

    exit_code = 2


class InputError(LsyncError):
    """An input file or directory is missing, unreadable, of the wrong kind or otherwise unusable."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file, preset or ``--set`` override is invalid."""


class ManifestError(InputError):
    """A manifest directory is missing its ``lsync.json``, has the wrong ``kind`` or an unknown ``schema``."""


class CheckpointError(InputError):
    """A checkpoint does not match the model: missing, unexpected or mis-shaped keys."""


class StageFailure(LsyncError):
    """Work that started failed (an encoder crashed, a worker died)."""

    exit_code = 1
