"""What each inference speed setting costs, on the tiny model a finished ``lsync demo`` trained.

For every setting (dtype, scheduler and steps, DeepCache interval, pipelining) the demo's held-out clip is
lip-synced to another clip's audio exactly as the demo's ``video`` step does, written lossless (FFV1), then:

* ``fps``: output frames per second of the whole ``lsync infer`` call (model loading included), and
  ``denoise_fps`` from the run's own stage timings;
* ``r_drive`` / ``r_source``: ``lsync eval mouth`` (how well the mouth follows the driving audio, and the source's);
* ``mean_abs_diff`` / ``max_abs_diff``: grey levels against the exact path (float32, 20-step DDIM, no pipelining).

Usage::

    lsync demo                                       # once: trains the models into lsync-demo/
    python benchmarks/infer_settings.py [--workdir lsync-demo] [--guidance 3] [--out FILE] [--settings a,b]

Prints one JSON object: ``{"workdir", "clip", "rows": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE = "exact"


@dataclass(frozen=True)
class Setting:
    name: str
    flags: tuple[str, ...]
    note: str = ""


SETTINGS = (
    Setting(REFERENCE, ("--dtype", "float32", "--scheduler", "ddim", "--steps", "20", "--set", "pipeline=off"),
            "LatentSync's path: float32, 20-step DDIM"),
    Setting("default", ("--steps", "20"), "lsync's defaults: dtype auto (bf16 on a bf16-native CPU), 20-step DDIM"),
    Setting("bf16-dpm10", ("--dtype", "bfloat16", "--scheduler", "dpm++", "--steps", "10"),
            "bf16, 10-step DPM-Solver++"),
    Setting("bf16-cache3", ("--dtype", "bfloat16", "--steps", "20", "--cache-interval", "3"),
            "bf16, 20-step DDIM, DeepCache every 3 steps"),
    Setting("bf16-dpm10-cache3", ("--dtype", "bfloat16", "--scheduler", "dpm++", "--steps", "10",
                                  "--cache-interval", "3"), "bf16, 10-step DPM-Solver++, DeepCache every 3"),
    Setting("fp32-ddim10", ("--dtype", "float32", "--steps", "10"), "float32, 10-step DDIM"),
)


def lsync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsync", *args], capture_output=True, text=True, check=False)


def demo_guidance() -> float:
    """The classifier-free guidance the demo's ``video`` step uses (``vars.guidance`` of the shipped recipe)."""
    import yaml

    from lsync.package_data import shipped_dir

    recipe = yaml.safe_load((shipped_dir("pipelines") / "demo.yaml").read_text(encoding="utf-8"))
    return float(recipe["vars"]["guidance"])


def run_setting(setting: Setting, workdir: Path, out_root: Path, guidance: float, seed: int) -> dict:
    out_dir = out_root / setting.name
    tic = time.perf_counter()
    done = lsync("infer", "--from-data", str(workdir / "data"), "--split", "val", "--count", "1", "--preset", "tiny",
                 "--unet", str(workdir / "unet"), "--guidance", str(guidance), "--seed", str(seed), "--codec", "ffv1",
                 "--overwrite", "--quiet", "--out-dir", str(out_dir), *setting.flags)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"setting {setting.name}: lsync infer failed: {done.stderr.strip()}")
    manifest = json.loads((out_dir / "lsync.json").read_text(encoding="utf-8"))
    (name, entry), = manifest["summary"]["outputs"].items()
    frames = entry["frames"]["total"]
    denoise = entry["timings_s"].get("denoise")
    mouth = lsync("eval", "mouth", str(out_dir), "--json", "--quiet")
    if mouth.returncode != 0:
        raise SystemExit(f"setting {setting.name}: lsync eval mouth failed: {mouth.stderr.strip()}")
    (row,) = json.loads(mouth.stdout)["rows"]
    return {"setting": setting.name, "note": setting.note, "flags": " ".join(setting.flags), "frames": frames,
            "wall_s": round(wall, 2), "fps": round(frames / wall, 2),
            "denoise_fps": round(frames / denoise, 2) if denoise else None,
            "dtype": entry["models"].get("dtype"), "r_drive": row.get("r_drive"), "r_source": row.get("r_source"),
            "face_share": row.get("face_share"), "video": str(out_dir / name)}


def read_frames(path: Path) -> np.ndarray:
    from lsync.media.video import VideoReader

    return np.stack(list(VideoReader(path, fps=None)))


def add_differences(rows: list[dict]) -> None:
    reference = next((r for r in rows if r["setting"] == REFERENCE), None)
    if reference is None:
        return
    expected = read_frames(Path(reference["video"])).astype(np.int16)
    for row in rows:
        frames = read_frames(Path(row["video"])).astype(np.int16)
        count = min(len(frames), len(expected))
        diff = np.abs(frames[:count] - expected[:count])
        row["mean_abs_diff"] = round(float(diff.mean()), 4)
        row["max_abs_diff"] = int(diff.max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("lsync-demo"), help="a finished lsync demo workdir")
    parser.add_argument("--guidance", type=float, default=demo_guidance(),
                        help="default: the demo recipe's (pipelines/demo.yaml vars.guidance), as its video step")
    parser.add_argument("--seed", type=int, default=1247)
    parser.add_argument("--settings", help="comma-separated names (default: all): " + ", ".join(s.name for s in SETTINGS))
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    for needed in ("data", "unet"):
        if not (args.workdir / needed / "lsync.json").is_file():
            parser.error(f"{args.workdir / needed} is not finished: run `lsync demo --workdir {args.workdir}` first")
    chosen = SETTINGS if not args.settings else [s for s in SETTINGS if s.name in args.settings.split(",")]
    with tempfile.TemporaryDirectory(prefix="lsync-settings-") as tmp:
        rows = [run_setting(s, args.workdir, Path(tmp), args.guidance, args.seed) for s in chosen]
        add_differences(rows)
        for row in rows:
            row.pop("video")
    result = {"workdir": str(args.workdir.resolve()), "guidance": args.guidance, "rows": rows}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
