"""``lsync infer``: frame plans, backward streaming, feature reuse, checkpoints, and end-to-end runs on real faces."""

from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
import torch

from lsync.manifest import read_manifest
from lsync.media.ffmpeg import ffmpeg_command
from lsync.media.probe import probe
from lsync.media.video import VideoReader, VideoWriter
from lsync.stages.infer import InferConfig, load_models_for, read_pairs, run, run_pairs
from lsync.sampling import DeepFeatureCache, load_inference_models, resolve_unet_source
from lsync.stages.infer_frames import FrameStream, crossfade_weights, playback_runs, source_indices

FAST = dict(preset="tiny", steps=2, threads=1, encode_preset="ultrafast", detect_size=320)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ffmpeg(*args) -> None:
    subprocess.run(ffmpeg_command(*args), check=True, capture_output=True)


# ================================================================================================ frame plans
def test_pingpong_shows_the_turning_frames_twice_like_latentsync_and_bounce_does_not():
    # LatentSync concatenates the frames, their reversed copy, the frames again, ...
    assert source_indices(10, 4, "pingpong").tolist() == [0, 1, 2, 3, 3, 2, 1, 0, 0, 1]
    assert source_indices(10, 4, "bounce").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert source_indices(5, 4, "loop").tolist() == [0, 1, 2, 3, 0]
    assert source_indices(6, 4, "hold").tolist() == [0, 1, 2, 3, 3, 3]
    assert source_indices(3, 8, "pingpong").tolist() == [0, 1, 2]  # a longer video is cut
    assert source_indices(4, 1, "pingpong").tolist() == [0, 0, 0, 0]


def test_playback_runs_cover_the_plan_with_constant_steps():
    plan = np.array([0, 1, 2, 3, 2, 1, 0, 1, 5, 5, 5])
    runs = playback_runs(plan)
    assert [(r.out_start, r.first, r.length, r.step) for r in runs] == [
        (0, 0, 4, 1), (4, 2, 3, -1), (7, 1, 1, 1), (8, 5, 3, 0)]
    rebuilt = [r.first + r.step * i for r in runs for i in range(r.length)]
    assert rebuilt == plan.tolist()


