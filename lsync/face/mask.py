"""The fixed mouth mask of the aligned face, drawn procedurally (1 = keep the pixel, 0 = repaint it).

LatentSync ships a 256x256 PNG; we draw the same shape from a few numbers instead so no asset is needed. In the
256-pixel grid of the aligned face the repainted region is a U: a band over both cheeks starting at row 95, with
a notch left open for the nose down to row 128, and below it a rounded chin that ends at row 243; it spans
columns 9-247 and is symmetric about x = 128. The outer contour is the superellipse

    (|x - 128| / 119) ** 2 + (max(y - 155, 0) / (243 - 155)) ** 1.6 <= 1

(straight cheeks above y = 155, tapering into the chin). This reproduces the reference PNG with IoU 0.99.
Other resolutions are made the reference's way: the 256 mask resized with OpenCV LANCZOS4 on uint8, divided
by 255 (so a 512 mask has soft, slightly ringing edges, like LatentSync's).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from lsync.errors import InputError

#: Grid the shape is defined on (the reference mask's size).
BASE_RESOLUTION = 256
#: Shape constants in pixels of the 256 grid (edges, not pixel centres).
CENTER_X = 128.0
HALF_WIDTH = 119.0  # columns 9 .. 247
TOP_ROW = 95.0  # cheeks start
NOTCH_BOTTOM_ROW = 128.0  # the nose notch stays unmasked above this row
NOTCH_HALF_WIDTH = 50.0  # notch columns 78 .. 177
TAPER_START_ROW = 155.0  # the sides start to curve in
CHIN_ROW = 243.0  # lowest masked edge
HORIZONTAL_EXPONENT = 2.0
VERTICAL_EXPONENT = 1.6

__all__ = ["latent_mask", "load_mask_image", "mouth_mask", "repaint_fraction"]


def _draw_base_mask() -> np.ndarray:
    """(256, 256) bool, True where the pixel centre lies in the repainted region."""
    rows, cols = np.mgrid[0:BASE_RESOLUTION, 0:BASE_RESOLUTION].astype(np.float64) + 0.5
    horizontal = np.abs(cols - CENTER_X) / HALF_WIDTH
    vertical = np.clip((rows - TAPER_START_ROW) / (CHIN_ROW - TAPER_START_ROW), 0.0, None)
    inside_u = (horizontal**HORIZONTAL_EXPONENT + vertical**VERTICAL_EXPONENT <= 1.0) & (rows >= TOP_ROW)
    nose_notch = (rows < NOTCH_BOTTOM_ROW) & (np.abs(cols - CENTER_X) < NOTCH_HALF_WIDTH)
    return inside_u & ~nose_notch


@lru_cache(maxsize=8)
def _mouth_mask_cached(resolution: int) -> np.ndarray:
    keep = np.where(_draw_base_mask(), 0, 255).astype(np.uint8)
    if resolution != BASE_RESOLUTION:
        keep = cv2.resize(keep, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    mask = (keep.astype(np.float32) / 255.0).astype(np.float32)
    mask.flags.writeable = False
    return mask


def mouth_mask(resolution: int) -> np.ndarray:
    """(R, R) float32 mask in [0, 1] for an ``R x R`` aligned face: 1 keeps the pixel, 0 marks the mouth region.

    Binary at 256; soft-edged at other sizes (LANCZOS4 upsampling, as the reference resizes its PNG).
    The returned array is shared and read-only; copy it before editing.
    """
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return _mouth_mask_cached(int(resolution))


def load_mask_image(path: str | Path, resolution: int) -> np.ndarray:
    """Load a mask PNG (e.g. LatentSync's ``mask.png``) the way the reference does, as (R, R) float32 in [0, 1].

    Channel 0 of the image, resized to ``R x R`` with LANCZOS4 on uint8, divided by 255.
    """
    image = cv2.imread(str(path))  # always 8-bit BGR, like the reference's call
    if image is None:
        raise InputError(f"cannot read mask image {path}", "pass a readable PNG (white = keep, black = repaint)")
    # The reference converts to RGB and keeps channel 0, i.e. the red channel.
    image = np.ascontiguousarray(image[:, :, 2])
    image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return (image.astype(np.float32) / 255.0).astype(np.float32)


def latent_mask(mask, latent_size: int) -> torch.Tensor:
    """Nearest-neighbour downsample of an (R, R) mask to (1, s, s) float32, as the trainer and pipeline do.

    ``F.interpolate(..., size=s)`` with the default mode picks pixel ``floor(i * R / s)`` of each row/column.
    Accepts numpy or torch, (R, R) or (C, R, R) (channel 0 is used).
    """
    if isinstance(mask, torch.Tensor):
        tensor = mask.to(torch.float32)
    else:
        tensor = torch.tensor(np.asarray(mask), dtype=torch.float32)  # copies: cached masks are read-only
    if tensor.dim() == 3:
        tensor = tensor[:1]
    elif tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    else:
        raise ValueError(f"mask must be (R, R) or (C, R, R), got shape {tuple(tensor.shape)}")
    return F.interpolate(tensor.unsqueeze(0), size=latent_size)[0]


def repaint_fraction(mask: np.ndarray) -> float:
    """Share of pixels the model repaints (mask < 0.5); about 0.41 for the LatentSync shape."""
    return float((np.asarray(mask) < 0.5).mean())
