"""``lsync filter``: keep the clips of a data directory that pass a check (``sync`` here)."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.cli_options import CONTEXT, syncnet_options, verbosity_options


@click.group("filter", context_settings=CONTEXT)
def filter_group() -> None:
    """Filter a data directory into a new one."""


@filter_group.command("sync", context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--syncnet", required=True, metavar="RUN_OR_CKPT",
              help="A `lsync train syncnet` run, a checkpoint dir, stable_syncnet.pt, or syncnet_v2.model.")
@click.option("--metric", type=click.Choice(["stable", "syncnet-v2"]), default="stable", show_default=True,
              help="Which SyncNet --syncnet is.")
@click.option("--min-conf", type=float,
              help="Keep clips with at least this confidence (LSE-C). Default: 3 with syncnet-v2 (the LatentSync "
                   "recipe); 0.4 with stable, whose 1 - cos scale is smaller (a tiny synthetic-data SyncNet gives "
                   "0.6-0.77 in sync, 0.1-0.3 for unrelated audio).")
@click.option("--max-offset", type=click.IntRange(min=0), default=6, show_default=True,
              help="Keep clips whose audio is at most this many frames off (it is then shifted to 0).")
@click.option("--search-offset", type=click.IntRange(min=1), default=15, show_default=True,
              help="Frames searched on each side.")
@syncnet_options
@click.option("--crf", type=click.IntRange(min=0, max=51),
              help="H.264 quality of shifted clips (default: the input's).")
@click.option("--device", help="cpu, cuda, cuda:1 ...  [default: cuda when present].")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--force", is_flag=True, help="Discard outputs made with another config and start over.")
@verbosity_options
def sync(data_dir: Path, out: Path, syncnet: str, force: bool, **flags) -> None:
    """Keep DATA_DIR's clips that are in sync (shifting their audio to offset 0) in a new data directory OUT."""
    from rich.table import Table

    from lsync.console import result_console
    from lsync.stages.filter_sync import FilterSyncConfig, run

    summary = run(data_dir, out, FilterSyncConfig(syncnet=syncnet, **flags), force=force)
    table = Table(title=f"{out}", title_justify="left")
    for column in ("kept", "of", "shifted", "offsets", "mean confidence", "min conf", "rejects"):
        table.add_column(column)
    rejects = ", ".join(f"{reason}: {count}" for reason, count in sorted(summary["rejects"].items())) or "none"
    offsets = " ".join(f"{k}:{v}" for k, v in summary["offsets"].items()) or "-"
    confidence = "-" if summary["mean_confidence"] is None else f"{summary['mean_confidence']:.3f}"
    table.add_row(str(summary["clips"]), str(summary["input_clips"]), str(summary["shifted_clips"]), offsets,
                  confidence, f"{summary['min_conf']:g}", rejects)
    result_console.print(table)
