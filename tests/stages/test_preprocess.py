"""``lsync preprocess``: bad inputs become rejects, resume, config changes, shards + merge, crash recovery."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from lsync.cli import cli
from lsync.errors import UsageError
from lsync.manifest import read_manifest, read_records
from lsync.media.ffmpeg import run_ffmpeg
from lsync.media.probe import probe
from lsync.stages.preprocess import PreprocessConfig, clip_id, in_shard, list_sources, run, split_of
from lsync.synth import synthesize

pytestmark = pytest.mark.slow

# Short clips keep the suite fast: 2 s minimum, 3 s maximum, 128 px faces.
FAST = dict(min_clip_seconds=2.0, max_clip_seconds=3.0, resolution=128, min_face=30)


def fast_config(**overrides) -> PreprocessConfig:
    return PreprocessConfig(**{**FAST, **overrides})


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory) -> Path:
    """Three synthetic talking faces of 4.2 s, one with a name that has spaces and non-ASCII characters."""
    raw = tmp_path_factory.mktemp("raw")
    synthesize(raw / "set", clips=3, seconds=4.2, seed=7, size=(384, 480))
    (raw / "set" / "synth_002.mp4").rename(raw / "set" / "talk ü 2.mp4")
    (raw / "set" / "lsync.json").unlink()
    return raw / "set"


@pytest.fixture(scope="session")
def synth_data(synth_raw, tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("data") / "data"
    started = time.perf_counter()
    run(synth_raw, out, fast_config())
    return out, time.perf_counter() - started


def test_synthetic_sources_become_aligned_clips(synth_data):
    out, _ = synth_data
    manifest = read_manifest(out, kind="data")
    clips = read_records(out / "clips.jsonl")
    sources = read_records(out / "sources.jsonl")
    assert len(sources) == 3 and all(s["status"] == "accepted" for s in sources), sources
    assert {c["source"] for c in clips} == {"synth_000.mp4", "synth_001.mp4", "talk ü 2.mp4"}
    assert manifest["summary"]["clips"] == len(clips) >= 3
    for clip in clips:
        assert clip["id"] == clip_id(clip["source"], clip["index"])
        assert 50 <= clip["num_frames"] <= 75
        video = probe(out / clip["video"])
        assert (video.width, video.height, video.fps) == (128, 128, 25.0)
        assert video.num_frames == clip["num_frames"]
        assert not video.has_audio
        audio = probe(out / clip["audio"])
        assert audio.audio_sample_rate == 16000 and audio.audio_channels == 1
        assert round(audio.audio_duration_s * 16000) == clip["num_frames"] * 640
        meta = np.load(out / clip["meta"])
        assert meta["affines"].shape == (clip["num_frames"], 2, 3)
        assert meta["landmarks3"].shape == (clip["num_frames"], 3, 2)
        assert clip["split"] == split_of(clip["source"], 0.1)
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".lsync-tmp-")]


def test_rerun_over_finished_directory_is_fast_and_identical(synth_raw, synth_data):
    out, first_seconds = synth_data
    before = (out / "clips.jsonl").read_bytes()
    started = time.perf_counter()
    run(synth_raw, out, fast_config())
    assert time.perf_counter() - started < 0.1 * first_seconds
    assert (out / "clips.jsonl").read_bytes() == before


def test_changed_config_is_refused_unless_forced(synth_raw, synth_data):
    out, _ = synth_data
    with pytest.raises(UsageError, match=r"different config \(resolution differ\)"):
        run(synth_raw, out, fast_config(resolution=96))
    # the refused run touched nothing
    assert read_manifest(out, kind="data")["config"]["resolution"] == 128


def test_workers_do_not_count_as_a_config_change(synth_raw, synth_data):
    out, _ = synth_data
    run(synth_raw, out, fast_config(workers=2))  # nothing to do, and no refusal


def test_two_workers_give_the_same_clips(tmp_path, synth_raw, synth_data):
    out = tmp_path / "data"
    run(synth_raw, out, fast_config(workers=2))
    assert (out / "clips.jsonl").read_bytes() == (synth_data[0] / "clips.jsonl").read_bytes()


def test_bad_inputs_become_rejects(tmp_path, synth_raw):
    raw = tmp_path / "raw inputs"
    raw.mkdir()
    (raw / "zero.mp4").write_bytes(b"")
    (raw / "text.mp4").write_text("this is not a video\n")
    good = (synth_raw / "synth_000.mp4").read_bytes()
    (raw / "truncated.mp4").write_bytes(good[: len(good) // 3])
    # audio only (an .m4v container holding only AAC), video without audio, a video with no face
    run_ffmpeg(["-f", "lavfi", "-i", "sine=frequency=300:duration=6", "-c:a", "aac", "-f", "mp4",
                raw / "audio only.m4v"], what="make an audio-only file")
    run_ffmpeg(["-i", synth_raw / "synth_000.mp4", "-an", "-c:v", "copy", raw / "silent.mp4"],
               what="make a video without audio")
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3", "-f", "lavfi",
                "-i", "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                "-shortest", raw / "no face.mp4"], what="make a video without a face")
    run_ffmpeg(["-i", synth_raw / "synth_001.mp4", "-t", "1", raw / "short.mp4"], what="make a 1 s video")
    # a face with digital silence, and one with a 300 Hz tone at -66 dBFS RMS (amplitude 7.1e-4): both silent
    for name, sound in (("mute.mkv", "0"), ("whisper quiet.mkv", "0.00071*sin(2*PI*300*t)")):
        run_ffmpeg(["-i", synth_raw / "synth_000.mp4", "-f", "lavfi", "-i", f"aevalsrc={sound}:s=16000:d=4.2",
                    "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "pcm_s16le", raw / name],
                   what="make a video with silent audio")
    (raw / "gone.mp4").symlink_to(tmp_path / "deleted take.mp4")  # a dangling symlink
    (raw / "folder.mov").mkdir()  # a folder named like a video
    out = tmp_path / "data"
    checksums = {p.name: p.read_bytes() for p in raw.iterdir() if p.is_file()}
    warnings = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("lsync.stages.preprocess").addHandler(handler)
    try:
        summary = run(raw, out, fast_config())
        rerun = run(raw, out, fast_config())
    finally:
        logging.getLogger("lsync.stages.preprocess").removeHandler(handler)
    rejects = read_records(out / "rejects.jsonl")
    reasons = {r["source"]: r["reason"] for r in rejects}
    assert reasons == {
        "zero.mp4": "unreadable",
        "text.mp4": "unreadable",
        "truncated.mp4": "unreadable",
        "audio only.m4v": "no_video",
        "silent.mp4": "no_audio",
        "no face.mp4": "no_face",
        "short.mp4": "too_short",
        "mute.mkv": "silent_audio",
        "whisper quiet.mkv": "silent_audio",
        "gone.mp4": "dangling_symlink",
        "folder.mov": "not_a_file",
    }
    assert len(rejects) == len(reasons)  # one line each, also after the rerun
    details = {r["source"]: r["detail"] for r in rejects}
    assert "digital silence" in details["mute.mkv"] and "-66.0 dBFS" in details["whisper quiet.mkv"]
    assert "deleted take.mp4" in details["gone.mp4"]
    # each entry that is no file is reported once, as a warning naming it
    assert sorted(w.split(":")[0] for w in warnings if "gone.mp4" in w or "folder.mov" in w) == \
        ["folder.mov", "gone.mp4"]
    assert summary["clips"] == rerun["clips"] == 0
    assert {p.name: p.read_bytes() for p in raw.iterdir() if p.is_file()} == checksums  # inputs untouched
    assert (raw / "gone.mp4").is_symlink() and (raw / "folder.mov").is_dir()


def test_loudness_of_known_signals(tmp_path):
    from lsync.media.audio import write_wav
    from lsync.stages.preprocess import wav_loudness_dbfs

    t = np.arange(16000) / 16000
    write_wav(tmp_path / "sine.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 16000)  # RMS 0.5 / sqrt(2)
    assert wav_loudness_dbfs(tmp_path / "sine.wav") == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    write_wav(tmp_path / "square.wav", np.full(16000, -1.0), 16000)  # full scale: 0 dBFS
    assert wav_loudness_dbfs(tmp_path / "square.wav") == pytest.approx(0.0, abs=1e-9)
    write_wav(tmp_path / "zero.wav", np.zeros(16000), 16000)
    assert wav_loudness_dbfs(tmp_path / "zero.wav") == -np.inf
    assert wav_loudness_dbfs(tmp_path / "zero.wav", chunk_frames=999) == -np.inf


def test_list_file_input_and_missing_input(tmp_path, synth_raw):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# one source\n{synth_raw / 'synth_001.mp4'}\n\n", encoding="utf-8")
    sources = list_sources(listing, tmp_path / "out")
    assert [s.path for s in sources] == [(synth_raw / "synth_001.mp4").resolve()]
    (tmp_path / "a folder.mp4").mkdir()
    (tmp_path / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    listing.write_text("a folder.mp4\ngone.mp4\n", encoding="utf-8")
    assert [(s.key, s.problem) for s in list_sources(listing, tmp_path / "out")] == \
        [("a folder.mp4", "not_a_file"), ("gone.mp4", "dangling_symlink")]
    result = CliRunner().invoke(cli, ["preprocess", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert result.exit_code != 0 and "does not exist" in str(result.exception)


def test_output_inside_input_is_not_read_back(tmp_path, synth_raw):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.mp4").write_bytes((synth_raw / "synth_000.mp4").read_bytes())
    (raw / "data" / "clips").mkdir(parents=True)
    (raw / "data" / "clips" / "x.mp4").write_bytes(b"")
    assert [s.key for s in list_sources(raw, raw / "data")] == ["a.mp4"]


def test_shards_partition_and_merge_equals_one_run(tmp_path, synth_raw, synth_data):
    out, _ = synth_data
    keys = [s.key for s in list_sources(synth_raw, out)]
    assert sorted(k for i in range(2) for k in keys if in_shard(k, (i, 2))) == sorted(keys)
    shards = []
    for i in range(2):
        shard_dir = tmp_path / f"shard{i}"
        run(synth_raw, shard_dir, fast_config(shard=f"{i}/2"))
        shards.append(shard_dir)
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "merged"), *map(str, shards)])
    assert result.exit_code == 0, result.output
    merged = read_records(tmp_path / "merged" / "clips.jsonl")
    assert sorted(c["id"] for c in merged) == sorted(c["id"] for c in read_records(out / "clips.jsonl"))
    for clip in merged:
        assert (tmp_path / "merged" / clip["video"]).is_file()
    assert read_manifest(tmp_path / "merged", kind="data")["summary"]["shards"] == 2


def test_kill_mid_run_then_rerun_gives_same_ids(tmp_path, synth_raw, synth_data):
    """kill -9 while clips are being written; the rerun cleans up and ends with the uninterrupted result."""
    out = tmp_path / "data"
    command = [sys.executable, "-m", "lsync.cli", "-q", "preprocess", str(synth_raw), str(out),
               "--set", "min_clip_seconds=2.0", "--set", "max_clip_seconds=3.0", "--set", "resolution=128",
               "--set", "min_face=30"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        clips_dir = out / "clips"
        if clips_dir.is_dir() and any(p.suffix == ".mp4" for p in clips_dir.iterdir()):
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "lsync.json").exists()
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    expected = [c["id"] for c in read_records(synth_data[0] / "clips.jsonl")]
    assert [c["id"] for c in read_records(out / "clips.jsonl")] == expected
    referenced = {out / c[k] for c in read_records(out / "clips.jsonl") for k in ("video", "audio", "meta")}
    assert set((out / "clips").iterdir()) == referenced  # no orphans, no temp debris


def test_preprocess_cli_prints_summary(tmp_path, synth_raw):
    listing = tmp_path / "one.txt"
    listing.write_text(str(synth_raw / "synth_001.mp4"), encoding="utf-8")
    args = ["preprocess", str(listing), str(tmp_path / "d"), "--min-seconds", "2", "--max-seconds", "3",
            "--resolution", "128", "--min-face", "30", "-q"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "clips" in result.stdout
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "d"), "--contact-sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------------------- dying workers
def preprocess_command(raw: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lsync.cli", "-q", "preprocess", str(raw), str(out), "--min-seconds", "2",
            "--max-seconds", "3", "--resolution", "128", "--min-face", "30", *extra]


def interruptible_child() -> None:
    """``preexec_fn`` of a child that must take Ctrl-C: a shell without job control starts background commands
    with SIGINT ignored, the child would inherit that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_frame_decoder(parent: psutil.Process, timeout: float = 120, in_worker: bool = True) -> psutil.Process:
    """An ffmpeg decoding a source's frames (mid-source, that is) for one of ``parent``'s worker processes, or
    for ``parent`` itself when not ``in_worker``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for child in parent.children(recursive=True):
            try:
                command = child.cmdline()
                reads_a_file = "-i" in command and command[command.index("-i") + 1].startswith("file:")
                if "rawvideo" in command and reads_a_file and (child.ppid() != parent.pid) == in_worker:
                    return child  # (an encoder reads rawvideo from a pipe)
            except (psutil.Error, IndexError):
                continue
        time.sleep(0.05)
    raise AssertionError("no worker started decoding a source")


def decoded_source(decoder: psutil.Process, raw: Path) -> str:
    """The key of the source the ffmpeg ``decoder`` reads (its ``-i file:...`` argument)."""
    command = decoder.cmdline()
    path = Path(command[command.index("-i") + 1].removeprefix("file:"))
    return path.relative_to(raw.resolve()).as_posix()


def assert_all_gone(processes: list[psutil.Process], timeout: float = 15) -> None:
    deadline = time.time() + timeout
    alive = processes
    while time.time() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"left behind: {[(p.pid, p.name()) for p in alive]}")


def test_a_worker_killed_mid_source_costs_only_that_source(tmp_path, synth_raw, synth_data):
    """SIGKILL a worker while it decodes a source (what the OOM killer does): that source becomes a
    ``worker_crashed`` reject, the others are processed, its ffmpeg dies with it, and a rerun retries it."""
    out = tmp_path / "data"
    process = subprocess.Popen(preprocess_command(synth_raw, out, "--workers", "2"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(process.pid)
    decoder = wait_for_frame_decoder(parent)
    killed, worker = decoded_source(decoder, synth_raw), decoder.parent()
    group = [p for p in parent.children(recursive=True) if p.pid != worker.pid]
    worker.kill()
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "worker_crashed" in stderr or "SIGKILL" in stderr  # the warning names what happened

    (crashed,) = [r for r in read_records(out / "rejects.jsonl") if r["reason"] == "worker_crashed"]
    assert crashed["source"] == killed and "SIGKILL" in crashed["detail"] and str(worker.pid) in crashed["detail"]
    status = {s["source"]: s["status"] for s in read_records(out / "sources.jsonl")}
    assert status == {key: "rejected" if key == killed else "accepted" for key in status} and len(status) == 3
    uninterrupted = read_records(synth_data[0] / "clips.jsonl")
    clips = read_records(out / "clips.jsonl")
    assert [c["id"] for c in clips] == [c["id"] for c in uninterrupted if c["source"] != killed]
    referenced = {out / c[k] for c in clips for k in ("video", "audio", "meta")}
    assert set((out / "clips").iterdir()) == referenced  # no temp files or clips of the dead worker
    assert_all_gone([decoder, *group])

    rerun = subprocess.run(preprocess_command(synth_raw, out, "--workers", "2"), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert [c["id"] for c in read_records(out / "clips.jsonl")] == [c["id"] for c in uninterrupted]
    assert not [r for r in read_records(out / "rejects.jsonl") if r["reason"] == "worker_crashed"]


@pytest.fixture(scope="module")
def long_raw(synth_raw, tmp_path_factory) -> Path:
    """Two 34 s sources (a synthetic clip looped 8 times, stream copy): a worker is far from done when stopped."""
    raw = tmp_path_factory.mktemp("long raw")
    for name in ("synth_000.mp4", "synth_001.mp4"):
        run_ffmpeg(["-stream_loop", "7", "-i", synth_raw / name, "-c", "copy", raw / f"long {name}"],
                   what="loop a synthetic clip")
    return raw


@pytest.mark.parametrize("workers, signum", [(2, signal.SIGINT), (2, signal.SIGTERM), (2, signal.SIGKILL),
                                             (1, signal.SIGINT), (1, signal.SIGTERM)])
def test_stopping_the_parent_leaves_no_process_behind(tmp_path, long_raw, workers, signum):
    """Ctrl-C, ``kill`` or ``kill -9`` of ``lsync preprocess`` mid-source: every worker and every ffmpeg are gone
    at once, not when they would have finished their source."""
    process = subprocess.Popen(preprocess_command(long_raw, tmp_path / "data", "--workers", str(workers)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=interruptible_child)
    parent = psutil.Process(process.pid)
    wait_for_frame_decoder(parent, in_worker=workers > 1)
    descendants = parent.children(recursive=True)
    assert len(descendants) >= (3 if workers > 1 else 1)  # the workers and at least one ffmpeg
    os.kill(process.pid, signum)
    assert process.wait(timeout=60) != 0
    assert_all_gone(descendants, timeout=10)
