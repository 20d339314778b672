"""Affine face alignment and paste-back, numerically matching LatentSync's ``AlignRestore``.

One module serves preprocessing, training-data loading and inference, so every stage sees identical crops.

Geometry (README of the golden data, section 6):

* Three landmarks (left eyebrow centre, right eyebrow centre, nose centre), pixel ``(x, y)``, are mapped by a
  similarity transform onto a template ``(17, 20), (58, 20), (37.5, 40)`` scaled by ``2.8 * R / 256``.
* The frame is warped into a ``(w, h) = (int(75 r), int(100 r))`` face (bilinear, ``align_corners=True``, grey
  fill 127, truncated to uint8), then LANCZOS4-resized to ``R x R`` (a deliberate anisotropic stretch).
* Paste-back warps the (possibly edited) face back with the inverse matrix and alpha-blends it into the frame
  with an eroded, Gaussian-feathered mask.

The warp reproduces kornia's ``warp_affine`` (normalised-coordinate homography, ``affine_grid`` +
``grid_sample``, fill blended through a warped all-ones mask) with plain torch ops, so kornia is not needed.
All arithmetic is float32 like the reference; the torch paths run on whatever device the inputs live on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

#: Template points at R = 256 / 2.8 (LatentSync's ``face_template``), rows (x, y): left brow, right brow, nose.
TEMPLATE_POINTS = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])
#: Aligned face width and height in template units (multiplied by the ratio, then truncated).
FACE_SIZE_UNITS = (75, 100)
#: Grey value written where the warp samples outside the source image.
FILL_VALUE = 127.0
#: Weight of the previous bias in the exponential smoothing of the nose-point bias.
BIAS_MOMENTUM = 0.2

__all__ = [
    "AlignmentSmoother",
    "align_face",
    "align_track",
    "aligned_face_size",
    "invert_affine",
    "resize_face_to_aligned",
    "restore_face",
    "similarity_transform",
    "template_points",
    "template_ratio",
    "warp_affine",
    "warp_face",
]


# ----------------------------------------------------------------------------------------------------------------
# Template and similarity fit
# ----------------------------------------------------------------------------------------------------------------


def template_ratio(resolution: int) -> float:
    """Scale from template units to aligned-face pixels: ``resolution / 256 * 2.8`` (float64, reference order)."""
    return resolution / 256 * 2.8


def template_points(resolution: int) -> np.ndarray:
    """(3, 2) float64 template points (x, y) in aligned-face pixels for an ``R x R`` model resolution."""
    return TEMPLATE_POINTS * template_ratio(resolution)


def aligned_face_size(resolution: int) -> tuple[int, int]:
    """``(w, h)`` of the raw aligned face: (210, 280) at 256, (420, 560) at 512, (314, 419) at 384.

    The truncation of ``75 * ratio`` in float64 is intentional: it is what the reference computes.
    """
    ratio = template_ratio(resolution)
    return int(FACE_SIZE_UNITS[0] * ratio), int(FACE_SIZE_UNITS[1] * ratio)


def _fit_similarity(landmarks3, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares similarity (rotation, uniform scale, translation) from landmarks to the template.

    Returns the (2, 3) float32 matrix and the nose-point bias ``template_nose_n - landmark_nose_n`` in the
    normalised coordinates of the fit (used only by the smoother). Float32 torch, CPU, like the reference.
    """
    points = torch.as_tensor(np.asarray(landmarks3, dtype=np.float64), dtype=torch.float32).reshape(3, 2)
    template = torch.as_tensor(template_points(resolution), dtype=torch.float32)

    points_mean = points.mean(dim=0)
    template_mean = template.mean(dim=0)
    points_centered = points - points_mean
    template_centered = template - template_mean
    # One unbiased standard deviation over all six coordinates of each set.
    points_std = torch.std(points_centered)
    template_std = torch.std(template_centered)
    points_normalized = points_centered / points_std
    template_normalized = template_centered / template_std

    covariance = points_normalized.T @ template_normalized
    u, _, vh = torch.linalg.svd(covariance)
    v = vh.mH
    rotation = v @ u.T
    if torch.det(rotation) < 0:  # a reflection: flip the last singular direction
        v[:, -1] = -v[:, -1]
        rotation = v @ u.T

    scale = template_std / points_std
    scaled_rotation = scale * rotation
    translation = template_mean.reshape(2, 1) - scale * (rotation @ points_mean.reshape(2, 1))
    matrix = torch.cat((scaled_rotation, translation), dim=1)
    nose_bias = template_normalized[2] - points_normalized[2]
    return matrix, nose_bias


