"""Where the shipped presets (``configs/``) and recipes (``pipelines/``) live.

The repository keeps them at its top level, their documented location. A wheel carries copies inside the package
(``setup.py`` copies them at build time, so no symlink is needed on any platform or archive tool); a source checkout
or an editable install reads the top-level folders directly.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("configs", "pipelines")


def shipped_dir(name: str) -> Path:
    """The folder ``name`` (one of :data:`SHIPPED_FOLDERS`): inside the installed package, else beside it."""
    if name not in SHIPPED_FOLDERS:
        raise ValueError(f"{name!r} is not a shipped folder; expected one of {SHIPPED_FOLDERS}")
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name
