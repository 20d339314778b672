"""``lsync train syncnet data/ runs/sync``: train (or fine-tune) the StableSyncNet sync expert.

The run directory is a manifest directory of kind ``syncnet-run``::

    config.yaml                 the resolved config, written at the start (a resume must match it)
    metrics.jsonl, metrics.png  learning curves (train loss/accuracy, validation loss/accuracy, lr, grad norm)
    checkpoints/step-000500/    model.safetensors + config.json + everything needed to resume exactly
    lsync.json                  written when the run finishes (inputs: the data directory; summary: final metrics)

The model, its input size and the optimisation come from a preset in ``configs/syncnet/`` (``16_pixel_attn`` is
the released geometry); the config sections, model and loss step are :mod:`lsync.training.syncnet_recipe`'s
(re-exported here: ``TrainSyncNetConfig`` is this stage's config); the loop is the shared
:class:`lsync.training.loop.Trainer`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from lsync.console import get_logger
from lsync.manifest import describe_input
from lsync.training.plateau import ChancePlateau
from lsync.training.run_dir import fit_and_record, prepare_run_dir
from lsync.training.syncnet_recipe import (
    NUM_FRAMES,
    TrainSyncNetConfig,
    build_model,
    evaluate_pairs,
    load_init_weights,
    roc_auc,
    syncnet_group_step,
    syncnet_step,
)

log = get_logger(__name__)

RUN_KIND = "syncnet-run"
def plateau_hints(config: TrainSyncNetConfig) -> list[str]:
    """What to try when the run sits at chance, given its own settings."""
    hints = []
    if config.loss.logit_scale is None:
        hints.append("a logit scale on the cosine (--set loss.logit_scale=10: BCE on the raw cosine has tiny "
                     "gradients)")
    hints.append(f"a larger learning rate (--set train.lr={config.train.lr * 10:g}; small data sets need far more "
                 "than the reference's 1e-5)")
    if config.data.other_clip_negatives > 0:
        hints.append("negatives from the clip's own audio only (--set data.other_clip_negatives=0: a shift of the "
                     "audio is what the model must learn to see; with half from other clips 10 clips stalled)")
    if config.data.group_size == 1:
        hints.append("in-group negatives (--set data.group_size=8 --set train.batch_size=4: every window of a "
                     "group scored against every audio window of the group)")
    if config.train.warmup_steps == 0:
        hints.append("a warm-up (--set train.warmup_steps=100)")
    hints.append("more clips, or checking that they are in sync and the mouth is visible (lsync eval sync, "
                 "lsync filter sync)")
    return hints


# ----------------------------------------------------------------------------------------------- the stage
def run(data_dir: str | Path, run_dir: str | Path, config: TrainSyncNetConfig, resume: str | None = "auto",
        on_step_end=None) -> dict[str, Any] | None:
    """Train a SyncNet on ``data_dir`` into ``run_dir``; returns the summary written to ``lsync.json`` (``None``
    on the other processes of a distributed run).

    ``resume``: ``"auto"`` continues from the run's latest checkpoint if there is one, ``None``/``"never"``
    starts fresh (refused if the run has checkpoints), anything else is a checkpoint directory.
    Ctrl-C stops after the current step with a checkpoint and raises ``KeyboardInterrupt``.
    """
    from lsync.data.syncnet_dataset import (
        SyncNetDataset,
        SyncNetGroupDataset,
        evaluation_keys,
        load_clips,
        read_clip_records,
    )
    from lsync.training.accelerate_setup import make_accelerator
    from lsync.training.loop import Trainer
    from lsync.training.seeding import seed_everything

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    train_records = read_clip_records(data_dir, "train")  # wrong kind / empty directory: one-line errors
    val_records = _val_records(data_dir)
    accelerator = make_accelerator(config.train.mixed_precision, cpu=config.train.cpu)
    resume_from = prepare_run_dir(run_dir, config, resume, accelerator.is_main_process,
                                  ignore=("init", "data.cache_dir"))

    seed_everything(config.train.seed)
    model, towers = build_model(config.model)
    if config.init is not None and resume_from is None:
        load_init_weights(model, config.init)

    # The main process decodes missing clips into the cache; the others then read the finished entries.
    cache_root = config.data.cache_dir
    with accelerator.main_process_first():
        train_clips = load_clips(data_dir, train_records, config.model.image_size, cache_root,
                                 show_progress=accelerator.is_main_process)
        val_clips = load_clips(data_dir, val_records, config.model.image_size, cache_root,
                               show_progress=accelerator.is_main_process) if val_records else []
    d = config.data
    dataset_args = dict(num_frames=NUM_FRAMES, min_offset=d.min_offset, other_clip_negatives=d.other_clip_negatives,
                        positive_fraction=d.positive_fraction)
    if d.group_size > 1:  # validation stays on single pairs: the measure every recipe is compared by
        train_set = SyncNetGroupDataset(train_clips, config.train.seed, d.group_size, num_frames=NUM_FRAMES,
                                        min_offset=d.min_offset, window_stride=d.window_stride)
        step = partial(syncnet_group_step, min_offset=d.min_offset, logit_scale=config.loss.logit_scale)
    else:
        train_set = SyncNetDataset(train_clips, config.train.seed, window_stride=d.window_stride, **dataset_args)
        step = partial(syncnet_step, logit_scale=config.loss.logit_scale)
    validate = None
    if val_clips:
        val_set = SyncNetDataset(val_clips, config.train.seed + 1, **dataset_args)
        val_keys = evaluation_keys(val_set, d.val_samples)

        def validate(bare_model):
            result = evaluate_pairs(bare_model, val_set, val_keys, config.train.batch_size, accelerator.device,
                                    logit_scale=config.loss.logit_scale)
            auc = roc_auc(result["similarity"].numpy(), result["label"].numpy())
            warning = plateau.update(trainer.step, result["accuracy"], auc, result["loss"])
            if warning:
                log.warning("syncnet: %s", warning)
            return {"loss": result["loss"], "accuracy": result["accuracy"], "roc_auc": auc}

    plateau = ChancePlateau(config.plateau.steps, config.plateau.band, plateau_hints(config))
    trainer = Trainer(run_dir, model, towers, config.train, train_set, step, validate_fn=validate,
                      accelerator=accelerator, description="syncnet", on_step_end=on_step_end)

    def add_plateaus(summary: dict[str, Any]) -> None:  # lsync.json keeps every stretch of validation at chance
        if plateau.reports:
            summary["chance_plateaus"] = plateau.reports

    about = f"{len(train_clips)} train clips ({len(train_set)} windows), {len(val_clips)} val clips"
    return fit_and_record(trainer, resume_from, about, RUN_KIND, config, lambda: [describe_input(data_dir)],
                          finish=add_plateaus)


def _val_records(data_dir: Path) -> list[dict[str, Any]]:
    from lsync.data.syncnet_dataset import read_clip_records

    records = [r for r in read_clip_records(data_dir, None) if r.get("split") == "val"]
    if not records:
        log.warning("%s has no 'val' clips: training runs without validation", data_dir)
    return records
