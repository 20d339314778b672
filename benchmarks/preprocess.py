"""Speed and memory of ``lsync preprocess`` on one real video, against the cost of merely decoding and re-encoding it.

Three runs, each in its own subprocess so that imports, ffmpeg children and the detector are all counted:

1. ``lsync -q preprocess LIST OUT --workers N`` into a fresh directory: wall time, the peak RSS of the whole
   process tree (the lsync process, its workers and every ffmpeg it starts, summed and sampled every 50 ms) and the
   peak RSS of the lsync Python process alone (the kernel's high-water mark ``VmHWM``, so no spike is missed);
2. the "practical limit" baseline: one full-size 25 fps decode with :class:`lsync.media.video.VideoReader`, each
   frame resized to 256x256 and encoded with :class:`lsync.media.video.VideoWriter` at crf 15 - the I/O any
   preprocessing must do, without face detection, a second decoding pass or alignment;
3. the same ``lsync preprocess`` again into the same directory: a resume that finds everything done and must only
   check it.

Prints one JSON object on stdout (progress goes to stderr)::

    python benchmarks/preprocess.py [--video PATH] [--workers N] [--out FILE] [--keep]

Sums of RSS count pages shared between processes (libraries mapped by several ffmpegs) once per process; on the
other hand a 50 ms poll can miss a spike shorter than that. The tree figure is a sampled estimate, not a bound.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing lsync

# benchmarks._common imports torch (~0.5 GB of RSS): it is imported inside the functions of the measuring parent,
# never at module level, so that the baseline child (this file again) pays only for what decode + encode needs.

DEFAULT_VIDEO = REPO_ROOT.parent / "shared" / "media" / "demo2_video.mp4"
POLL_INTERVAL_S = 0.05
BASELINE_SIZE = 256  # the default aligned-face resolution of preprocessing
BASELINE_CRF = 15  # the default crf of preprocessing's clips
MB = 1024 * 1024


# ================================================================================================ measuring a child
@dataclass
class ChildRun:
    """What one subprocess cost: wall seconds, peak RSS (MiB) of its tree and of itself, and its exit code."""

    wall_s: float
    peak_rss_tree_mb: float
    peak_rss_main_mb: float  # the top process alone: VmHWM where /proc has it, else the sampled peak
    peak_rss_main_sampled_mb: float
    peak_breakdown: dict[str, list[float]]
    returncode: int
    stdout: str
    stderr: str


class TreeMemorySampler:
    """Polls the RSS of a process and all its descendants (ffmpeg included) on a background thread.

    Each sample sums the RSS of every live process in the tree at that moment; the peak of these sums is kept,
    and separately the peak of the top process alone. Processes that exit between listing and reading are skipped.
    """

    def __init__(self, pid: int, interval_s: float = POLL_INTERVAL_S):
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_tree_bytes = 0
        self.peak_main_bytes = 0
        self.high_water_main_bytes = 0  # VmHWM of the top process (Linux): its exact peak so far, never decreasing
        self.peak_breakdown: dict[str, list[float]] = {}  # process name -> RSS (MiB) of each, at the tree's peak
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-tree-sampler", daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval_s):
                return

    def _sample(self) -> None:
        psutil = self._psutil
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return  # the top process has exited
        total, breakdown = 0, {}
        for process in processes:
            try:
                rss = process.memory_info().rss
                name = _short_name(process.name())
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            total += rss
            breakdown.setdefault(name, []).append(round(rss / MB, 1))
            if process.pid == self._root.pid:
                self.peak_main_bytes = max(self.peak_main_bytes, rss)
                self.high_water_main_bytes = max(self.high_water_main_bytes, _high_water_mark(process.pid))
        if total > self.peak_tree_bytes:
            self.peak_tree_bytes, self.peak_breakdown = total, breakdown
        self.samples += 1


def _high_water_mark(pid: int) -> int:
    """Peak RSS of one process (bytes) as the kernel tracks it (``VmHWM``); 0 where /proc does not report it.

    Unlike ``wait4``'s ``ru_maxrss`` it excludes the children the process has reaped (ffmpeg here).
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _short_name(name: str) -> str:
    """``ffmpeg-linux-x86_64-v9.0.2`` (imageio-ffmpeg's binary) -> ``ffmpeg``; ``python3.11`` -> ``python``."""
    for known in ("ffmpeg", "python", "lsync"):
        if name.startswith(known):
            return known
    return name


