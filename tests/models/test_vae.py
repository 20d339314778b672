"""VAE wrapper: shapes, scaling, local-folder loading."""

from __future__ import annotations

import pytest
import torch

from lsync.errors import InputError
from lsync.models.vae import SCALING_FACTOR, decode, encode, load_vae


def test_tiny_vae_round_trip_shapes_and_scaling(tmp_path):
    torch.manual_seed(0)
    vae = load_vae()
    video = torch.rand(2, 3, 3, 32, 32) * 2 - 1
    latents = encode(vae, video)
    assert latents.shape == (2, 4, 3, 4, 4)
    # frame 1 of clip 1 is encoded on its own to the same (scaled) latent: frame order is preserved
    single = vae.encode(video[1, :, 1][None]).latent_dist.mode() * SCALING_FACTOR
    torch.testing.assert_close(latents[1, :, 1], single[0], atol=1e-5, rtol=1e-4)
    frames = decode(vae, latents)
    assert frames.shape == video.shape
    assert not any(p.requires_grad for p in vae.parameters())


def test_load_from_local_folder(tmp_path):
    vae = load_vae()
    vae.save_pretrained(tmp_path / "my vae")
    again = load_vae(tmp_path / "my vae")
    for (name, a), (_, b) in zip(vae.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not a diffusers VAE folder"):
        load_vae(tmp_path)
