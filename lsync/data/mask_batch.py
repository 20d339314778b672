"""The fixed mouth mask applied to batches of clips, in pixel and latent space.

The mask is 1 where a pixel is kept and 0 where the U-Net repaints it (:func:`lsync.face.mask.mouth_mask`).
Pixel side: the masked frames the VAE encodes are ``frames * mask`` (the mouth becomes 0, mid-grey in [-1, 1]).
Latent side: the U-Net gets the mask as one extra input channel, nearest-downsampled to the latent grid and
repeated over the frames, as the reference trainer does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from lsync.face.mask import mouth_mask


def mask_tensor(resolution: int) -> torch.Tensor:
    """The mouth mask of an ``R x R`` aligned face as a (1, R, R) float32 tensor (a fresh copy)."""
    return torch.from_numpy(np.array(mouth_mask(resolution), dtype=np.float32)).unsqueeze(0)


def apply_mask(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the repainted region: ``frames * mask``.

    Args:
        frames: (3, F, R, R) one clip or (B, 3, F, R, R) a batch.
        mask: (1, R, R) for one clip or (B, 1, R, R) per batch item (a (1, R, R) mask also applies to a batch).
    Returns:
        frames' shape and dtype.
    """
    if frames.ndim == 4 and mask.ndim == 3:
        weights = mask[:, None]  # (1, 1, R, R): broadcast over channels and frames
    elif frames.ndim == 5 and mask.ndim == 3:
        weights = mask[None, :, None]  # (1, 1, 1, R, R)
    elif frames.ndim == 5 and mask.ndim == 4:
        weights = mask[:, :, None]  # (B, 1, 1, R, R)
    else:
        raise ValueError(f"cannot apply a mask of shape {tuple(mask.shape)} to frames of shape {tuple(frames.shape)}")
    if weights.shape[-2:] != frames.shape[-2:]:
        raise ValueError(f"mask is {tuple(mask.shape[-2:])}, frames are {tuple(frames.shape[-2:])}")
    return frames * weights.to(device=frames.device, dtype=frames.dtype)


def latent_mask_batch(mask: torch.Tensor, num_frames: int, latent_size: int | tuple[int, int]) -> torch.Tensor:
    """(B, 1, R, R) pixel masks -> (B, 1, F, h, w) U-Net mask channel.

    Nearest-neighbour downsampling (``F.interpolate`` default mode, which picks pixel ``floor(i * R / h)``, like
    :func:`lsync.face.mask.latent_mask`) then repeated over ``num_frames``.
    """
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"expected masks of shape (B, 1, R, R), got {tuple(mask.shape)}")
    size = (latent_size, latent_size) if isinstance(latent_size, int) else tuple(latent_size)
    small = F.interpolate(mask, size=size)
    return small[:, :, None].expand(-1, -1, num_frames, -1, -1).contiguous()