def run_measured(command: list[str], env: dict[str, str] | None = None) -> ChildRun:
    """Run ``command`` to completion, timing it and sampling its process tree's memory."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Files rather than pipes: nothing has to drain them while we wait, and the child never blocks on them.
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        with TreeMemorySampler(proc.pid) as sampler:
            returncode = proc.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return ChildRun(wall_s=wall, peak_rss_tree_mb=sampler.peak_tree_bytes / MB,
                    peak_rss_main_mb=max(sampler.high_water_main_bytes, sampler.peak_main_bytes) / MB,
                    peak_rss_main_sampled_mb=sampler.peak_main_bytes / MB,
                    peak_breakdown=sampler.peak_breakdown,
                    returncode=returncode, stdout=stdout, stderr=stderr)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def _check(run: ChildRun, what: str) -> None:
    if run.returncode != 0:
        tail = " | ".join(line for line in run.stderr.strip().splitlines()[-5:] if line.strip())
        fail(f"{what} exited with code {run.returncode}: {tail or 'no output'}")


# ================================================================================================ the three runs
def lsync_command() -> list[str]:
    """The ``lsync`` console script of this interpreter's environment, or the same CLI through ``-c``."""
    script = Path(sys.executable).parent / "lsync"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from lsync.cli import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    """The caller's environment, with the checkout importable (the package may not be installed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_preprocess(list_file: Path, data_dir: Path, workers: int) -> ChildRun:
    command = [*lsync_command(), "-q", "preprocess", str(list_file), str(data_dir), "--workers", str(workers)]
    run = run_measured(command, env=child_env())
    _check(run, "lsync preprocess")
    return run


def run_baseline(video: Path, out_file: Path) -> ChildRun:
    """This script again, in baseline mode, so the baseline pays the same interpreter and import start-up."""
    command = [sys.executable, str(Path(__file__).resolve()), "--baseline-child", str(video), str(out_file)]
    run = run_measured(command, env=child_env())
    _check(run, "the decode + encode baseline")
    return run


def decode_encode(video: Path, out_file: Path) -> dict[str, Any]:
    """The baseline's work: full-size 25 fps decode, resize each frame to 256x256, encode at crf 15."""
    import cv2

    from lsync.media.video import VideoReader, VideoWriter

    started = time.perf_counter()
    frames = 0
    with VideoWriter(out_file, 25, BASELINE_SIZE, BASELINE_SIZE, crf=BASELINE_CRF) as writer:
        for frame in VideoReader(video, fps=25):
            # Bilinear, like the warpAffine of the alignment: the same cost per output pixel.
            writer.write(cv2.resize(frame, (BASELINE_SIZE, BASELINE_SIZE), interpolation=cv2.INTER_LINEAR))
            frames += 1
    return {"frames": frames, "seconds": time.perf_counter() - started}


def frames_processed(data_dir: Path) -> tuple[int, int]:
    """(frames decoded and analysed per sources.jsonl, frames written into clips per clips.jsonl)."""
    from lsync.manifest import read_records

    analysed = sum(int(r.get("frames", 0)) for r in read_records(data_dir / "sources.jsonl"))
    in_clips = sum(int(r["num_frames"]) for r in read_records(data_dir / "clips.jsonl"))
    return analysed, in_clips


def source_seconds(video: Path) -> float:
    from lsync.media.probe import probe

    info = probe(video)
    return float(info.video_duration_s or info.duration_s)


