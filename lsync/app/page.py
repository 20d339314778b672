"""The Gradio page of ``lsync app`` and serving it (needs the ``[app]`` extra; see :mod:`lsync.app.jobs`).

Layout: the job settings on the left (preset, steps, guidance, seed, loop mode, face selection, codec, mask),
shared by two tabs on the right:

* **Lip-sync**: a video and an audio upload; *Preview* renders the 16-frame chunk around the chosen time and
  shows its frame strip; *Run* renders the whole video with a progress bar (stage, count, rate, ETA), then the
  player, a download link and the run's ``lsync.json``.
* **Batch**: several videos and audios (paired by count) or a pairs CSV, run with the models loaded once.

Every job runs in Gradio's queue, at most ``max_runs`` at once (the rest wait with their place in the queue
shown). Outputs are served from ``--out-dir`` as they are (static paths: no copy into Gradio's cache); uploads
land in ``OUT_DIR/uploads`` unless ``$GRADIO_TEMP_DIR`` says otherwise.
"""

from __future__ import annotations

import html
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from lsync.app.jobs import (
    BATCH_COLUMNS,
    CODECS,
    FACE_SELECT,
    LOOP_MODES,
    PRESETS,
    Engine,
    JobSettings,
)
from lsync.console import get_logger, say
from lsync.errors import UsageError
from lsync.manifest import MANIFEST_NAME

log = get_logger(__name__)

CSS = """
.lsync-status { padding: 0.6em 0.9em; border-radius: 6px; font-family: ui-monospace, monospace; font-size: 0.9em;
                white-space: pre-wrap; overflow-wrap: anywhere; }
.lsync-status.ok { background: #ecfdf3; border: 1px solid #34a853; color: #14532d; }
.lsync-status.error { background: #fef2f2; border: 1px solid #dc2626; color: #7f1d1d; }
.lsync-status.info { background: #f4f4f5; border: 1px solid #d4d4d8; color: #27272a; }
"""


def status_html(text: str, kind: str = "info") -> str:
    """A status box: ``ok``, ``error`` (the CLI's one-line message) or ``info``; the text is escaped, so file
    names with ``_`` or ``<`` show as they are."""
    if not text:
        return ""
    return f'<div class="lsync-status {kind}">{html.escape(text)}</div>'


def _settings(preset, steps, guidance, seed, loop, face_select, codec, mask) -> JobSettings:
    return JobSettings(preset=preset, steps=steps, guidance=guidance, seed=seed, loop=loop,
                       face_select=face_select, codec=codec, mask=mask)


def with_progress(progress, job: Callable[[Any], Any], interval: float = 0.2) -> Any:
    """``job(sink)`` on a worker thread while this (Gradio's event) thread shows the latest ``sink(fraction,
    text)`` on ``progress`` every ``interval`` seconds.

    Inference reports progress from whichever of its threads does the work, and ``gr.Progress`` only reaches
    the page from the event's own thread (it finds its event through context variables), so the event thread
    relays; it also keeps a fast run from flooding the page with updates.
    """
    latest: list[tuple[float, str]] = []
    outcome: list[Any] = []

    def sink(fraction: float, text: str) -> None:
        latest[:] = [(fraction, text)]  # one item, replaced atomically

    worker = threading.Thread(target=lambda: outcome.append(job(sink)), name="lsync-job", daemon=True)
    worker.start()
    shown = None
    while worker.is_alive():
        worker.join(interval)
        current = latest[0] if latest else None
        if current is not None and current != shown:
            progress(current[0], desc=current[1])
            shown = current
    if not outcome:
        raise RuntimeError("the job's thread ended without a result; the server's log says why")
    return outcome[0]


