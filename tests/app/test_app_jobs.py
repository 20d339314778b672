"""The engine behind ``lsync app`` (no browser, no Gradio): folders per job, model reuse, the track cache,
errors as the CLI's lines, batches, concurrency, and the light command-line path."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from lsync.app.jobs import Engine, JobSettings, ProgressReporter, error_line, format_seconds
from lsync.errors import InputError, UsageError
from lsync.manifest import read_manifest
from lsync.media.probe import probe
from lsync.stages.infer import InferConfig

FAST = dict(preset="tiny", steps=2, encode_preset="ultrafast", detect_size=320)  # tiny random models
TINY = JobSettings(preset="tiny", steps=2)


# ================================================================================================ pieces
def test_progress_lines_carry_the_stage_count_rate_and_eta():
    now = [100.0]
    seen = []
    report = ProgressReporter(lambda fraction, text: seen.append((round(fraction, 3), text)), clock=lambda: now[0])
    report("faces", 0, 50)
    now[0] += 2.0
    report("faces", 20, 50)
    report("audio", 0, 1)
    report("denoise", 0, 40)
    now[0] += 4.0
    report("denoise", 10, 40)
    report("encode", 1, 1)
    assert seen[0] == (0.0, "faces (1/4) · 0/50 frames · ETA -")
    assert seen[1] == (0.4, "faces (1/4) · 20/50 frames · 10.0 frames/s · ETA 0:03")
    assert seen[2] == (0.0, "audio (2/4)")
    assert seen[4] == (0.25, "denoise (3/4) · 10/40 frames · 2.5 frames/s · ETA 0:12")
    assert seen[5] == (1.0, "encode (4/4)")

    batch = []
    second = ProgressReporter(lambda fraction, text: batch.append((fraction, text)), part=(1, 4), prefix="pair 2/4 · ")
    second("denoise", 5, 10)
    assert batch == [(0.375, "pair 2/4 · denoise (3/4) · 5/10 frames · ETA -")]
    assert format_seconds(3725) == "1:02:05" and format_seconds(7.4) == "0:07"


def test_progress_from_any_thread_reaches_the_page_through_the_event_thread():
    import time

    from lsync.app.page import with_progress

    shown = []

    def job(sink):
        def work():  # inference reports from its helper threads too
            for done in range(1, 4):
                sink(done / 3, f"denoise {done}/3")
                time.sleep(0.05)

        helper = threading.Thread(target=work)
        helper.start()
        helper.join()
        return "result"

    event_thread = threading.get_ident()
    result = with_progress(lambda fraction, desc: shown.append((threading.get_ident(), fraction, desc)), job,
                           interval=0.01)
    assert result == "result"
    assert shown and all(thread == event_thread for thread, _, _ in shown)
    assert shown[-1][1:] == (1.0, "denoise 3/3")
    assert len(set(shown)) == len(shown)  # an unchanged value is not sent again


def test_page_settings_are_checked_like_flags():
    config = JobSettings(preset="tiny", steps=3.0, guidance="2", seed="7", loop="bounce", face_select="center",
                         codec="ffv1").apply(InferConfig(detect_size=320))
    assert (config.preset, config.steps, config.guidance, config.seed) == ("tiny", 3, 2.0, 7)
    assert (config.loop, config.face_select, config.codec, config.detect_size) == ("bounce", "center", "ffv1", 320)
    with pytest.raises(UsageError, match="steps must be an integer, got 2.5"):
        JobSettings(steps=2.5).apply(InferConfig())
    with pytest.raises(UsageError, match="steps must be at least 1"):
        JobSettings(steps=0).apply(InferConfig())
    with pytest.raises(UsageError, match="seed must be an integer, got None"):
        JobSettings(seed=None).apply(InferConfig())
    with pytest.raises(UsageError, match="codec must be one of"):
        JobSettings(codec="vp9").apply(InferConfig())
    with pytest.raises(InputError, match="not a PNG"):
        JobSettings(mask="/tmp/mask.jpg").apply(InferConfig())


def test_errors_read_like_the_command_line():
    assert error_line(InputError("video x.mp4 is bad", "pass a good one")) == \
        "lsync: error: video x.mp4 is bad, pass a good one"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/a b.wav")) == \
        "lsync: error: /a b.wav: No such file or directory"
    line = error_line(RuntimeError("boom\nsecond line"))
    assert line.startswith("lsync: error: unexpected RuntimeError: boom second line,") and "\n" not in line


def test_help_stays_light_and_a_missing_gradio_is_one_line(capsys, monkeypatch):
    # `lsync app --help` must not import Gradio (3 s) or torch; checked in a fresh interpreter.
    code = ("import sys; from lsync.cli import main\n"
            "try:\n    main(['app', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('gradio', 'torch', 'lsync.app.page', 'lsync.stages.infer') if m in sys.modules]\n"
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--host" in done.stdout and "--out-dir" in done.stdout

    import importlib.util

    from lsync.cli import main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else
                        real_find_spec(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        main(["app", "--port", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == "lsync: error: lsync app needs Gradio, which is not installed, run `pip install -e '.[app]'`\n"


def test_a_busy_port_is_one_line_before_anything_starts():
    import socket

    from lsync.app.page import check_port_free, is_loopback

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UsageError, match=r"cannot serve on 127\.0\.0\.1:\d+ .*pass another --port"):
            check_port_free("127.0.0.1", taken.getsockname()[1])
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_batch_uploads_pair_by_count_and_csv_rows_name_uploads(tmp_path):
    engine = Engine(tmp_path)
    names = [p.name for p in engine.pairs(["/u/a.mp4"], ["/u/en.wav", "/u/fr.wav"], None, "h264")]
    assert names == ["a-with-en.mp4", "a-with-fr.mp4"]
    assert [p.name for p in engine.pairs(["/u/a.mp4", "/v/a.mp4"], ["/u/en.wav"], None, "ffv1")] == \
        ["a-with-en.mkv", "a-with-en-2.mkv"]
    pairs = engine.pairs(["/u/a.mp4", "/u/b.mp4"], ["/u/1.wav", "/u/2.wav"], None, "h264")
    assert [(p.video.name, p.audio.name) for p in pairs] == [("a.mp4", "1.wav"), ("b.mp4", "2.wav")]
    with pytest.raises(UsageError, match="2 videos and 3 audios cannot be paired"):
        engine.pairs(["a.mp4", "b.mp4"], ["1.wav", "2.wav", "3.wav"], None, "h264")
    with pytest.raises(UsageError, match="needs videos and audios"):
        engine.pairs(["a.mp4"], [], None, "h264")

    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("video,audio,name\nclips/a.mp4,2.wav,first\n# skipped\nb.mp4,1.wav\n", encoding="utf-8")
    pairs = engine.pairs(["/up/1/a.mp4", "/up/2/b.mp4"], ["/up/3/1.wav", "/up/4/2.wav"], str(csv_file), "h264")
    assert [(str(p.video), str(p.audio), p.name) for p in pairs] == [
        ("/up/1/a.mp4", "/up/4/2.wav", "first.mp4"), ("/up/2/b.mp4", "/up/3/1.wav", "b.mp4")]
    # A file on the server's disk: only when the page is served on localhost.
    server_file = tmp_path / "on server.mp4"
    server_file.write_bytes(b"x")
    csv_file.write_text(f"{server_file},2.wav\n", encoding="utf-8")
    with pytest.raises(InputError, match="is not among the uploaded files, upload it"):
        engine.pairs([], ["/up/4/2.wav"], str(csv_file), "h264")
    local = Engine(tmp_path, allow_server_paths=True)
    assert local.pairs([], ["/up/4/2.wav"], str(csv_file), "h264")[0].video == server_file


# ================================================================================================ jobs
@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(tmp_path_factory.mktemp("app out"), InferConfig(**FAST))


@pytest.mark.slow
def test_runs_get_their_own_folders_and_reuse_models_and_face_tracks(engine, app_media):
    progress = []
    first = engine.run(str(app_media.video), str(app_media.audio), TINY,
                       sink=lambda fraction, text: progress.append(text))
    assert first.error is None, first.error
    second = engine.run(str(app_media.video), str(app_media.short_audio), JobSettings(preset="tiny", steps=3))
    assert second.error is None, second.error
    assert first.folder != second.folder and first.folder.parent == second.folder.parent == engine.out_dir
    assert first.folder.name.startswith("run-")
    assert engine.models.loads == 1  # the networks were loaded once; each run got its own sampler

    for outcome, audio in ((first, app_media.audio), (second, app_media.short_audio)):
        info, source = probe(outcome.video), probe(audio)
        assert info.num_frames == round(source.audio_duration_s * 25)
        assert abs(info.audio_duration_s - source.audio_duration_s) < 0.05
        assert outcome.playable == outcome.video  # h264 plays in the browser as it is
        assert outcome.manifest == read_manifest(outcome.folder, kind="inference")
        assert outcome.entry["frames"]["synced"] == outcome.entry["frames"]["total"]
    assert first.entry["frames"]["face_source"]["from"] == "detection"
    assert second.entry["frames"]["face_source"]["from"] == "cache"  # same video, another audio: no detection
    assert second.entry["parameters"]["steps"] == 3
    assert "faces from cache" in second.summary and "passed through" in second.summary
    stages = [text.split(" ")[0] for text in progress]
    assert [s for s in dict.fromkeys(stages) if s in ("faces", "audio", "denoise", "encode")] == \
        ["faces", "audio", "denoise", "encode"]
    assert any("frames/s" in text and "ETA" in text for text in progress if text.startswith("denoise"))


@pytest.mark.slow
def test_the_preview_is_the_chunk_the_run_renders(engine, app_media):
    import cv2

    from lsync.stages.infer import run as infer_run

    out = engine.out_dir / "cli-run"
    settings = JobSettings(preset="tiny", steps=2, seed=5)
    config = settings.apply(engine.base)
    entry = infer_run(app_media.other_video, app_media.audio, out, dataclass_replace(config, frame_strip=True))
    full_strip = cv2.imread(str(out / entry["frames"]["frame_strip"]))
    frame = 25  # the strip of a full run shows the middle synced frame of a 50-frame output

    preview = engine.preview(str(app_media.other_video), str(app_media.audio), settings, at_seconds=frame / 25)
    assert preview.error is None, preview.error
    assert preview.folder.name.startswith("preview-") and "frame 25 (1.00 s) of chunk 16-31" in preview.summary
    np.testing.assert_array_equal(cv2.imread(str(preview.strip)), full_strip)

    late = engine.preview(str(app_media.other_video), str(app_media.audio), settings, at_seconds=60)
    assert late.error is None and "chunk 48-" in late.summary  # past the end: the last chunk


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


@pytest.mark.slow
def test_bad_inputs_come_back_as_the_cli_line_and_leave_no_folder(engine, app_media, capsys):
    from lsync.cli import main

    before = set(engine.out_dir.iterdir())
    cases = {
        "unreadable": (app_media.text_as_mp4, app_media.audio, "is not a readable media file"),
        "no face": (app_media.faceless, app_media.audio, "no face found in any of the 25 frames"),
        "no sound": (app_media.video, app_media.video_only, "has no audio stream"),
    }
    for video, audio, message in cases.values():
        outcome = engine.run(str(video), str(audio), TINY)
        assert outcome.error is not None and message in outcome.error and outcome.video is None
        with pytest.raises(SystemExit):
            main(["infer", str(video), str(audio), "--preset", "tiny", "--steps", "2",
                  "--out-dir", str(engine.out_dir / "cli-errors"), "-q"])
        # Exactly the line the command line prints (the engine's own log of the failure comes before it).
        assert capsys.readouterr().err.strip().splitlines()[-1] == outcome.error
        preview = engine.preview(str(video), str(audio), TINY, at_seconds=0.5)
        assert preview.error == outcome.error
    missing = engine.run(None, str(app_media.audio), TINY)
    assert missing.error == "lsync: error: no video, upload a video with a face"
    assert set(engine.out_dir.iterdir()) == before  # failed jobs leave no folders behind
    assert engine.run(str(app_media.video), str(app_media.short_audio), TINY).error is None  # and it carries on


@pytest.mark.slow
def test_a_batch_runs_every_pair_and_reports_the_failed_one(engine, app_media):
    outcome = engine.batch([str(app_media.video), str(app_media.faceless)], [str(app_media.short_audio)], None,
                           TINY)
    assert outcome.folder.name.startswith("batch-")
    assert [row[0] for row in outcome.rows] == [f"{app_media.video.stem}-with-short speech.mp4",
                                                "black-with-short speech.mp4"]
    good, bad = outcome.rows
    assert good[3] == good[4] == 30 and good[5] == 0 and good[-1] == ""
    assert "no face found" in bad[-1] and bad[3] is None
    assert outcome.outputs == [outcome.folder / good[0]]
    assert outcome.summary == "1 of 2 pairs done, 1 failed"
    assert list(outcome.manifest["summary"]["outputs"]) == [good[0]]


@pytest.mark.slow
def test_two_jobs_at_once_share_the_networks_and_keep_their_outputs_apart(engine, app_media):
    jobs = {"a": (app_media.audio, 2), "b": (app_media.short_audio, 4)}

    def job(name, results):
        audio, steps = jobs[name]
        results[name] = engine.run(str(app_media.video), str(audio),
                                   JobSettings(preset="tiny", steps=steps, codec="ffv1"))

    alone = {}
    for name in jobs:
        job(name, alone)
    together = {}
    threads = [threading.Thread(target=job, args=(name, together)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    for name, (audio, steps) in jobs.items():
        outcome = together[name]
        assert outcome.error is None, outcome.error
        assert outcome.folder not in (alone["a"].folder, alone["b"].folder)
        assert probe(outcome.video).num_frames == round(probe(audio).audio_duration_s * 25)
        assert outcome.entry["parameters"]["steps"] == steps
        # Each job's sampler (steps, scheduler, noise) is its own: the frames equal those of the job run alone.
        assert outcome.entry["frames"]["frames_sha256"] == alone[name].entry["frames"]["frames_sha256"]
        assert outcome.playable.name.endswith(".browser.mp4") and probe(outcome.playable).video_codec == "h264"
    assert together["a"].folder != together["b"].folder
    assert engine.models.loads == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["off", "io", "full"])
def test_progress_follows_every_pipeline_mode_to_the_end(engine, app_media, mode, tmp_path):
    """The pipelined renderer reports from its helper threads ("io": the encoder's thread, "full": warps and
    encoder beside the model): every stage still arrives, in order, and the denoise count only grows to the
    output's length."""
    from lsync.stages.infer import run as infer_run

    config = dataclass_replace(TINY.apply(engine.base), pipeline=mode)
    reports, lock = [], threading.Lock()

    def on_progress(stage, done, total):
        with lock:
            reports.append((stage, done, total))

    entry = infer_run(app_media.video, app_media.short_audio, tmp_path, config, models=engine.models.get(config),
                      on_progress=on_progress)
    assert entry["frames"]["total"] == 30
    stages = list(dict.fromkeys(stage for stage, _, _ in reports))
    assert stages == ["faces", "audio", "denoise", "encode"]
    denoise = [(done, total) for stage, done, total in reports if stage == "denoise"]
    assert denoise[0] == (0, 30) and denoise[-1] == (30, 30) and len(denoise) >= 3  # 30 frames: 2 chunks
    assert [done for done, _ in denoise] == sorted(done for done, _ in denoise)
    assert reports[-1] == ("encode", 1, 1)
    assert engine.models.loads == 1