def similarity_transform(landmarks3, resolution: int) -> np.ndarray:
    """(2, 3) float32 matrix mapping input pixel ``(x, y, 1)`` to aligned-face pixel, without smoothing.

    Args:
        landmarks3: (3, 2) left brow centre, right brow centre, nose centre as pixel (x, y).
        resolution: model resolution R (256 or 512).
    """
    matrix, _ = _fit_similarity(landmarks3, resolution)
    return matrix.numpy()


@dataclass
class AlignmentSmoother:
    """Stateful translation smoothing of consecutive alignment matrices: the reference's ``smooth=True``.

    Each call adds a bias to the translation column: ``bias = 0.2 * previous + 0.8 * current`` where *current*
    is the difference of the template and landmark nose points in the normalised coordinates of the fit (a
    sub-pixel shift, independent of R). The first call is shifted by its own bias. Create one per video /
    subject track, or call :meth:`reset` at a cut; ``p_bias`` is the state after the last call.
    """

    resolution: int
    p_bias: np.ndarray | None = field(default=None)

    def __call__(self, landmarks3) -> np.ndarray:
        """(2, 3) float32 smoothed matrix for the next frame's landmarks."""
        matrix, bias = _fit_similarity(landmarks3, self.resolution)
        if self.p_bias is not None:
            bias = torch.as_tensor(self.p_bias, dtype=torch.float32) * BIAS_MOMENTUM + bias * (1 - BIAS_MOMENTUM)
        self.p_bias = bias.numpy().copy()
        matrix[:, 2] = matrix[:, 2] + bias
        return matrix.numpy()

    def reset(self) -> None:
        self.p_bias = None


# ----------------------------------------------------------------------------------------------------------------
# kornia-compatible warp
# ----------------------------------------------------------------------------------------------------------------


def _to_homography(affine: torch.Tensor) -> torch.Tensor:
    """(B, 2, 3) -> (B, 3, 3) by appending the row (0, 0, 1)."""
    last_row = torch.zeros_like(affine[:, :1, :])
    last_row[..., 2] = 1.0
    return torch.cat((affine, last_row), dim=1)


def _pixel_to_normalized(height: int, width: int, device, dtype) -> torch.Tensor:
    """(1, 3, 3) map from pixel coordinates to [-1, 1] with align_corners semantics (kornia's recipe)."""
    matrix = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]], device=device, dtype=dtype)
    width_denom = 1e-14 if width == 1 else width - 1.0
    height_denom = 1e-14 if height == 1 else height - 1.0
    matrix[0, 0] = matrix[0, 0] * 2.0 / width_denom
    matrix[1, 1] = matrix[1, 1] * 2.0 / height_denom
    return matrix.unsqueeze(0)


def _inverse(matrix: torch.Tensor) -> torch.Tensor:
    """Matrix inverse computed in at least float32 (half precision has no LU)."""
    if matrix.dtype not in (torch.float32, torch.float64):
        return torch.linalg.inv(matrix.float()).to(matrix.dtype)
    return torch.linalg.inv(matrix)


def _normalized_sampling_theta(affine: torch.Tensor, src_hw: tuple[int, int], dst_hw: tuple[int, int]):
    """(B, 2, 3) ``affine_grid`` theta: destination normalised coordinates -> source normalised coordinates."""
    device, dtype = affine.device, affine.dtype
    src_from_src_norm = _inverse(_pixel_to_normalized(*src_hw, device, dtype))
    dst_norm_from_dst = _pixel_to_normalized(*dst_hw, device, dtype)
    dst_norm_from_src_norm = dst_norm_from_dst @ (_to_homography(affine) @ src_from_src_norm)
    return _inverse(dst_norm_from_src_norm)[:, :2, :]


def _sampling_grid(theta: torch.Tensor, dst_hw: tuple[int, int], rows: slice | None = None, cols: slice | None = None):
    """(B, h, w, 2) ``grid_sample`` grid for the destination window ``rows x cols`` of a ``dst_hw`` output.

    Identical, value for value, to ``F.affine_grid(theta, (B, C, *dst_hw), align_corners=True)[:, rows, cols]``
    (same linspace base grid and the same batched matmul), without building the full-size grid.
    """
    height, width = dst_hw
    rows = rows or slice(0, height)
    cols = cols or slice(0, width)
    xs = torch.linspace(-1.0, 1.0, width, device=theta.device, dtype=theta.dtype)[cols]
    ys = torch.linspace(-1.0, 1.0, height, device=theta.device, dtype=theta.dtype)[rows]
    base = torch.empty(1, len(ys), len(xs), 3, device=theta.device, dtype=theta.dtype)
    base[..., 0] = xs
    base[..., 1] = ys.unsqueeze(-1)
    base[..., 2] = 1.0
    batch = theta.shape[0]
    grid = base.expand(batch, -1, -1, -1).reshape(batch, -1, 3).bmm(theta.transpose(1, 2))
    return grid.view(batch, len(ys), len(xs), 2)


