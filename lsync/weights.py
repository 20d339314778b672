"""Weight presets: which released files a preset needs, where they are looked for, and fetching them.

Search order for every file (first hit wins):

1. ``--weights-dir DIR``
2. ``$LSYNC_WEIGHTS``
3. ``~/.cache/lsync`` (``$XDG_CACHE_HOME/lsync`` when set) - where ``lsync weights fetch`` puts files
4. the Hugging Face hub cache (files a user downloaded with ``huggingface-cli download``)

Within a folder a file is found either under the preset's name (``DIR/latentsync-1.5/latentsync_unet.pt``) or
directly (``DIR/latentsync_unet.pt``), so LatentSync's own ``checkpoints/`` folder works as ``--weights-dir``.
The ``tiny`` preset needs no files: its models are random-initialised from ``configs/models/*_tiny.yaml``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lsync.errors import InputError, UsageError
from lsync.manifest import atomic_write_json, file_digest


@dataclass(frozen=True)
class WeightFile:
    """One released file: its role in lsync, the hub repository it comes from, and its path in that repo."""

    role: str
    repo_id: str
    filename: str
    needed_for: str  # "inference", "training" or "both"


_VAE = ("stabilityai/sd-vae-ft-mse", ("config.json", "diffusion_pytorch_model.safetensors"))


def _latentsync_files(repo_id: str) -> tuple[WeightFile, ...]:
    vae_repo, vae_files = _VAE
    return (
        WeightFile("unet", repo_id, "latentsync_unet.pt", "both"),
        WeightFile("whisper", repo_id, "whisper/tiny.pt", "both"),
        WeightFile("syncnet", repo_id, "stable_syncnet.pt", "training"),
        WeightFile("trepa", repo_id, "auxiliary/vit_g_hybrid_pt_1200e_ssv2_ft.pth", "training"),
        *(WeightFile(f"vae/{name}", vae_repo, f"{name}", "both") for name in vae_files),
    )


PRESETS: dict[str, tuple[WeightFile, ...]] = {
    "tiny": (),
    "latentsync-1.5": _latentsync_files("ByteDance/LatentSync-1.5"),
    "latentsync-1.6": _latentsync_files("ByteDance/LatentSync-1.6"),
}
#: Resolution each preset was trained at (1.5 and 1.6 share the architecture).
PRESET_RESOLUTION = {"tiny": 64, "latentsync-1.5": 256, "latentsync-1.6": 512}


def preset_files(preset: str) -> tuple[WeightFile, ...]:
    if preset not in PRESETS:
        raise UsageError(f"unknown weights preset '{preset}'", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[preset]


def search_dirs(weights_dir: str | Path | None = None) -> list[Path]:
    """The folders searched, in order (see the module docstring)."""
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get("LSYNC_WEIGHTS"):
        dirs.append(Path(os.environ["LSYNC_WEIGHTS"]).expanduser())
    dirs.append(default_cache_dir())
    return dirs


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lsync"


def _local_name(file: WeightFile) -> str:
    # The VAE lives in its own folder like a diffusers checkpoint: DIR/sd-vae-ft-mse/config.json.
    if file.role.startswith("vae/"):
        return f"{file.repo_id.split('/')[-1]}/{file.filename}"
    return file.filename


def find_file(file: WeightFile, preset: str, weights_dir: str | Path | None = None) -> Path | None:
    """Where ``file`` is on disk, or ``None``; never touches the network."""
    name = _local_name(file)
    for root in search_dirs(weights_dir):
        for candidate in (root / preset / name, root / name):
            if candidate.is_file():
                return candidate
    return _find_in_hf_cache(file)


def _find_in_hf_cache(file: WeightFile) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    hit = try_to_load_from_cache(file.repo_id, file.filename)
    return Path(hit) if isinstance(hit, str) and Path(hit).is_file() else None


def weight_status(preset: str, weights_dir: str | Path | None = None, checksums: bool = True) -> list[dict]:
    """One row per file of ``preset``: role, where it was found (or the first place it is expected), checksum."""
    rows = []
    for file in preset_files(preset):
        path = find_file(file, preset, weights_dir)
        rows.append({
            "preset": preset,
            "role": file.role,
            "file": _local_name(file),
            "repo": file.repo_id,
            "needed_for": file.needed_for,
            "found": path is not None,
            "path": str(path) if path else str(search_dirs(weights_dir)[0] / preset / _local_name(file)),
            "sha256": cached_checksum(path) if path and checksums else None,
        })
    return rows


def resolve_weights(preset: str, weights_dir: str | Path | None = None, need: str = "inference") -> dict[str, Path]:
    """Paths by role for ``preset``; one line naming every missing file and where to put it if any is absent."""
    wanted = [f for f in preset_files(preset) if f.needed_for in (need, "both")]
    found, missing = {}, []
    for file in wanted:
        path = find_file(file, preset, weights_dir)
        if path is None:
            missing.append(_local_name(file))
        else:
            found[file.role] = path
    if missing:
        target = search_dirs(weights_dir)[0] / preset
        raise InputError(
            f"weights for preset '{preset}' not found: {', '.join(missing)}",
            f"run `lsync weights fetch --preset {preset}` or put them in {target}",
        )
    return found


def fetch(preset: str, weights_dir: str | Path | None = None, need: str = "both") -> list[Path]:
    """Download what is missing with huggingface_hub into the first search folder; fail in one line offline."""
    target = search_dirs(weights_dir)[0] / preset
    todo = [f for f in preset_files(preset)
            if (need == "both" or f.needed_for in (need, "both")) and find_file(f, preset, weights_dir) is None]
    if todo and not _hub_reachable():
        raise InputError(
            f"the Hugging Face hub is not reachable (offline?); preset '{preset}' still needs "
            f"{', '.join(_local_name(f) for f in todo)}",
            f"download them elsewhere and put them in {target}",
        )
    fetched = []
    for file in todo:
        try:
            fetched.append(_download(file, target))
        except Exception as exc:  # noqa: BLE001 - any hub/network failure means the same thing to the user
            names = ", ".join(_local_name(f) for f in todo)
            raise InputError(
                f"could not download {file.repo_id}/{file.filename} ({type(exc).__name__}; offline?)",
                f"put these files for preset '{preset}' in {target}: {names}",
            ) from exc
    return fetched


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine fails in seconds instead of after minutes of retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _download(file: WeightFile, target: Path) -> Path:
    from huggingface_hub import hf_hub_download

    local_dir = target / Path(_local_name(file)).parent if file.role.startswith("vae/") else target
    path = hf_hub_download(file.repo_id, file.filename, local_dir=str(local_dir), etag_timeout=10)
    return Path(path)


def cached_checksum(path: Path) -> str:
    """sha256 of a (multi-GB) weights file, remembered by (path, size, mtime) so listing stays fast."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_path = default_cache_dir() / "checksums.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    if key not in cache:
        cache[key] = file_digest(path)
        try:
            atomic_write_json(cache_path, cache)
        except OSError:
            pass  # a read-only cache folder only costs speed
    return cache[key]