def test_crossfade_ramps_next_to_frames_without_a_face():
    has_face = np.array([1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    weights = crossfade_weights(has_face, fade=2)
    assert weights[4] == weights[5] == 0
    np.testing.assert_allclose(weights[[3, 2, 1]], [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(weights[[6, 7, 8, 11]], [1 / 3, 2 / 3, 1.0, 1.0])
    assert crossfade_weights(np.ones(5, bool), 3).tolist() == [1.0] * 5
    assert crossfade_weights(has_face, 0).tolist() == has_face.astype(float).tolist()


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory):
    """A 20-frame video whose frame i is flat grey 10 i (nearly lossless), to check decode order."""
    path = tmp_path_factory.mktemp("numbered") / "numbered frames.mp4"
    with VideoWriter(path, 25, 32, 32, crf=0, preset="ultrafast") as writer:
        for i in range(20):
            writer.write(np.full((32, 32, 3), 10 * i, np.uint8))
    return path


@pytest.mark.parametrize("mode", ["pingpong", "bounce", "loop", "hold"])
def test_frame_stream_plays_the_plan_in_order_with_small_backward_blocks(numbered_video, mode):
    plan = source_indices(47, 20, mode)
    stream = FrameStream(numbered_video, plan, block=6)
    seen = [(out, src, int(round(frame.mean() / 10))) for out, src, frame in stream]
    assert [s[0] for s in seen] == list(range(47))
    assert [s[1] for s in seen] == plan.tolist()
    assert [s[2] for s in seen] == plan.tolist()  # the pixels are the planned frame's


# ================================================================================================ models
def test_deep_feature_cache_skips_the_deep_blocks_and_restores_them():
    bundle, _ = load_inference_models("tiny")
    unet = bundle.unet
    torch.manual_seed(0)
    sample, audio = torch.randn(1, 13, 4, 8, 8), torch.randn(1, 4, 50, 384)
    calls = []
    handle = unet.mid_block.resnets[0].register_forward_pre_hook(lambda *_: calls.append(1))  # inside a deep block
    cache = DeepFeatureCache(unet, interval=3)
    outputs = []
    with torch.no_grad():
        plain = unet(sample, 500, audio).sample
        for step in range(4):
            with cache() as reused:
                outputs.append((reused, unet(sample, 500 - step, audio).sample))
    handle.remove()
    assert [reused for reused, _ in outputs] == [False, True, True, False]
    assert len(calls) == 1 + 2  # the plain call and the two full steps
    torch.testing.assert_close(outputs[0][1], plain)
    # A reused step still runs the shallow path with its own timestep, so it differs from the full step.
    assert not torch.equal(outputs[1][1], outputs[0][1])
    assert "forward" not in vars(unet.mid_block)  # the class's forward is back
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, 500, audio).sample, plain)


def test_unet_checkpoints_are_found_in_run_dirs_and_loaded_strictly(tmp_path):
    from lsync.errors import InputError
    from lsync.checkpoints import save_model

    bundle, _ = load_inference_models("tiny")
    run_dir = tmp_path / "run"
    for step in (10, 200):
        torch.manual_seed(step)
        for p in bundle.unet.parameters():
            p.data.normal_()
        save_model(bundle.unet, run_dir / "checkpoints" / f"step-{step:06d}", dict(bundle.unet.config))
    (run_dir / "checkpoints" / "step-000300").mkdir()  # unfinished: no files
    assert resolve_unet_source(run_dir).name == "step-000200"
    loaded, ids = load_inference_models("tiny", unet=run_dir)
    for name, tensor in loaded.unet.state_dict().items():
        torch.testing.assert_close(tensor, bundle.unet.state_dict()[name])
    assert ids["unet"]["path"].endswith("step-000200")
    torch.save({"state_dict": bundle.unet.state_dict(), "global_step": 5}, tmp_path / "released.pt")
    from_pt, _ = load_inference_models("tiny", unet=tmp_path / "released.pt")
    torch.testing.assert_close(from_pt.unet.conv_in.weight, bundle.unet.conv_in.weight)
    with pytest.raises(InputError, match="no checkpoint"):
        resolve_unet_source(tmp_path)


def test_a_unet_trained_with_another_whisper_encoder_is_refused(tmp_path):
    """A checkpoint names the encoder its U-Net learned the tokens of; inference with another is a one-line error
    (a tiny run of an older lsync version, whose random Whisper differed, would otherwise ignore the audio)."""
    from lsync.audio.whisper import AUDIO_ENCODER_KEY, build_whisper_encoder, encoder_digest
    from lsync.checkpoints import save_model
    from lsync.errors import CheckpointError
    from lsync.models.presets import model_config

    bundle, _ = load_inference_models("tiny")
    config = dict(bundle.unet.config)
    here = encoder_digest(bundle.audio.encoder)
    same = save_model(bundle.unet, tmp_path / "same", {**config, AUDIO_ENCODER_KEY: here})
    assert load_inference_models("tiny", unet=same)[1]["unet"]["path"] == str(same)
    other = encoder_digest(build_whisper_encoder(model_config("whisper_tiny"), seed=5))
    assert other != here
    refused = save_model(bundle.unet, tmp_path / "other", {**config, AUDIO_ENCODER_KEY: other})
    with pytest.raises(CheckpointError, match="trained with another Whisper encoder") as error:
        load_inference_models("tiny", unet=refused)
    assert "\n" not in str(error.value) and str(refused) in str(error.value)


def test_the_loader_and_the_sampler_take_the_audio_context_from_the_checkpoint(tmp_path):
    """audio_feat_length travels in config.json; the sampler cuts (and insists on) the tokens it implies."""
    from lsync.audio.whisper import feature_window
    from lsync.checkpoints import save_model
    from lsync.models.presets import build_unet, model_config
    from lsync.sampling import ChunkSampler

    bundle, _ = load_inference_models("tiny")
    preset_context = model_config("unet_tiny")["audio_feat_length"]
    assert bundle.unet.config.audio_feat_length == preset_context
    hidden_states = len(bundle.audio.encoder.blocks) + 1
    features = torch.randn(120, hidden_states, bundle.unet.config.cross_attention_dim,
                           generator=torch.Generator().manual_seed(0))  # (T50, L+1, D)
    faces = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    architecture = {k: v for k, v in bundle.unet.config.items() if not k.startswith("_")}
    for context in (preset_context, [1, 0]):
        config = {**architecture, "audio_feat_length": context}
        checkpoint = save_model(build_unet(config), tmp_path / f"ctx{context[0]}{context[1]}", config)
        assert json.loads((checkpoint / "config.json").read_text())["audio_feat_length"] == context
        loaded, _ = load_inference_models("tiny", unet=checkpoint)
        assert loaded.unet.config.audio_feat_length == context
        sampler = ChunkSampler(loaded, torch.device("cpu"), torch.float32, steps=1)
        assert sampler.audio_tokens == 2 * (sum(context) + 1) * hidden_states
        audio = sampler.audio_window(features, 3, 4)
        assert torch.equal(audio, feature_window(features, 3, 4, context=context))
        assert sampler(faces, audio).shape == (4, 3, 64, 64)
        wrong = feature_window(features, 3, 4, context=[context[0] + 1, context[1]])  # another context's tokens
        with pytest.raises(ValueError, match="audio_feat_length"):
            sampler(faces, wrong)
    # A checkpoint written before the key existed (like the released U-Nets) has the reference's (2, 2).
    old = {k: v for k, v in architecture.items() if k != "audio_feat_length"}
    loaded, _ = load_inference_models("tiny", unet=save_model(build_unet(old), tmp_path / "old", old))
    assert loaded.unet.config.audio_feat_length == [2, 2]


# ================================================================================================ end to end
@pytest.fixture(scope="module")
def models():
    return load_models_for(InferConfig(**FAST))


@pytest.fixture(scope="module")
def clips(media_videos, media_audios, tmp_path_factory):
    """Small cuts of a media video (270x480): 2 s with its audio, the same with frames 20-44 black, a 3.5 s
    16 kHz mono audio cut from a media audio file (longer than the video), a black video, and a video-only file."""
    root = tmp_path_factory.mktemp("infer media")
    src = media_videos[0]
    paths = {name: root / f"{name}.mp4" for name in ("face", "gap", "black", "silent")}
    _ffmpeg("-i", src, "-t", "2", "-vf", "scale=270:480", "-c:v", "libx264", "-crf", "12", "-preset", "ultrafast",
            "-c:a", "aac", "-y", paths["face"])
    _ffmpeg("-i", paths["face"], "-vf", "drawbox=enable='between(n,20,44)':color=black:t=fill",
            "-c:v", "libx264", "-crf", "12", "-preset", "ultrafast", "-c:a", "copy", "-y", paths["gap"])
    _ffmpeg("-i", paths["face"], "-vf", "drawbox=color=black:t=fill", "-c:v", "libx264", "-preset", "ultrafast",
            "-c:a", "copy", "-y", paths["black"])
    _ffmpeg("-i", paths["face"], "-an", "-c:v", "copy", "-y", paths["silent"])
    paths["long_audio"] = root / "long speech.wav"
    _ffmpeg("-i", media_audios[-1], "-t", "3.5", "-ar", "16000", "-ac", "1", "-y", paths["long_audio"])
    return paths




@pytest.mark.media
@pytest.mark.slow
def test_short_video_with_longer_audio_loops_and_keeps_the_audio_format(clips, models, tmp_path, monkeypatch):
    fed, denoise = [], models.sampler.denoise
    monkeypatch.setattr(models.sampler, "denoise", lambda pixels, audio: fed.append(tuple(audio.shape)) or denoise(
        pixels, audio))
    out = tmp_path / "out dir é"
    entry = run(clips["face"], clips["long_audio"], out, InferConfig(**FAST), models=models)
    # Every chunk's audio tokens are cut for the tiny U-Net's own audio context (audio_feat_length).
    left, right = models.bundle.unet.config.audio_feat_length
    tokens = 2 * (left + right + 1) * (len(models.bundle.audio.encoder.blocks) + 1)
    assert sum(shape[0] for shape in fed) >= 88 and max(shape[0] for shape in fed) == 16  # the model's chunk grid
    assert {shape[1:] for shape in fed} == {(tokens, models.bundle.unet.config.cross_attention_dim)}
    video = probe(out / "face.mp4")
    assert (video.width, video.height, video.fps) == (270, 480, 25.0)
    assert abs(video.video_duration_s - 3.5) <= 0.04
    assert (video.audio_sample_rate, video.audio_channels) == (16000, 1)
    assert entry["frames"] == {**entry["frames"], "total": 88, "synced": 88, "passed_through": 0,
                               "source_frames": 50, "loop": "pingpong"}
    # The first 50 output frames are the video forward, then it plays backwards: frame 60 shows source 38.
    frames = VideoReader(out / "face.mp4").read_all()
    source = VideoReader(clips["face"]).read_all()
    assert np.abs(frames[60, :40].astype(int) - source[38, :40]).mean() < 2  # top rows: far from the face
    assert np.abs(frames[60, :40].astype(int) - source[12, :40]).mean() > np.abs(
        frames[60, :40].astype(int) - source[38, :40]).mean()
    manifest = read_manifest(out, kind="inference")
    recorded = manifest["summary"]["outputs"]["face.mp4"]
    assert recorded["models"]["preset"] == "tiny"
    assert recorded["parameters"]["steps"] == 2 and recorded["parameters"]["loop"] == "pingpong"
    assert {"decode", "detect", "align", "audio_features", "denoise", "restore", "encode"} <= set(recorded["timings_s"])
    assert recorded["inputs"]["audio"]["digest"].startswith("sha256:")
    assert not [p for p in out.iterdir() if p.name.startswith(".lsync-tmp")]

    # Stereo 44.1 kHz driving audio (the clip's own) keeps its rate and channels; video longer than audio: cut.
    stereo = tmp_path / "stereo.m4a"
    _ffmpeg("-i", clips["face"], "-vn", "-t", "1.2", "-ar", "44100", "-ac", "2", "-c:a", "aac", "-y", stereo)
    entry = run(clips["face"], stereo, out, InferConfig(**FAST, frame_strip=True), models=models, name="cut")
    cut = probe(out / "cut.mp4")
    _check_frame_strip(out / entry["frames"]["frame_strip"], models.bundle.resolution)
    assert (cut.audio_sample_rate, cut.audio_channels) == (44100, 2)
    assert entry["frames"]["total"] == round(probe(stereo).audio_duration_s * 25)
    assert abs(cut.video_duration_s - probe(stereo).audio_duration_s) <= 0.04
    assert set(read_manifest(out, kind="inference")["summary"]["outputs"]) == {"face.mp4", "cut.mp4"}


def _check_frame_strip(path, resolution):
    """Four panels (input, masked input, generated, blended); the mask greys out only the mouth region."""
    import cv2

    from lsync.face.mask import mouth_mask
    from lsync.stages.infer import FrameStrip

    assert path.name == "cut.strip.png"
    strip = cv2.imread(str(path))[..., ::-1]
    size = max(FrameStrip.min_panel, resolution)
    assert strip.shape == (size, 4 * size + 3 * 4, 3)
    face, masked = (strip[:, i * (size + 4):i * (size + 4) + size].astype(int) for i in (0, 1))
    repaint = cv2.resize(mouth_mask(resolution), (size, size), interpolation=cv2.INTER_NEAREST) < 0.01
    assert np.abs(masked[repaint] - 128).max() <= 1
    assert np.abs(masked[~repaint] - face[~repaint]).mean() < 8  # soft mask edge aside, the same pixels


@pytest.mark.media
@pytest.mark.slow
def test_frames_without_a_face_pass_through_with_a_crossfade(clips, models, tmp_path):
    config = InferConfig(**FAST, crossfade=3)
    entry = run(clips["gap"], clips["gap"], tmp_path, config, models=models)
    frames = entry["frames"]
    assert abs(frames["total"] - 50) <= 1
    assert frames["passed_through"] == 25 and frames["synced"] == 25
    output = VideoReader(tmp_path / "gap.mp4").read_all()
    source = VideoReader(clips["gap"]).read_all()
    assert output[20:45].max() <= 20  # the black frames stay black
    # Next to the gap the edit is faded: frame 19 (weight 1/4) is closer to the source than frame 10 (weight 1).
    diff = [np.abs(output[i].astype(int) - source[i]).mean() for i in (10, 19)]
    assert diff[1] < diff[0]


def _run_cli(args, capsys):
    from lsync.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["infer", *args])
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.media
def test_bad_inputs_fail_in_one_line_with_exit_2_and_leave_nothing(clips, tmp_path, capsys):
    out = tmp_path / "never made"
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    cases = [
        ([str(tmp_path / "missing.mp4"), str(clips["long_audio"])], "does not exist"),
        ([str(garbage), str(clips["long_audio"])], "broken.mp4"),
        ([str(clips["face"]), str(clips["silent"])], "no audio stream"),
    ]
    for args, message in cases:
        code, err = _run_cli([*args, "--out-dir", str(out), "--preset", "tiny"], capsys)
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("lsync: error:") and message in err
        assert not out.exists()


