"""The folder every ``lsync eval ... --out DIR`` writes: ``results.json`` (one row per video or clip), then
``lsync.json`` (kind ``eval``) last, so a folder with a manifest always holds complete results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsync.config import config_to_dict
from lsync.errors import UsageError
from lsync.manifest import (
    MANIFEST_NAME,
    atomic_write_json,
    describe_input,
    quick_file_digest,
    read_manifest,
    write_manifest,
)

RESULTS_FILE = "results.json"


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that is a file or another kind of lsync output (before any work is done)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file", "pass a folder")
    if (out_dir / MANIFEST_NAME).is_file() and read_manifest(out_dir).get("kind") != "eval":
        raise UsageError(f"{out_dir} holds another kind of lsync output", "choose another --out folder")


def write_results(out_dir: Path, what: str, config, inputs: Path, model: str | Path, result: dict[str, Any],
                  from_data_dir: bool, videos: list[Path] | None) -> Path:
    """``results.json`` then ``lsync.json`` (kind ``eval``, ``summary.evaluation = what``) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until the new results are in place
    atomic_write_json(out_dir / RESULTS_FILE, result["rows"])
    described = [describe_input(inputs)] if from_data_dir else [
        {"path": str(v.resolve()), "kind": "video", "digest": quick_file_digest(v)} for v in videos or []]
    model_path = Path(model)
    if model_path.exists():
        from lsync.training.checkpointing import weights_digest

        described.append({"path": str(model_path.resolve()), "kind": "model", "digest": weights_digest(model_path)})
    write_manifest(out_dir, "eval", config_to_dict(config), inputs=described,
                   summary={"evaluation": what, **result["summary"]})
    return out_dir
