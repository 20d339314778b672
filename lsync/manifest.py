"""The manifest-directory contract every stage reads and writes.

A manifest directory holds:

* ``lsync.json`` - ``kind``, ``schema``, ``lsync_version``, ``created``, the resolved ``config``, ``inputs``
  (path, kind, digest), ``versions`` of the software stack and a ``summary``. It is written **last** and
  atomically, so its presence means "complete".
* record files (``clips.jsonl``, ``rejects.jsonl``, ``metrics.jsonl``): one JSON object a line, appended
  with a flush + fsync per batch. A crash can leave a truncated last line; :func:`read_records` drops it with
  a warning and :class:`RecordWriter` trims it before appending, so a rerun never glues two records together.

Every file a stage produces goes through :func:`atomic_output` (write to a temp name beside the target,
rename when complete), so a reader never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lsync import __version__
from lsync.console import get_logger
from lsync.errors import InputError, ManifestError

log = get_logger(__name__)

MANIFEST_NAME = "lsync.json"
#: Bumped when a stage changes what it writes in a way older readers cannot understand.
SCHEMA_VERSION = 1
KINDS = ("raw", "data", "vae-run", "syncnet-run", "unet-run", "inference", "eval")

# Prefix of in-progress files; anything starting with it is debris from an interrupted run.
TEMP_PREFIX = ".lsync-tmp-"


# ----------------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block finishes.

    The temp name keeps the target's suffix (``.mp4``, ``.npz``) so tools that sniff the extension
    (ffmpeg, numpy) still work. On an exception the temp file is removed and nothing appears at ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give outputs the usual permissions
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def remove_temp_debris(directory: str | os.PathLike) -> list[Path]:
    """Delete in-progress files left by a killed run (only our own ``.lsync-tmp-*`` names)."""
    removed = []
    root = Path(directory)
    if not root.is_dir():
        return removed
    for tmp in root.rglob(f"{TEMP_PREFIX}*"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not supported everywhere (e.g. Windows), where it is a no-op.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------------------------- digests
def file_digest(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """``sha256:<hex>`` of a file's bytes, read in chunks so large videos do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def quick_file_digest(path: str | os.PathLike, sample: int = 1 << 20) -> str:
    """A cheap identity for large sources: size + mtime-free sha256 of the first and last MiB.

    Used to decide whether a source changed between runs without re-reading gigabytes of video.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(sample))
        if size > 2 * sample:
            f.seek(size - sample)
            h.update(f.read(sample))
    return f"quick-sha256:{h.hexdigest()}"


def directory_digest(directory: str | os.PathLike) -> str:
    """Digest of a complete manifest directory: the hash of its ``lsync.json`` (which lists everything)."""
    return file_digest(Path(directory) / MANIFEST_NAME)


def json_digest(data: Any) -> str:
    """Stable digest of a JSON-able value (sorted keys), e.g. of a resolved config."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=_json_default)
    return f"sha256:{hashlib.sha256(text.encode('utf-8')).hexdigest()}"


def describe_input(path: str | os.PathLike, kind: str | None = None) -> dict[str, str]:
    """An ``inputs`` entry for ``lsync.json``: a manifest directory or a plain file, with its digest."""
    p = Path(path)
    if p.is_dir():
        manifest = read_manifest(p)
        return {"path": str(p.resolve()), "kind": kind or manifest["kind"], "digest": directory_digest(p)}
    return {"path": str(p.resolve()), "kind": kind or "file", "digest": file_digest(p)}


