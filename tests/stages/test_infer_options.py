"""``lsync infer`` options: face tracks (save, reuse, cache, refuse another video's), masks and output codecs."""

from __future__ import annotations

import hashlib
import json
import subprocess

import cv2
import numpy as np
import pytest
import torch

from lsync.media.ffmpeg import ffmpeg_command
from lsync.media.probe import probe
from lsync.media.video import VideoReader

TINY = ["--preset", "tiny", "--steps", "2", "--threads", "1", "--set", "detect_size=320"]


def _ffmpeg(*args) -> None:
    subprocess.run(ffmpeg_command(*args), check=True, capture_output=True)


def _cli(args, capsys):
    from lsync.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["infer", *map(str, args)])
    return exit_info.value.code, capsys.readouterr().err


def _entry(out_dir, name):
    return json.loads((out_dir / "lsync.json").read_text(encoding="utf-8"))["summary"]["outputs"][name]


@pytest.fixture(scope="module")
def clips(media_videos, media_audios, tmp_path_factory):
    """1.2 s of the first and of the last media video at 270x480 (the latter from 0.5 s, so the two differ even
    in a folder of one video) and 1 s of speech."""
    root = tmp_path_factory.mktemp("option media")
    paths = {"talk": root / "talk one.mp4", "other": root / "other.mp4", "speech": root / "speech.wav"}
    for name, source, start in (("talk", media_videos[0], "0"), ("other", media_videos[-1], "0.5")):
        _ffmpeg("-ss", start, "-i", source, "-t", "1.2", "-vf", "scale=270:480", "-c:v", "libx264", "-crf", "12",
                "-preset", "ultrafast", "-an", "-y", paths[name])
    _ffmpeg("-i", media_audios[-1], "-t", "1.0", "-ar", "16000", "-ac", "1", "-y", paths["speech"])
    return paths


@pytest.mark.media
@pytest.mark.slow
def test_face_tracks_are_saved_cached_reused_and_refused_for_another_video(clips, tmp_path, capsys):
    out, cache, track_path = tmp_path / "out", tmp_path / "cache", tmp_path / "track.npz"
    common = [clips["talk"], clips["speech"], *TINY, "--codec", "ffv1", "--out-dir", out, "--face-cache", cache]

    code, err = _cli([*common, "--name", "first", "--save-faces", track_path], capsys)
    assert code == 0, err
    first = _entry(out, "first.mkv")
    assert first["frames"]["face_source"]["from"] == "detection" and "detect" in first["timings_s"]
    from lsync.face.track_file import load_face_track
    from lsync.manifest import file_digest

    track = load_face_track(track_path)
    assert track.video_digest == file_digest(clips["talk"]) == first["inputs"]["video"]["digest"]
    assert track.num_frames == first["frames"]["source_frames"] == 30 and track.frame_size == (270, 480)
    assert track.has_face.all()

    # Another run on the same video: the cached track, no detection, the very same frames.
    code, err = _cli([*common, "--name", "second"], capsys)
    assert code == 0, err
    assert "detection skipped" in err
    second = _entry(out, "second.mkv")
    assert second["frames"]["face_source"]["from"] == "cache" and "detect" not in second["timings_s"]
    assert second["frames"]["frames_sha256"] == first["frames"]["frames_sha256"]

    # The saved track, given back, also skips detection and gives the same frames.
    code, err = _cli([*common, "--name", "third", "--faces", track_path, "--face-cache", "off"], capsys)
    assert code == 0, err
    third = _entry(out, "third.mkv")
    assert third["frames"]["face_source"]["from"] == "file"
    assert third["frames"]["frames_sha256"] == first["frames"]["frames_sha256"]
    assert third["inputs"]["faces"]["digest"] == file_digest(track_path)

    # A track of another video is refused in one line, and nothing is written.
    code, err = _cli([clips["other"], clips["speech"], *TINY, "--out-dir", tmp_path / "no", "--faces", track_path],
                     capsys)
    assert code == 2 and err.count("\n") == 1 and "another video" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.media
