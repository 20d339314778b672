"""Options shared by every ``lsync`` command (kept apart from :mod:`lsync.cli` so that command modules
in :mod:`lsync.commands` can use them without importing the group)."""

from __future__ import annotations

from pathlib import Path

import click

from lsync.console import configure

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


# ----------------------------------------------------------------------------------------------- shared options
def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # The flag may come before or after the command name; either turns it on for the whole run.
    if value:
        flags = ctx.find_root().ensure_object(dict)
        flags[param.name] = True
        configure(quiet=flags.get("quiet", False), verbose=flags.get("verbose", False))
    return value


def verbosity_options(func):
    """``-q/--quiet`` and ``-v/--verbose``, accepted on the group and on every command."""
    func = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_verbosity,
                        help="Show debug logs and tracebacks.")(func)
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity,
                        help="No progress bars, warnings and errors only.")(func)
    return func


def face_options(func=None, *, syncnet: bool = True):
    """The face flags of every stage that finds faces (``preprocess``, ``infer``, ``eval sync``): the keys of
    :class:`lsync.face.config.FaceConfig`. A flag left out keeps the stage's value (preset, ``--config``, ``--set``).

    Use as ``@face_options``, or ``@face_options(syncnet=False)`` in a command whose own ``--syncnet`` also serves
    ``--face-select speaker`` (``eval sync``: one flag, not two of the same name).
    """
    if func is None:
        return lambda f: face_options(f, syncnet=syncnet)
    options = [
        click.option("--detector", type=click.Choice(["mediapipe", "insightface"]),
                     help="Face detector  [default: mediapipe]."),
        click.option("--detector-models", type=click.Path(file_okay=False),
                     help="InsightFace model pack folder (buffalo_l)."),
        click.option("--face-select", metavar="RULE",
                     help="Which face to follow: largest, center, speaker (the face in sync with the video's own "
                          "audio, per shot; needs --syncnet), X,Y (the face whose box holds that pixel where it first "
                          "appears) or track:N (a track of lsync infer --list-faces)  [default: largest]."),
        click.option("--max-faces", type=click.IntRange(min=1), help="Faces detected per frame  [default: 4]."),
        click.option("--min-face", type=click.IntRange(min=1), help="Ignore faces smaller than this (px)."),
        click.option("--max-gap", type=click.IntRange(min=0), help="Interpolate up to this many face-less frames."),
        click.option("--smooth-method", type=click.Choice(["gaussian", "savgol", "one_euro", "none"]),
                     help="Landmark smoothing over time  [default: gaussian]."),
        click.option("--smooth-strength", type=click.FloatRange(min=0),
                     help="Width of that smoothing in frames (gaussian sigma, savgol half-window)  [default: 1]. "
                          "Wider also removes the jitter the mouth's motion puts into the face mesh's other "
                          "landmarks, which the alignment would otherwise carry into the unmasked face."),
    ]
    if syncnet:
        options.insert(3, click.option("--syncnet", help="--face-select speaker: a SyncNet run, checkpoint dir or "
                                                         "stable_syncnet.pt."))
    for option in reversed(options):
        func = option(func)
    return func


def syncnet_options(func):
    """How a command that scores with a SyncNet runs it (``eval syncnet``, ``eval sync``, ``filter sync``): the
    batch size, and the face size and towers of a bare weights file that does not record them."""
    options = [
        click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--image-size", type=click.IntRange(min=2), help="StableSyncNet face size (default: the run's)."),
        click.option("--geometry", default="syncnet_16_pixel_attn", show_default=True,
                     help="Towers of a bare weights file such as stable_syncnet.pt (configs/models/<name>.yaml)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def config_options(func):
    """``--config FILE`` and repeatable ``--set key=value`` for stage commands."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override any config key (dotted for sections), e.g. --set resolution=512.")(func)
    func = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                        help="YAML file of config keys (applied after the preset, before flags).")(func)
    return func
