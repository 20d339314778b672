"""Whisper log-mel, audio encoder, checkpoint loading, long-audio windowing and per-frame chunks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lsync.audio import timing
from lsync.audio.mel import load_wav_16k_mono
from lsync.audio.whisper import (
    EncoderWindow,
    WhisperAudioEncoder,
    WhisperDims,
    WhisperFeatureExtractor,
    build_whisper_encoder,
    chunk_source_indices,
    feature_chunks,
    feature_window,
    load_whisper_encoder,
    log_mel_spectrogram,
    overlap_window_plan,
    reference_window_plan,
    sinusoids,
    tokens_per_frame,
)
from lsync.errors import CheckpointError, ConfigError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]

# A very small encoder: 40 positions per window (80 log-mel columns) keeps the windowing tests fast.
SMALL_DIMS = {"n_mels": 80, "n_audio_ctx": 40, "n_audio_state": 16, "n_audio_head": 2, "n_audio_layer": 2,
              "n_vocab": 10, "n_text_ctx": 4, "n_text_state": 4, "n_text_head": 1, "n_text_layer": 1}
SMALL_MARGIN = 6


@pytest.fixture(scope="module")
def small_encoder() -> WhisperAudioEncoder:
    return build_whisper_encoder(SMALL_DIMS, seed=3)


def _random_log_mel(num_frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(80, num_frames, generator=torch.Generator().manual_seed(seed)) * 0.3


def _direct_window_states(encoder: WhisperAudioEncoder, log_mel: torch.Tensor, start: int) -> torch.Tensor:
    """Hidden states of one encoder pass over the window starting at position ``start`` (zero-padded)."""
    frames = encoder.dims.window_mel_frames
    segment = log_mel[:, 2 * start : 2 * start + frames]
    segment = torch.nn.functional.pad(segment, (0, frames - segment.shape[1]))
    with torch.no_grad():
        return encoder.hidden_states(segment[None])[0]


# ----------------------------------------------------------------------------------------------- timing
def test_chunk_count_rule():
    assert timing.num_whisper_chunks(480) == 242
    assert all(timing.num_whisper_chunks(n) == n // 2 + 2 for n in range(1, 400))
    # Other frame rates follow the same loop: stop after the first chunk whose start exceeds the length.
    n = timing.num_whisper_chunks(100, fps=30)
    assert int((n - 1) * 50 / 30) > 100 >= int((n - 2) * 50 / 30)


def test_chunk_indices_clamp_at_both_ends():
    assert timing.whisper_chunk_indices(0, 480) == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert timing.whisper_chunk_indices(3, 480) == list(range(2, 12))
    assert timing.whisper_chunk_indices(240, 480) == [476, 477, 478, 479, 479, 479, 479, 479, 479, 479]


def test_chunk_indices_follow_the_audio_context():
    # (2, 2), the reference's audio_feat_length, is the default: centre-4 .. centre+5.
    for frame in (0, 1, 3, 100, 238, 240):
        assert timing.whisper_chunk_indices(frame, 480, context=(2, 2)) == timing.whisper_chunk_indices(frame, 480)
    assert timing.whisper_chunk_indices(3, 480, context=[2, 2]) == list(range(2, 12))
    # (0, 0): only the frame's own two positions, clamped past the end.
    assert timing.whisper_chunk_indices(0, 480, context=(0, 0)) == [0, 1]
    assert timing.whisper_chunk_indices(7, 480, context=(0, 0)) == [14, 15]
    assert timing.whisper_chunk_indices(240, 480, context=(0, 0)) == [479, 479]
    # (1, 0): one frame of context on the left only.
    assert timing.whisper_chunk_indices(0, 480, context=(1, 0)) == [0, 0, 0, 1]
    assert timing.whisper_chunk_indices(7, 480, context=(1, 0)) == [12, 13, 14, 15]
    assert timing.whisper_chunk_indices(239, 479, context=(1, 0)) == [476, 477, 478, 478]
    # (0, 3) at 30 fps: centre int(10 * 50 / 30) = 16, positions 16 .. 16 + 7.
    assert timing.whisper_chunk_indices(10, 480, fps=30, context=(0, 3)) == list(range(16, 24))
    assert [timing.whisper_chunk_positions(c) for c in ((2, 2), (0, 0), (1, 0), (3, 1))] == [10, 2, 4, 10]
    assert timing.WHISPER_CHUNK_POSITIONS == timing.whisper_chunk_positions(timing.DEFAULT_AUDIO_FEAT_LENGTH)


@pytest.mark.parametrize("bad", [(1,), (1, 2, 3), (-1, 0), (0.5, 1), (True, 0), "22", None, 2])
def test_a_bad_audio_context_is_a_value_error(bad):
    with pytest.raises(ValueError, match="audio_feat_length"):
        timing.audio_context(bad)
    with pytest.raises(ValueError, match="audio_feat_length"):
        timing.whisper_chunk_indices(3, 480, context=bad)


# ----------------------------------------------------------------------------------------------- log-mel
def test_log_mel_shape_and_floor():
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(16000 * 2 + 77)).astype(np.float32)
    samples[:8000] = 0.0  # a silent stretch, which the max - 8 floor lifts
    log_mel = log_mel_spectrogram(samples)
    assert log_mel.shape == (80, timing.num_whisper_mel_frames(len(samples))) == (80, 200)
    assert log_mel.dtype == torch.float32
    floor = log_mel.max() - 2.0  # max - 8 in log10 units is max - 2 after the (x + 4) / 4 scaling
    assert torch.isclose(log_mel.min(), floor)
    assert torch.all(log_mel[:, :40] == log_mel.min())


def test_log_mel_floor_is_over_the_whole_file():
    """A quiet file on its own is floored at its own max; appended after a loud one, at the loud max."""
    t = np.arange(16000) / 16000
    quiet = (1e-4 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    loud = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    alone = log_mel_spectrogram(quiet)
    joined = log_mel_spectrogram(np.concatenate([loud, quiet]))
    assert not torch.allclose(alone, joined[:, 100:])


def test_log_mel_refuses_bad_input():
    with pytest.raises(InputError):
        log_mel_spectrogram(np.zeros((2, 1000), np.float32))
    with pytest.raises(InputError):
        log_mel_spectrogram(np.zeros(100, np.float32))


# ----------------------------------------------------------------------------------------------- model
def test_dims_from_checkpoint_dict_ignores_text_entries():
    dims = WhisperDims.from_dict(SMALL_DIMS)
    assert dims == WhisperDims(80, 40, 16, 2, 2)
    assert dims.window_mel_frames == 80
    with pytest.raises(ConfigError, match="n_audio_head"):
        WhisperDims.from_dict({k: v for k, v in SMALL_DIMS.items() if k != "n_audio_head"})
    with pytest.raises(ConfigError):
        WhisperDims.from_dict({**SMALL_DIMS, "n_audio_head": 3})


def test_whisper_tiny_config_describes_a_50_by_384_token_encoder():
    config = yaml.safe_load((REPO_ROOT / "configs" / "models" / "whisper_tiny.yaml").read_text())
    dims = WhisperDims.from_dict(config)
    assert dims == WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4)
    encoder = WhisperAudioEncoder(dims)
    assert tokens_per_frame(encoder) == 50 and encoder.positional_embedding.shape == (1500, 384)


def test_encoder_shapes_and_ln_post(small_encoder):
    mel = _random_log_mel(80)[None].repeat(2, 1, 1)
    with torch.no_grad():
        states = small_encoder.hidden_states(mel)
        output = small_encoder(mel)
    assert states.shape == (2, 40, 3, 16)
    assert torch.allclose(output, small_encoder.ln_post(states[:, :, -1]))
    assert not torch.allclose(output, states[:, :, -1])
    with pytest.raises(ValueError):
        small_encoder.hidden_states(_random_log_mel(79)[None])


def test_stem_output_includes_positional_table(small_encoder):
    """With zero conv weights and biases the stem output is exactly the sinusoid table."""
    encoder = build_whisper_encoder(SMALL_DIMS, seed=4)
    with torch.no_grad():
        for conv in (encoder.conv1, encoder.conv2):
            conv.weight.zero_()
            conv.bias.zero_()
        states = encoder.hidden_states(_random_log_mel(80)[None])
    assert torch.equal(states[0, :, 0], sinusoids(40, 16))


@pytest.mark.parametrize("seed", [0, 1])
def test_seeded_random_tiny_encoder_tokens_carry_the_loudness(seed):
    """The demo's random whisper-tiny: its stem's audio content is on the positional table's scale, and the
    loudness of each video frame explains a tenth or more of the variance of that frame's tokens (with PyTorch-style
    1/fan_in stem weights the table drowned it: content ~1/5 of the table, loudness ~2 % of the variance)."""
    from lsync.synth import frame_envelope, speech_like_audio

    config = yaml.safe_load((REPO_ROOT / "configs" / "models" / "whisper_tiny.yaml").read_text())
    extractor = WhisperFeatureExtractor(build_whisper_encoder(config, seed=seed))
    samples = speech_like_audio(np.random.default_rng(seed), 6 * 16000, 16000)
    num_frames = 6 * 25
    with torch.no_grad():
        features = extractor(samples)  # (T50, L+1, D)
    table = sinusoids(features.shape[0], features.shape[-1])
    content = features[:, 0] - table  # the stem's output without the positions
    assert content.norm(dim=-1).mean() >= 0.5 * table.norm(dim=-1).mean()

    tokens = feature_window(features, 0, num_frames, context=(0, 0)).reshape(num_frames, -1).double().numpy()
    loudness = frame_envelope(samples, num_frames, 25, 16000)
    centred = tokens - tokens.mean(0)
    standard = (loudness - loudness.mean()) / loudness.std()
    along_loudness = centred.T @ standard / num_frames  # per token dimension: covariance with the loudness
    assert (along_loudness ** 2).sum() / centred.var(0).sum() >= 0.1


def test_encoder_is_not_causal_and_mixes_positions(small_encoder):
    """Changing the last log-mel columns changes the first positions' block outputs (global attention)."""
    mel = _random_log_mel(80)[None]
    changed = mel.clone()
    changed[..., -4:] += 1.0
    with torch.no_grad():
        a, b = small_encoder.hidden_states(mel), small_encoder.hidden_states(changed)
    assert torch.equal(a[0, 0, 0], b[0, 0, 0])  # the stem is local
    assert not torch.allclose(a[0, 0, -1], b[0, 0, -1])  # the blocks are not


