"""``lsync eval``: measure trained models (``syncnet`` here)."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.cli_options import CONTEXT, verbosity_options


@click.group("eval", context_settings=CONTEXT)
def evaluate() -> None:
    """Evaluate trained models on a data directory."""


@evaluate.command("syncnet", context_settings=CONTEXT)
@click.argument("model", type=click.Path(path_type=Path), metavar="RUN_OR_CKPT")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--split", default="val", show_default=True, help="Which clips of the data directory.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file to write (default: eval-syncnet-<split>.json in the run directory).")
@click.option("--pairs", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Balanced positive/negative pairs for accuracy and ROC AUC.")
@click.option("--max-offset", type=click.IntRange(min=1), default=15, show_default=True,
              help="Frames searched on each side for the offset accuracy.")
@click.option("--offset-stride", type=click.IntRange(min=1), default=4, show_default=True,
              help="Frames between the video windows of the offset search.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--image-size", type=click.IntRange(min=2), help="Face size (default: the run's).")
@click.option("--geometry", default="syncnet_16_pixel_attn", show_default=True,
              help="Towers of a bare weights file such as stable_syncnet.pt (configs/models/<name>.yaml).")
@click.option("--cpu", is_flag=True, help="Evaluate on the CPU even with a GPU.")
@verbosity_options
def syncnet(model: Path, data_dir: Path, split: str, out: Path | None, pairs: int, max_offset: int,
            offset_stride: int, batch_size: int, image_size: int | None, geometry: str, cpu: bool) -> None:
    """Accuracy, ROC AUC and offset accuracy of a SyncNet (a run, a checkpoint or stable_syncnet.pt)."""
    from rich.table import Table

    from lsync.console import result_console, say
    from lsync.stages.eval_syncnet import EvalSyncNetConfig
    from lsync.stages.eval_syncnet import evaluate as evaluate_syncnet

    config = EvalSyncNetConfig(split=split, batch_size=batch_size, pairs=pairs, max_offset=max_offset,
                               offset_stride=offset_stride, image_size=image_size, geometry=geometry, cpu=cpu)
    result = evaluate_syncnet(model, data_dir, config, out)
    table = Table(title=f"{result['model']} on {data_dir} ({split})", title_justify="left")
    rows = [("accuracy", result["accuracy"], f"{result['pairs']} pairs"),
            ("roc_auc", result["roc_auc"], "threshold-free"),
            ("offset_accuracy", result["offset_accuracy"], f"best of +/-{max_offset} frames is 0"),
            ("offset_accuracy_within_1", result["offset_accuracy_within_1"], f"{result['offset_windows']} windows"),
            ("mean_abs_offset", result["mean_abs_offset"], "frames")]
    for column in ("metric", "value", "over"):
        table.add_column(column)
    for name, value, note in rows:
        table.add_row(name, "-" if value is None else f"{value:.4f}", note)
    result_console.print(table)
    say(f"written to {result['written_to']}")