@pytest.mark.media
@pytest.mark.slow
def test_no_face_at_all_is_an_error_and_existing_outputs_are_kept(clips, models, tmp_path, capsys):
    from lsync.errors import InputError, UsageError

    out = tmp_path / "out"
    with pytest.raises(InputError, match="no face found"):
        run(clips["black"], clips["long_audio"], out, InferConfig(**FAST), models=models)
    assert not out.exists()
    out.mkdir()
    (out / "face.mp4").write_bytes(b"keep me")
    code, err = _run_cli([str(clips["face"]), str(clips["long_audio"]), "--out-dir", str(out), "--preset", "tiny"],
                         capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "face.mp4").read_bytes() == b"keep me"
    with pytest.raises(UsageError, match="same output"):
        run_pairs(read_pairs(_pairs_csv(tmp_path, [(clips["face"], clips["gap"]), (clips["face"], clips["gap"])])),
                  tmp_path / "x", InferConfig(**FAST), models=models)


def _pairs_csv(folder, rows):
    path = folder / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "audio", "name"])
        for row in rows:
            writer.writerow([str(cell) for cell in row])
    return path


@pytest.mark.media
@pytest.mark.slow
def test_pairs_load_the_models_once_and_share_one_manifest(clips, models, tmp_path, monkeypatch):
    import lsync.stages.infer as infer_stage

    loads = []
    monkeypatch.setattr(infer_stage, "load_models_for", lambda config: loads.append(1) or models)
    short_audio = tmp_path / "short.wav"
    _ffmpeg("-i", clips["long_audio"], "-t", "0.7", "-y", short_audio)
    pairs = read_pairs(_pairs_csv(tmp_path, [(clips["face"], short_audio, "first"),
                                             (clips["gap"], short_audio, "second.mp4")]))
    entries = run_pairs(pairs, tmp_path / "batch", InferConfig(**FAST))
    assert len(loads) == 1
    assert [e["output"] for e in entries] == ["first.mp4", "second.mp4"]
    manifest = json.loads((tmp_path / "batch" / "lsync.json").read_text(encoding="utf-8"))
    assert manifest["kind"] == "inference"
    assert set(manifest["summary"]["outputs"]) == {"first.mp4", "second.mp4"}
    assert manifest["summary"]["frames_total"] == 2 * round(0.7 * 25)


