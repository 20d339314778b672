"""``lsync eval``: measure trained models (``syncnet`` here)."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.cli_options import CONTEXT, face_options, syncnet_options, verbosity_options


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
@syncnet_options
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


# ----------------------------------------------------------------------------------------------- sync
def _metric_options(func):
    func = click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")(func)
    func = click.option("--device", help="cpu, cuda, cuda:1 ...  [default: cuda when present].")(func)
    func = syncnet_options(func)
    func = click.option("--max-offset", type=click.IntRange(min=1), default=15, show_default=True,
                        help="Frames searched on each side.")(func)
    func = click.option("--metric", type=click.Choice(["stable", "syncnet-v2"]), default="stable", show_default=True,
                        help="stable: LatentSync's SyncNet, distance 1 - cos; syncnet-v2: the classic SyncNet "
                             "(syncnet_v2.model), paper-comparable LSE-C/LSE-D.")(func)
    return func


@evaluate.command("sync", context_settings=CONTEXT)
@click.argument("inputs", type=click.Path(path_type=Path), metavar="VIDEO_OR_DIR")
@click.option("--syncnet", required=True, metavar="RUN_OR_CKPT",
              help="A `lsync train syncnet` run, a checkpoint dir, stable_syncnet.pt, or syncnet_v2.model "
                   "(also what --face-select speaker scores faces with).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.json and lsync.json (kind eval).")
@click.option("--split", help="Data directories: only this split (default: all clips).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout instead of a table.")
@_metric_options
@face_options(syncnet=False)
@verbosity_options
def sync(inputs: Path, syncnet: str, out: Path | None, split: str | None, as_json: bool, metric: str,
         max_offset: int, batch_size: int, image_size: int | None, geometry: str, device: str | None,
         threads: int | None, **face) -> None:
    """Audio-visual offset, LSE-D and LSE-C of videos (a file, a folder, or a data directory's clips).

    \b
    offset +K = the audio is K frames late (as `lsync synth --av-offset K`).
    Faces of raw videos are detected, tracked and aligned as inference does.
    """
    from lsync.stages.eval_sync import EvalSyncConfig
    from lsync.stages.eval_sync import evaluate as evaluate_sync

    # --face-select speaker picks faces with the SyncNet that scores them
    config = EvalSyncConfig(metric=metric, max_offset=max_offset, split=split, batch_size=batch_size,
                            image_size=image_size, geometry=geometry, device=device, threads=threads,
                            syncnet=syncnet, speaker_metric=metric,
                            **{key: value for key, value in face.items() if value is not None})
    result = evaluate_sync(inputs, syncnet, config, out)
    _show(result, as_json, f"sync of {inputs} ({metric}: {result['summary']['distance']})",
          [("offset", "offset", "d"), ("LSE-D", "lse_d", ".4f"), ("LSE-C", "lse_c", ".4f"),
           ("windows", "windows", "d")])


# ----------------------------------------------------------------------------------------------- mouth
@evaluate.command("mouth", context_settings=CONTEXT)
@click.argument("inputs", type=click.Path(path_type=Path), metavar="VIDEO_OR_DIR")
@click.option("--audio", type=click.Path(dir_okay=False, path_type=Path),
              help="A single video: the audio that drives it (default: its own audio track).")
@click.option("--source", type=click.Path(dir_okay=False, path_type=Path),
              help="A single video: the source video (or its audio) whose own sound gives r_source.")
@click.option("--max-lag", type=click.IntRange(min=0), default=3, show_default=True,
              help="Frames tried on each side.")
@click.option("--static", is_flag=True, help="FaceMesh detects on every frame instead of tracking.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.json (with the per-frame series) and lsync.json (kind eval).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout instead of a table.")
@verbosity_options
def mouth(inputs: Path, audio: Path | None, source: Path | None, max_lag: int, static: bool, out: Path | None,
          as_json: bool) -> None:
    """How well the mouth follows the driving audio: r_drive, r_source and the share of frames with a face.

    \b
    Per frame: the face-mesh inner-lip gap (landmarks 13-14) / face height (10-152) against the RMS of the
    frame's 640 samples of 16 kHz audio; r = the best Pearson correlation over lags -max-lag..max-lag.
    VIDEO_OR_DIR: an lsync infer output folder (driving audio and source recorded there), or one video.
    """
    from lsync.stages.eval_mouth import EvalMouthConfig
    from lsync.stages.eval_mouth import evaluate as evaluate_mouth

    result = evaluate_mouth(inputs, EvalMouthConfig(max_lag=max_lag, static=static), out, audio=audio, source=source)
    if as_json:
        for row in result["rows"]:
            row.pop("series", None)
    _show(result, as_json, f"mouth of {inputs} (lip gap vs loudness, best of lags -{max_lag}..{max_lag})",
          [("face", "face_share", ".3f"), ("r_drive", "r_drive", ".3f"), ("lag", "lag_drive", "d"),
           ("r_source", "r_source", ".3f"), ("margin", "margin", ".3f")])


# ----------------------------------------------------------------------------------------------- recon
@evaluate.command("recon", context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--unet", required=True, help="A U-Net training run, a checkpoint dir, or a released-format .pt.")
@click.option("--preset", type=click.Choice(["latentsync-1.5", "latentsync-1.6", "tiny"]), default="latentsync-1.5",
              show_default=True, help="Where the VAE and Whisper come from (and the face size).")
@click.option("--weights-dir", type=click.Path(file_okay=False), help="Folder searched first for released weights.")
@click.option("--split", default="val", show_default=True)
@click.option("--max-clips", type=click.IntRange(min=1), help="Only the first N clips.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Only the first N frames of each clip.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True, help="DDIM steps.")
@click.option("--guidance", type=float, default=1.5, show_default=True, help="Classifier-free guidance scale.")
@click.option("--seed", type=int, default=1247, show_default=True)
@click.option("--syncnet", metavar="RUN_OR_CKPT", help="Also score the sync of the results with this SyncNet.")
@click.option("--metric", type=click.Choice(["stable", "syncnet-v2"]), default="stable", show_default=True,
              help="Which SyncNet --syncnet is.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.json and lsync.json (kind eval).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout instead of a table.")
@click.option("--device", help="cpu, cuda, cuda:1 ...  [default: cuda when present].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto",
              show_default=True, help="Model precision (auto: bf16/fp16 on CUDA, float32 on CPU).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@verbosity_options
def recon(data_dir: Path, unet: str, preset: str, weights_dir: str | None, split: str, max_clips: int | None,
          max_frames: int | None, steps: int, guidance: float, seed: int, syncnet: str | None, metric: str,
          out: Path | None, as_json: bool, device: str | None, dtype: str, threads: int | None) -> None:
    """Regenerate held-out clips from their own audio: LPIPS, PSNR, SSIM over the mouth (+ sync with --syncnet)."""
    from lsync.console import say
    from lsync.stages.eval_recon import EvalReconConfig
    from lsync.stages.eval_recon import evaluate as evaluate_recon

    config = EvalReconConfig(unet=unet, preset=preset, weights_dir=weights_dir, split=split, steps=steps,
                             guidance=guidance, seed=seed, max_clips=max_clips, max_frames=max_frames,
                             syncnet=syncnet, sync_metric=metric, device=device, dtype=dtype, threads=threads)
    result = evaluate_recon(data_dir, config, out)
    columns = [("LPIPS", "lpips", ".4f"), ("PSNR", "psnr", ".2f"), ("SSIM", "ssim", ".4f")]
    if syncnet:
        columns += [("sync offset", "sync_offset", "d"), ("LSE-C", "sync_lse_c", ".4f"),
                    ("real LSE-C", "real_sync_lse_c", ".4f")]
    _show(result, as_json, f"reconstruction of {data_dir} ({split})", columns)
    if result["summary"]["lpips_note"]:
        say(f"[yellow]note:[/] {result['summary']['lpips_note']}")


def _show(result: dict, as_json: bool, title: str, columns: list[tuple[str, str, str]]) -> None:
    """The rows and their average as a table on stdout (or the whole result as JSON)."""
    import json

    from rich.table import Table

    from lsync.console import result_console, say

    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    table = Table(title=title, title_justify="left")
    table.add_column("video")
    table.add_column("frames", justify="right")
    for header, _, _ in columns:
        table.add_column(header, justify="right")

    def cell(value, fmt: str) -> str:
        if value is None:
            return "-"
        return format(round(value) if fmt == "d" else value, fmt)

    for row in result["rows"]:
        if "error" in row:
            table.add_row(row.get("video", "?"), "-", *(["-"] * len(columns)), style="red")
            continue
        table.add_row(str(row.get("id") or row["video"]), str(row.get("frames", "-")),
                      *(cell(row.get(key), fmt) for _, key, fmt in columns))
    summary = result["summary"]
    table.add_section()
    table.add_row("mean", "", *(cell(summary.get(key), ".4f" if fmt == "d" else fmt) for _, key, fmt in columns),
                  style="bold")
    result_console.print(table)
    if result.get("written_to"):
        say(f"written to {result['written_to']}")
