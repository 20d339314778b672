"""Speed and memory of ``lsync infer`` on 1080p input of two lengths, as one JSON object.

Cases (``--preset tiny`` by default, so the model is cheap and the rest of the pipeline shows):

* ``10s``: ``demo1_video.mp4`` (1080x1920, 10 s) driven by its own audio;
* ``60s``: demo1 looped six times with ffmpeg (stream copy into a temp file), driven by its own audio.

Each case runs in a fresh subprocess, so its peak RSS (``getrusage`` high-water mark) is its own. Per case: output
frames per second (end to end, model loading excluded), seconds per stage (decode, detect+align, audio features,
denoise, restore, encode, load_models) and peak RSS; at the end the 60 s / 10 s peak-RSS ratio, which stays near 1
when nothing holds all frames.

Usage::

    python benchmarks/infer.py [--media DIR] [--steps N] [--preset tiny] [--device cpu|cuda] [--threads N]
                               [--cases 10s,60s] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import emit_json, load_average, log, machine_info, process_peak_rss_mib  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MEDIA = REPO_ROOT.parent / "shared" / "media"
CASE_SECONDS = {"10s": 10, "60s": 60}
#: lsync.json stage names -> the rows this benchmark reports.
STAGE_ROWS = {"decode": ("decode",), "detect_align": ("detect", "align"), "audio_features": ("audio_features",),
              "denoise": ("denoise",), "restore": ("restore",), "encode": ("encode",), "load_models": ("load_models",)}


def make_input(media: Path, seconds: int, folder: Path) -> Path:
    """demo1 looped (stream copy, no re-encode) to ``seconds`` long."""
    from lsync.media.ffmpeg import run_ffmpeg

    source = media / "demo1_video.mp4"
    if seconds <= 10:
        return source
    loops = -(-seconds // 10) - 1
    out = folder / f"demo1_{seconds}s.mp4"
    run_ffmpeg(["-stream_loop", str(loops), "-i", source, "-t", str(seconds), "-c", "copy", "-y", out],
               what=f"loop {source} to {seconds} s")
    return out


def run_single(video: Path, args: argparse.Namespace) -> dict:
    """One inference in this process; returns frames, timings and this process's peak RSS."""
    from lsync.stages.infer import InferConfig, run

    config = InferConfig(preset=args.preset, steps=args.steps, threads=args.threads, device=args.device,
                         cache_interval=args.cache_interval)
    with tempfile.TemporaryDirectory(prefix="lsync-bench-infer-") as out:
        tic = time.perf_counter()
        entry = run(video, video, out, config)
        wall = time.perf_counter() - tic
    timings = entry["timings_s"]
    stages = {row: round(sum(timings.get(name, 0.0) for name in names), 3) for row, names in STAGE_ROWS.items()}
    work = wall - timings.get("load_models", 0.0)
    return {
        "frames": entry["frames"]["total"],
        "frames_synced": entry["frames"]["synced"],
        "wall_s": round(wall, 3),
        "output_fps": round(entry["frames"]["total"] / work, 3),
        "stages_s": stages,
        "peak_rss_mib": round(process_peak_rss_mib(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=Path(os.environ.get("LSYNC_MEDIA_DIR", DEFAULT_MEDIA)))
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cache-interval", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cases", default="10s,60s")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--single", type=Path, help=argparse.SUPPRESS)  # internal: one case in this process
    args = parser.parse_args(argv)

    if args.single is not None:
        print(json.dumps(run_single(args.single, args)), flush=True)
        return 0

    from benchmarks._common import resolve_device

    if not (args.media / "demo1_video.mp4").is_file():
        log(f"demo media not found in {args.media} (set --media or LSYNC_MEDIA_DIR)")
        return 2
    device = resolve_device(args.device)
    cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    results = []
    with tempfile.TemporaryDirectory(prefix="lsync-bench-infer-media-") as folder:
        for name in cases:
            video = make_input(args.media, CASE_SECONDS[name], Path(folder))
            log(f"{name}: lsync infer {video.name} (preset {args.preset}, {args.steps} steps) ...")
            command = [sys.executable, str(Path(__file__).resolve()), "--single", str(video), "--preset", args.preset,
                       "--steps", str(args.steps), "--cache-interval", str(args.cache_interval)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            if args.device:
                command += ["--device", args.device]
            proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
            if proc.returncode != 0:
                log(proc.stderr[-2000:])
                return 1
            row = {"case": name, "input_seconds": CASE_SECONDS[name], **json.loads(proc.stdout.strip().splitlines()[-1])}
            log(f"  {row['output_fps']} frames/s, peak RSS {row['peak_rss_mib']} MiB, stages {row['stages_s']}")
            results.append(row)
    result = {
        "schema": "lsync.benchmark.infer/1",
        "settings": {"preset": args.preset, "steps": args.steps, "cache_interval": args.cache_interval,
                     "threads": args.threads, "resolution": "1080x1920"},
        "machine": {**machine_info(device, None), "load_average_1min_end": load_average()},
        "results": results,
    }
    by_case = {row["case"]: row for row in results}
    if {"10s", "60s"} <= set(by_case):
        result["peak_rss_ratio_60s_vs_10s"] = round(by_case["60s"]["peak_rss_mib"] / by_case["10s"]["peak_rss_mib"], 3)
    emit_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