# ================================================================================================ the demo
def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.media
@pytest.mark.slow
def test_demo_1080p_pingpong_output_matches_the_input_away_from_the_face(media_videos, media_audios, models,
                                                                       tmp_path):
    # The first 4 s of a media video (its HEVC stream copied, not re-encoded) driven by 6 s of the longest audio
    # (cut, or looped if shorter): the output runs the video forwards, then 50 frames backwards. Longer inputs would
    # only repeat the same work.
    video_path = tmp_path / "first seconds.mp4"
    _ffmpeg("-i", min(media_videos, key=lambda p: probe(p).video_duration_s), "-t", "4", "-c", "copy", "-y", video_path)
    longest_audio = max(media_audios, key=lambda p: probe(p).audio_duration_s)
    audio_path = tmp_path / "driving audio.wav"
    _ffmpeg("-stream_loop", "-1", "-i", longest_audio, "-t", str(probe(video_path).video_duration_s + 2), "-y",
            audio_path)
    source = probe(video_path)
    out = tmp_path / "out"
    # Backward blocks of 64 frames: fewer re-decodes than the default 32 (the test's time goes into decoding).
    config = InferConfig(**FAST, reverse_block=64)
    entry = run(video_path, audio_path, out, config, models=models)
    info, audio = probe(out / video_path.name), probe(audio_path)
    assert (info.width, info.height, info.fps) == (source.width, source.height, 25.0)
    assert abs(info.duration_s - audio.audio_duration_s) <= 0.04
    assert abs(info.video_duration_s - audio.audio_duration_s) <= 0.04
    assert (info.audio_sample_rate, info.audio_channels) == (audio.audio_sample_rate, audio.audio_channels)
    assert entry["frames"]["loop"] == "pingpong" and entry["frames"]["passed_through"] == 0

    # Away from the pasted faces (their windows plus the feather reach) output = input frames, PSNR >= 40 dB.
    x0, y0, x1, y1 = entry["frames"]["face_region"]
    keep = np.ones((source.height, source.width), bool)
    keep[y0:y1, x0:x1] = False
    assert 0.5 < keep.mean() < 1
    plan = source_indices(entry["frames"]["total"], entry["frames"]["source_frames"], "pingpong")
    checked = list(range(0, len(plan), 37))
    outputs = {k: f for k, f in enumerate(VideoReader(out / video_path.name)) if k in checked}
    wanted = {int(plan[k]) for k in checked}
    inputs = {i: f for i, f in enumerate(VideoReader(video_path)) if i in wanted}
    for k in checked:
        assert _psnr(outputs[k][keep], inputs[int(plan[k])][keep]) >= 40.0, k


