"""The ``lsync`` command line: one short function per command.

Heavy libraries (torch, mediapipe, diffusers) are imported inside the commands so that ``lsync --help``
answers instantly. Errors from the package (:mod:`lsync.errors`) and from click are rendered as a single line,
``lsync: error: <what>, <fix>``, with exit code 2 for bad usage or input and 1 for failures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lsync import __version__
from lsync.cli_options import CONTEXT, config_options, face_options, verbosity_options
from lsync.console import configure, console, is_verbose, result_console, say
from lsync.errors import LsyncError

# ----------------------------------------------------------------------------------------------- group
@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="lsync")
@verbosity_options
def cli() -> None:
    """lsync: audio-driven lip-sync in the LatentSync style.

    \b
    Stages (each reads a manifest directory and writes one):
      lsync preprocess raw/ data/          probe, 25 fps / 16 kHz, shots, clips, faces, alignment
      lsync train syncnet data/ runs/sync  audio-visual sync expert
      lsync train unet data/ runs/unet     latent-diffusion U-Net
      lsync infer video.mp4 audio.wav      lip-synced video out

    \b
    Everything at once, offline, on a CPU:
      lsync demo                           synthetic data -> trained tiny models -> lip-synced video

    \b
    A web page for lip-syncing (pip install -e '.[app]'):
      lsync app                            http://127.0.0.1:7860: preview a chunk, run, download
    """


# ----------------------------------------------------------------------------------------------- synth
def _rate_range(ctx, param, value: str) -> tuple[float, float]:
    """``"2-4"`` -> (2.0, 4.0); a single number is both ends."""
    low, _, high = value.partition("-")
    try:
        rate = (float(low), float(high or low))
    except ValueError:
        rate = (0.0, 0.0)
    if not 0 < rate[0] <= rate[1]:
        raise click.BadParameter(f"{value!r} is not LOW-HIGH with 0 < LOW <= HIGH (e.g. 2-4)")
    return rate


def _jaw_drop(ctx, param, value: float) -> float:
    """The synthesizer's own check, as a usage error before anything is written."""
    from lsync.synth import check_jaw_drop

    try:
        return check_jaw_drop(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clips", type=click.IntRange(min=1), default=4, show_default=True, help="Number of videos.")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=6.0, show_default=True, help="Length of each.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same decoded frames and samples.")
@click.option("--fps", type=click.IntRange(min=1), default=25, show_default=True, help="Video frame rate.")
@click.option("--av-offset", type=int, default=0, show_default=True,
              help="Shift the audio by whole frames (positive: audio late) to make known out-of-sync clips.")
@click.option("--faces", type=click.IntRange(1, 2), default=1, show_default=True,
              help="2: two faces side by side (random sizes), each with its own speech-like audio.")
@click.option("--speaker", type=click.Choice(["random", "left", "right", "both", "none"]), default="random",
              show_default=True,
              help="With --faces 2: whose speech the soundtrack is (random: left or right per clip; both: mixed; "
                   "none: closed mouths, an off-screen voice). Recorded per clip in lsync.json.")
@click.option("--syllable-rate", default="3-6", show_default=True, metavar="LOW-HIGH", callback=_rate_range,
              help="Syllables per second of the speech, drawn per phrase (slower is clearer).")
@click.option("--jaw-drop", type=float, default=10.0, show_default=True, callback=_jaw_drop,
              help="How far the lower lip drops at the loudest syllables (px of the 512 px photo): the lips open "
                   "to ~7 % of the face height with 10, ~15 % with 18.")
@verbosity_options
def synth(out: Path, clips: int, seconds: float, seed: int, fps: int, av_offset: int, faces: int,
          speaker: str, syllable_rate: tuple[float, float], jaw_drop: float) -> None:
    """Write synthetic talking-face videos (offline data for the demo and the tests) into OUT."""
    from lsync.synth import synthesize

    written = synthesize(out, clips=clips, seconds=seconds, seed=seed, fps=fps, av_offset=av_offset, faces=faces,
                         speaker=speaker, syllable_rate=syllable_rate, jaw_drop=jaw_drop)
    say(f"[green]wrote[/] {len(written)} clips to {out}")


# ----------------------------------------------------------------------------------------------- inspect
@cli.command(context_settings=CONTEXT)
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--contact-sheet", type=click.Path(dir_okay=False, path_type=Path),
              help="Data directories: write a PNG grid of aligned frames from random clips.")
@verbosity_options
def inspect(directory: Path, as_json: bool, contact_sheet: Path | None) -> None:
    """Summarise any lsync directory: kind, key config, counts, rejects by reason, metrics."""
    from lsync.summary import contact_sheet as draw_contact_sheet
    from lsync.summary import render_summary, summarize

    summary = summarize(directory)
    if contact_sheet is not None:
        draw_contact_sheet(directory, contact_sheet)
        say(f"contact sheet: {contact_sheet}")
    if as_json:
        import json

        click.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        render_summary(summary)


