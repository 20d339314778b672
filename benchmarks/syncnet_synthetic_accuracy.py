"""Can the ``tiny`` SyncNet learn sync on synthetic talking faces within a CPU time budget?

The script makes (or reuses) 40 synthetic clips of 6 s (``lsync synth``), preprocesses them at 64 px
(``lsync preprocess``), trains the ``tiny`` preset for ``--minutes`` of wall time (``lsync train syncnet
--max-minutes``), keeping the weights it has at each of ``--marks`` minutes, and evaluates them with ``lsync eval
syncnet``. It prints one JSON object: the accuracy ``lsync eval syncnet`` reports at every mark (and the ROC AUC
and offset accuracy), the trainer's validation curve, when the target was first reached, throughput and any
chance-plateau warning.

``--ablation`` trains once per row of :data:`CHANGES` instead: the tiny recipe as it was before issue 19, then
each change that helped added on top of the previous ones (the last row is the shipped preset), so every change
gets its own row of accuracies at the marks.

Usage::

    python benchmarks/syncnet_synthetic_accuracy.py [--work DIR] [--minutes 15] [--marks 5,10,15] [--target 0.93]
                                                    [--threads 2] [--clips 40] [--seconds 6] [--seed 0]
                                                    [--set train.lr=5e-4 ...] [--ablation]

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

#: The recipe of the ``tiny`` preset before issue 19, as overrides of the current preset.
BEFORE = ["train.num_workers=1", "loss.logit_scale=null", "train.lr_schedule=constant",
          "data.other_clip_negatives=0.5", "data.group_size=1", "train.batch_size=32"]
#: (what changed, the overrides of BEFORE it removes). Each row keeps the changes of the rows above it.
CHANGES = [
    ("tiny recipe before issue 19 (BCE on the raw cosine, lr 5e-4 constant, batch 32, 1 loader process, half the "
     "negatives from other clips)", []),
    ("data loading in the training process (num_workers 0: no loader process competing for the 2 cores)",
     ["train.num_workers=1"]),
    ("logit scale 10 on the cosine (BCE on sigmoid(10 (cos - 0.5)))", ["loss.logit_scale=null"]),
    ("cosine decay of the learning rate to 0.05 x over 1500 steps", ["train.lr_schedule=constant"]),
    ("every negative the clip's own audio shifted (other_clip_negatives 0, was 0.5)",
     ["data.other_clip_negatives=0.5"]),
    ("in-group negatives: groups of 8 windows of one clip, each video window against all 8 audio windows (batch 4 "
     "groups = the same 32 windows a step)", ["data.group_size=1", "train.batch_size=32"]),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmark-work/syncnet-synthetic"))
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-time budget")
    parser.add_argument("--marks", default="5,10,15", help="minutes at which the weights are evaluated")
    parser.add_argument("--target", type=float, default=0.93, help="accuracy (lsync eval syncnet) to reach")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the budget is for 2 CPU cores)")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ablation", action="store_true", help="one run per row of CHANGES")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


def parse_marks(text: str, minutes: float) -> list[float]:
    """``"5,10,15"`` -> [5.0, 10.0, 15.0], keeping the marks within the budget and always ending at it."""
    marks = sorted({float(v) for v in text.split(",") if v.strip()})
    return [m for m in marks if m < minutes] + [minutes]


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


def mark_label(minutes: float) -> str:
    return f"{minutes:g}"


def train_with_marks(data: Path, run_dir: Path, config, marks: list[float]) -> tuple[dict, dict[str, Path], float]:
    """Train ``config`` into ``run_dir``; the weights at each mark are copied to ``run_dir/marks/min-<m>``.

    Returns (the run summary, {mark: checkpoint directory}, training wall seconds). The last mark is the budget
    itself: the final checkpoint the trainer writes when ``max_minutes`` is up.
    """
    from lsync.stages.train_syncnet import run as train

    run_dir.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Path] = {}
    pending = list(marks[:-1])
    started = time.perf_counter()

    def keep_mark(trainer, step):
        if pending and time.perf_counter() - started >= 60 * pending[0]:
            label = mark_label(pending.pop(0))
            checkpoint = trainer.save_checkpoint()  # checkpointing prunes old ones: keep a copy
            target = run_dir / "marks" / f"min-{label}"
            shutil.copytree(checkpoint, target)
            saved[label] = target
            log(f"  {label} min: step {step}")

    summary = train(data, run_dir, config, resume="never", on_step_end=keep_mark)
    train_s = time.perf_counter() - started
    from lsync.training.checkpointing import latest_checkpoint

    saved[mark_label(marks[-1])] = latest_checkpoint(run_dir)
    return summary, saved, train_s


def run_once(args, data: Path, run_dir: Path, overrides: list[str]) -> dict:
    """One training run of the preset with ``overrides``, evaluated at every mark."""
    from lsync.config import resolve_config
    from lsync.manifest import read_records
    from lsync.stages.eval_syncnet import EvalSyncNetConfig, evaluate
    from lsync.stages.train_syncnet import TrainSyncNetConfig

    marks = parse_marks(args.marks, args.minutes)
    shutil.rmtree(run_dir, ignore_errors=True)
    config = resolve_config(TrainSyncNetConfig, "syncnet", args.preset,
                            flags={"train.max_minutes": args.minutes, "train.max_steps": 1_000_000},
                            overrides=overrides)
    log(f"training {args.preset} {' '.join(overrides)} for {args.minutes} min on {args.threads} thread(s)")
    summary, checkpoints, train_s = train_with_marks(data, run_dir, config, marks)

    records = read_records(run_dir / "metrics.jsonl")
    # a validation between two log lines has no time of its own
    curve = [(r["step"], r.get("time_s"), r["val/accuracy"]) for r in records if "val/accuracy" in r]
    speeds = [r["samples_per_s"] for r in records if "samples_per_s" in r]
    evaluations = {}
    for label, checkpoint in checkpoints.items():
        log(f"evaluating the weights at {label} min")
        result = evaluate(checkpoint, data, EvalSyncNetConfig(batch_size=64), out=run_dir / f"eval-{label}min.json")
        evaluations[label] = {k: v for k, v in result.items() if k not in ("per_clip", "written_to", "model", "data")}
        evaluations[label]["step"] = _checkpoint_step(checkpoint)
    accuracy_at = {label: e["accuracy"] for label, e in evaluations.items()}
    reached = next((label for label, acc in accuracy_at.items() if acc >= args.target), None)
    return {
        "overrides": overrides,
        "lr": config.train.lr, "batch_size": config.train.batch_size, "logit_scale": config.loss.logit_scale,
        "accuracy_at_minutes": accuracy_at,
        "reached_target": reached is not None,
        "target_reached_by_minutes": float(reached) if reached else None,
        "roc_auc_at_minutes": {label: e["roc_auc"] for label, e in evaluations.items()},
        "offset_accuracy_at_minutes": {label: e["offset_accuracy"] for label, e in evaluations.items()},
        "steps": summary.get("steps"),
        "train_minutes": round(train_s / 60, 2),
        "median_samples_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
        "chance_plateaus": summary.get("chance_plateaus", []),
        "trainer_val_best": max((acc for _, _, acc in curve), default=None),
        "trainer_val_curve": [{"step": s, "minutes": round(t / 60, 2) if t is not None else None, "accuracy": round(a, 4)}
                              for s, t, a in curve],
        "evaluation": evaluations,
    }


def _checkpoint_step(checkpoint: Path) -> int:
    from lsync.training.checkpointing import load_training_state

    return int(load_training_state(checkpoint)["step"])


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from lsync.console import configure
    from lsync.manifest import read_manifest, read_records

    configure(quiet=True)
    data, prep = prepare_data(args.work, args.clips, args.seconds, args.seed)
    clips = read_records(data / "clips.jsonl")
    result = {
        "schema": "lsync.benchmark.syncnet_synthetic_accuracy/2",
        "settings": {"minutes": args.minutes, "marks": parse_marks(args.marks, args.minutes), "target": args.target,
                     "threads": args.threads, "clips": args.clips, "seconds": args.seconds, "seed": args.seed,
                     "preset": args.preset, "overrides": args.overrides, "ablation": args.ablation},
        "data": {"train_clips": sum(c["split"] == "train" for c in clips),
                 "val_clips": sum(c["split"] == "val" for c in clips), **prep,
                 "resolution": read_manifest(data, kind="data")["summary"]["resolution"]},
    }
    if args.ablation:
        rows, removed = [], set()
        for change, undone in CHANGES:
            removed |= set(undone)
            overrides = [o for o in BEFORE if o not in removed] + args.overrides
            row = run_once(args, data, args.work / f"run-{len(rows)}", overrides)
            rows.append({"change": change, **row})
            log(f"{change}: {row['accuracy_at_minutes']}")
        result["rows"] = [{k: v for k, v in row.items() if k not in ("trainer_val_curve", "evaluation")}
                          for row in rows]
        result["details"] = rows
    else:
        result.update(run_once(args, data, args.work / "run", args.overrides))
    result["load_average_1min"] = load_average()
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
