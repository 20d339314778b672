"""Per-clip feature cache, keyed by clip id **and** the content digest of the clip's files.

Decoding an mp4 for every training sample is slow on a CPU, so trainers decode each clip once (at the size the
model wants) and keep the arrays as ``.npy`` files that later runs and data-loader workers memory-map.

An entry lives at ``<root>/<namespace>/<clip id>-<16 hex of the digest>/<name>.npy``. The digest is a sha256 over
the bytes of the clip's files (:func:`clip_content_digest`), so a clip re-encoded under the same name gets a new
entry, and two clips with equal file names can never share one (the reference keyed its caches by basename, which
mixed up audio of different clips). ``namespace`` carries everything else that shapes the arrays (feature kind and
size, e.g. ``syncnet-64``).

Every array file is written under a temporary name in the entry's folder and renamed into place when complete
(``os.replace``, atomic), and nothing is ever deleted: two jobs that share a cache and build the same entry at once
both write complete files of the same content (the key is content-addressed), a reader never sees a half-written
file, and a reader that holds a memory map of a file another job replaces keeps reading its own complete copy.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from lsync.manifest import atomic_output, file_digest

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def clip_content_digest(paths: Iterable[str | Path]) -> str:
    """``sha256:<hex>`` over the content digests of ``paths`` in the given order (names play no part)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(file_digest(path).encode("ascii"))
    return f"sha256:{h.hexdigest()}"


class FeatureCache:
    """Arrays per (clip id, content digest) under ``root/namespace``."""

    def __init__(self, root: str | Path, namespace: str):
        self.root = Path(root) / _UNSAFE.sub("_", namespace)

    def entry_dir(self, clip_id: str, digest: str) -> Path:
        hex_digest = digest.split(":", 1)[-1]
        return self.root / f"{_UNSAFE.sub('_', clip_id)}-{hex_digest[:16]}"

    def has(self, clip_id: str, digest: str, names: Iterable[str]) -> bool:
        entry = self.entry_dir(clip_id, digest)
        return all((entry / f"{name}.npy").is_file() for name in names)

    def load(self, clip_id: str, digest: str, names: Iterable[str], mmap: bool = True) -> dict[str, np.ndarray]:
        """The arrays of an entry, memory-mapped read-only by default (shared by data-loader workers)."""
        entry = self.entry_dir(clip_id, digest)
        return {name: np.load(entry / f"{name}.npy", mmap_mode="r" if mmap else None) for name in names}

    def store(self, clip_id: str, digest: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Write an entry's arrays, each to a temp file renamed into place; an existing file of the same name is
        replaced atomically (equal keys mean equal content), never removed first."""
        entry = self.entry_dir(clip_id, digest)
        entry.mkdir(parents=True, exist_ok=True)
        for name, array in arrays.items():
            with atomic_output(entry / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(array))
        return entry

    def get_or_build(self, clip_id: str, digest: str, names: Iterable[str],
                     build: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Load the entry, building and storing it first when it is missing."""
        names = list(names)
        if not self.has(clip_id, digest, names):
            self.store(clip_id, digest, build())
        return self.load(clip_id, digest, names)
