"""TREPA: temporal representation alignment with a frozen VideoMAE-v2 ViT.

:class:`VideoMAEv2Encoder` is the fine-tuned VideoMAE-v2 vision transformer with the state-dict layout of the
released ``vit_g_hybrid_pt_1200e_ssv2_ft.pth`` (``patch_embed.proj``, ``blocks.<i>.{norm1,attn,norm2,mlp}``,
``fc_norm``, ``head``). Only :meth:`VideoMAEv2Encoder.forward_features` is used: tubelet patch embedding, a
fixed sinusoidal position table (not part of the state dict), pre-norm transformer blocks, mean over tokens,
LayerNorm. :class:`TrepaLoss` compares the L2-normalised features of a generated and a real clip with MSE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lsync.errors import CheckpointError, ConfigError
from lsync.checkpoints import load_state_dict_strict, read_state_dict

#: Side of the square frames the ViT is fed.
TREPA_RESOLUTION = 224


@dataclass(frozen=True)
class VideoMAEv2Config:
    """Constructor arguments of the reference ``VisionTransformer`` that matter for features.

    Defaults are the released ViT-g/14 (``vit_giant_patch14_224`` fine-tuned on SSv2, 174 classes).
    ``drop_path_rate`` is accepted for config compatibility; the encoder is always used frozen in eval mode.
    """

    img_size: int = 224
    patch_size: int = 14
    in_chans: int = 3
    num_classes: int = 174
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 48 / 11
    qkv_bias: bool = True
    all_frames: int = 16
    tubelet_size: int = 2
    drop_path_rate: float = 0.3
    use_mean_pooling: bool = True
    with_cp: bool = False
    norm_eps: float = 1e-6

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoMAEv2Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(str, unknown))} in VideoMAE-v2 config",
                              f"valid keys: {', '.join(sorted(known))}")
        config = cls(**dict(data))
        if not config.use_mean_pooling:
            raise ConfigError("VideoMAE-v2 config with use_mean_pooling false is not supported",
                              "TREPA uses the mean-pooled, fc_norm-normalised features")
        if config.embed_dim % config.num_heads:
            raise ConfigError(f"embed_dim {config.embed_dim} is not divisible by num_heads {config.num_heads}",
                              "fix the VideoMAE-v2 config")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def num_patches(self) -> int:
        side = self.img_size // self.patch_size
        return (self.all_frames // self.tubelet_size) * side * side

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


def sinusoid_position_table(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed (1, num_positions, dim) table: angle(p, j) = p / 10000^(2*(j//2)/dim), sin on even j, cos on odd.

    Built in float64 (as the reference does with numpy) and cast to float32.
    """
    positions = np.arange(num_positions, dtype=np.float64)[:, None]
    exponents = 2 * (np.arange(dim) // 2) / dim
    angles = positions / np.power(10000, exponents)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.from_numpy(angles).float().unsqueeze(0)


class PatchEmbed3D(nn.Module):
    """Conv3d with kernel = stride = (tubelet, patch, patch): (B, C, F, H, W) -> tokens (B, N, D)."""

    def __init__(self, config: VideoMAEv2Config):
        super().__init__()
        kernel = (config.tubelet_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_chans, config.embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEAttention(nn.Module):
    """Self-attention with one fused qkv weight and separate q/v biases (the k bias is fixed at zero)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim), scale head_dim ** -0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VideoMAEBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, config: VideoMAEv2Config):
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = VideoMAEAttention(dim, config.num_heads, config.qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, config.mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VideoMAEv2Encoder(nn.Module):
    """VideoMAE-v2 ViT. ``forward_features((B, 3, F, H, W) in [0, 1]) -> (B, embed_dim)``.

    The classification ``head`` is kept so that the released checkpoint loads strictly; TREPA never calls it.
    """

    def __init__(self, config: VideoMAEv2Config | Mapping[str, Any] | None = None):
        super().__init__()
        if config is None:
            config = VideoMAEv2Config()
        elif not isinstance(config, VideoMAEv2Config):
            config = VideoMAEv2Config.from_dict(config)
        self.config = config
        self.patch_embed = PatchEmbed3D(config)
        self.blocks = nn.ModuleList(VideoMAEBlock(config) for _ in range(config.depth))
        self.fc_norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        # Fixed table, not a parameter and not saved: the released checkpoint does not contain it.
        self.register_buffer("pos_embed", sinusoid_position_table(config.num_patches, config.embed_dim),
                             persistent=False)
        self.gradient_checkpointing = config.with_cp

    def forward_features(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> mean-pooled, LayerNorm-ed token features (B, embed_dim)."""
        x = self.patch_embed(videos)
        if x.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"got {x.shape[1]} patches, the position table has {self.pos_embed.shape[1]}; "
                             f"feed {self.config.all_frames} frames of {self.config.img_size} px")
        x = x + self.pos_embed.to(dtype=x.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.fc_norm(x.mean(dim=1))

    def forward(self, videos: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes); only here for completeness."""
        return self.head(self.forward_features(videos))


def videomae_state_dict(path: str | Path, model: VideoMAEv2Encoder) -> dict[str, torch.Tensor]:
    """Read a VideoMAE-v2 checkpoint (``.pth`` wrapped in "model"/"module", bare, or safetensors).

    A stored ``pos_embed`` (some exports carry the fixed table) is accepted only if it equals ours, then dropped.
    """
    state_dict = dict(read_state_dict(path).state_dict)
    stored = state_dict.pop("pos_embed", None)
    if stored is not None:
        ours = model.pos_embed.detach().cpu().float()
        if tuple(stored.shape) != tuple(ours.shape) or not torch.allclose(stored.float(), ours, atol=1e-4):
            raise CheckpointError(f"{path} has a pos_embed that is not the fixed sinusoid table of this model",
                                  "use a VideoMAE-v2 checkpoint trained with the fixed position table")
    return state_dict


def load_videomae(path: str | Path, config: VideoMAEv2Config | Mapping[str, Any] | None = None,
                  device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> VideoMAEv2Encoder:
    """Build the encoder, load ``path`` strictly, freeze it and put it in eval mode on ``device``/``dtype``."""
    with torch.device("meta"):
        model = VideoMAEv2Encoder(config)
    state_dict = videomae_state_dict(path, model)
    load_state_dict_strict(model, state_dict, source=str(path), assign=True)
    # The position table is not in the checkpoint: rebuild it off the meta device.
    model.pos_embed = sinusoid_position_table(model.config.num_patches, model.config.embed_dim)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def resize_frames(videos: torch.Tensor, size: int = TREPA_RESOLUTION) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, C, F, size, size): per-frame bicubic resize, align_corners False, no antialias."""
    b, c, f, h, w = videos.shape
    frames = videos.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False)
    return frames.reshape(b, f, c, size, size).permute(0, 2, 1, 3, 4)


class TrepaLoss(nn.Module):
    """MSE between L2-normalised VideoMAE-v2 features of generated and real clips.

    ``forward(videos_fake, videos_real)``, both (B, C, F, H, W) in [-1, 1], returns a 0-d loss. Gradients flow
    to ``videos_fake`` only through the frozen encoder.
    """

    def __init__(self, encoder: VideoMAEv2Encoder):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> TrepaLoss:
        # The encoder stays in eval mode whatever the surrounding model does.
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) in [-1, 1] -> pooled features (B, D) before L2 normalisation."""
        size = self.encoder.config.img_size
        x = resize_frames(videos, size)
        x = (x / 2 + 0.5).clamp(0, 1)  # the ViT was trained on [0, 1] pixels
        param = next(self.encoder.parameters())
        return self.encoder.forward_features(x.to(param.dtype))

    def forward(self, videos_fake: torch.Tensor, videos_real: torch.Tensor) -> torch.Tensor:
        fake = F.normalize(self.features(videos_fake), p=2, dim=1)
        real = F.normalize(self.features(videos_real), p=2, dim=1)
        return F.mse_loss(fake.float(), real.float())
