"""Can the ``tiny`` SyncNet learn sync on synthetic talking faces within a CPU time budget?

The script makes (or reuses) 40 synthetic clips of 6 s (``lsync synth``), preprocesses them at 64 px
(``lsync preprocess``), trains the ``tiny`` preset for ``--minutes`` of wall time (``lsync train syncnet
--max-minutes``), then evaluates the final checkpoint (``lsync eval syncnet``). It prints one JSON object: the
validation accuracy curve, the best and final accuracy, when the target was first reached, throughput and the
evaluation (accuracy, ROC AUC, offset accuracy).

Usage::

    python benchmarks/syncnet_synthetic_accuracy.py [--work DIR] [--minutes 15] [--target 0.9] [--threads 2]
                                                    [--clips 40] [--seconds 6] [--set train.lr=5e-4 ...]

The work directory keeps the data between runs (``raw/``, ``data/``); every run trains into a fresh ``run/``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import emit_json, load_average, log  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmark-work/syncnet-synthetic"))
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    parser.add_argument("--target", type=float, default=0.9, help="validation accuracy to reach")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the budget is for 2 CPU cores)")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def prepare_data(work: Path, clips: int, seconds: float, seed: int) -> tuple[Path, dict]:
    """Synthesize and preprocess once; later runs reuse the finished data directory."""
    from lsync.manifest import is_complete
    from lsync.stages.preprocess import PreprocessConfig, run as preprocess
    from lsync.synth import synthesize

    raw, data = work / "raw", work / "data"
    timings = {}
    if not is_complete(raw):
        log(f"synthesizing {clips} clips of {seconds} s into {raw}")
        started = time.perf_counter()
        synthesize(raw, clips=clips, seconds=seconds, seed=seed)
        timings["synth_s"] = round(time.perf_counter() - started, 1)
    if not is_complete(data):
        log(f"preprocessing into {data} (64 px faces)")
        started = time.perf_counter()
        preprocess(raw, data, PreprocessConfig(resolution=64))
        timings["preprocess_s"] = round(time.perf_counter() - started, 1)
    return data, timings


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from lsync.config import resolve_config
    from lsync.console import configure
    from lsync.manifest import read_manifest, read_records
    from lsync.stages.eval_syncnet import EvalSyncNetConfig, evaluate
    from lsync.stages.train_syncnet import TrainSyncNetConfig, run as train

    configure(quiet=True)
    data, prep = prepare_data(args.work, args.clips, args.seconds, args.seed)
    clips = read_records(data / "clips.jsonl")
    run_dir = args.work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = resolve_config(TrainSyncNetConfig, "syncnet", args.preset, flags={"train.max_minutes": args.minutes,
                                                                               "train.max_steps": 1_000_000},
                            overrides=args.overrides)
    log(f"training {args.preset} for {args.minutes} min on {args.threads} thread(s) into {run_dir}")
    started = time.perf_counter()
    summary = train(data, run_dir, config, resume="never")
    train_s = time.perf_counter() - started

    records = read_records(run_dir / "metrics.jsonl")
    curve = [(r["step"], r["time_s"], r["val/accuracy"]) for r in records if "val/accuracy" in r]
    reached = next(((step, t) for step, t, acc in curve if acc >= args.target), None)
    speeds = [r["samples_per_s"] for r in records if "samples_per_s" in r]
    log("evaluating the final checkpoint")
    evaluation = evaluate(run_dir, data, EvalSyncNetConfig(batch_size=64))
    result = {
        "schema": "lsync.benchmark.syncnet_synthetic_accuracy/1",
        "settings": {"minutes": args.minutes, "target": args.target, "threads": args.threads, "clips": args.clips,
                     "seconds": args.seconds, "preset": args.preset, "overrides": args.overrides,
                     "lr": config.train.lr, "batch_size": config.train.batch_size},
        "data": {"train_clips": sum(c["split"] == "train" for c in clips),
                 "val_clips": sum(c["split"] == "val" for c in clips), **prep,
                 "resolution": read_manifest(data, kind="data")["summary"]["resolution"]},
        "reached_target": reached is not None,
        "target_step": reached[0] if reached else None,
        "target_minutes": round(reached[1] / 60, 2) if reached else None,
        "best_val_accuracy": max((acc for _, _, acc in curve), default=None),
        "final_val_accuracy": curve[-1][2] if curve else None,
        "final_val_loss": summary.get("val/loss"),
        "steps": summary.get("steps"),
        "train_minutes": round(train_s / 60, 2),
        "median_samples_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "val_curve": [{"step": s, "minutes": round(t / 60, 2), "accuracy": a} for s, t, a in curve],
        "evaluation": {k: v for k, v in evaluation.items() if k != "per_clip"},
        "load_average_1min": load_average(),
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
