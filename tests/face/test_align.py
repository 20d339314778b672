"""Alignment and paste-back: golden comparisons with the LatentSync reference plus behavioural checks."""

from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lsync.face import align

# ------------------------------------------------------------------------------------------------ helpers


def read_rgb(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def assert_images_close(actual: np.ndarray, expected: np.ndarray, label: str) -> None:
    """README section 10: max abs diff <= 1 and at most 1 % of the values differ."""
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, f"{label}: max abs diff {diff.max()}"
    assert (diff > 0).mean() <= 0.01, f"{label}: {(diff > 0).mean():.4%} of values differ"


def assert_affine_close(actual: np.ndarray, expected: np.ndarray, label: str) -> None:
    np.testing.assert_allclose(actual[:, :2], expected[:, :2], rtol=0, atol=1e-5, err_msg=label)
    np.testing.assert_allclose(actual[:, 2], expected[:, 2], rtol=0, atol=2e-4, err_msg=label)


def resolutions_of(case: dict) -> list[int]:
    return sorted(int(match.group(1)) for key in case if (match := re.fullmatch(r"res(\d+)", key)))


@pytest.fixture(scope="module")
def golden(reference):
    folder = reference / "align"
    cases = json.loads((folder / "align_cases.json").read_text())
    tensors = {key: value.numpy() for key, value in load_file(folder / "align_golden.safetensors").items()}
    assert cases["per_frame"], "no per-frame cases in align_cases.json"
    return folder, cases, tensors


def restore_input_face(raw: np.ndarray, colour) -> np.ndarray:
    """Golden recipe (a): raw aligned face as u8 / 127.5 - 1 with the lower half set to a flat colour."""
    face = raw.astype(np.float32) / 127.5 - 1
    face[face.shape[0] // 2 :] = np.asarray(colour, np.float32)
    return face


def pipeline_input_face(square: np.ndarray, colour) -> torch.Tensor:
    """Golden recipe (b): R x R aligned face /255, normalised to [-1, 1], lower half a flat colour; (3, R, R)."""
    face = torch.from_numpy(square).permute(2, 0, 1).float() / 255.0
    face = (face - 0.5) / 0.5
    face[:, face.shape[1] // 2 :] = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)
    return face


# ------------------------------------------------------------------------------------------------ golden


@pytest.mark.golden
def test_affine_and_inverse_match_golden(golden):
    _, cases, tensors = golden
    checked = 0
    for case in cases["per_frame"]:
        name = case["name"]
        np.testing.assert_array_equal(tensors[f"{name}.landmarks3"], np.asarray(case["landmarks3"], np.float32))
        for resolution in resolutions_of(case):
            expected = tensors[f"{name}.affine_{resolution}"]
            affine = align.similarity_transform(tensors[f"{name}.landmarks3"], resolution)
            assert affine.dtype == np.float32 and affine.shape == (2, 3)
            assert_affine_close(affine, expected, f"{name} R={resolution}")
            assert_affine_close(align.invert_affine(expected), tensors[f"{name}.inv_affine_{resolution}"], name)
            assert tuple(case[f"res{resolution}"]["face_size_wh"]) == align.aligned_face_size(resolution)
            checked += 1
    assert checked >= 2


@pytest.mark.golden
def test_aligned_faces_match_golden(golden):
    folder, cases, tensors = golden
    for case in cases["per_frame"]:
        image = read_rgb(folder / case["input_png"])
        assert list(image.shape[:2]) == case["input_hw"]
        for resolution in resolutions_of(case):
            info = case[f"res{resolution}"]
            landmarks3 = tensors[f"{case['name']}.landmarks3"]
            face, affine, raw = align.align_face(image, landmarks3, resolution, return_raw=True)
            label = f"{case['name']} R={resolution}"
            assert_images_close(raw, read_rgb(folder / info["aligned_raw_png"]), f"{label} raw")
            assert_images_close(face, read_rgb(folder / info["aligned_png"]), f"{label} resized")
            # The LANCZOS resize is exact when applied to the stored raw image.
            resized = cv2.resize(read_rgb(folder / info["aligned_raw_png"]), (resolution, resolution),
                                 interpolation=cv2.INTER_LANCZOS4)
            np.testing.assert_array_equal(resized, read_rgb(folder / info["aligned_png"]))
            # The grey fill appears exactly where the reference had it (within the 1-level tolerance).
            grey = int(np.all(raw == 127, axis=-1).sum())
            assert abs(grey - info["pixels_equal_127_grey_in_raw"]) <= max(10, 0.01 * raw.shape[0] * raw.shape[1])


@pytest.mark.golden
def test_restore_matches_golden(golden):
    folder, cases, tensors = golden
    colour = cases["restore_colour_lower_half"]
    for case in cases["per_frame"]:
        image = read_rgb(folder / case["input_png"])
        for resolution in resolutions_of(case):
            info = case[f"res{resolution}"]
            face = restore_input_face(read_rgb(folder / info["aligned_raw_png"]), colour)
            affine = tensors[f"{case['name']}.affine_{resolution}"]
            restored = align.restore_face(image, face, affine)
            assert_images_close(restored, read_rgb(folder / info["restored_png"]), f"{case['name']} R={resolution}")


@pytest.mark.golden
def test_restore_pipeline_matches_golden(golden):
    folder, cases, tensors = golden
    colour = cases["restore_colour_lower_half"]
    resized_checked = 0
    for case in cases["per_frame"]:
        image = read_rgb(folder / case["input_png"])
        for resolution in resolutions_of(case):
            info = case[f"res{resolution}"]
            face = pipeline_input_face(read_rgb(folder / info["aligned_png"]), colour)
            key = f"{case['name']}.pipeline_face_resized_back_{resolution}"
            if key in tensors:
                resized = align.resize_face_to_aligned(face[None], resolution)[0]
                np.testing.assert_allclose(resized.numpy(), tensors[key], rtol=0, atol=1e-5)
                resized_checked += 1
            restored = align.restore_face(image, face, tensors[f"{case['name']}.affine_{resolution}"])
            expected = read_rgb(folder / info["restored_pipeline_png"])
            assert_images_close(restored, expected, f"pipeline {case['name']} R={resolution}")
    assert resized_checked >= 1


@pytest.mark.golden
def test_sequence_smoothing_matches_golden(golden):
    folder, cases, tensors = golden
    steps = cases["sequence"]["steps"]
    assert steps, "no sequence steps in align_cases.json"
    resolutions = sorted({int(m.group(1)) for k in tensors if (m := re.fullmatch(r"seq\.0\.affine_(\d+)", k))})
    assert resolutions
    for resolution in resolutions:
        smoother = align.AlignmentSmoother(resolution)
        for step in steps:
            prefix = f"seq.{step['k']}"
            landmarks3 = tensors[f"{prefix}.landmarks3"]
            np.testing.assert_array_equal(landmarks3, np.asarray(step["landmarks3"], np.float32))
            affine = smoother(landmarks3)
            label = f"{prefix} R={resolution}"
            assert_affine_close(affine, tensors[f"{prefix}.affine_{resolution}"], label)
            np.testing.assert_allclose(smoother.p_bias, tensors[f"{prefix}.p_bias_{resolution}"], rtol=0, atol=1e-6)
            unsmoothed = align.similarity_transform(landmarks3, resolution)
            assert_affine_close(unsmoothed, tensors[f"{prefix}.affine_nosmooth_{resolution}"], label)
            png = step.get("aligned_raw_png")
            match = re.search(r"_aligned_(\d+)_raw\.png$", png or "")
            if match and int(match.group(1)) == resolution:
                raw = align.warp_face(read_rgb(folder / step["input_png"]), affine, align.aligned_face_size(resolution))
                assert_images_close(raw, read_rgb(folder / png), f"{label} aligned")


# ------------------------------------------------------------------------------------------------ behaviour


def test_aligned_face_size_uses_reference_rounding():
    assert align.aligned_face_size(256) == (210, 280)
    assert align.aligned_face_size(512) == (420, 560)
    assert align.aligned_face_size(384) == (314, 419)  # 75 * 4.2 = 314.99999... in float64
    np.testing.assert_allclose(align.template_points(256), [[47.6, 56.0], [162.4, 56.0], [105.0, 112.0]])


def test_similarity_transform_recovers_a_known_similarity():
    template = align.template_points(256)
    angle, scale, shift = 0.3, 0.7, np.array([40.0, -12.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # landmarks = inverse similarity of the template, so the fit must map them back exactly
    landmarks = (template - shift) @ rotation / scale
    affine = align.similarity_transform(landmarks, 256)
    mapped = landmarks @ affine[:, :2].T + affine[:, 2]
    np.testing.assert_allclose(mapped, template, atol=2e-3)
    assert np.linalg.det(affine[:, :2]) > 0  # never a reflection


def test_similarity_transform_never_reflects_mirrored_landmarks():
    landmarks = align.template_points(256)[[1, 0, 2]]  # left/right swapped: the best fit would be a mirror
    affine = align.similarity_transform(landmarks, 256)
    assert np.linalg.det(affine[:, :2]) > 0


def test_invert_affine_round_trip_numpy_and_torch():
    affine = np.array([[1.1, 0.2, -150.0], [-0.2, 1.1, -50.0]], np.float32)
    inverse = align.invert_affine(affine)
    composed = np.vstack([inverse, [0, 0, 1]]) @ np.vstack([affine, [0, 0, 1]])
    np.testing.assert_allclose(composed, np.eye(3), atol=1e-5)
    batch = torch.from_numpy(np.stack([affine, affine]))
    np.testing.assert_allclose(align.invert_affine(batch)[1].numpy(), inverse, atol=1e-6)


def test_warp_window_equals_full_warp_and_affine_grid():
    generator = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 40, 30, generator=generator) * 255
    affine = torch.tensor([[0.9, 0.1, 3.0], [-0.1, 0.9, 5.0]])
    full = align.warp_affine(src, affine, (36, 28))
    window = align.warp_affine(src, affine, (36, 28), rows=slice(5, 20), cols=slice(3, 17))
    torch.testing.assert_close(window, full[..., 5:20, 3:17], rtol=0, atol=0)
    theta = align._normalized_sampling_theta(affine[None].expand(2, -1, -1), (40, 30), (36, 28))
    grid = F.affine_grid(theta, [2, 3, 36, 28], align_corners=True)
    torch.testing.assert_close(align._sampling_grid(theta, (36, 28)), grid, rtol=0, atol=0)


def test_warp_face_fills_outside_with_grey():
    image = np.full((50, 60, 3), 200, np.uint8)
    shift = np.array([[1, 0, 30], [0, 1, 0]], np.float32)  # moves the image 30 px right
    out = align.warp_face(image, shift, (80, 40))
    assert out.shape == (40, 80, 3) and out.dtype == np.uint8
    assert np.all(out[:, :29] == 127)
    # normalised-coordinate round trips leave ~1e-5 noise that truncation turns into 199 here and there,
    # exactly like the reference's cast
    inside = out[:, 31:]
    assert set(np.unique(inside)) <= {199, 200} and (inside == 200).mean() > 0.9


@pytest.mark.parametrize("size", [2, 5, 8])
def test_erode_matches_opencv(size):
    rng = np.random.default_rng(size)
    mask = (rng.random((37, 41)) > 0.2).astype(np.float32) * rng.random((37, 41)).astype(np.float32)
    expected = cv2.erode(mask, np.ones((size, size), np.uint8))
    actual = align._erode(torch.from_numpy(mask)[None, None], size)[0, 0].numpy()
    np.testing.assert_array_equal(actual, expected)


def test_gaussian_blur_matches_opencv_reflect101():
    rng = np.random.default_rng(1)
    mask = rng.random((30, 45)).astype(np.float32)
    for w_edge in (1, 3, 7):
        size = 2 * w_edge + 1
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        expected = cv2.GaussianBlur(mask, (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)
        actual = align._gaussian_blur(torch.from_numpy(mask)[None, None], size, sigma)[0, 0].numpy()
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def _textured_frame(height=240, width=200) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x * 1.1) % 256, (y * 0.9) % 256, ((x + y) * 0.5) % 256], axis=-1)
    return frame.astype(np.uint8)


def test_restore_window_equals_full_frame_computation():
    frame = _textured_frame()
    landmarks3 = np.array([[70.0, 80.0], [130.0, 86.0], [98.0, 118.0]])
    face, affine = align.align_face(frame, landmarks3, 256)
    edited = face.copy()
    edited[128:] = (30, 200, 90)
    fast = align.restore_face(frame, edited, affine, crop=True)
    slow = align.restore_face(frame, edited, affine, crop=False)
    np.testing.assert_array_equal(fast, slow)
    # the edit lands in the frame, and pixels far from the face are untouched
    assert np.abs(fast.astype(int) - frame).max() > 50
    np.testing.assert_array_equal(fast[-5:], frame[-5:])


def test_restoring_an_unedited_face_changes_little():
    frame = _textured_frame()
    landmarks3 = np.array([[70.0, 80.0], [130.0, 86.0], [98.0, 118.0]])
    face, affine = align.align_face(frame, landmarks3, 256)
    restored = align.restore_face(frame, face, affine)
    assert np.abs(restored.astype(int) - frame).mean() < 3.0


def test_align_track_smooths_like_a_sequential_smoother():
    frame = _textured_frame()
    base = np.array([[70.0, 80.0], [130.0, 86.0], [98.0, 118.0]])
    landmarks = np.stack([base + [step, 0.5 * step] for step in range(4)])
    faces, affines = align.align_track([frame] * 4, landmarks, 256)
    assert faces.shape == (4, 256, 256, 3) and affines.shape == (4, 2, 3)
    smoother = align.AlignmentSmoother(256)
    for index in range(4):
        face, affine = align.align_face(frame, landmarks[index], 256, smoother)
        np.testing.assert_array_equal(affines[index], affine)
        np.testing.assert_array_equal(faces[index], face)
    _, plain = align.align_track([frame] * 4, landmarks, 256, smooth=False)
    np.testing.assert_array_equal(plain[2], align.similarity_transform(landmarks[2], 256))
    with pytest.raises(ValueError):
        align.align_track([frame], landmarks, 256)


def test_smoother_shifts_first_call_and_resets():
    landmarks3 = np.array([[159.0, 118.0], [256.0, 129.0], [195.0, 170.0]])
    smoother = align.AlignmentSmoother(256)
    first = smoother(landmarks3)
    plain = align.similarity_transform(landmarks3, 256)
    np.testing.assert_allclose(first[:, :2], plain[:, :2])
    np.testing.assert_allclose(first[:, 2] - plain[:, 2], smoother.p_bias, atol=1e-5)
    assert np.abs(smoother.p_bias).max() > 0
    moved = landmarks3 + np.array([[0, 0], [0, 0], [4.0, 0]])
    second = smoother(moved)
    _, current = align._fit_similarity(moved, 256)
    expected_bias = 0.2 * (first[:, 2] - plain[:, 2]) + 0.8 * current.numpy()
    np.testing.assert_allclose(second[:, 2] - align.similarity_transform(moved, 256)[:, 2], expected_bias, atol=1e-5)
    smoother.reset()
    np.testing.assert_allclose(smoother(landmarks3), first, atol=1e-6)
