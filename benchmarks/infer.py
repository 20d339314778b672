"""Speed and memory of ``lsync infer`` on 1080p input of two lengths, as one JSON object.

Cases (``--preset tiny`` by default, so the model is cheap and the rest of the pipeline shows):

* ``10s``: ``demo1_video.mp4`` (1080x1920, 10 s) driven by its own audio;
* ``60s``: demo1 looped six times with ffmpeg (stream copy into a temp file), driven by its own audio.

* ``10s-rerun``: the 10 s case twice with one face-track cache: the second run skips detection.

Each case runs in a fresh subprocess, so its peak RSS (``getrusage`` high-water mark) is its own. Per case: output
frames per second (end to end, model loading excluded), seconds per stage (decode, detect+align, audio features,
denoise, restore, encode, load_models) and peak RSS; at the end the 60 s / 10 s peak-RSS ratio, which stays near 1
when nothing holds all frames.

``--golden DIR`` runs the LatentSync parity job instead: the ``lsync infer`` command of a pipeline golden
(``shared/reference/pipeline``: its weights, landmarks, mask, steps, guidance and seed from ``params.json``) as a
subprocess, and reports lsync's wall time and per-stage seconds beside the reference's ``reference_wall_s`` (measured
when the golden was made, on a 2-core CPU: informative, the fair comparison runs both side by side), plus how closely
the frames match ``expected_frames.mkv`` (share of edited pixels within one grey level, mean difference).

Usage::

    python benchmarks/infer.py [--media DIR] [--steps N] [--preset tiny] [--device cpu|cuda] [--threads N]
                               [--cases 10s,60s,10s-rerun] [--out FILE]
    python benchmarks/infer.py --golden ../shared/reference/pipeline [--dtype auto|float32] [--out FILE]
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
CASE_SECONDS = {"10s": 10, "60s": 60, "10s-rerun": 10}
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


def _stage_rows(timings: dict[str, float]) -> dict[str, float]:
    return {row: round(sum(timings.get(name, 0.0) for name in names), 3) for row, names in STAGE_ROWS.items()}


def run_single(video: Path, args: argparse.Namespace, runs: int = 1) -> dict:
    """``runs`` inferences in this process sharing one face-track cache; frames, timings and peak RSS.

    With ``runs=2`` the second run finds the first one's face track and skips detection (``rerun_*`` keys).
    """
    from lsync.stages.infer import InferConfig, load_models_for, run

    with tempfile.TemporaryDirectory(prefix="lsync-bench-infer-") as out:
        config = InferConfig(preset=args.preset, steps=args.steps, threads=args.threads, device=args.device,
                             cache_interval=args.cache_interval, face_cache=str(Path(out) / "face-tracks"))
        models = load_models_for(config)
        rows = []
        for number in range(runs):
            tic = time.perf_counter()
            entry = run(video, video, Path(out) / f"run{number}", config, models=models)
            wall = time.perf_counter() - tic + models.load_seconds * (number == 0)
            rows.append((entry, wall))
    (entry, wall), *reruns = rows
    work = wall - entry["timings_s"].get("load_models", 0.0)
    result = {
        "frames": entry["frames"]["total"],
        "frames_synced": entry["frames"]["synced"],
        "wall_s": round(wall, 3),
        "output_fps": round(entry["frames"]["total"] / work, 3),
        "stages_s": _stage_rows(entry["timings_s"]),
        "peak_rss_mib": round(process_peak_rss_mib(), 1),
    }
    for rerun, rerun_wall in reruns:
        result.update(rerun_wall_s=round(rerun_wall, 3), rerun_face_source=rerun["frames"]["face_source"]["from"],
                      rerun_stages_s=_stage_rows(rerun["timings_s"]))
    return result


def run_golden(golden: Path, dtype: str, threads: int | None) -> dict:
    """The parity job of a pipeline golden through the CLI; wall time, stages, and the match to its frames."""
    import numpy as np

    from lsync.media.video import VideoReader
    from lsync.stages.infer_frames import source_indices
    from lsync.weights import PRESET_RESOLUTION

    params = json.loads((golden / "params.json").read_text(encoding="utf-8"))
    preset = next(name for name, size in PRESET_RESOLUTION.items() if size == params["resolution"] and name != "tiny")
    with tempfile.TemporaryDirectory(prefix="lsync-bench-golden-") as out:
        command = [sys.executable, "-m", "lsync", "-q", "infer", str(golden / "input.mkv"), str(golden / "audio.wav"),
                   "--preset", preset, "--weights-dir", str(golden / "weights"),
                   "--faces", str(golden / "landmarks3.npy"), "--mask", str(golden / "mask.png"),
                   "--steps", str(params["steps"]), "--guidance", str(params["guidance"]),
                   "--seed", str(params["seed"]), "--dtype", dtype, "--device", "cpu",
                   "--set", "smooth_method=none", "--codec", "ffv1", "--out-dir", out, "--name", "out.mkv"]
        if threads:
            command += ["--threads", str(threads)]
        tic = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
        wall = time.perf_counter() - tic
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        entry = json.loads((Path(out) / "lsync.json").read_text())["summary"]["outputs"]["out.mkv"]
        produced = VideoReader(Path(out) / "out.mkv", fps=None).read_all()
    expected = VideoReader(golden / "expected_frames.mkv", fps=None).read_all()[: len(produced)]
    source = VideoReader(golden / "input.mkv", fps=None).read_all()
    shown = source[source_indices(len(produced), len(source), "pingpong")]
    edited = (produced != shown) | (expected != shown)
    difference = np.abs(produced.astype(np.int16) - expected.astype(np.int16))[edited]
    return {
        "golden": str(golden),
        "dtype": dtype,
        "frames": int(len(produced)),
        "lsync_wall_s": round(wall, 3),
        "reference_wall_s": params.get("reference_wall_s"),
        "speedup_vs_reference": round(params["reference_wall_s"] / wall, 3) if params.get("reference_wall_s") else None,
        "stages_s": entry["timings_s"],
        "edited_pixels_within_1": round(float((difference <= 1).mean()), 6),
        "edited_pixels_mean_abs_diff": round(float(difference.mean()), 6),
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
    parser.add_argument("--golden", type=Path, help="a pipeline golden directory: run its parity job instead")
    parser.add_argument("--dtype", default="auto", help="with --golden: the model dtype (auto: lsync's default; float32: the exact path)")
    parser.add_argument("--single", type=Path, help=argparse.SUPPRESS)  # internal: one case in this process
    parser.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)  # internal: with --single
    args = parser.parse_args(argv)

    if args.single is not None:
        print(json.dumps(run_single(args.single, args, runs=args.runs)), flush=True)
        return 0

    from benchmarks._common import resolve_device

    if args.golden is not None:
        log(f"parity job of {args.golden} ({args.dtype}) ...")
        row = run_golden(args.golden, args.dtype, args.threads)
        emit_json({"schema": "lsync.benchmark.infer-golden/1",
                   "machine": {**machine_info(resolve_device("cpu"), None), "load_average_1min_end": load_average()},
                   "result": row}, args.out)
        return 0

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
                       "--steps", str(args.steps), "--cache-interval", str(args.cache_interval),
                       "--runs", "2" if name.endswith("-rerun") else "1"]
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