def _speech_like(envelope: np.ndarray, seed: int) -> np.ndarray:
    """(frames * 640,) noise whose per-frame loudness is ``envelope`` (one value per 25 fps frame)."""
    noise = np.random.default_rng(seed).uniform(-1, 1, (len(envelope), 640))
    return (0.5 * envelope[:, None] * noise).reshape(-1).astype(np.float32)


def test_pairs_from_data_drive_val_sources_with_the_least_similar_audio_of_another_source(tmp_path, monkeypatch):
    import lsync.media.audio
    from lsync.errors import InputError
    from lsync.manifest import append_records, describe_input, write_manifest
    from lsync.media.audio import write_wav
    from lsync.stages.infer import pairs_from_data

    raw, data = tmp_path / "raw", tmp_path / "data set"
    raw.mkdir()
    (data / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    syllables = rng.uniform(0.1, 1.0, 60).repeat(4)  # (240,) frames of a loudness that changes every 4 frames
    envelopes = {0: np.zeros(240),  # silent: its correlation is undefined, so it is never preferred
                 1: syllables,
                 2: syllables * 0.9 + 0.05,  # the same speech rhythm as talk 1: the driver a check must avoid
                 3: rng.uniform(0.1, 1.0, 60).repeat(4)}  # other speech
    splits = {0: "train", 1: "val", 2: "train", 3: "train"}
    records, inputs = [], []
    for number, envelope in envelopes.items():
        samples = _speech_like(envelope, seed=number)
        source = raw / f"talk {number}.wav"  # a source's own soundtrack is read from the source file itself
        write_wav(source, samples)
        write_wav(data / "clips" / f"talk_{number}-000.wav", samples)
        entry = describe_input(source, "video")
        inputs.append(entry)
        records.append({"id": f"talk_{number}-000", "source": source.name, "source_digest": entry["digest"],
                        "split": splits[number], "audio": f"clips/talk_{number}-000.wav"})
    append_records(data / "clips.jsonl", *records)
    write_manifest(data, "data", {}, inputs=inputs)

    (pair,) = pairs_from_data(data)
    assert pair.video == raw / "talk 1.wav" and pair.audio == data / "clips" / "talk_3-000.wav"
    assert pair.name == "talk 1-with-talk 3.mp4"
    # talk 2 avoids its twin talk 1 and the silent talk 0; against the silent talk 0 every candidate is undefined,
    # so the earliest id wins
    decoded = []
    frame_loudness = lsync.media.audio.frame_loudness
    monkeypatch.setattr(lsync.media.audio, "frame_loudness", lambda path: decoded.append(path) or frame_loudness(path))
    drivers = {p.video.stem: p.audio.stem for p in pairs_from_data(data, split="train", count=5)}
    assert len(decoded) == len(set(decoded)) == 3 + 4  # each source and each clip's audio decoded once
    monkeypatch.undo()
    assert drivers == {"talk 0": "talk_1-000", "talk 2": "talk_3-000", "talk 3": drivers["talk 3"]}
    assert drivers["talk 3"] != "talk_0-000"
    with pytest.raises(InputError, match="no 'test' clips"):
        pairs_from_data(data, split="test")
    (data / "clips" / "talk_3-000.wav").unlink()
    with pytest.raises(InputError, match=r"talk_3-000.wav \(the audio of clip talk_3-000\) is missing"):
        pairs_from_data(data)
    (raw / "talk 1.wav").unlink()
    with pytest.raises(InputError, match="not where"):
        pairs_from_data(data)
