"""U-Net training samples: shapes, ranges, deterministic windows, masks, audio alignment and the caches."""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import numpy as np
import pytest
import torch

from lsync.audio.mel import load_wav_16k_mono, melspectrogram, mel_window
from lsync.audio.whisper import WhisperFeatureExtractor, build_whisper_encoder, feature_window
from lsync.data.mask_batch import apply_mask, latent_mask_batch, mask_tensor
from lsync.data.unet_dataset import (
    ClipInfo,
    UNetDataset,
    _pairable_gt_starts,
    collate_unet_batch,
    decode_clip,
    encoder_identity,
    gt_window_starts,
    reference_window_starts,
)
from lsync.errors import InputError
from lsync.face.mask import latent_mask, mouth_mask
from lsync.manifest import read_records
from lsync.media.audio import write_wav

RESOLUTION = 64
WINDOW = 16
# A Whisper encoder with the real input/positional geometry but a tiny width, so encoding takes milliseconds.
TINY_WHISPER = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 32, "n_audio_head": 2, "n_audio_layer": 2}


@pytest.fixture(scope="session")
def unet_data(tmp_path_factory):
    """Three 3 s (75-frame) clips of aligned 64 px faces, all in the train split."""
    from lsync.stages.preprocess import PreprocessConfig, run
    from lsync.synth import synthesize

    root = tmp_path_factory.mktemp("unet data")
    synthesize(root / "raw", clips=3, seconds=3.0, seed=11, size=(384, 480))
    run(root / "raw", root / "data", PreprocessConfig(min_clip_seconds=1.5, max_clip_seconds=3.0,
                                                       resolution=RESOLUTION, min_face=30, val_fraction=0.0))
    return root / "data"


@pytest.fixture(scope="session")
def extractor():
    return WhisperFeatureExtractor(build_whisper_encoder(TINY_WHISPER, seed=3))


@pytest.fixture(scope="session")
def dataset(unet_data, extractor, tmp_path_factory):
    ds = UNetDataset(unet_data, extractor, cache_dir=tmp_path_factory.mktemp("cache"), seed=5)
    ds.prepare()
    return ds


def _pixels(frames_u8):
    return (torch.from_numpy(np.asarray(frames_u8)).permute(3, 0, 1, 2).float() / 255 - 0.5) / 0.5


# ------------------------------------------------------------------------------------------------ samples
def test_sample_shapes_types_and_ranges(dataset, unet_data):
    assert len(read_records(unet_data / "clips.jsonl")) == 3 and len(dataset) == 3
    sample = dataset[1]
    tokens = 10 * (TINY_WHISPER["n_audio_layer"] + 1)
    shapes = {"frames": (3, WINDOW, RESOLUTION, RESOLUTION), "ref_frames": (3, WINDOW, RESOLUTION, RESOLUTION),
              "masked_frames": (3, WINDOW, RESOLUTION, RESOLUTION), "mask": (1, RESOLUTION, RESOLUTION),
              "mel": (1, 80, 52), "audio_features": (WINDOW, tokens, TINY_WHISPER["n_audio_state"])}
    for key, shape in shapes.items():
        assert tuple(sample[key].shape) == shape, key
        assert sample[key].dtype == torch.float32, key
    for key in ("frames", "ref_frames", "masked_frames"):
        assert -1.0 <= sample[key].min() and sample[key].max() <= 1.0
        assert sample[key].std() > 0.1  # real pictures, not a constant
    assert -4.0 <= sample["mel"].min() and sample["mel"].max() <= 4.0
    assert sample["clip_index"] == 1 and sample["sample_index"] == 1
    assert sample["clip_id"] == dataset.clips[1].id


def test_masked_frames_are_frames_times_the_mouth_mask(dataset):
    sample = dataset[0]
    mask = sample["mask"]
    np.testing.assert_array_equal(mask[0].numpy(), mouth_mask(RESOLUTION))
    torch.testing.assert_close(sample["masked_frames"], sample["frames"] * mask[:, None])
    repaint = (mask[0] == 0).expand_as(sample["frames"][0, 0])
    assert repaint.any()
    assert sample["masked_frames"][:, :, repaint].abs().max() == 0
    keep = mask[0] == 1
    torch.testing.assert_close(sample["masked_frames"][:, :, keep], sample["frames"][:, :, keep])