@pytest.mark.slow
def test_plain_point_arrays_drive_the_alignment_and_nan_rows_pass_through(clips, tmp_path, capsys):
    from lsync.face.track_file import FaceTrack
    from lsync.face.video import detect_track
    from lsync.stages.infer import InferConfig

    track, _ = detect_track(clips["talk"], InferConfig(detect_size=320))
    points = track.landmarks3.copy()
    points[10:14] = np.nan
    np.save(tmp_path / "points.npy", points)
    code, err = _cli([clips["talk"], clips["speech"], *TINY, "--faces", tmp_path / "points.npy",
                      "--out-dir", tmp_path / "out", "--set", "crossfade=0"], capsys)
    assert code == 0, err
    frames = _entry(tmp_path / "out", "talk one.mp4")["frames"]
    assert frames["passed_through"] == 4 and frames["face_segments"] == [[0, 10], [14, 30]]
    assert frames["face_source"]["detected"] == 26

    np.save(tmp_path / "short.npy", points[:20])
    code, err = _cli([clips["talk"], clips["speech"], *TINY, "--faces", tmp_path / "short.npy",
                      "--out-dir", tmp_path / "out2"], capsys)
    assert code == 2 and "has 20 frames but" in err and err.count("\n") == 1
    assert FaceTrack.from_points(points).segments() == [(0, 10), (14, 30)]


@pytest.mark.media
@pytest.mark.slow
def test_prores_plays_in_ffmpeg_and_a_custom_mask_shapes_the_edit(clips, tmp_path, capsys):
    black = tmp_path / "repaint everything.png"
    cv2.imwrite(str(black), np.zeros((50, 70, 3), np.uint8))
    code, err = _cli([clips["talk"], clips["speech"], *TINY, "--codec", "prores", "--mask", black, "--frame-strip",
                      "--out-dir", tmp_path], capsys)
    assert code == 0, err
    output = tmp_path / "talk one.mov"
    info = probe(output)
    assert (info.video_codec, info.audio_codec, info.num_frames) == ("prores", "pcm_s16le", 25)
    _ffmpeg("-i", output, "-f", "null", "-")  # decodes completely
    entry = _entry(tmp_path, "talk one.mov")
    assert entry["models"]["mask"].endswith("repaint everything.png")
    strip = cv2.imread(str(tmp_path / entry["frames"]["frame_strip"]))
    size = strip.shape[0]
    masked_panel = strip[:, size + 4: 2 * size + 4].astype(int)
    assert np.abs(masked_panel - 128).max() <= 1  # a black mask repaints the whole face