# ----------------------------------------------------------------------------------------------- lsync.json
def software_versions() -> dict[str, str]:
    """Versions of the stack that shaped the outputs (only packages already imported or cheap to query)."""
    from importlib import metadata

    versions = {"lsync": __version__, "python": platform.python_version()}
    for name in ("torch", "diffusers", "numpy", "mediapipe", "librosa", "imageio-ffmpeg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def write_manifest(
    directory: str | os.PathLike,
    kind: str,
    config: dict[str, Any],
    inputs: Iterable[dict[str, Any]] = (),
    summary: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write ``lsync.json`` atomically; call this last, once every other file of the stage is in place."""
    if kind not in KINDS:
        raise ValueError(f"unknown manifest kind {kind!r}; expected one of {KINDS}")
    manifest = {
        "kind": kind,
        "schema": SCHEMA_VERSION,
        "lsync_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": list(inputs),
        "versions": software_versions(),
        "summary": summary or {},
        **extra,
    }
    atomic_write_json(Path(directory) / MANIFEST_NAME, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike, kind: str | Iterable[str] | None = None) -> dict[str, Any]:
    """Read and check ``lsync.json``; raise :class:`ManifestError` with the fix when it does not fit."""
    root = Path(directory)
    path = root / MANIFEST_NAME
    if not root.exists():
        raise InputError(f"{root} does not exist", "check the path")
    if not path.is_file():
        raise ManifestError(
            f"{root} is not a complete lsync directory (no {MANIFEST_NAME})",
            "run the stage that produces it, or rerun it to finish an interrupted run",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})",
                            "rerun the stage that wrote it") from exc
    if not isinstance(manifest, dict) or "kind" not in manifest or "schema" not in manifest:
        raise ManifestError(f"{path} lacks 'kind'/'schema'", "it was not written by lsync; rerun the stage")
    if kind is not None:
        wanted = (kind,) if isinstance(kind, str) else tuple(kind)
        if manifest["kind"] not in wanted:
            raise ManifestError(
                f"{root} is a '{manifest['kind']}' directory, expected {' or '.join(repr(k) for k in wanted)}",
                f"pass the output directory of the stage that makes {wanted[0]!r}",
            )
    if not isinstance(manifest["schema"], int) or manifest["schema"] > SCHEMA_VERSION:
        raise ManifestError(
            f"{root} has schema {manifest['schema']}, this lsync {__version__} reads up to {SCHEMA_VERSION}",
            "upgrade lsync",
        )
    return manifest


def is_complete(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MANIFEST_NAME).is_file()


# ----------------------------------------------------------------------------------------------- JSONL records
def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file; a missing file is empty.

    A truncated **last** line (a crash mid-append) is dropped with a warning. A broken line anywhere else
    means the file was edited or corrupted, which is an error rather than something to skip silently.
    """
    p = Path(path)
    if not p.is_file():
        return []
    raw = p.read_bytes()
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail is b"" when the file ends with a newline
    records = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}:{number} is not valid JSON ({exc.msg})", "restore or delete that line") from exc
    if tail.strip():
        try:
            records.append(json.loads(tail))  # a last record that only lacks its newline is still whole
        except json.JSONDecodeError:
            log.warning("%s: dropped a truncated last line (%d bytes) left by an interrupted run", p, len(tail))
    return records


class RecordWriter:
    """Appends JSON records to a JSONL file safely: one line each, flushed and fsynced per call.

    On open, a partial last line left by a crash is cut off, so the next record starts on a fresh line.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _trim_partial_last_line(self.path)
        self._file = open(self.path, "ab")

    def append(self, *records: dict[str, Any]) -> None:
        data = b"".join(
            json.dumps(r, ensure_ascii=False, default=_json_default).encode("utf-8") + b"\n" for r in records
        )
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_records(path: str | os.PathLike, *records: dict[str, Any]) -> None:
    """Append records in one call (opens, appends, closes)."""
    with RecordWriter(path) as writer:
        writer.append(*records)


def rewrite_records(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Replace a record file atomically (used when merging or de-duplicating)."""
    text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in records)
    atomic_write_text(path, text)


def _trim_partial_last_line(path: Path) -> None:
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = f.seek(0) or f.read()
        keep = data.rfind(b"\n") + 1
        last = data[keep:]
        try:
            json.loads(last)
        except json.JSONDecodeError:
            log.warning("%s: removing a truncated last line (%d bytes) left by an interrupted run", path, len(last))
            f.truncate(keep)
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")  # a whole record that only lacks its newline