# ----------------------------------------------------------------------------------------------- checkpoints
def _save_checkpoint(path: Path, encoder: WhisperAudioEncoder, dims: dict, edit=None) -> Path:
    state = {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state["decoder.token_embedding.weight"] = torch.zeros(10, 4)  # the decoder is ignored
    if edit:
        edit(state)
    torch.save({"dims": dict(dims), "model_state_dict": state}, path)
    return path


def test_checkpoint_round_trip(tmp_path, small_encoder):
    path = _save_checkpoint(tmp_path / "tiny ü.pt", small_encoder, SMALL_DIMS)
    loaded = load_whisper_encoder(path)
    for key, value in small_encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    mel = _random_log_mel(80)[None]
    with torch.no_grad():
        assert torch.equal(loaded.hidden_states(mel), small_encoder.hidden_states(mel))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("encoder.blocks.1.mlp.2.bias"), r"encoder\.\* entries.*missing.*blocks\.1\.mlp\.2\.bias"),
        (lambda s: s.__setitem__("encoder.blocks.0.attn.key.bias", torch.zeros(16)), "unexpected.*attn.key.bias"),
        (lambda s: s.__setitem__("encoder.conv1.weight", torch.zeros(16, 80, 5)), "wrong shape.*conv1.weight"),
    ],
)
def test_checkpoint_key_errors_name_the_keys(tmp_path, small_encoder, edit, message):
    path = _save_checkpoint(tmp_path / "bad.pt", small_encoder, SMALL_DIMS, edit)
    with pytest.raises(CheckpointError, match=message):
        load_whisper_encoder(path)


