"""The procedural mouth mask against LatentSync's mask.png and its resized / latent versions."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lsync.face.mask import latent_mask, load_mask_image, mouth_mask, repaint_fraction


def read_channel0(path) -> np.ndarray:
    """Channel 0 of the RGB image as float32 / 255 (the PNGs store the reference's uint8 values)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return image[:, :, 2].astype(np.float32) / 255.0


def repaint_iou(ours: np.ndarray, expected: np.ndarray) -> float:
    a, b = ours < 0.5, expected < 0.5
    return float((a & b).sum() / (a | b).sum())


def golden_mask_files(reference) -> dict[int, object]:
    files = {}
    for path in (reference / "mask").glob("mask_*.png"):
        if match := re.fullmatch(r"mask_(\d+)\.png", path.name):
            files[int(match.group(1))] = path
    assert files, "no mask_<R>.png in the golden data"
    return files


@pytest.mark.golden
def test_mouth_mask_matches_reference_pngs(reference):
    for resolution, path in golden_mask_files(reference).items():
        expected = read_channel0(path)
        ours = mouth_mask(resolution)
        assert ours.shape == expected.shape == (resolution, resolution)
        assert repaint_iou(ours, expected) >= 0.98, f"R={resolution}"


@pytest.mark.golden
def test_mouth_mask_latent_agrees_with_reference(reference):
    tensors = load_file(reference / "mask" / "mask_latent.safetensors")
    assert tensors
    for key, expected in tensors.items():
        size = int(re.fullmatch(r"mask_latent_(\d+)", key).group(1))
        ours = latent_mask(mouth_mask(size * 8), size)
        assert ours.shape == expected.shape == (1, size, size)
        agreement = ((ours >= 0.5) == (expected >= 0.5)).float().mean().item()
        assert agreement >= 0.97, f"{key}: {agreement:.4f}"


@pytest.mark.golden
def test_latent_mask_of_reference_png_is_exact(reference):
    files = golden_mask_files(reference)
    tensors = load_file(reference / "mask" / "mask_latent.safetensors")
    for key, expected in tensors.items():
        size = int(re.fullmatch(r"mask_latent_(\d+)", key).group(1))
        mask = read_channel0(files[size * 8])
        torch.testing.assert_close(latent_mask(mask, size), expected, rtol=0, atol=0)
        # (C, R, R) input uses channel 0, like the trainer's mask[0:1]
        stacked = torch.from_numpy(np.stack([mask, np.zeros_like(mask)]))
        torch.testing.assert_close(latent_mask(stacked, size), expected, rtol=0, atol=0)


@pytest.mark.golden
def test_load_mask_image_reproduces_reference_resize(reference):
    original = reference / "mask" / "mask_original.png"
    for resolution, path in golden_mask_files(reference).items():
        np.testing.assert_array_equal(load_mask_image(original, resolution), read_channel0(path))


def test_mouth_mask_shape_and_semantics():
    mask = mouth_mask(256)
    assert mask.dtype == np.float32 and mask.shape == (256, 256)
    assert set(np.unique(mask)) == {0.0, 1.0}  # binary on its native grid
    assert 0.38 <= repaint_fraction(mask) <= 0.44
    # keep: everything above the cheeks, the nose notch, the outer columns, the bottom rows
    assert mask[:94].min() == 1 and mask[100:127, 80:176].min() == 1
    assert mask[:, :8].min() == 1 and mask[:, 249:].min() == 1 and mask[245:].min() == 1
    # repaint: both cheeks from row 95, the mouth, the chin
    assert mask[96:127, 10:77].max() == 0 and mask[96:127, 179:246].max() == 0
    assert mask[130:235, 100:156].max() == 0
    np.testing.assert_array_equal(mask, mask[:, ::-1])  # symmetric about x = 128


def test_mouth_mask_other_resolutions_are_soft_resizes():
    big = mouth_mask(512)
    assert big.shape == (512, 512) and 0.0 <= big.min() and big.max() <= 1.0
    assert len(np.unique(big)) > 2
    assert abs(repaint_fraction(big) - repaint_fraction(mouth_mask(256))) < 0.01
    assert not mouth_mask(256).flags.writeable  # cached, shared
    with pytest.raises(ValueError):
        mouth_mask(0)


def test_latent_mask_picks_every_eighth_pixel():
    mask = np.zeros((64, 64), np.float32)
    mask[::8, ::8] = 1.0
    assert latent_mask(mask, 8).min() == 1.0
    with pytest.raises(ValueError):
        latent_mask(np.zeros((2, 2, 2, 2)), 1)
