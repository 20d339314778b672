"""Does ``lsync filter sync`` find known audio offsets and correct them?

Synthesizes clips with ``--av-offset K`` for every K in ``--offsets`` (``--per-offset`` clips each, their own
seed), preprocesses them at 64 px, and filters them with a SyncNet: ``--syncnet RUN`` (e.g. the run of
``benchmarks/syncnet_synthetic_accuracy.py``) or, without it, a ``tiny`` SyncNet trained here for ``--minutes`` on
separate offset-0 clips. Reported: the share of clips whose found offset equals the injected one (goal >= 0.9),
the offsets of the corrected clips scored again with ``lsync eval sync`` (goal: all 0), the confidence of
in-sync clips and of clips scored against another clip's audio (what ``--min-conf`` should separate), timings.

Usage::

    python benchmarks/filter_sync_offsets.py [--work DIR] [--syncnet RUN] [--offsets -4..4] [--per-offset 3]
                                             [--seconds 6] [--max-offset 6] [--min-conf X] [--threads 2]

``raw/`` and ``data/`` in the work directory are kept between runs; ``synced/`` is made fresh every time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import emit_json, load_average, log  # noqa: E402


def parse_offsets(text: str) -> list[int]:
    """``-4..4`` or ``-2,0,3``."""
    if ".." in text:
        low, high = (int(v) for v in text.split(".."))
        return list(range(low, high + 1))
    return [int(v) for v in text.split(",")]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmark-work/filter-sync"))
    parser.add_argument("--syncnet", type=Path, help="SyncNet run/checkpoint (default: train a tiny one here)")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget when no --syncnet is given")
    parser.add_argument("--offsets", type=parse_offsets, default=parse_offsets("-4..4"))
    parser.add_argument("--per-offset", type=int, default=3, help="clips per injected offset")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=100, help="synthesis seed of the offset clips")
    parser.add_argument("--max-offset", type=int, default=6)
    parser.add_argument("--min-conf", type=float, help="default: the filter's default for the metric")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def prepare(raw: Path, data: Path, clips: int, seconds: float, seed: int, offsets) -> dict:
    from lsync.manifest import is_complete
    from lsync.stages.preprocess import PreprocessConfig, run as preprocess
    from lsync.synth import synthesize

    timings = {}
    if not is_complete(raw):
        log(f"synthesizing {clips} clips of {seconds} s into {raw}")
        tic = time.perf_counter()
        synthesize(raw, clips=clips, seconds=seconds, seed=seed, av_offset=offsets)
        timings["synth_s"] = round(time.perf_counter() - tic, 1)
    if not is_complete(data):
        log(f"preprocessing {raw} into {data} (64 px faces)")
        tic = time.perf_counter()
        preprocess(raw, data, PreprocessConfig(resolution=64, min_clip_seconds=min(5.0, seconds - 0.5),
                                               max_clip_seconds=seconds + 1))
        timings["preprocess_s"] = round(time.perf_counter() - tic, 1)
    return timings


def train_syncnet(work: Path, minutes: float) -> Path:
    """A tiny SyncNet trained on offset-0 clips (seed 0, never the seed of the offset clips)."""
    from lsync.config import resolve_config
    from lsync.stages.train_syncnet import TrainSyncNetConfig, run as train

    data = work / "train-data"
    prepare(work / "train-raw", data, clips=40, seconds=6.0, seed=0, offsets=0)
    run_dir = work / "syncnet-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = resolve_config(TrainSyncNetConfig, "syncnet", "tiny",
                            flags={"train.max_minutes": minutes, "train.max_steps": 1_000_000})
    log(f"training the tiny SyncNet for {minutes} min into {run_dir}")
    train(data, run_dir, config, resume="never")
    return run_dir


def mismatched_confidences(data: Path, records: list[dict], syncnet: Path, count: int) -> list[float]:
    """LSE-C of clip i's faces against clip i+1's audio (unrelated speech): what a threshold must reject."""
    from lsync.audio.mel import load_wav_16k_mono
    from lsync.sync_metrics import clip_faces
    from lsync.sampling import pick_device
    from lsync.sync_metrics import load_scorer, score_sync

    device, _ = pick_device(None)
    scorer = load_scorer("stable", str(syncnet), device)
    values = []
    for first, second in zip(records[:count], records[1:count + 1]):
        score = score_sync(scorer, clip_faces(data, first, scorer), load_wav_16k_mono(data / second["audio"]))
        values.append(round(score.lse_c, 4))
    return values


def main(argv=None) -> None:
    args = parse_args(argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from lsync.console import configure
    from lsync.manifest import read_manifest, read_records
    from lsync.stages.eval_sync import EvalSyncConfig, evaluate
    from lsync.stages.filter_sync import FilterSyncConfig, min_confidence, run as filter_sync

    configure(quiet=True)
    injected_per_clip = [k for k in args.offsets for _ in range(args.per_offset)]
    raw, data, synced = args.work / "raw", args.work / "data", args.work / "synced"
    timings = prepare(raw, data, len(injected_per_clip), args.seconds, args.seed, injected_per_clip)
    syncnet = args.syncnet or train_syncnet(args.work, args.minutes)

    injected = {f["name"]: f["av_offset_frames"] for f in read_manifest(raw, kind="raw")["summary"]["files"]}
    records = read_records(data / "clips.jsonl")
    shutil.rmtree(synced, ignore_errors=True)
    config = FilterSyncConfig(syncnet=str(syncnet), max_offset=args.max_offset, min_conf=args.min_conf)
    log(f"filtering {len(records)} clips with {syncnet}")
    tic = time.perf_counter()
    summary = filter_sync(data, synced, config)
    timings["filter_s"] = round(time.perf_counter() - tic, 1)

    decided = read_records(synced / "clips.jsonl") + read_records(synced / "rejects.jsonl")
    rows = [{"id": r["id"], "injected": injected[r["source"]], "found": r["sync_offset"],
             "confidence": r["sync_confidence"], "kept": "reason" not in r, "reason": r.get("reason")}
            for r in decided]
    exact = [r["found"] == r["injected"] for r in rows]

    log("scoring the corrected clips again")
    tic = time.perf_counter()
    again = evaluate(synced, syncnet, EvalSyncConfig()) if summary["clips"] else {"rows": [], "summary": {}}
    timings["re_evaluate_s"] = round(time.perf_counter() - tic, 1)
    corrected = [row["offset"] for row in again["rows"]]
    log("scoring faces against unrelated audio")
    unrelated = mismatched_confidences(data, records, syncnet, count=min(8, len(records) - 1))

    confidences = [r["confidence"] for r in rows if r["confidence"] is not None]
    result = {
        "schema": "lsync.benchmark.filter_sync_offsets/1",
        "settings": {"offsets": args.offsets, "per_offset": args.per_offset, "seconds": args.seconds,
                     "seed": args.seed, "max_offset": args.max_offset, "min_conf": min_confidence(config),
                     "syncnet": str(syncnet), "threads": args.threads},
        "clips": len(rows),
        "found_exact_fraction": round(float(np.mean(exact)), 4) if rows else None,
        "goal_found_exact_fraction": 0.9,
        "found_within_1_fraction": round(float(np.mean([abs(r["found"] - r["injected"]) <= 1 for r in rows
                                                        if r["found"] is not None])), 4) if rows else None,
        "kept": summary["clips"],
        "rejects": summary["rejects"],
        "corrected_offsets": corrected,
        "corrected_all_zero": bool(corrected) and all(o == 0 for o in corrected),
        "confidence_in_sync": {"min": min(confidences, default=None), "median": float(np.median(confidences))
                               if confidences else None},
        "confidence_unrelated_audio": unrelated,
        "corrected_confidence_mean": again["summary"].get("lse_c"),
        "timings_s": {**timings, "per_clip_filter_s": round(timings["filter_s"] / max(1, len(rows)), 2)},
        "load_average_1min": load_average(),
        "per_clip": rows,
    }
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
