"""``lsync merge OUT SHARD...``: join the data directories of ``preprocess --shard i/n`` runs into one.

Shards must come from the same config (apart from ``shard`` and ``workers``). Clip files are hard-linked
when OUT is on the same filesystem (no extra space) and copied otherwise, each through a temp name, so an
interrupted merge can simply be run again. A file already in OUT is kept only when it is the shard's file or
has the same content digest, so re-merging regenerated shards never keeps stale landmarks or audio. Record
paths must stay inside their shard (no absolute paths, no ``..``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from lsync.console import get_logger, progress
from lsync.errors import InputError
from lsync.manifest import (
    MANIFEST_NAME,
    atomic_output,
    describe_input,
    file_digest,
    read_manifest,
    read_records,
    rewrite_records,
    write_manifest,
)
from lsync.stages.preprocess import CLIPS_FILE, REJECTS_FILE, SOURCES_FILE, summarize_records

log = get_logger(__name__)
PER_SHARD_KEYS = ("shard", "workers")


def merge(out_dir: Path, shards: list[Path]) -> dict[str, Any]:
    """Merge ``shards`` into ``out_dir``; returns the summary written to its ``lsync.json``."""
    if not shards:
        raise InputError("no shard directories given", "pass the output directories of preprocess --shard runs")
    manifests = [read_manifest(shard, kind="data") for shard in shards]
    config = _common_config(shards, manifests)
    inputs = [describe_input(shard) for shard in shards]
    if (out_dir / MANIFEST_NAME).is_file():
        previous = read_manifest(out_dir, kind="data")
        if previous.get("inputs") == inputs:
            log.info("%s already merges these shards; nothing to do", out_dir)
            return previous["summary"]
    files = [(shard / rel, out_dir / rel)  # checked before anything in out_dir changes
             for shard in shards for clip in read_records(shard / CLIPS_FILE) for rel in _clip_files(shard, clip)]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)

    records: dict[str, list[dict[str, Any]]] = {CLIPS_FILE: [], REJECTS_FILE: [], SOURCES_FILE: []}
    seen_sources: dict[str, Path] = {}
    for shard in shards:
        for name in records:
            records[name].extend(read_records(shard / name))
        for source in read_records(shard / SOURCES_FILE):
            if source["source"] in seen_sources:
                raise InputError(f"source {source['source']} appears in both {seen_sources[source['source']]} "
                                 f"and {shard}", "merge shards of one sharded run only")
            seen_sources[source["source"]] = shard

    _link_clip_files(files)
    for name, rows in records.items():
        rewrite_records(out_dir / name, rows)
    summary = summarize_records(records[CLIPS_FILE], records[REJECTS_FILE], records[SOURCES_FILE],
                                config.get("resolution"))
    summary["shards"] = len(shards)
    config = {**config, "shard": None}
    write_manifest(out_dir, "data", config, inputs=inputs, summary=summary)
    return summary


def _common_config(shards: list[Path], manifests: list[dict[str, Any]]) -> dict[str, Any]:
    def comparable(manifest):
        return {k: v for k, v in manifest["config"].items() if k not in PER_SHARD_KEYS}

    reference = comparable(manifests[0])
    for shard, manifest in zip(shards[1:], manifests[1:]):
        config = comparable(manifest)
        if config != reference:
            differ = sorted(k for k in set(config) | set(reference) if config.get(k) != reference.get(k))
            raise InputError(f"{shard} was made with another config than {shards[0]} ({', '.join(differ)} differ)",
                             "merge shards of one sharded run only")
    return dict(manifests[0]["config"])


def _link_clip_files(jobs: list[tuple[Path, Path]]) -> None:
    """Hard-link (or copy) each ``(shard file, merged file)`` pair whose merged file is missing or differs."""
    with progress() as bar:
        task = bar.add_task("merge", total=len(jobs), unit="files")
        for src, dst in jobs:
            if not _same_content(src, dst):
                with atomic_output(dst) as tmp:
                    tmp.unlink()
                    try:
                        os.link(src, tmp)
                    except OSError:  # another filesystem
                        shutil.copy2(src, tmp)
            bar.update(task, advance=1)


def _clip_files(shard: Path, clip: dict[str, Any]) -> list[str]:
    """The clip's file paths, each relative and inside the shard: a record naming ``/abs/path`` or ``../x`` would
    make the merge read or write outside the directories it was given."""
    paths = []
    for key in ("video", "audio", "meta"):
        rel = clip.get(key)
        if not rel:
            continue
        parts = PurePosixPath(str(rel).replace("\\", "/")).parts
        if PurePosixPath(str(rel)).is_absolute() or Path(rel).is_absolute() or ".." in parts:
            raise InputError(f"{shard / CLIPS_FILE}: clip {clip.get('id')} has {key} path {rel!r}, which is absolute "
                             "or leaves the directory", "merge only shards written by lsync preprocess")
        paths.append(str(rel))
    return paths


def _same_content(src: Path, dst: Path) -> bool:
    """True when ``dst`` already holds ``src``'s bytes: the same file (a hard link from an earlier merge) or equal
    content digests. Sizes alone would not do: an uncompressed ``.npz`` or ``.wav`` regenerated in a shard keeps
    its size."""
    if not dst.is_file():
        return False
    if os.path.samefile(src, dst):
        return True
    return src.stat().st_size == dst.stat().st_size and file_digest(src) == file_digest(dst)