def _sample(src: torch.Tensor, grid: torch.Tensor, fill_value: float | None) -> torch.Tensor:
    """Bilinear ``grid_sample``; with ``fill_value`` the outside is blended towards it like kornia's 'fill' mode."""
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if fill_value is None:
        return warped
    ones = torch.ones_like(src[:, :1])
    coverage = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return warped + (1 - coverage) * fill_value


def warp_affine(
    src: torch.Tensor,
    affine: torch.Tensor,
    dst_hw: tuple[int, int],
    fill_value: float | None = FILL_VALUE,
    rows: slice | None = None,
    cols: slice | None = None,
) -> torch.Tensor:
    """kornia-style ``warp_affine`` (bilinear, align_corners=True) of a float batch.

    Args:
        src: (B, C, H, W) float image batch.
        affine: (B, 2, 3) or (2, 3) matrix mapping source pixel (x, y, 1) to destination pixel.
        dst_hw: (height, width) of the destination image.
        fill_value: value blended in where the sample falls outside ``src``; None pads with zeros.
        rows, cols: optional window of the destination to compute (values equal the full warp's).
    Returns:
        (B, C, h, w) warped batch (the full ``dst_hw`` unless a window is given).
    """
    affine = torch.as_tensor(affine, dtype=src.dtype, device=src.device)
    if affine.dim() == 2:
        affine = affine.unsqueeze(0)
    affine = affine.expand(src.shape[0], -1, -1)
    theta = _normalized_sampling_theta(affine, tuple(src.shape[-2:]), tuple(dst_hw))
    grid = _sampling_grid(theta, tuple(dst_hw), rows, cols)
    return _sample(src, grid, fill_value)


def invert_affine(affine) -> np.ndarray | torch.Tensor:
    """Inverse of a (2, 3) / (B, 2, 3) affine matrix, via the float32 3x3 inverse (kornia's recipe).

    Returns the same kind (numpy float32 or torch tensor) as the input.
    """
    is_numpy = not isinstance(affine, torch.Tensor)
    matrix = torch.as_tensor(np.asarray(affine, dtype=np.float32)) if is_numpy else affine
    squeeze = matrix.dim() == 2
    if squeeze:
        matrix = matrix.unsqueeze(0)
    inverse = _inverse(_to_homography(matrix))[:, :2, :3]
    if squeeze:
        inverse = inverse[0]
    return inverse.numpy() if is_numpy else inverse


def _image_to_tensor(image: np.ndarray, device=None) -> torch.Tensor:
    """(H, W, 3) uint8/float numpy -> (1, 3, H, W) float32 tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=torch.float32)
    return tensor.permute(2, 0, 1).unsqueeze(0)


def _truncate_to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 255] -> (H, W, 3) uint8 by truncation (the reference's cast)."""
    return tensor[0].clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def warp_face(image: np.ndarray, affine, size: tuple[int, int], device=None) -> np.ndarray:
    """Warp a frame into the raw aligned face.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        affine: (2, 3) frame-pixel -> face-pixel matrix.
        size: ``(w, h)`` of the face, see :func:`aligned_face_size`.
    Returns:
        (h, w, 3) uint8 face, outside pixels grey 127, cast by truncation.
    """
    face_w, face_h = size
    src = _image_to_tensor(image, device)
    warped = warp_affine(src, np.asarray(affine, dtype=np.float32), (face_h, face_w), fill_value=FILL_VALUE)
    return _truncate_to_uint8(warped)