def test_windows_hold_the_clip_frames_and_its_audio(dataset, extractor):
    """frames/ref_frames are the decoded clip at the planned starts; mel and Whisper windows match the wav."""
    sample = dataset[2]
    clip = dataset.clips[2]
    start, ref = sample["start_frame"], sample["ref_start_frame"]
    decoded = decode_clip(clip.video, RESOLUTION, clip.num_frames)
    torch.testing.assert_close(sample["frames"], _pixels(decoded[start:start + WINDOW]))
    torch.testing.assert_close(sample["ref_frames"], _pixels(decoded[ref:ref + WINDOW]))
    samples = load_wav_16k_mono(clip.audio)
    expected_mel = mel_window(melspectrogram(samples), start)
    torch.testing.assert_close(sample["mel"], torch.from_numpy(expected_mel).float(), atol=1e-6, rtol=0)
    expected_features = feature_window(extractor(samples), start, WINDOW)
    torch.testing.assert_close(sample["audio_features"], expected_features)


@pytest.mark.parametrize("context", [(0, 0), (1, 0)])
def test_audio_tokens_cover_the_unet_audio_context(dataset, unet_data, extractor, context):
    """A U-Net's audio_feat_length sets the Whisper positions each frame's tokens hold; the same cache serves."""
    narrow = UNetDataset(unet_data, extractor, cache_dir=dataset.cache.root, seed=5, audio_feat_length=list(context))
    assert narrow.audio_feat_length == context
    sample, wide = narrow[2], dataset[2]
    assert sample["start_frame"] == wide["start_frame"]  # the windows drawn do not depend on the context
    layers = TINY_WHISPER["n_audio_layer"] + 1
    assert sample["audio_features"].shape == (WINDOW, 2 * (sum(context) + 1) * layers, TINY_WHISPER["n_audio_state"])
    features = extractor(load_wav_16k_mono(narrow.clips[2].audio))
    torch.testing.assert_close(sample["audio_features"],
                               feature_window(features, sample["start_frame"], WINDOW, context=context))
    if context == (0, 0):  # the frame's own two positions are the middle of the reference's ten (centre-4 ..)
        own = wide["audio_features"].reshape(WINDOW, 10, layers, -1)[:, 4:6].reshape(WINDOW, 2 * layers, -1)
        torch.testing.assert_close(sample["audio_features"], own)
    with pytest.raises(ValueError, match="audio_feat_length"):
        UNetDataset(unet_data, extractor, cache_dir=dataset.cache.root, audio_feat_length=[0, -1])


# ------------------------------------------------------------------------------------------------ determinism
def test_same_seed_epoch_and_index_give_the_same_sample(dataset, unet_data, extractor):
    dataset.set_epoch(3)
    later = dataset[2]
    dataset[0], dataset[1]  # other reads in between must not matter
    again = dataset[2]
    twin = UNetDataset(unet_data, extractor, cache_dir=dataset.cache.root, seed=5)
    twin.set_epoch(3)
    from_twin = twin[2]
    dataset.set_epoch(0)
    for other in (again, from_twin):
        for key in ("frames", "ref_frames", "mel", "audio_features"):
            torch.testing.assert_close(later[key], other[key])
        assert (later["start_frame"], later["ref_start_frame"]) == (other["start_frame"], other["ref_start_frame"])


def test_sample_keys_draw_from_epoch_and_position(dataset):
    """A SampleKey(epoch, position, index) reads clip index % clips with the windows of (seed, epoch, position)."""
    from collections import namedtuple

    Key = namedtuple("Key", "epoch position index")  # the fields of lsync.training.sampling.SampleKey
    dataset.set_epoch(4)
    as_int = dataset.plan(2)
    dataset.set_epoch(0)
    as_key = dataset.plan(Key(4, 2, 2))
    assert (as_key.start_frame, as_key.ref_start_frame) == (as_int.start_frame, as_int.ref_start_frame)
    moved = dataset.plan(Key(4, 7, 2))  # same item at another position of the epoch: same clip, new draw
    assert moved.clip_index == as_key.clip_index == 2
    draws = {(dataset.plan(Key(4, p, 2)).start_frame, dataset.plan(Key(4, p, 2)).ref_start_frame) for p in range(8)}
    assert len(draws) > 1
    sample = dataset[Key(4, 2, 2)]
    assert sample["start_frame"] == as_int.start_frame and sample["sample_index"] == 2
    with pytest.raises(TypeError):
        dataset.plan("2")


