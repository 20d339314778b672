"""``lsync infer VIDEO AUDIO`` (or ``--pairs pairs.csv``): lip-synced videos out."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.cli_options import CONTEXT, config_options, face_options, verbosity_options


@click.command("infer", context_settings=CONTEXT)
@click.argument("video", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.argument("audio", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pairs", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of video,audio[,output name] rows, run with one set of loaded models.")
@click.option("--from-data", type=click.Path(file_okay=False, path_type=Path),
              help="Held-out check: source videos of --count clips of --split of a data directory, each driven by "
                   "the audio of another source's clip, the one whose loudness is least like the source's own.")
@click.option("--split", default="val", show_default=True, help="With --from-data: which clips.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="With --from-data: how many.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("lsync-out"),
              show_default=True, help="Gets <video-stem>.mp4 and lsync.json.")
@click.option("--name", help="Output file name (single run; default <video-stem>.mp4).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output of the same name.")
@click.option("--preset", type=click.Choice(["latentsync-1.5", "latentsync-1.6", "tiny"]),
              help="Models  [default: latentsync-1.5].")
@click.option("--unet", help="Our own U-Net: a training run dir, a checkpoint dir, or a released-format .pt.")
@click.option("--vae", help="Our own VAE: an lsync train vae run or a diffusers folder (default: the one the U-Net "
                           "was trained with, else the preset's).")
@click.option("--weights-dir", type=click.Path(file_okay=False), help="Folder searched first for released weights.")
@click.option("--steps", type=click.IntRange(min=1), help="DDIM steps  [default: 20].")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (1 disables)  [default: 1.5].")
@click.option("--seed", type=int, help="Initial noise  [default: 1247].")
@click.option("--loop", type=click.Choice(["pingpong", "bounce", "loop", "hold"]),
              help="Audio longer than the video: frames play forward-backward (pingpong shows the turning frames "
                   "twice like LatentSync, bounce does not), loop, or hold the last  [default: pingpong].")
@click.option("--faces", type=click.Path(dir_okay=False),
              help="Face track instead of detection: a file written by --save-faces, or a (frames, 3, 2) .npy/.npz "
                   "array of brow, brow, nose (x, y) per source frame (NaN rows: no face).")
@click.option("--save-faces", type=click.Path(dir_okay=False),
              help="Write the face track (points, boxes, found/interpolated/missing, video digest) to this .npz.")
@click.option("--face-cache", metavar="DIR|auto|off",
              help="Cache of face tracks by video digest and detector settings, so another audio on the same video "
                   "skips detection  [default: auto = ~/.cache/lsync/face-tracks].")
@click.option("--list-faces", is_flag=True,
              help="Only list VIDEO's face tracks (id, frames, mean box) for --face-select track:N, and write a "
                   "contact sheet <out-dir>/<video-stem>.faces.png; no AUDIO needed.")
@click.option("--mask", type=click.Path(dir_okay=False),
              help="Mask PNG of the aligned face (white keep, black repaint), resized to the model's size "
                   "[default: the LatentSync shape].")
@click.option("--codec", type=click.Choice(["h264", "h265", "ffv1", "prores"]),
              help="Output codec: h264/h265 (.mp4), ffv1 (lossless RGB, .mkv), prores (422 HQ, .mov)  "
                   "[default: h264].")
@click.option("--cache-interval", type=click.IntRange(min=1),
              help="Reuse the deep U-Net features for this many steps (DeepCache; 1 = off)  [default: 1].")
@click.option("--compile", "compile_unet", is_flag=True, default=None, help="torch.compile the U-Net.")
@click.option("--device", help="cpu, cuda, cuda:1 ...  [default: cuda when present].")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]),
              help="Model precision (auto: bf16/fp16 on CUDA; bf16 on CPUs with AMX or AVX512-BF16, else float32; "
                   "float32 is the exact path).")
@click.option("--scheduler", type=click.Choice(["ddim", "dpm++"]),
              help="Sampler: LatentSync's DDIM, or multistep DPM-Solver++ (as good in fewer steps)  [default: ddim].")
@click.option("--frame-strip", is_flag=True, default=None,
              help="Also write <name>.strip.png: input face, mask, generated face, blended frame.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@face_options
@config_options
@verbosity_options
def infer(video: Path | None, audio: Path | None, pairs: Path | None, from_data: Path | None, split: str, count: int,
          out_dir: Path, name: str | None,
          overwrite: bool, config_file: Path | None, overrides: tuple[str, ...], compile_unet: bool | None,
          list_faces: bool, **flags) -> None:
    """Lip-sync VIDEO to AUDIO (any file with an audio stream); the output lasts as long as the audio."""
    from lsync.config import resolve_config
    from lsync.errors import UsageError
    from lsync.stages.infer import InferConfig, pairs_from_data, read_pairs, run, run_pairs

    if list_faces:
        if video is None or audio is not None or pairs is not None or from_data is not None:
            raise UsageError("--list-faces takes one VIDEO and nothing else", "run lsync infer --list-faces VIDEO")
        flags["compile"] = compile_unet
        _list_faces(video, out_dir, resolve_config(InferConfig, None, None, config_file, flags, overrides))
        return

    sources = (video is not None or audio is not None, pairs is not None, from_data is not None)
    if sum(sources) > 1:
        raise UsageError("pass one of VIDEO AUDIO, --pairs or --from-data", "see 'lsync infer --help'")
    if pairs is None and from_data is None and (video is None or audio is None):
        raise UsageError("missing VIDEO and AUDIO", "pass both, or --pairs pairs.csv, or --from-data DATA_DIR")
    if name is not None and (pairs is not None or from_data is not None):
        raise UsageError("--name is for a single run", "put output names in the third column of the pairs CSV")
    flags["compile"] = compile_unet
    config = resolve_config(InferConfig, None, None, config_file, flags, overrides)
    if pairs is not None or from_data is not None:
        if config.save_faces:
            raise UsageError("--save-faces is for a single run", "the track cache keeps every video's track")
        batch = (read_pairs(pairs, config.codec) if pairs is not None
                 else pairs_from_data(from_data, split, count, config.codec))
        run_pairs(batch, out_dir, config, overwrite=overwrite)
    else:
        run(video, audio, out_dir, config, name=name, overwrite=overwrite)


def _list_faces(video: Path, out_dir: Path, config) -> None:
    """Print VIDEO's face tracks and write the contact sheet."""
    from rich.table import Table

    from lsync.console import result_console, say
    from lsync.errors import InputError
    from lsync.face_select import list_faces

    if not video.is_file():
        raise InputError(f"video file {video} does not exist", "check the path")
    sheet = out_dir / f"{video.stem}.faces.png"
    tracks = list_faces(video, config, sheet)
    table = Table(title=f"{video}: {len(tracks)} face track{'s' * (len(tracks) != 1)}", title_justify="left")
    for column in ("id", "frames", "detected", "mean box (x0, y0, x1, y1)"):
        table.add_column(column)
    for track in tracks:
        table.add_row(str(track["id"]), f"{track['start']}-{track['end'] - 1} ({track['frames']})",
                      str(track["detected_frames"]), ", ".join(f"{v:.0f}" for v in track["mean_box"]))
    result_console.print(table)
    say(f"contact sheet: {sheet}  (pick one with --face-select track:N)")