def test_checkpoint_dims_must_match_weights(tmp_path, small_encoder):
    path = _save_checkpoint(tmp_path / "bad.pt", small_encoder, {**SMALL_DIMS, "n_audio_layer": 3})
    with pytest.raises(CheckpointError, match="missing.*blocks.2"):
        load_whisper_encoder(path)


def test_checkpoint_container_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_whisper_encoder(tmp_path / "absent.pt")
    bare = tmp_path / "bare.pt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match="not an openai-whisper checkpoint"):
        load_whisper_encoder(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError):
        load_whisper_encoder(junk)


# ----------------------------------------------------------------------------------------------- windowing
def _kept_positions(plan: list[EncoderWindow]) -> list[int]:
    return [p for w in plan for p in range(w.keep_start, w.keep_end)]


@pytest.mark.parametrize("num_mel_frames", [1, 79, 80, 81, 159, 160, 200, 333, 1000])
def test_window_plans_tile_the_output(num_mel_frames):
    total = num_mel_frames // 2
    for plan in (reference_window_plan(num_mel_frames, 40), overlap_window_plan(num_mel_frames, 40, SMALL_MARGIN)):
        assert _kept_positions(plan) == list(range(total))
        assert all(w.start <= w.keep_start < w.keep_end <= w.start + 40 for w in plan)