def build_page(engine: Engine, max_runs: int = 2):
    """The page's Blocks over ``engine``; every job event shares one queue of ``max_runs`` workers."""
    import gradio as gr

    base = engine.base
    job_queue = {"concurrency_id": "lsync-jobs", "concurrency_limit": max_runs}
    with gr.Blocks(title="lsync", analytics_enabled=False) as page:
        gr.Markdown("# lsync\nLip-sync a talking-head video to new audio. *Preview* one 16-frame chunk in seconds, "
                    "then *Run* the whole video. Every job gets its own folder under "
                    f"`{html.escape(str(engine.out_dir))}`.")
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                gr.Markdown("### Settings")
                preset = gr.Dropdown(list(PRESETS), value=base.preset, label="Model preset", elem_id="preset")
                steps = gr.Slider(1, 100, value=base.steps, step=1, label="DDIM steps", elem_id="steps")
                guidance = gr.Slider(1.0, 5.0, value=base.guidance, step=0.1,
                                     label="Guidance (1 disables)", elem_id="guidance")
                seed = gr.Number(value=base.seed, precision=0, label="Seed", elem_id="seed")
                loop = gr.Dropdown(list(LOOP_MODES), value=base.loop, elem_id="loop",
                                   label="Audio longer than the video: pingpong, bounce, loop, hold")
                face_select = gr.Radio(list(FACE_SELECT), value=base.face_select, elem_id="face-select",
                                       label="Face to follow (several in view)")
                codec = gr.Dropdown(list(CODECS), value=base.codec, elem_id="codec",
                                    label="Codec: h264/h265 .mp4, ffv1 lossless .mkv, prores .mov")
                mask = gr.File(label="Mask PNG (optional; white keeps, black is repainted)", file_types=[".png"],
                               elem_id="mask")
            settings = [preset, steps, guidance, seed, loop, face_select, codec, mask]

            with gr.Column(scale=3):
                with gr.Tabs():
                    with gr.Tab("Lip-sync", id="single"):
                        with gr.Row():
                            video = gr.Video(label="Video (shows a face)", sources=["upload"], height=360,
                                             elem_id="video-in")
                            audio = gr.Audio(label="Audio (wav, mp3, m4a, ...)", type="filepath",
                                             sources=["upload"], elem_id="audio-in")
                        media_info = gr.HTML(elem_id="media-info")
                        with gr.Row():
                            preview_at = gr.Slider(0.0, 10.0, value=0.0, step=0.04, label="Preview at (seconds)",
                                                   elem_id="preview-at", scale=3)
                            preview_button = gr.Button("Preview", elem_id="preview", scale=1)
                            run_button = gr.Button("Run", variant="primary", elem_id="run", scale=1)
                        status = gr.HTML(elem_id="status")
                        strip = gr.Image(label="Frame strip: input face | masked | generated | blended",
                                         type="filepath", format="png", interactive=False, elem_id="strip")
                        result = gr.Video(label="Lip-synced video", interactive=False, height=480,
                                          elem_id="result-video")
                        with gr.Row():
                            download = gr.File(label="Download: the video and its lsync.json", file_count="multiple",
                                               interactive=False, elem_id="download")
                            manifest = gr.JSON(label="lsync.json", open=True, elem_id="manifest")

                    with gr.Tab("Batch", id="batch"):
                        gr.Markdown("As many videos as audios are paired in order; one video goes with every audio "
                                    "and one audio with every video. Or upload a pairs CSV of `video,audio[,name]` "
                                    "rows naming the uploaded files.")
                        with gr.Row():
                            batch_videos = gr.File(label="Videos", file_count="multiple", file_types=["video"],
                                                   elem_id="batch-videos")
                            batch_audios = gr.File(label="Audios", file_count="multiple",
                                                   file_types=["audio", "video"], elem_id="batch-audios")
                            batch_csv = gr.File(label="Pairs CSV (optional)", file_types=[".csv"],
                                                elem_id="batch-csv")
                        batch_button = gr.Button("Run batch", variant="primary", elem_id="batch-run")
                        batch_status = gr.HTML(elem_id="batch-status")
                        batch_table = gr.Dataframe(headers=BATCH_COLUMNS, interactive=False, elem_id="batch-table")
                        with gr.Row():
                            batch_files = gr.File(label="Outputs", file_count="multiple", interactive=False,
                                                  elem_id="batch-files")
                            batch_manifest = gr.JSON(label="lsync.json", open=True, elem_id="batch-manifest")

        # ----------------------------------------------------------------------------------- events
        def on_media(video_path, audio_path):
            lines, duration = [], None
            for path, role in ((video_path, "video"), (audio_path, "audio")):
                text, length = engine.describe_media(path, role)
                if text:
                    lines.append((text, "error" if text.startswith("lsync: error:") else "info"))
                if role == "video" and length:
                    duration = length
            box = "".join(status_html(text, kind) for text, kind in lines)
            slider = gr.update(maximum=max(duration, 0.04)) if duration else gr.update()
            return box, slider

        for component in (video, audio):
            component.change(on_media, [video, audio], [media_info, preview_at], show_progress="hidden",
                             concurrency_limit=None)

        def on_preview(video_path, audio_path, at, *values, progress=gr.Progress()):
            outcome = with_progress(progress, lambda sink: engine.preview(video_path, audio_path, _settings(*values),
                                                                          at, sink=sink))
            if outcome.error:
                return status_html(outcome.error, "error"), None
            return status_html(f"preview: {outcome.summary}", "ok"), str(outcome.strip)

        def starting(job: str):
            # The last job's status goes at once, so the page never shows an old result for the new job.
            return lambda: status_html(f"{job}: waiting for a free worker or running (progress below)", "info")

        preview_button.click(starting("preview"), None, status, queue=False, show_progress="hidden").then(
            on_preview, [video, audio, preview_at, *settings], [status, strip], show_progress_on=[strip],
            **job_queue)

        def on_run(video_path, audio_path, *values, progress=gr.Progress()):
            outcome = with_progress(progress, lambda sink: engine.run(video_path, audio_path, _settings(*values),
                                                                      sink=sink))
            if outcome.error:
                return status_html(outcome.error, "error"), None, None, None
            text = f"done: {outcome.summary}; folder {outcome.folder}"
            files = [str(outcome.video), str(outcome.folder / MANIFEST_NAME)]
            return status_html(text, "ok"), str(outcome.playable), files, outcome.manifest

        run_button.click(starting("run"), None, status, queue=False, show_progress="hidden").then(
            on_run, [video, audio, *settings], [status, result, download, manifest], show_progress_on=[result],
            **job_queue)

        def on_batch(videos, audios, pairs_csv, *values, progress=gr.Progress()):
            outcome = with_progress(progress, lambda sink: engine.batch(videos, audios, pairs_csv,
                                                                        _settings(*values), sink=sink))
            if outcome.error and not outcome.outputs:
                return status_html(outcome.error, "error"), None, None, None
            failed = [row[-1] for row in outcome.rows if row[-1]]
            text = f"{outcome.summary}; folder {outcome.folder}" + (f"\nfirst error: {failed[0]}" if failed else "")
            return (status_html(text, "error" if failed else "ok"), outcome.rows,
                    [str(p) for p in outcome.outputs], outcome.manifest)

        batch_button.click(starting("batch"), None, batch_status, queue=False, show_progress="hidden").then(
            on_batch, [batch_videos, batch_audios, batch_csv, *settings],
            [batch_status, batch_table, batch_files, batch_manifest], show_progress_on=[batch_table], **job_queue)
    return page