def test_codec_and_file_name_must_agree_and_missing_option_files_are_named(tmp_path, capsys):
    video, audio = tmp_path / "v.mp4", tmp_path / "a.wav"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=0.4", "-f", "lavfi", "-i",
            "sine=frequency=300:duration=0.4", "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset",
            "ultrafast", "-c:a", "aac", "-y", video)
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=0.4", "-y", audio)
    cases = [
        (["--codec", "ffv1", "--name", "out.mp4"], "name the output out.mkv"),
        (["--codec", "prores", "--name", "out.webm"], "--codec prores"),
        (["--mask", tmp_path / "nope.png"], "--mask file"),
        (["--faces", tmp_path / "nope.npz"], "--faces file"),
    ]
    for extra, message in cases:
        code, err = _cli([video, audio, "--preset", "tiny", "--out-dir", tmp_path / "out", *extra], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_an_all_keep_mask_leaves_every_pixel_as_it_was():
    from lsync.sampling import ChunkSampler, load_inference_models

    bundle, _ = load_inference_models("tiny")
    resolution = bundle.resolution
    sampler = ChunkSampler(bundle, torch.device("cpu"), torch.float32, steps=1,
                           mask=np.ones((resolution, resolution), np.float32))
    faces = np.random.default_rng(0).integers(0, 256, (3, resolution, resolution, 3), dtype=np.uint8)
    out = sampler(faces, torch.zeros(3, sampler.audio_tokens, bundle.unet.config.cross_attention_dim))
    expected = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255 * 2 - 1
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.shape == (3, 3, resolution, resolution)  # a chunk of any length, not padded to 16


def test_mask_pngs_are_read_from_the_red_channel_and_resized(tmp_path):
    from lsync.face.mask import load_mask_image

    image = np.zeros((60, 100, 3), np.uint8)
    image[:, :50, 2] = 255  # red (BGR order on disk) on the left half
    cv2.imwrite(str(tmp_path / "m.png"), image)
    mask = load_mask_image(tmp_path / "m.png", 64)
    assert mask.shape == (64, 64) and mask.dtype == np.float32
    assert mask[:, :28].min() > 0.95 and mask[:, 36:].max() < 0.05


def test_ffv1_frame_digest_is_the_digest_of_the_decoded_frames(tmp_path):
    from lsync.media.video import VideoWriter

    frames = np.random.default_rng(1).integers(0, 256, (4, 31, 45, 3), dtype=np.uint8)
    with VideoWriter(tmp_path / "x.mkv", 25, 45, 31, codec="ffv1", frame_digest=True) as writer:
        writer.write(frames)
    decoded = VideoReader(tmp_path / "x.mkv", fps=None).read_all()
    np.testing.assert_array_equal(decoded, frames)
    assert writer.frames_sha256 == "sha256:" + hashlib.sha256(frames.tobytes()).hexdigest()


def test_dpm_solver_restarts_its_history_for_every_chunk():
    from lsync.sampling import ChunkSampler, load_inference_models

    bundle, _ = load_inference_models("tiny")
    sampler = ChunkSampler(bundle, torch.device("cpu"), torch.float32, steps=3, scheduler="dpm++")
    assert type(sampler.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert bundle.scheduler is not sampler.scheduler  # the bundle's DDIM stays as it was
    faces = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    audio = torch.randn(4, sampler.audio_tokens, bundle.unet.config.cross_attention_dim,
                        generator=torch.Generator().manual_seed(0))
    first, second = sampler(faces, audio), sampler(faces, audio)
    torch.testing.assert_close(first, second, atol=0, rtol=0)  # a second chunk starts from a clean solver
    ddim = ChunkSampler(bundle, torch.device("cpu"), torch.float32, steps=3)(faces, audio)
    assert not torch.equal(first, ddim)


def test_auto_dtype_takes_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    import lsync.sampling as denoise

    cpu = torch.device("cpu")
    monkeypatch.setattr(denoise, "cpu_native_bf16", lambda: "AMX-BF16")
    assert denoise.choose_dtype(cpu, "auto", cpu_bf16=True) == (torch.bfloat16,
                                                                "auto: the CPU computes bfloat16 natively (AMX-BF16)")
    assert denoise.choose_dtype(cpu, "auto")[0] == torch.float32  # other stages keep float32
    assert denoise.choose_dtype(cpu, "float32", cpu_bf16=True) == (torch.float32, "asked for")
    monkeypatch.setattr(denoise, "cpu_native_bf16", lambda: None)
    dtype, reason = denoise.choose_dtype(cpu, "auto", cpu_bf16=True)
    assert dtype == torch.float32 and "no native bfloat16" in reason


def test_the_chosen_dtype_and_its_reason_are_recorded(monkeypatch):
    import lsync.sampling as denoise
    from lsync.stages.infer import InferConfig, load_models_for

    monkeypatch.setattr(denoise, "cpu_native_bf16", lambda: "AVX512-BF16")
    models = load_models_for(InferConfig(preset="tiny", device="cpu"))
    assert models.ids["dtype"] == "bfloat16" and "AVX512-BF16" in models.ids["dtype_reason"]
    assert next(models.bundle.unet.parameters()).dtype == torch.bfloat16
    assert models.bundle.audio.encoder.conv1.weight.dtype == torch.float32  # Whisper stays float32


@pytest.mark.media
@pytest.mark.slow
def test_every_pipeline_mode_writes_the_same_frames(clips, tmp_path, capsys):
    digests = {}
    for mode in ("off", "io", "full"):
        code, err = _cli([clips["talk"], clips["speech"], *TINY, "--codec", "ffv1", "--set", f"pipeline={mode}",
                          "--out-dir", tmp_path, "--name", mode], capsys)
        assert code == 0, err
        digests[mode] = _entry(tmp_path, f"{mode}.mkv")["frames"]["frames_sha256"]
    assert digests["io"] == digests["off"] == digests["full"]


def test_auto_pipeline_overlaps_everything_on_cuda_and_only_the_pipes_on_a_cpu():
    from lsync.stages.infer import _pipeline_mode

    assert _pipeline_mode("auto", torch.device("cuda")) == "full"
    assert _pipeline_mode("auto", torch.device("cpu")) == "io"
    assert _pipeline_mode("off", torch.device("cuda")) == "off"