@pytest.mark.parametrize("num_mel_frames", [81, 120, 200, 333, 1000, 1001])
def test_overlap_plan_gives_context_on_both_sides(num_mel_frames):
    total, size = num_mel_frames // 2, 40
    plan = overlap_window_plan(num_mel_frames, size, SMALL_MARGIN)
    assert plan[0] == reference_window_plan(num_mel_frames, size)[0]  # the first 30 s as the reference
    for window in plan[1:]:
        assert window.start >= 0 and 2 * (window.start + size) <= num_mel_frames  # real audio only, no padding
        assert window.keep_start - window.start >= SMALL_MARGIN
        at_end = window.keep_end == total
        assert at_end or window.start + size - window.keep_end >= SMALL_MARGIN
    middle = plan[1:-1]
    assert all(w.keep_end - w.keep_start == size - 2 * SMALL_MARGIN for w in middle)


def test_short_audio_is_identical_in_both_modes(small_encoder):
    log_mel = _random_log_mel(71)
    reference = WhisperFeatureExtractor(small_encoder, "reference").features_from_log_mel(log_mel)
    overlap = WhisperFeatureExtractor(small_encoder, "overlap", SMALL_MARGIN).features_from_log_mel(log_mel)
    assert reference.shape == (35, 3, 16)
    assert torch.equal(reference, overlap)
    # The reference zero-pads the short segment to a full window in the normalised log-mel domain.
    assert torch.equal(reference, _direct_window_states(small_encoder, log_mel, 0)[:35])


def test_reference_mode_runs_independent_segments(small_encoder):
    log_mel = _random_log_mel(205, seed=1)
    features = WhisperFeatureExtractor(small_encoder, "reference").features_from_log_mel(log_mel)
    assert features.shape == (102, 3, 16)
    for start in (0, 40, 80):
        expected = _direct_window_states(small_encoder, log_mel, start)[: min(40, 102 - start)]
        assert torch.equal(features[start : start + 40], expected)


def test_overlap_mode_takes_each_position_from_its_centred_window(small_encoder):
    log_mel = _random_log_mel(333, seed=2)
    extractor = WhisperFeatureExtractor(small_encoder, "overlap", SMALL_MARGIN)
    features = extractor.features_from_log_mel(log_mel)
    reference = WhisperFeatureExtractor(small_encoder, "reference").features_from_log_mel(log_mel)
    assert features.shape == reference.shape == (166, 3, 16)
    assert torch.equal(features[:40], reference[:40])
    assert not torch.allclose(features[40:], reference[40:])
    plan = extractor.window_plan(333)
    assert len(plan) > 3
    for window in plan:
        states = _direct_window_states(small_encoder, log_mel, window.start)
        expected = states[window.keep_start - window.start : window.keep_end - window.start]
        assert torch.equal(features[window.keep_start : window.keep_end], expected)


def test_unknown_windowing_is_refused(small_encoder):
    with pytest.raises(ConfigError):
        WhisperFeatureExtractor(small_encoder, "centred")


# ----------------------------------------------------------------------------------------------- chunks
def _labelled_features(num_positions: int, num_states: int = 3) -> torch.Tensor:
    """features[p, l, :] = (p, l, p * 10 + l): every value says where it came from."""
    p = torch.arange(num_positions)[:, None].expand(num_positions, num_states)
    layer = torch.arange(num_states)[None, :].expand(num_positions, num_states)
    return torch.stack([p, layer, p * 10 + layer], dim=-1).float()