def align_face(
    image: np.ndarray,
    landmarks3,
    resolution: int,
    smoother: AlignmentSmoother | None = None,
    return_raw: bool = False,
):
    """Align one frame: similarity fit, warp, LANCZOS4 resize to ``R x R``.

    Args:
        image: (H, W, 3) uint8 RGB frame.
        landmarks3: (3, 2) brow/brow/nose pixel (x, y).
        resolution: R.
        smoother: an :class:`AlignmentSmoother` carrying state across a video (the inference pipeline always
            smooths); None fits this frame alone.
        return_raw: also return the raw ``(h, w)`` aligned face before the resize.
    Returns:
        ``(face (R, R, 3) uint8, affine (2, 3) float32)``, plus the raw face when ``return_raw``.
    """
    affine = smoother(landmarks3) if smoother is not None else similarity_transform(landmarks3, resolution)
    raw = warp_face(image, affine, aligned_face_size(resolution))
    face = cv2.resize(raw, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return (face, affine, raw) if return_raw else (face, affine)


def align_track(frames, landmarks3: np.ndarray, resolution: int, smooth: bool = True):
    """Align consecutive frames of one subject (one segment), smoothing like the inference pipeline.

    Args:
        frames: sequence of (H, W, 3) uint8 RGB frames, one per row of ``landmarks3``.
        landmarks3: (T, 3, 2) alignment points.
        resolution: R.
        smooth: carry an :class:`AlignmentSmoother` across the frames (fresh for this call).
    Returns:
        ``(faces (T, R, R, 3) uint8, affines (T, 2, 3) float32)``.
    """
    landmarks3 = np.asarray(landmarks3)
    if len(frames) != len(landmarks3):
        raise ValueError(f"{len(frames)} frames but {len(landmarks3)} landmark sets")
    smoother = AlignmentSmoother(resolution) if smooth else None
    faces = np.empty((len(frames), resolution, resolution, 3), np.uint8)
    affines = np.empty((len(frames), 2, 3), np.float32)
    for index, (frame, points) in enumerate(zip(frames, landmarks3)):
        faces[index], affines[index] = align_face(frame, points, resolution, smoother)
    return faces, affines


# ----------------------------------------------------------------------------------------------------------------
# Paste-back
# ----------------------------------------------------------------------------------------------------------------


def _erode(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Min filter with a ``size x size`` box whose anchor is at ``(size // 2, size // 2)``.

    Outside the image counts as +inf, so borders never erode. This equals OpenCV ``erode`` with an all-ones
    kernel and default border, and kornia ``erosion`` with its default geodesic border.
    mask: (B, 1, H, W) float.
    """
    if size <= 1:
        return mask
    before, after = size // 2, size - size // 2 - 1
    padded = F.pad(mask, (before, after, before, after), mode="constant", value=float("inf"))
    # A box minimum is the minimum over columns of the minimum over rows: two 1-D passes, O(size) per pixel
    # instead of O(size^2), with exactly the same result (the feathering kernel is ~50 px on a 1080p face).
    negated = F.max_pool2d(-padded, kernel_size=(size, 1), stride=1)
    return -F.max_pool2d(negated, kernel_size=(1, size), stride=1)


def _gaussian_kernel1d(size: int, sigma: float, device, dtype) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps centred on ``size // 2`` (kornia's ``gaussian``)."""
    sigma_t = torch.tensor([[sigma]], device=device, dtype=dtype)
    x = torch.arange(size, device=device, dtype=dtype) - float(size // 2)
    if size % 2 == 0:
        x = x + 0.5
    gauss = torch.exp(-x.pow(2.0) / (2 * sigma_t.pow(2.0)))
    return (gauss / gauss.sum(-1, keepdim=True))[0]


def _gaussian_blur(mask: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect (OpenCV REFLECT_101) borders, horizontal pass first.

    Matches kornia ``gaussian_blur2d(x, (size, size), (sigma, sigma))``. mask: (B, 1, H, W) float.
    """
    if size <= 1:
        return mask
    kernel = _gaussian_kernel1d(size, sigma, mask.device, mask.dtype)
    radius = size // 2
    out = F.conv2d(F.pad(mask, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, size))
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, size, 1))


def _face_window(inverse: np.ndarray, face_hw: tuple[int, int], frame_hw: tuple[int, int], margin: int):
    """Rows/cols slices of the frame that contain the pasted face plus ``margin`` pixels (clipped)."""
    face_h, face_w = face_hw
    corners = np.array([[0, 0, 1], [face_w - 1, 0, 1], [0, face_h - 1, 1], [face_w - 1, face_h - 1, 1]], np.float64)
    mapped = corners @ np.asarray(inverse, np.float64).T
    x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - margin
    x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + margin + 1
    height, width = frame_hw
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    return slice(y0, y1), slice(x0, x1)


def _paste_back(frame: torch.Tensor, face: torch.Tensor, affine: torch.Tensor, crop: bool) -> torch.Tensor:
    """The reference ``restore_img`` on tensors.

    frame: (1, 3, H, W) float in 0..255; face: (1, 3, h, w) float in [-1, 1]; affine: (2, 3) float32.
    Returns (1, 3, H, W) float blended frame (not yet truncated).
    """
    frame_hw = tuple(frame.shape[-2:])
    face_hw = tuple(face.shape[-2:])
    inverse = invert_affine(affine)
    rows = cols = None
    if crop:
        # Everything below is zero (mask) or the untouched frame outside the warped face rectangle; the margin
        # covers the bilinear footprint, the erosions and the blur reach so the window's result is identical.
        face_area = face_hw[0] * face_hw[1] / max(abs(float(torch.det(affine[:, :2]))), 1e-12)
        margin = int(math.sqrt(face_area)) // 20 + 4
        rows, cols = _face_window(inverse.cpu().numpy(), face_hw, frame_hw, margin)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return frame
    theta = _normalized_sampling_theta(inverse.unsqueeze(0), face_hw, frame_hw)
    grid = _sampling_grid(theta, frame_hw, rows, cols)
    # The warped all-ones face is both the paste mask and the coverage that blends in the fill value
    # (127, applied in the [-1, 1] domain as the reference does; the mask removes it again).
    ones = torch.ones((1, 1, *face_hw), device=face.device, dtype=face.dtype)
    inv_mask = _sample(ones, grid, fill_value=None)
    inv_face = _sample(face, grid, fill_value=None) + (1 - inv_mask) * FILL_VALUE
    inv_face = (inv_face / 2 + 0.5).clamp(0, 1) * 255
    inv_mask_erosion = _erode(inv_mask, 2)
    pasted_face = inv_mask_erosion * inv_face
    total_face_area = torch.sum(inv_mask_erosion.float())
    w_edge = int(float(total_face_area) ** 0.5) // 20
    inv_mask_center = _erode(inv_mask_erosion, 2 * w_edge)
    blur_size = w_edge * 2 + 1
    sigma = 0.3 * ((blur_size - 1) * 0.5 - 1) + 0.8
    soft_mask = _gaussian_blur(inv_mask_center, blur_size, sigma)
    window = frame if rows is None else frame[..., rows, cols]
    blended = soft_mask * pasted_face + (1 - soft_mask) * window
    if rows is None:
        return blended
    out = frame.clone()
    out[..., rows, cols] = blended
    return out


def resize_face_to_aligned(face: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, 3, R, R) float face -> (B, 3, h, w) raw aligned size: bicubic, antialias (torchvision ``resize``)."""
    face_w, face_h = aligned_face_size(resolution)
    return F.interpolate(face, size=(face_h, face_w), mode="bicubic", align_corners=False, antialias=True)


def _face_to_tensor(face, device) -> torch.Tensor:
    """Face as (1, 3, h, w) float32 in [-1, 1]: uint8 HxWx3 -> (x / 255 - 0.5) / 0.5; float HxWx3 / 3xHxW as is."""
    if isinstance(face, torch.Tensor):
        tensor = face.to(device=device, dtype=torch.float32)
        if tensor.shape[-1] == 3 and tensor.shape[0] != 3:
            tensor = tensor.permute(2, 0, 1)
        return tensor.unsqueeze(0) if tensor.dim() == 3 else tensor
    face = np.asarray(face)
    tensor = _image_to_tensor(face, device)
    if face.dtype == np.uint8:
        tensor = (tensor / 255.0 - 0.5) / 0.5
    return tensor


def restore_face(frame: np.ndarray, face, affine, crop: bool = True, device=None) -> np.ndarray:
    """Paste an aligned face back into its frame (the reference ``restore_img`` / ``restore_video`` paths).

    Args:
        frame: (H, W, 3) uint8 RGB frame the face was aligned from.
        face: the face in aligned coordinates: either the raw ``(h, w)`` size of :func:`aligned_face_size` or
            the square ``R x R`` model output. A square face is first resized to the raw size with antialiased
            bicubic interpolation (the pipeline's path). uint8 ``(.., .., 3)`` faces are mapped to [-1, 1] by
            ``(x / 255 - 0.5) / 0.5``; float faces (HxWx3 numpy or 3xHxW tensor) must already be in [-1, 1].
        affine: (2, 3) frame -> face matrix returned by :func:`align_face`.
        crop: compute only the window around the face (same result, much faster on large frames).
    Returns:
        (H, W, 3) uint8 frame, cast by truncation. For faces under 20x20 frame pixels (w_edge = 0) the second
        erosion and the blur are skipped, where the reference would call OpenCV/kornia with an empty kernel.
    """
    face_tensor = _face_to_tensor(face, device)
    height, width = face_tensor.shape[-2:]
    if height == width:
        face_tensor = resize_face_to_aligned(face_tensor, int(height))
    frame_tensor = _image_to_tensor(frame, face_tensor.device)
    affine_tensor = torch.as_tensor(np.asarray(affine, dtype=np.float32), device=face_tensor.device)
    return _truncate_to_uint8(_paste_back(frame_tensor, face_tensor, affine_tensor, crop))