def test_epochs_and_seeds_change_the_windows(dataset, unet_data, extractor):
    def windows(ds, epoch):
        ds.set_epoch(epoch)
        return [(p.start_frame, p.ref_start_frame) for p in map(ds.plan, range(len(ds)))]

    epoch0, epoch1 = windows(dataset, 0), windows(dataset, 1)
    assert epoch0 != epoch1
    other_seed = UNetDataset(unet_data, extractor, cache_dir=dataset.cache.root, seed=6)
    assert windows(other_seed, 0) != epoch0
    dataset.set_epoch(0)
    with pytest.raises(IndexError):
        dataset.plan(len(dataset))


def test_reference_never_overlaps_and_gt_keeps_the_edge_margin(dataset):
    starts = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            plan = dataset.plan(index)
            num_frames = dataset.clips[plan.clip_index].num_frames
            assert abs(plan.start_frame - plan.ref_start_frame) >= WINDOW
            assert dataset.edge_margin <= plan.start_frame <= num_frames - WINDOW - dataset.edge_margin
            assert 0 <= plan.ref_start_frame <= num_frames - WINDOW
            starts.add(plan.start_frame)
    dataset.set_epoch(0)
    assert len(starts) > 20  # the windows really move around the clip


def test_window_rules_on_clip_lengths():
    def clip(frames):
        return ClipInfo("c", None, None, frames, frames * 640)

    # Two non-overlapping 16-frame windows need 32 frames without margin, 34 when the ground truth keeps 2 frames
    # from the ends (the reference window may touch them).
    assert _pairable_gt_starts(clip(31), WINDOW, 0, False).size == 0
    assert _pairable_gt_starts(clip(32), WINDOW, 0, False).tolist() == [0, 16]
    assert _pairable_gt_starts(clip(33), WINDOW, 2, False).size == 0
    assert _pairable_gt_starts(clip(34), WINDOW, 2, False).tolist() == [2, 16]
    assert _pairable_gt_starts(clip(20), WINDOW, 0, True).tolist() == [0, 1, 2, 3, 4]
    assert reference_window_starts(40, 20, WINDOW).tolist() == [0, 1, 2, 3, 4]
    assert reference_window_starts(40, 12, WINDOW).tolist() == []  # 12 +- 15 covers every start 0 .. 24
    assert reference_window_starts(40, 12, WINDOW, allow_overlap=True).tolist() == list(range(25))
    assert reference_window_starts(40, 2, WINDOW).tolist() == [18, 19, 20, 21, 22, 23, 24]
    # A clip whose audio is shorter than its video loses the starts without a full 52-column mel window.
    assert gt_window_starts(75, 75 * 640, WINDOW, 0).tolist() == list(range(60))
    assert gt_window_starts(75, 60 * 640, WINDOW, 0).max() < 60