# ================================================================================================ main
def benchmark(video: Path, workers: int, work_dir: Path) -> dict[str, Any]:
    from benchmarks._common import load_average, log

    list_file = work_dir / "sources.txt"
    list_file.write_text(f"{video}\n", encoding="utf-8")
    data_dir = work_dir / "data"
    seconds = source_seconds(video)
    load_before = load_average()

    log(f"[1/3] lsync preprocess {video.name} ({seconds:.1f} s) --workers {workers} ...")
    first = run_preprocess(list_file, data_dir, workers)
    frames, clip_frames = frames_processed(data_dir)
    if frames == 0:
        fail(f"lsync preprocess accepted no part of {video} (see {data_dir / 'rejects.jsonl'})")
    log(f"      {first.wall_s:.1f} s, {frames} frames, peak tree RSS {first.peak_rss_tree_mb:.0f} MiB")

    log("[2/3] baseline: decode + resize to 256x256 + encode ...")
    baseline = run_baseline(video, work_dir / "baseline.mp4")
    baseline_inner = json.loads(baseline.stdout)
    log(f"      {baseline.wall_s:.1f} s")

    log("[3/3] lsync preprocess again into the same directory (resume) ...")
    rerun = run_preprocess(list_file, data_dir, workers)
    log(f"      {rerun.wall_s:.2f} s")

    return {
        "video": str(video),
        "source_seconds": round(seconds, 3),
        "workers": workers,
        "frames": frames,
        "clip_frames": clip_frames,
        "clips": len(_read_lines(data_dir / "clips.jsonl")),
        "wall_s": round(first.wall_s, 3),
        "source_seconds_per_wall_second": round(seconds / first.wall_s, 4),
        "frames_per_s": round(frames / first.wall_s, 3),
        "baseline_decode_encode_s": round(baseline.wall_s, 3),
        "baseline_decode_encode_inner_s": round(baseline_inner["seconds"], 3),
        "baseline_frames": baseline_inner["frames"],
        "ratio_to_baseline": round(first.wall_s / baseline.wall_s, 3),
        "peak_rss_tree_mb": round(first.peak_rss_tree_mb, 1),
        "peak_rss_python_mb": round(first.peak_rss_main_mb, 1),
        "peak_rss_python_sampled_mb": round(first.peak_rss_main_sampled_mb, 1),
        "peak_rss_tree_processes_mb": first.peak_breakdown,
        "baseline_peak_rss_tree_mb": round(baseline.peak_rss_tree_mb, 1),
        "rerun_wall_s": round(rerun.wall_s, 3),
        "rerun_fraction": round(rerun.wall_s / first.wall_s, 4),
        "rss_poll_interval_s": POLL_INTERVAL_S,
        "load_average_1min_before": load_before,
        "load_average_1min_after": load_average(),
        "machine": _machine(),
    }


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def _machine() -> dict[str, Any]:
    import torch

    from benchmarks._common import machine_info

    info = machine_info(torch.device("cpu"), None)
    info["ffmpeg"] = _ffmpeg_version()
    return info


def _ffmpeg_version() -> str | None:
    from lsync.media.ffmpeg import ffmpeg_command

    try:
        text = subprocess.run(ffmpeg_command("-version"), capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return text.splitlines()[0] if text else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help=f"source video (default {DEFAULT_VIDEO})")
    parser.add_argument("--workers", type=int, default=1, help="lsync preprocess --workers (default 1)")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR (created, must be empty) and keep the data directory there")
    parser.add_argument("--baseline-child", nargs=2, metavar=("VIDEO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.baseline_child:
        video, out_file = (Path(p) for p in args.baseline_child)
        print(json.dumps(decode_encode(video, out_file)))
        return
    from benchmarks._common import emit_json

    video = args.video.expanduser().resolve()
    if not video.is_file():
        fail(f"video not found: {video} (pass --video PATH)")
    if args.keep is not None:
        work_dir = args.keep.expanduser().resolve()
        work_dir.mkdir(parents=True, exist_ok=True)
        if any(work_dir.iterdir()):
            fail(f"--keep {work_dir} is not empty")
        result = benchmark(video, args.workers, work_dir)
    else:
        work_dir = Path(tempfile.mkdtemp(prefix="lsync-bench-preprocess-"))
        try:
            result = benchmark(video, args.workers, work_dir)
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
