"""``lsync inspect DIR``: a summary of any manifest directory, as a dict (for ``--json``) and as rich tables."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from lsync.console import result_console as console
from lsync.errors import InputError
from lsync.manifest import MANIFEST_NAME, read_manifest, read_records

RECORD_FILES = ("clips.jsonl", "rejects.jsonl", "metrics.jsonl")
MAX_CONFIG_ROWS = 24


def summarize(directory: str | Path) -> dict[str, Any]:
    """Everything ``inspect`` shows, as plain data. An interrupted run (no ``lsync.json``) is summarised too."""
    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{root} is not a directory", "pass a directory written by an lsync stage")
    records = {name: read_records(root / name) for name in RECORD_FILES if (root / name).is_file()}
    complete = (root / MANIFEST_NAME).is_file()
    if not complete and not records:
        read_manifest(root)  # raises the standard "not a complete lsync directory" error

    manifest = read_manifest(root) if complete else {}
    summary: dict[str, Any] = {
        "path": str(root),
        "kind": manifest.get("kind", "unknown (interrupted run: no lsync.json yet)"),
        "complete": complete,
        "schema": manifest.get("schema"),
        "lsync_version": manifest.get("lsync_version"),
        "created": manifest.get("created"),
        "config": _flatten(manifest.get("config", {})),
        "inputs": manifest.get("inputs", []),
        "summary": manifest.get("summary", {}),
    }
    if "clips.jsonl" in records:
        summary["clips"] = _clip_stats(records["clips.jsonl"])
    if "rejects.jsonl" in records:
        summary["rejects_by_reason"] = dict(Counter(r.get("reason", "unknown") for r in records["rejects.jsonl"]))
    if "metrics.jsonl" in records:
        summary["metrics"] = _metric_stats(records["metrics.jsonl"])
    return summary


def _clip_stats(clips: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(_clip_seconds(c) for c in clips)
    return {
        "count": len(clips),
        "hours": round(seconds / 3600, 4),
        "seconds": round(seconds, 2),
        "splits": dict(Counter(c.get("split", "?") for c in clips)),
        "sources": len({c.get("source") for c in clips}),
    }


def _clip_seconds(clip: dict[str, Any]) -> float:
    if "num_frames" in clip and clip.get("fps"):
        return clip["num_frames"] / clip["fps"]
    if "start" in clip and "end" in clip:
        return float(clip["end"]) - float(clip["start"])
    return 0.0


def _metric_stats(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Per numeric metric: last value, min, max and the number of steps that logged it."""
    stats: dict[str, dict[str, float]] = {}
    for row in metrics:
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or key == "step":
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            s = stats.setdefault(key, {"last": value, "min": value, "max": value, "count": 0})
            s["last"] = value
            s["min"] = min(s["min"], value)
            s["max"] = max(s["max"], value)
            s["count"] += 1
    steps = [r["step"] for r in metrics if isinstance(r.get("step"), int)]
    return {"lines": len(metrics), "last_step": max(steps) if steps else None, "values": stats}


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
    else:
        flat[prefix.rstrip(".")] = config
    return flat


# ----------------------------------------------------------------------------------------------- rendering
def render_summary(summary: dict[str, Any]) -> None:
    """Print the summary as rich tables on the console (stderr)."""
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("directory", summary["path"])
    head.add_row("kind", str(summary["kind"]))
    head.add_row("complete", "yes" if summary["complete"] else "[yellow]no[/] (rerun the stage to finish)")
    if summary["created"]:
        head.add_row("created", f"{summary['created']} by lsync {summary['lsync_version']} (schema {summary['schema']})")
    for entry in summary["inputs"]:
        head.add_row("input", f"{entry.get('kind')}: {entry.get('path')} [dim]{str(entry.get('digest'))[:19]}[/]")
    console.print(head)

    if summary["summary"]:
        console.print(_key_value_table("summary", _flatten(summary["summary"])))
    if summary["config"]:
        rows = dict(list(summary["config"].items())[:MAX_CONFIG_ROWS])
        more = len(summary["config"]) - len(rows)
        console.print(_key_value_table("config" + (f" (first {len(rows)}, {more} more with --json)" if more else ""),
                                       rows))
    if "clips" in summary:
        console.print(_key_value_table("clips", _flatten(summary["clips"])))
    if summary.get("rejects_by_reason"):
        table = Table(title="rejects by reason", title_justify="left")
        table.add_column("reason")
        table.add_column("count", justify="right")
        for reason, count in sorted(summary["rejects_by_reason"].items(), key=lambda kv: -kv[1]):
            table.add_row(reason, str(count))
        console.print(table)
    if summary.get("metrics"):
        _render_metrics(summary["metrics"])


def _render_metrics(metrics: dict[str, Any]) -> None:
    table = Table(title=f"metrics ({metrics['lines']} lines, last step {metrics['last_step']})", title_justify="left")
    for column in ("metric", "last", "min", "max"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, s in metrics["values"].items():
        table.add_row(key, *(f"{s[c]:.5g}" for c in ("last", "min", "max")))
    console.print(table)


def _key_value_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="cyan")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, str(value))
    return table


# ----------------------------------------------------------------------------------------------- contact sheet
def contact_sheet(directory: str | Path, out_path: str | Path, count: int = 16, seed: int = 0,
                  tile: int = 192, mark_template: bool = True) -> Path:
    """A grid of aligned frames (the middle frame of up to ``count`` random clips) as a PNG.

    With ``mark_template`` the eyebrow and nose template points are drawn as small crosses, so a glance shows
    whether the faces sit where the alignment promises.
    """
    import cv2
    import numpy as np

    from lsync.face.align import template_points
    from lsync.manifest import atomic_output
    from lsync.media.video import VideoReader

    root = Path(directory)
    read_manifest(root, kind="data")
    clips = read_records(root / "clips.jsonl")
    if not clips:
        raise InputError(f"{root} has no clips", "preprocess some videos first")
    rng = np.random.default_rng(seed)
    chosen = [clips[i] for i in sorted(rng.choice(len(clips), size=min(count, len(clips)), replace=False))]
    tiles = []
    for clip in chosen:
        middle = clip["num_frames"] // 2
        frame = next(iter(VideoReader(root / clip["video"], fps=None, start_frame=middle, num_frames=1)))
        resolution = frame.shape[0]
        frame = np.ascontiguousarray(frame)
        if mark_template:
            for x, y in _template_in_resized_frame(template_points(resolution), resolution):
                cv2.drawMarker(frame, (round(x), round(y)), (0, 255, 0), cv2.MARKER_CROSS,
                               max(6, resolution // 24), max(1, resolution // 128))
        tiles.append(cv2.resize(frame, (tile, tile), interpolation=cv2.INTER_AREA))
    columns = min(4, len(tiles))
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * tile, columns * tile, 3), 255, np.uint8)
    for i, image in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = image
    out = Path(out_path)
    with atomic_output(out) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise InputError(f"could not write {out}", "check the folder exists and the name ends in .png")
    return out


def _template_in_resized_frame(points, resolution: int):
    """Template points live in the (75r x 100r) warp; the clip frames are that warp resized to R x R."""
    from lsync.face.align import aligned_face_size

    width, height = aligned_face_size(resolution)
    return [(x * resolution / width, y * resolution / height) for x, y in points]