def test_short_clips_are_skipped_with_a_count(unet_data, extractor, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(unet_data, data)
    records = read_records(data / "clips.jsonl")
    records[0]["num_frames"], records[0]["num_samples"] = 30, 30 * 640  # first 30 frames only: too short
    (data / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="lsync"):
        ds = UNetDataset(data, extractor, cache_dir=tmp_path / "cache")
    assert len(ds) == 2 and ds.skipped == [records[0]["id"]]
    assert "skipped 1 of 3 clips" in caplog.text
    overlapping = UNetDataset(data, extractor, cache_dir=tmp_path / "cache", allow_overlap=True)
    assert len(overlapping) == 3
    for epoch in range(5):
        overlapping.set_epoch(epoch)
        plan = overlapping.plan(0)
        assert plan.start_frame + WINDOW <= 30 - overlapping.edge_margin and plan.ref_start_frame + WINDOW <= 30
    with pytest.raises(InputError, match="long enough"):
        UNetDataset(data, extractor, cache_dir=tmp_path / "cache", edge_margin=40)


# ------------------------------------------------------------------------------------------------ caches
def test_caches_hit_on_reuse_and_miss_when_the_wav_changes(unet_data, tmp_path):
    extractor = WhisperFeatureExtractor(build_whisper_encoder(TINY_WHISPER, seed=4))
    data = tmp_path / "data"
    shutil.copytree(unet_data, data)
    cache = tmp_path / "cache"
    first = UNetDataset(data, extractor, cache_dir=cache).prepare()
    assert first == {"frames_computed": 3, "frames_cached": 0, "mel_computed": 3, "mel_cached": 0,
                     "whisper_computed": 3, "whisper_cached": 0}
    second = UNetDataset(data, extractor, cache_dir=cache).prepare()
    assert second == {"frames_computed": 0, "frames_cached": 3, "mel_computed": 0, "mel_cached": 3,
                      "whisper_computed": 0, "whisper_cached": 3}

    # Keyed by content, not by name: the same files under another directory are all hits.
    moved = tmp_path / "elsewhere ü"
    shutil.copytree(data, moved)
    assert UNetDataset(moved, extractor, cache_dir=cache).prepare()["whisper_cached"] == 3

    # Same name, new content: that clip's audio caches miss, its video cache still hits.
    clip = UNetDataset(data, extractor, cache_dir=cache).clips[1]
    samples = load_wav_16k_mono(clip.audio)
    write_wav(clip.audio, (np.clip(samples[::-1] * 0.5, -1, 1) * 32767).astype(np.int16), 16000)
    changed = UNetDataset(data, extractor, cache_dir=cache)
    assert changed.prepare() == {"frames_computed": 0, "frames_cached": 3, "mel_computed": 1, "mel_cached": 2,
                                 "whisper_computed": 1, "whisper_cached": 2}
    expected = feature_window(extractor(load_wav_16k_mono(clip.audio)), changed.plan(1).start_frame, WINDOW)
    torch.testing.assert_close(changed[1]["audio_features"], expected)

    # Another encoder (other weights) never reuses these features.
    other = WhisperFeatureExtractor(build_whisper_encoder(TINY_WHISPER, seed=5))
    assert encoder_identity(other) != encoder_identity(extractor)
    assert UNetDataset(data, other, cache_dir=cache).prepare()["whisper_computed"] == 3


def test_frame_cache_modes_give_identical_samples(dataset, unet_data, extractor):
    reference = dataset[0]
    for mode in ("memory", "none"):
        ds = UNetDataset(unet_data, extractor, cache_dir=dataset.cache.root, seed=5, frame_cache=mode)
        sample = ds[0]
        torch.testing.assert_close(sample["frames"], reference["frames"])
        torch.testing.assert_close(sample["ref_frames"], reference["ref_frames"])


def test_pickled_dataset_reads_the_prepared_cache_without_the_encoder(dataset):
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.feature_extractor is None
    torch.testing.assert_close(copy[1]["audio_features"], dataset[1]["audio_features"])


def test_missing_features_without_an_encoder_explain_the_fix(unet_data, tmp_path, dataset):
    ds = UNetDataset(unet_data, None, cache_dir=tmp_path / "empty", encoder_id=dataset.encoder_id)
    with pytest.raises(InputError, match="prepare"):
        ds[0]


# ------------------------------------------------------------------------------------------------ batches
def test_collate_stacks_a_batch(dataset):
    batch = collate_unet_batch([dataset[i] for i in range(3)])
    assert batch["frames"].shape == (3, 3, WINDOW, RESOLUTION, RESOLUTION)
    assert batch["mask"].shape == (3, 1, RESOLUTION, RESOLUTION)
    assert batch["mel"].shape == (3, 1, 80, 52)
    assert batch["audio_features"].shape[:2] == (3, WINDOW)
    assert batch["start_frame"].dtype == torch.int64 and batch["start_frame"].shape == (3,)
    assert batch["clip_id"] == [c.id for c in dataset.clips]
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_unet_batch)
    in_process = list(loader)
    assert [b["frames"].shape[0] for b in in_process] == [2, 1]
    workers = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate_unet_batch, num_workers=2)
    for ours, theirs in zip(in_process, workers, strict=True):  # workers read the same samples
        torch.testing.assert_close(ours["frames"], theirs["frames"])
        torch.testing.assert_close(ours["audio_features"], theirs["audio_features"])


def test_mask_helpers_for_batches():
    mask = mask_tensor(RESOLUTION)
    frames = torch.ones(2, 3, 4, RESOLUTION, RESOLUTION)
    masked = apply_mask(frames, torch.stack([mask, torch.ones_like(mask)]))
    torch.testing.assert_close(masked[0, 1, 2], mask[0])
    torch.testing.assert_close(masked[1], frames[1])
    torch.testing.assert_close(apply_mask(frames[0], mask), masked[0])
    latent = latent_mask_batch(mask[None].repeat(2, 1, 1, 1), num_frames=4, latent_size=RESOLUTION // 8)
    assert latent.shape == (2, 1, 4, 8, 8)
    for f in range(4):
        torch.testing.assert_close(latent[1, :, f], latent_mask(mouth_mask(RESOLUTION), RESOLUTION // 8))
    with pytest.raises(ValueError):
        apply_mask(frames, torch.ones(1, 32, 32))