def test_chunks_are_position_major_and_clamped():
    features = _labelled_features(31)
    chunks = feature_chunks(features)
    assert chunks.shape == (31 // 2 + 2, 30, 3)
    indices = chunk_source_indices(31)
    for frame in (0, 1, 7, chunks.shape[0] - 1):
        for slot, position in enumerate(indices[frame].tolist()):
            for layer in range(3):
                assert chunks[frame, slot * 3 + layer].tolist() == [position, layer, position * 10 + layer]
    assert indices[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert indices[-1].tolist() == [28, 29] + [30] * 8  # frame 16: centre 32, past the last position 30


def test_feature_window_equals_chunk_rows_and_clamps_past_the_end():
    features = _labelled_features(50)
    chunks = feature_chunks(features)
    assert torch.equal(feature_window(features, 3), chunks[3:19])
    assert feature_window(features, 3, num_frames=5).shape == (5, 30, 3)
    past = feature_window(features, chunks.shape[0] - 4)  # runs beyond the chunk list: clamped positions
    assert past.shape == (16, 30, 3) and torch.all(past[-1, :, 0] == 49)
    with pytest.raises(ValueError):
        feature_window(features, -1)


@pytest.mark.parametrize("context", [(2, 2), (0, 0), (1, 0), (0, 3)])
def test_feature_window_takes_the_context_positions_of_every_layer(context):
    left, right = context
    num_states = 5  # whisper-tiny's L+1
    features = _labelled_features(200, num_states)
    window = feature_window(features, 20, 16, context=context)
    assert window.shape == (16, 2 * (left + right + 1) * num_states, 3)
    assert tokens_per_frame(num_states - 1, context=context) == window.shape[1]
    for row, frame in enumerate(range(20, 36)):
        positions = list(range(2 * frame - 2 * left, 2 * frame + 2 * right + 2))
        expected = [[p, layer, p * 10 + layer] for p in positions for layer in range(num_states)]  # position-major
        assert window[row].tolist() == expected
    assert torch.equal(window, feature_chunks(features, context=context)[20:36])
    assert chunk_source_indices(200, context=context).shape == (200 // 2 + 2, 2 * (left + right + 1))


# ----------------------------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden_extractor(reference) -> WhisperFeatureExtractor:
    checkpoints = sorted((reference / "whisper").glob("*.pt"))
    assert checkpoints, "no whisper/*.pt checkpoint in the golden data (the reference README promises one)"
    return WhisperFeatureExtractor.from_checkpoint(checkpoints[0], windowing="reference")


def _window_starts(golden: dict) -> list[int]:
    starts = sorted(int(key.removeprefix("window_start")) for key in golden if key.startswith("window_start"))
    assert starts, "no window_start* tensors in the golden file"
    return starts


@pytest.mark.golden
def test_golden_checkpoint_dims(reference, golden_extractor):
    (checkpoint,) = sorted((reference / "whisper").glob("*.pt"))
    dims_file = checkpoint.with_name(f"{checkpoint.stem}_dims.json")  # "the same dims", the README says
    assert dims_file.is_file(), f"{dims_file} is missing"
    assert golden_extractor.encoder.dims == WhisperDims.from_dict(json.loads(dims_file.read_text()))
    # The checkpoint's positional table is the standard sinusoid table.
    dims = golden_extractor.encoder.dims
    assert torch.allclose(golden_extractor.encoder.positional_embedding,
                          sinusoids(dims.n_audio_ctx, dims.n_audio_state), atol=1e-6)


def log_mel_with_cpu_independent_mkl(samples: np.ndarray, n_mels: int, tmp_path: Path) -> torch.Tensor:
    """log_mel_spectrogram of ``samples`` in a fresh process with ``MKL_CBWR=COMPATIBLE``, which makes MKL's FFT
    take the same code path on every x86 CPU (MKL reads it once, at start-up, hence the subprocess)."""
    source, out = tmp_path / "samples.safetensors", tmp_path / "log_mel.safetensors"
    save_file({"samples": torch.from_numpy(np.ascontiguousarray(samples))}, str(source))
    script = ("import sys; from safetensors.torch import load_file, save_file; "
              "from lsync.audio.whisper import log_mel_spectrogram; "
              "save_file({'log_mel': log_mel_spectrogram(load_file(sys.argv[1])['samples'], int(sys.argv[2]))}, "
              "sys.argv[3])")
    subprocess.run([sys.executable, "-c", script, str(source), str(n_mels), str(out)], check=True,
                   env={**os.environ, "MKL_CBWR": "COMPATIBLE"})
    return load_file(str(out))["log_mel"]


@pytest.mark.golden
def test_golden_features(reference, golden_media, golden_extractor, tmp_path):
    golden = load_file(str(reference / "whisper" / "whisper_features.safetensors"))
    samples = load_wav_16k_mono(golden_media("whisper/whisper_features.safetensors", "audio"))
    log_mel = golden_extractor.log_mel(samples)
    # Bins far below a frame's loudest are ill-conditioned in float32: MKL's AVX-512 FFT kernels move a few of them
    # by up to 1.3e-5, and a float64 run lands 1.4e-5 away (the golden's own rounding). Hence 2e-5 here, and the
    # README's 1e-5 - met to 1e-6 in fact - on the CPU-independent arithmetic below.
    torch.testing.assert_close(log_mel, golden["log_mel"], rtol=0, atol=2e-5)
    if torch.backends.mkl.is_available():
        pinned = log_mel_with_cpu_independent_mkl(samples, golden_extractor.encoder.dims.n_mels, tmp_path)
        torch.testing.assert_close(pinned, golden["log_mel"], rtol=0, atol=1e-5)

    for windowing in ("reference", "overlap"):  # identical for audio up to 30 s
        extractor = WhisperFeatureExtractor(golden_extractor.encoder, windowing=windowing)
        features = extractor.features_from_log_mel(log_mel)
        torch.testing.assert_close(features, golden["features"], rtol=0, atol=2e-5)

    assert torch.equal(chunk_source_indices(features.shape[0]), golden["chunk_source_indices"])
    torch.testing.assert_close(feature_chunks(features, fps=25), golden["chunks_fps25"], rtol=0, atol=2e-5)
    for start in _window_starts(golden):
        torch.testing.assert_close(feature_window(features, start), golden[f"window_start{start}"], rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def long_case(reference, golden_media, golden_extractor):
    """The >30 s golden file, rebuilt as README section 5 says: the int16 samples of the wavs sources.json lists
    under ``audio_concat_int16``, concatenated in that order."""
    golden = "whisper/whisper_features_long.safetensors"
    path = reference / golden
    assert path.is_file(), f"{path} is missing (the reference README promises it)"
    samples = np.concatenate([load_wav_16k_mono(wav) for wav in golden_media(golden, "audio_concat_int16")])
    log_mel = golden_extractor.log_mel(samples)  # one max - 8 floor over the whole long file
    features = golden_extractor.features_from_log_mel(log_mel)
    return load_file(str(path)), log_mel, features


@pytest.mark.golden
def test_golden_long_file_reference_windowing(long_case):
    golden, _, features = long_case
    assert features.shape[0] == int(golden["num_features_total"])
    tail_start = int(golden["tail_start"])
    torch.testing.assert_close(features[tail_start:], golden["features_tail"], rtol=0, atol=2e-5)
    for start in _window_starts(golden):
        torch.testing.assert_close(feature_window(features, start), golden[f"window_start{start}"], rtol=0, atol=2e-5)


@pytest.mark.golden
def test_golden_long_file_overlap_windowing_fixes_the_seam(long_case, golden_extractor):
    golden, log_mel, reference_features = long_case
    encoder = golden_extractor.encoder
    size = encoder.dims.n_audio_ctx
    assert log_mel.shape[1] > encoder.dims.window_mel_frames, "the long golden file should be longer than 30 s"
    extractor = WhisperFeatureExtractor(encoder, windowing="overlap")
    features = extractor.features_from_log_mel(log_mel)

    # Same length, and bit-identical to the reference over the first 30 s (the first window is its first segment).
    assert features.shape == reference_features.shape
    assert torch.equal(features[:size], reference_features[:size])
    # After the 30 s boundary every position differs: it is no longer encoded at the start of a fresh segment.
    assert (features[size:] - reference_features[size:]).abs().amax(dim=(1, 2)).min() > 1e-3

    # Each later position comes from a window where it has >= margin positions (5 s) of real audio on its left and
    # either >= margin on its right or the true end of the file, and equals a direct encoder pass over that window.
    plan = extractor.window_plan(log_mel.shape[1])
    assert plan[0] == EncoderWindow(0, 0, size) and len(plan) >= 2
    for window in plan[1:]:
        assert window.keep_start - window.start >= extractor.margin
        assert window.keep_end == features.shape[0] or window.start + size - window.keep_end >= extractor.margin
        states = _direct_window_states(encoder, log_mel, window.start)
        torch.testing.assert_close(
            features[window.keep_start : window.keep_end],
            states[window.keep_start - window.start : window.keep_end - window.start],
            rtol=0, atol=0,
        )
    # The positions just after the boundary (shared with the reference tail) therefore carry left context.
    seam = plan[1]
    assert seam.keep_start == size and seam.start < size - extractor.margin
