"""Shared fixtures: where the golden data and the demo media live, skipping cleanly when absent.

With ``LSYNC_REQUIRE_GOLDEN=1`` (``.ci/run`` sets it: CI always has ``../shared``) a missing golden or media
folder fails the tests that need it instead of skipping them, so a wrong path can never pass as "skipped".

Tests never name a media file of their own: the golden's ``sources.json`` says which media each golden was made
from (:func:`golden_media`), and tests that only need some real video or audio take every one in the folder
(:func:`media_videos`, :func:`media_audios`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2  # noqa: F401  # imported before decord, whose bundled libraries otherwise break cv2's PNG codec
import pytest


def share_cores_between_workers() -> None:
    """Under ``pytest -n N`` (pytest-xdist), give each worker its share of the cores, set before torch loads.

    Every worker's torch (and each subprocess a test starts, which inherits the variable) otherwise starts one
    thread per core: N workers on N cores then run N x N threads that spin against each other.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))


share_cores_between_workers()

# The slowest test files (the CI log's --durations), slowest first. Under pytest-xdist a worker takes the next file
# when it runs dry, so starting the long files first keeps one worker from being handed a two-minute file while the
# other has finished (xdist's own order, most tests first, put the one-test demo file last). Files not listed keep
# their collection order after these. A stale list only costs time, never a result.
SLOWEST_FILES_FIRST = (
    "tests/stages/test_infer_parity.py",
    "tests/stages/test_preprocess.py",
    "tests/test_demo.py",
    "tests/app/test_app_browser.py",
    "tests/stages/test_preprocess_media.py",
    "tests/stages/test_train_unet.py",
    "tests/stages/test_infer.py",
    "tests/stages/test_train_vae.py",
    "tests/stages/test_train_syncnet.py",
    "tests/app/test_app_jobs.py",
    "tests/training/test_benchmark_train_unet.py",
    "tests/test_face_select.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(SLOWEST_FILES_FIRST)}
    # A stable sort: the tests of one file stay together and in their own order.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


REPO_ROOT = Path(__file__).resolve().parents[1]
REQUIRE_GOLDEN = "LSYNC_REQUIRE_GOLDEN"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg")


def reference_dir() -> Path:
    """``$LSYNC_REFERENCE_DIR``, or ``../shared/reference`` beside the repository."""
    return Path(os.environ.get("LSYNC_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def media_dir() -> Path:
    """``$LSYNC_MEDIA_DIR``, or ``../shared/media`` beside the repository."""
    return Path(os.environ.get("LSYNC_MEDIA_DIR", REPO_ROOT.parent / "shared" / "media"))


def golden_required() -> bool:
    return os.environ.get(REQUIRE_GOLDEN, "").strip() not in ("", "0")


def skip_or_fail(message: str) -> None:
    """Skip the test, or fail it when ``LSYNC_REQUIRE_GOLDEN`` is set."""
    if golden_required():
        pytest.fail(f"{message} ({REQUIRE_GOLDEN} is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(message)


def media_files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes) if root.is_dir() else []


@pytest.fixture(scope="session")
def reference() -> Path:
    """The golden-data directory; tests using it skip when it is not there (fail with LSYNC_REQUIRE_GOLDEN=1)."""
    root = reference_dir()
    if not root.is_dir():
        skip_or_fail(f"golden data not found at {root} (set LSYNC_REFERENCE_DIR)")
    return root


@pytest.fixture(scope="session")
def media() -> Path:
    """The real talking-head videos and audio; tests using it skip when there are none (fail with
    LSYNC_REQUIRE_GOLDEN=1)."""
    root = media_dir()
    if not media_files(root, VIDEO_SUFFIXES):
        skip_or_fail(f"demo media not found at {root} (set LSYNC_MEDIA_DIR)")
    return root


@pytest.fixture(scope="session")
def media_videos(media) -> list[Path]:
    """Every video of the media folder (at least one)."""
    return media_files(media, VIDEO_SUFFIXES)


@pytest.fixture(scope="session")
def media_audios(media) -> list[Path]:
    """Every audio file of the media folder; a folder with videos but no audio files fails."""
    found = media_files(media, AUDIO_SUFFIXES)
    assert found, f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {media}"
    return found


def golden_sources(reference: Path) -> dict:
    """``sources.json``: which media file each golden was made from (the README promises it: never skipped)."""
    path = reference / "sources.json"
    assert path.is_file(), f"{path} is missing: the reference README says it names the media of every golden"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def golden_media(reference, media):
    """``golden_media("whisper/whisper_features.safetensors", "audio")`` -> the media file (or list of files, e.g.
    ``audio_concat_int16``) that ``sources.json`` says the golden was made from, checked to exist."""
    sources = golden_sources(reference)

    def find(golden: str, key: str) -> Path | list[Path]:
        assert golden in sources and key in sources[golden], f"sources.json has no {key!r} for {golden}"
        names = sources[golden][key]
        paths = [media / name for name in ([names] if isinstance(names, str) else names)]
        for path in paths:
            assert path.is_file(), f"{path}, which sources.json names for {golden}, is missing"
        return paths[0] if isinstance(names, str) else paths

    return find


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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a CPU shared with other jobs, two OpenMP threads can run many times
    slower. Opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
