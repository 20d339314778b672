"""Shared fixtures: where the golden data and the demo media live, skipping cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import cv2  # noqa: F401  # imported before decord, whose bundled libraries otherwise break cv2's PNG codec
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """``$LSYNC_REFERENCE_DIR``, or ``../shared/reference`` beside the repository."""
    return Path(os.environ.get("LSYNC_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def media_dir() -> Path:
    """``$LSYNC_MEDIA_DIR``, or ``../shared/media`` beside the repository."""
    return Path(os.environ.get("LSYNC_MEDIA_DIR", REPO_ROOT.parent / "shared" / "media"))


@pytest.fixture(scope="session")
def reference() -> Path:
    """The golden-data directory; tests using it skip when it is not there."""
    root = reference_dir()
    if not root.is_dir():
        pytest.skip(f"golden data not found at {root} (set LSYNC_REFERENCE_DIR)")
    return root


@pytest.fixture(scope="session")
def media() -> Path:
    """The real demo videos and audio; tests using it skip when they are not there."""
    root = media_dir()
    if not (root / "demo1_video.mp4").is_file():
        pytest.skip(f"demo media not found at {root} (set LSYNC_MEDIA_DIR)")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own ``~/.cache`` (face-track cache, checksums): nothing leaks between tests or into
    the user's home, and a test that wants a cache hit makes it itself."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def default_verbosity():
    """In-process commands (`-q`, `-v`) set the process-wide verbosity; every test starts from the default."""
    from lsync.console import configure

    configure()
    yield