def check_port_free(host: str, port: int) -> None:
    """Fail in one line before Gradio starts when ``host:port`` cannot be bound."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port} ({exc.strerror or exc})",
                         "pass another --port (or --host)") from None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 7860, max_runs: int = 2,
          preload: bool = True) -> None:
    """Serve the page until Ctrl-C (never a public share link). ``preload`` loads the default preset's models
    in the background so the first job does not wait for them."""
    check_port_free(host, port)
    upload_dir = engine.out_dir / "uploads"
    upload_dir.mkdir(parents=True, exist_ok=True)
    # Gradio reads these when it is imported: uploads beside the outputs, no analytics or update checks.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(upload_dir.resolve()))
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_SSR_MODE", "False")
    _bypass_proxies_for_loopback()
    import gradio as gr

    gr.set_static_paths([str(engine.out_dir.resolve())])  # outputs are served from their run folders, uncopied
    page = build_page(engine, max_runs=max_runs)
    page.queue(default_concurrency_limit=max_runs)
    if preload:
        _preload(engine)
    # System fonts only: the default theme would ask a font CDN, and this machine may be offline.
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "SFMono-Regular", "monospace"])
    url_host = f"[{host}]" if ":" in host else host
    say(f"lsync app on http://{url_host}:{port}/ (jobs in {engine.out_dir}, Ctrl-C stops)")
    page.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True, show_error=True,
                allowed_paths=[str(engine.out_dir.resolve())], ssr_mode=False, pwa=False, mcp_server=False,
                enable_monitoring=False, theme=theme, css=CSS, footer_links=[])


def _preload(engine: Engine) -> None:
    def load() -> None:
        try:
            engine.models.get(engine.base)
            log.info("%s models loaded", engine.base.preset)
        except Exception as exc:  # shown again on the page when a job needs them
            from lsync.app.jobs import error_line

            log.warning("could not preload the %s models: %s", engine.base.preset, error_line(exc))

    threading.Thread(target=load, name="lsync-preload", daemon=True).start()


def _bypass_proxies_for_loopback() -> None:
    """Gradio checks its own URL over HTTP after starting; a proxy from the environment must not take that call."""
    if any(os.environ.get(name) for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                                               "all_proxy", "ALL_PROXY")):
        for name in ("no_proxy", "NO_PROXY"):
            current = [p for p in os.environ.get(name, "").split(",") if p]
            os.environ[name] = ",".join(dict.fromkeys([*current, "127.0.0.1", "localhost", "::1"]))


__all__ = ["build_page", "check_port_free", "is_loopback", "serve", "status_html"]