# ----------------------------------------------------------------------------------------------- preprocess
@cli.command(context_settings=CONTEXT)
@click.argument("inputs", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", default="default", show_default=True, help="configs/preprocess/<name>.yaml or a YAML path.")
@click.option("--resolution", type=click.IntRange(min=64), help="Aligned face size (256; 512 for LatentSync 1.6).")
@click.option("--min-seconds", "min_clip_seconds", type=float, help="Shortest clip.")
@click.option("--max-seconds", "max_clip_seconds", type=float, help="Longest clip.")
@face_options
@click.option("--val-fraction", type=click.FloatRange(0, 1), help="Share of sources in the val split.")
@click.option("--workers", type=click.IntRange(min=1), help="Processes (sources are shared dynamically).")
@click.option("--shard", help="i/n: process the i-th of n deterministic partitions (merge with lsync merge).")
@click.option("--force", is_flag=True, help="Discard outputs made with another config and start over.")
@config_options
@verbosity_options
def preprocess(inputs: Path, out: Path, preset: str, force: bool, config_file: Path | None,
               overrides: tuple[str, ...], **flags) -> None:
    """Turn raw videos (a folder or a text file of paths) into a data directory of aligned clips."""
    from lsync.config import resolve_config
    from lsync.stages.preprocess import PreprocessConfig, run

    config = resolve_config(PreprocessConfig, "preprocess", preset, config_file, flags, overrides)
    summary = run(inputs, out, config, force=force)
    _print_data_summary(out, summary)


@cli.command(context_settings=CONTEXT)
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@verbosity_options
def merge(out: Path, shards: tuple[Path, ...]) -> None:
    """Join the data directories of `preprocess --shard` runs into one."""
    from lsync.stages.merge import merge as merge_shards

    _print_data_summary(out, merge_shards(out, list(shards)))


def _print_data_summary(out: Path, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{out}", title_justify="left")
    for column in ("clips", "hours", "train / val", "sources", "rejects"):
        table.add_column(column)
    rejects = ", ".join(f"{reason}: {count}" for reason, count in sorted(summary["rejects"].items())) or "none"
    splits = summary["splits"]
    table.add_row(str(summary["clips"]), f"{summary['hours']:.3f}", f"{splits.get('train', 0)} / {splits.get('val', 0)}",
                  f"{summary['sources_accepted']} of {summary['sources']}", rejects)
    result_console.print(table)


# ----------------------------------------------------------------------------------------------- weights
@cli.group(context_settings=CONTEXT)
def weights() -> None:
    """Released weights: what each preset needs, where it is, and fetching it."""


WEIGHT_PRESETS = ("tiny", "latentsync-1.5", "latentsync-1.6")
weights_dir_option = click.option(
    "--weights-dir", type=click.Path(file_okay=False, path_type=Path),
    help="Folder searched first (then $LSYNC_WEIGHTS, ~/.cache/lsync, the Hugging Face cache).")


@weights.command("list", context_settings=CONTEXT)
@click.option("--preset", type=click.Choice(WEIGHT_PRESETS), help="Only this preset (default: all).")
@weights_dir_option
@click.option("--no-checksum", is_flag=True, help="Skip hashing found files.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON on stdout.")
@verbosity_options
def weights_list(preset: str | None, weights_dir: Path | None, no_checksum: bool, as_json: bool) -> None:
    """Show every file a preset needs, where it is looked for, found or missing, and its checksum."""
    from rich.table import Table

    from lsync.weights import weight_status

    rows = [row for name in ([preset] if preset else WEIGHT_PRESETS)
            for row in weight_status(name, weights_dir, checksums=not no_checksum)]
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="weights", title_justify="left")
    for column in ("preset", "role", "needed for", "status", "path", "sha256"):
        table.add_column(column)
    for name in [preset] if preset else WEIGHT_PRESETS:
        if not any(r["preset"] == name for r in rows):
            table.add_row(name, "-", "-", "[green]ready[/]", "random init, no files", "")
    for r in rows:
        status = "[green]found[/]" if r["found"] else "[red]missing[/]"
        table.add_row(r["preset"], r["role"], r["needed_for"], status, r["path"], (r["sha256"] or "")[7:23])
    result_console.print(table)


@weights.command("fetch", context_settings=CONTEXT)
@click.option("--preset", type=click.Choice(WEIGHT_PRESETS), required=True)
@weights_dir_option
@click.option("--for", "need", type=click.Choice(["inference", "training", "both"]), default="both", show_default=True)
@verbosity_options
def weights_fetch(preset: str, weights_dir: Path | None, need: str) -> None:
    """Download a preset's missing files from the Hugging Face hub (needs network access)."""
    from lsync.weights import fetch

    fetched = fetch(preset, weights_dir, need=need)
    say(f"[green]{len(fetched)} file(s) fetched[/] for {preset}" if fetched else f"{preset}: nothing to fetch")


# ----------------------------------------------------------------------------------------------- later stages
def _register_commands() -> None:
    from lsync.commands.app import app
    from lsync.commands.demo import demo
    from lsync.commands.evaluate import evaluate
    from lsync.commands.filter import filter_group
    from lsync.commands.infer import infer
    from lsync.commands.pipeline import pipeline
    from lsync.commands.train import train

    for command in (train, evaluate, filter_group, infer, pipeline, demo, app):
        cli.add_command(command)


_register_commands()


# ----------------------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the group and turn every error into one line and an exit code."""
    configure()
    try:
        result = cli.main(args=argv, prog_name="lsync", standalone_mode=False)
    except LsyncError as exc:
        _fail(exc.message, exc.exit_code, exc)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        _fail("interrupted; rerun the same command to resume", 130, exc)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f", see '{exc.ctx.command_path} --help'"
        _fail(f"{exc.format_message().rstrip('.')}{hint}", exc.exit_code, None)
    except OSError as exc:
        _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1, exc)
    except Exception as exc:  # a bug, not bad input: still one line, the traceback with --verbose
        _fail(f"unexpected {type(exc).__name__}: {exc}, rerun with --verbose for the traceback and report it", 1, exc)
    # Without standalone mode click returns the exit code of --help/--version, or the command's value.
    sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int, exc: BaseException | None) -> None:
    if exc is not None and is_verbose():
        console.print_exception()
    message = " ".join(str(message).split())  # one line, always
    click.echo(f"lsync: error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
