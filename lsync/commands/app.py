"""``lsync app``: serve the local web page (Gradio, the ``[app]`` extra; imported only when the server starts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from lsync.cli_options import CONTEXT, config_options, verbosity_options

INSTALL_HINT = "pip install -e '.[app]'"


@click.command("app", context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 serves other machines too (there is never a public share link).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("lsync-app"),
              show_default=True, help="Every preview, run and batch gets its own folder here; uploads go to uploads/.")
@click.option("--preset", type=click.Choice(["latentsync-1.5", "latentsync-1.6", "tiny"]),
              help="The page's default models, loaded at start (each preset once per server)  "
                   "[default: latentsync-1.5].")
@click.option("--weights-dir", type=click.Path(file_okay=False), help="Folder searched first for released weights.")
@click.option("--device", help="cpu, cuda, cuda:1 ...  [default: cuda when present].")
@click.option("--max-runs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Jobs worked on at once (from any number of tabs); more wait in a queue.")
@config_options
@verbosity_options
def app(host: str, port: int, out_dir: Path, preset: str | None, weights_dir: str | None, device: str | None,
        max_runs: int, config_file: Path | None, overrides: tuple[str, ...]) -> None:
    """Serve a web page for lip-syncing: upload a video and an audio, preview a chunk, run, download.

    \b
    The same inference as `lsync infer`; --config/--set take its keys (e.g. --set detect_size=320).
    """
    if importlib.util.find_spec("gradio") is None:
        from lsync.errors import UsageError

        raise UsageError("lsync app needs Gradio, which is not installed", f"run `{INSTALL_HINT}`")
    from lsync.app.jobs import Engine
    from lsync.app.page import is_loopback, serve
    from lsync.config import resolve_config
    from lsync.stages.infer import InferConfig

    flags = {"preset": preset, "weights_dir": weights_dir, "device": device}
    config = resolve_config(InferConfig, None, None, config_file, flags, overrides)
    engine = Engine(out_dir, config, allow_server_paths=is_loopback(host))
    serve(engine, host=host, port=port, max_runs=max_runs)
