"""Does ``--face-select speaker`` pick the face that is speaking?

Held-out two-face videos (``lsync synth --faces 2``: two faces side by side, each with its own random size and its
own speech-like audio, the soundtrack one face's speech - left or right, drawn per video) are analysed exactly as
``lsync infer`` / ``lsync preprocess`` do it (:func:`lsync.face_select.detect_selected_track`: detect, track
every face, score every track against the video's own audio with the SyncNet, choose per shot). A video counts as
picked correctly when every chosen frame's face box lies in the speaking face's half of the frame. ``--silent``
more videos have closed mouths and an off-screen voice: there, the right answer is the fallback to the largest
face (with a warning).

The SyncNet is ``--syncnet RUN`` or, without it, a ``tiny`` one trained here on single-face synthetic clips
(``lsync synth`` + ``lsync preprocess --resolution 64`` + ``lsync train syncnet --preset tiny``, ``--train-steps``
steps), kept in ``--work`` for the next run.

Prints one JSON object: ``videos``, ``picked_correctly``, ``rate``, then per-video rows (speaker side, sizes, the
choice, every track's offset and confidence), the silent videos' fallbacks, the SyncNet and timings.

Usage::

    python benchmarks/face_select_speaker.py [--work DIR] [--syncnet RUN] [--videos 12] [--silent 2]
                                             [--seed 1616] [--seconds 4] [--train-steps 600] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing lsync

from benchmarks._common import emit_json, load_average, log  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmark-work/face-select-speaker"))
    parser.add_argument("--syncnet", type=Path, help="SyncNet run/checkpoint (default: train a tiny one here)")
    parser.add_argument("--videos", type=int, default=12, help="held-out two-face videos with one speaker")
    parser.add_argument("--silent", type=int, default=2, help="more videos where no face speaks")
    parser.add_argument("--seed", type=int, default=1616, help="synthesis seed of the held-out videos")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", default="640x400", help="two-face frame WIDTHxHEIGHT")
    # The demo's data recipe (pipelines/demo.yaml: 12 clips of 6 s, seed 0, 64 px, a quarter for validation), on
    # which the tiny SyncNet of main leaves chance within 100 steps; on some other seeds it sits at loss 0.69 for
    # longer than a short run (the stall issue 19 is about), and a SyncNet that has not learned cannot tell a
    # speaker: check train/accuracy in the JSON before reading the rate.
    parser.add_argument("--train-clips", type=int, default=12)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--train-minutes", type=float, default=8.0)
    parser.add_argument("--min-conf", type=float, help="speaker_min_conf (default: the metric's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def train_syncnet(work: Path, clips: int, seed: int, steps: int, minutes: float) -> tuple[Path, dict]:
    """A tiny SyncNet on single-face synthetic clips (reused when already trained)."""
    from lsync.config import resolve_config
    from lsync.manifest import is_complete
    from lsync.stages.preprocess import PreprocessConfig, run as preprocess
    from lsync.stages.train_syncnet import TrainSyncNetConfig, run as train
    from lsync.synth import synthesize

    raw, data, run_dir = work / "train-raw", work / "train-data", work / "syncnet"
    timings = {}
    if not is_complete(raw):
        log(f"synthesizing {clips} single-face clips into {raw}")
        tic = time.perf_counter()
        synthesize(raw, clips=clips, seconds=6.0, seed=seed)
        timings["synth_s"] = round(time.perf_counter() - tic, 1)
    if not is_complete(data):
        log(f"preprocessing into {data} (64 px)")
        tic = time.perf_counter()
        preprocess(raw, data, PreprocessConfig(resolution=64, val_fraction=0.25))
        timings["preprocess_s"] = round(time.perf_counter() - tic, 1)
    if not is_complete(run_dir):
        log(f"training the tiny SyncNet for {steps} steps (at most {minutes} min) into {run_dir}")
        config = resolve_config(TrainSyncNetConfig, "syncnet", "tiny",
                                flags={"train.max_steps": steps, "train.max_minutes": minutes,
                                       "train.val_every": 50, "train.checkpoint_every": 0})
        tic = time.perf_counter()
        train(data, run_dir, config, resume="never")
        timings["train_s"] = round(time.perf_counter() - tic, 1)
    return run_dir, timings


def chosen_side(track, width: int) -> str | None:
    """``left`` / ``right`` when every chosen frame's box lies in that half, ``mixed`` otherwise, None: no face."""
    boxes = track.boxes[track.has_face]
    if not len(boxes):
        return None
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    if (centres < width / 2).all():
        return "left"
    if (centres >= width / 2).all():
        return "right"
    return "mixed"


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from lsync.console import configure
    from lsync.manifest import is_complete, read_manifest
    from lsync.face_select import detect_selected_track, load_speaker_syncnet, speaker_min_conf
    from lsync.stages.infer import InferConfig
    from lsync.synth import synthesize

    configure(quiet=True)
    started = time.perf_counter()
    timings = {}
    syncnet = args.syncnet
    if syncnet is None:
        syncnet, timings = train_syncnet(args.work, args.train_clips, args.train_seed, args.train_steps,
                                         args.train_minutes)
    width, height = (int(v) for v in args.size.lower().split("x"))
    tests = args.work / f"held-out-{args.seed}"
    if not is_complete(tests):
        log(f"synthesizing {args.videos} + {args.silent} two-face videos (seed {args.seed}) into {tests}")
        tic = time.perf_counter()
        synthesize(tests, clips=args.videos + args.silent, seconds=args.seconds, seed=args.seed,
                   size=(width, height), faces=2, speaker=["random"] * args.videos + ["none"] * args.silent)
        timings["synth_held_out_s"] = round(time.perf_counter() - tic, 1)
    records = read_manifest(tests, kind="raw")["summary"]["files"]
    syncnet_info = _syncnet_info(syncnet)

    config = InferConfig(face_select="speaker", syncnet=str(syncnet), speaker_min_conf=args.min_conf,
                         face_cache="off", threads=args.threads)
    scorer = load_speaker_syncnet(config)
    rows, tic = [], time.perf_counter()
    for record in records:
        track, _ = detect_selected_track(tests / record["name"], config, scorer=scorer)
        report = track.settings["face_selection"]
        side = chosen_side(track, width)
        larger = "left" if record["faces"][0]["scale"] > record["faces"][1]["scale"] else "right"
        expected = larger if record["speaker"] == "none" else record["speaker"]
        fell_back = any(shot["rule"] == "largest" for shot in report["shots"])
        row = {"video": record["name"], "speaker": record["speaker"], "larger_face": larger,
               "scales": [f["scale"] for f in record["faces"]], "chosen_side": side, "fell_back": fell_back,
               "correct": side == expected and (fell_back == (record["speaker"] == "none")),
               "tracks": [{"track": s["track"], "side": _track_side(report, s["track"], width),
                           **{k: s.get(k) for k in ("offset", "confidence", "in_sync")}}
                          for shot in report["shots"] for s in shot["scores"]]}
        log(f"{record['name']}: speaker {record['speaker']}, chose {side}{' (fallback)' if fell_back else ''}, "
            f"{'ok' if row['correct'] else 'WRONG'}")
        rows.append(row)
    timings["select_s"] = round(time.perf_counter() - tic, 1)

    speaking = [r for r in rows if r["speaker"] in ("left", "right")]
    silent = [r for r in rows if r["speaker"] == "none"]
    correct = sum(r["correct"] for r in speaking)
    confidences = {"speaking_face": [], "other_face": [], "silent_faces": []}
    for row in rows:
        for t in row["tracks"]:
            key = ("silent_faces" if row["speaker"] == "none"
                   else "speaking_face" if t["side"] == row["speaker"] else "other_face")
            confidences[key].append(t["confidence"])
    result = {
        "schema": "lsync.benchmark.face_select_speaker/1",
        "videos": len(speaking),
        "picked_correctly": correct,
        "rate": round(correct / len(speaking), 4) if speaking else None,
        "speaker_larger_face": sum(r["speaker"] == r["larger_face"] for r in speaking),
        "speaker_left": sum(r["speaker"] == "left" for r in speaking),
        "silent": {"videos": len(silent), "fell_back_to_largest": sum(r["correct"] for r in silent)},
        "confidence": {k: {"min": min(v), "median": sorted(v)[len(v) // 2], "max": max(v)} if v else None
                       for k, v in ((k, [c for c in v if c is not None]) for k, v in confidences.items())},
        "syncnet": syncnet_info,
        "settings": {"seed": args.seed, "seconds": args.seconds, "size": [width, height], "syncnet": str(syncnet),
                     "min_conf": speaker_min_conf(config), "max_offset": config.speaker_max_offset,
                     "threads": args.threads},
        "rows": rows,
        "timings_s": {**timings, "total_s": round(time.perf_counter() - started, 1)},
        "load_average_1min": load_average(),
    }
    emit_json(result, args.out)


def _syncnet_info(syncnet: Path) -> dict:
    """What the SyncNet run learned (its last validation accuracy and steps), when it is a run directory."""
    from lsync.manifest import read_records

    metrics = Path(syncnet) / "metrics.jsonl"
    if not metrics.is_file():
        return {"path": str(syncnet)}
    rows = read_records(metrics)
    validated = [r for r in rows if "val/accuracy" in r]
    return {"path": str(syncnet), "steps": rows[-1].get("step") if rows else None,
            "val_accuracy": validated[-1]["val/accuracy"] if validated else None,
            "val_curve": [[r["step"], r["val/accuracy"]] for r in validated]}


def _track_side(report, track_id: int, width: int) -> str:
    box = next(t["mean_box"] for t in report["tracks"] if t["id"] == track_id)
    return "left" if (box[0] + box[2]) / 2 < width / 2 else "right"


if __name__ == "__main__":
    main()
