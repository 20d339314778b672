"""StableSyncNet: the audio-visual sync expert of LatentSync, with the reference's state-dict layout.

Two convolutional towers embed a 16-frame mouth clip and its mel window into the same space::

    image_sequences (B, 48, H, W)  -> visual tower -> (B, D, 1, 1) -> flatten -> L2-normalise -> (B, D)
    audio_sequences (B, 1, 80, 52) -> audio tower  -> (B, D, 1, 1) -> flatten -> L2-normalise -> (B, D)

A tower is ``conv_in`` then, per stage, a residual block (with its strided downsampling conv inside it) and an
optional attention block, then GroupNorm + ReLU. ``down_blocks`` is one flat list in which an attention block
takes its own index right after its stage's residual block; that is why the released checkpoint's key
indices do not equal stage numbers. The sync loss is the binary cross-entropy between the cosine similarity
of the two embeddings and the in-sync label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lsync.errors import ConfigError
from lsync.checkpoints import load_state_dict_strict, read_state_dict

#: Keys a tower config may hold (the reference ``model:`` section uses the first five).
TOWER_KEYS = ("in_channels", "block_out_channels", "downsample_factors", "attn_blocks", "dropout", "norm_num_groups")
#: Epsilon of every GroupNorm in the towers.
GROUP_NORM_EPS = 1e-6
ATTENTION_HEADS = 8


# ----------------------------------------------------------------------------------------------- building blocks
def _stride(factor: int | Sequence[int]) -> tuple[int, int]:
    """A downsample factor as (stride over height, stride over width)."""
    if isinstance(factor, int):
        return factor, factor
    return int(factor[0]), int(factor[1])


def _downsample_padding(factor: int | Sequence[int]) -> tuple[int, int, int, int]:
    """Zero padding (left, right, top, bottom) before the unpadded strided conv, as the reference pads.

    A dimension that is not reduced gets one pixel on both sides so that a 3x3 conv with stride 1 keeps its
    size; a reduced dimension gets one pixel after its end only.
    """
    if isinstance(factor, int):
        return 0, 1, 0, 1
    stride_h, stride_w = _stride(factor)
    if stride_h == 1:
        return 0, 1, 1, 1
    if stride_w == 1:
        return 1, 1, 0, 1
    return 0, 1, 0, 1


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> dropout -> conv3x3, plus the (1x1-projected) input,
    then, when ``downsample_factor`` != 1, zero padding and a strided 3x3 conv without implicit padding."""

    def __init__(self, in_channels: int, out_channels: int, downsample_factor: int | Sequence[int] = 1,
                 norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        # Registration order fixes the state-dict order; it follows the reference checkpoint.
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels, eps=GROUP_NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels, eps=GROUP_NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.act = nn.SiLU()
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        self.downsample_factor = downsample_factor
        if downsample_factor != 1:
            self.padding = _downsample_padding(downsample_factor)
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, kernel_size=3,
                                             stride=_stride(downsample_factor), padding=0)
        else:
            self.downsample_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        h = h + shortcut
        if self.downsample_conv is not None:
            h = self.downsample_conv(F.pad(h, self.padding, mode="constant", value=0.0))
        return h


class GEGLU(nn.Module):
    """Linear to twice the width; the first half gated by the exact GELU of the second half."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU(dim -> 4 dim) -> dropout -> Linear(4 dim -> dim); key names ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens (B, N, C) with biased q/k/v, computed with SDPA."""

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention width {dim} is not divisible by {heads} heads",
                              "use channel counts that are multiples of 8")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(dropout)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, heads, N, C / heads)
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x)))
        out = out.transpose(1, 2).reshape(b, n, c)
        for layer in self.to_out:
            out = layer(out)
        return out


class AttentionBlock2D(nn.Module):
    """GroupNorm -> 1x1 conv -> tokens -> (LayerNorm -> self-attention + residual) -> (LayerNorm -> GEGLU
    feed-forward + residual) -> 1x1 conv -> + block input. Shape-preserving on (B, C, H, W)."""

    def __init__(self, channels: int, norm_num_groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, channels, eps=GROUP_NORM_EPS)
        self.norm2 = nn.LayerNorm(channels)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, dropout=dropout)
        self.conv_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.conv_out = nn.Conv2d(channels, channels, kernel_size=1)
        self.attn = SelfAttention(channels, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.conv_in(self.norm1(x))
        tokens = h.flatten(2).transpose(1, 2)  # (B, H*W, C)
        tokens = self.attn(self.norm2(tokens)) + tokens
        tokens = self.ff(self.norm3(tokens)) + tokens
        # Back to a contiguous NCHW map: a transposed view would be channels-last, which switches the CPU
        # kernels downstream (GroupNorm among them) to paths that round differently from the reference.
        h = tokens.transpose(1, 2).reshape(b, c, height, width).contiguous()
        return self.conv_out(h) + x


class DownEncoder2D(nn.Module):
    """One tower: conv_in -> [ResnetBlock2D (+ AttentionBlock2D)] per stage -> GroupNorm -> ReLU.

    Input (B, in_channels, H, W); output (B, block_out_channels[-1], h, w), (B, D, 1, 1) for the released
    geometries.
    """

    def __init__(self, in_channels: int, block_out_channels: Sequence[int], downsample_factors: Sequence[Any],
                 attn_blocks: Sequence[int], dropout: float = 0.0, norm_num_groups: int = 32):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for out_channels, factor, has_attention in zip(block_out_channels, downsample_factors, attn_blocks):
            self.down_blocks.append(ResnetBlock2D(channels, out_channels, factor, norm_num_groups, dropout))
            if has_attention:
                self.down_blocks.append(AttentionBlock2D(out_channels, norm_num_groups, dropout))
            channels = out_channels
        self.norm_out = nn.GroupNorm(norm_num_groups, channels, eps=GROUP_NORM_EPS)
        self.act_out = nn.ReLU()
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        return self.act_out(self.norm_out(h))


def _tower_kwargs(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Validate one tower's config (``audio_encoder`` / ``visual_encoder``) and normalise its values."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"syncnet config '{name}' must be a mapping", "see configs/models/syncnet_*.yaml")
    unknown = sorted(set(config) - set(TOWER_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(map(str, unknown))} in syncnet config '{name}'",
                          f"valid keys: {', '.join(TOWER_KEYS)}")
    for key in ("in_channels", "block_out_channels", "downsample_factors", "attn_blocks"):
        if key not in config:
            raise ConfigError(f"syncnet config '{name}' lacks '{key}'", "see configs/models/syncnet_*.yaml")
    channels = [int(c) for c in config["block_out_channels"]]
    factors = [f if isinstance(f, int) else [int(v) for v in f] for f in config["downsample_factors"]]
    attn = [int(a) for a in config["attn_blocks"]]
    if not (len(channels) == len(factors) == len(attn)) or not channels:
        raise ConfigError(f"syncnet config '{name}': block_out_channels, downsample_factors and attn_blocks "
                          f"must have the same non-zero length (got {len(channels)}, {len(factors)}, {len(attn)})",
                          "give one entry per stage")
    for f in factors:
        if not isinstance(f, int) and (len(f) != 2 or f == [1, 1]):
            raise ConfigError(f"syncnet config '{name}': bad downsample factor {f}",
                              "use an integer, or [stride_h, stride_w] with one of them above 1")
    groups = int(config.get("norm_num_groups", 32))
    bad = [c for c in [channels[0], *channels] if c % groups]
    if bad:
        raise ConfigError(f"syncnet config '{name}': channel count {bad[0]} is not divisible by {groups} groups",
                          "use multiples of the group count")
    return {"in_channels": int(config["in_channels"]), "block_out_channels": channels, "downsample_factors": factors,
            "attn_blocks": attn, "dropout": float(config.get("dropout", 0.0)), "norm_num_groups": groups}


# ----------------------------------------------------------------------------------------------- the model
class StableSyncNet(nn.Module):
    """The two-tower SyncNet. Build it from the reference ``model:`` dict::

        StableSyncNet({"audio_encoder": {...}, "visual_encoder": {...}})

    ``forward(image_sequences (B, 48, H, W), audio_sequences (B, 1, 80, 52))`` returns the L2-normalised
    ``(vision_embeds (B, D), audio_embeds (B, D))``; :meth:`encode_towers` gives the raw tower outputs.
    """

    def __init__(self, config: Mapping[str, Any]):
        super().__init__()
        if not isinstance(config, Mapping):
            raise ConfigError("syncnet config must be a mapping with audio_encoder and visual_encoder",
                              "see configs/models/syncnet_*.yaml")
        unknown = sorted(set(config) - {"audio_encoder", "visual_encoder"})
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(str, unknown))} in syncnet config",
                              "valid keys: audio_encoder, visual_encoder")
        self.config = {name: dict(config[name]) for name in ("audio_encoder", "visual_encoder") if name in config}
        self.audio_encoder = DownEncoder2D(**_tower_kwargs(config.get("audio_encoder"), "audio_encoder"))
        self.visual_encoder = DownEncoder2D(**_tower_kwargs(config.get("visual_encoder"), "visual_encoder"))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StableSyncNet:
        return cls(config)

    @property
    def embed_dim(self) -> int:
        return self.visual_encoder.norm_out.num_channels

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass (training only) to save memory."""
        self.audio_encoder.gradient_checkpointing = enabled
        self.visual_encoder.gradient_checkpointing = enabled

    def encode_towers(self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw tower outputs (after the final GroupNorm + ReLU): ((B, D, h, w), (B, D, h', w'))."""
        return self.visual_encoder(image_sequences), self.audio_encoder(audio_sequences)

    def embed_images(self, image_sequences: torch.Tensor) -> torch.Tensor:
        """(B, 48, H, W) packed frames -> (B, D) unit vectors."""
        return F.normalize(self.visual_encoder(image_sequences).flatten(1), p=2, dim=1)

    def embed_audio(self, audio_sequences: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 52) mel windows -> (B, D) unit vectors."""
        return F.normalize(self.audio_encoder(audio_sequences).flatten(1), p=2, dim=1)

    def forward(self, image_sequences: torch.Tensor, audio_sequences: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        vision_raw, audio_raw = self.encode_towers(image_sequences, audio_sequences)
        return F.normalize(vision_raw.flatten(1), p=2, dim=1), F.normalize(audio_raw.flatten(1), p=2, dim=1)


# ----------------------------------------------------------------------------------------------- loss and inputs
def cosine_similarity(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity (B, D), (B, D) -> (B,)."""
    return F.cosine_similarity(vision_embeds, audio_embeds, dim=1)


def cosine_loss(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor, y: torch.Tensor,
                reduction: str = "mean", logit_scale: float | None = None) -> torch.Tensor:
    """SyncNet loss: binary cross-entropy between the cosine similarity and the label ``y`` (1 = in sync).

    ``y`` is (B,) or (B, 1). ``reduction="none"`` gives the per-sample loss (B,), ``"mean"`` the scalar the
    trainer uses. Computed in float32 (BCE is not autocast-safe). The embeddings come after a ReLU, so the
    similarity lies in [0, 1]; the clamp only removes rounding overshoot that BCE would reject.

    ``logit_scale=None`` is the reference loss, BCE on the raw cosine. With a scale ``s`` the probability is
    ``sigmoid(s * (cos - 0.5))`` instead: the decision threshold stays at cos 0.5 (what :func:`sync_accuracy`
    and the sync filter use), but the gradient near it is ``s / 4`` times the logit's rather than the tiny
    slope of a probability confined to [0, 1] - the same trick as the temperature of contrastive models.
    """
    # autocast refuses BCE outright (even on float32 inputs), so it is switched off around it.
    with torch.autocast(device_type=vision_embeds.device.type, enabled=False):
        sims = cosine_similarity(vision_embeds.float(), audio_embeds.float()).clamp(0.0, 1.0)
        losses = pair_loss(sims, y.reshape(-1).to(sims.dtype), logit_scale)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return losses.mean() if reduction == "mean" else losses


def pair_loss(sims: torch.Tensor, target: torch.Tensor, logit_scale: float | None = None) -> torch.Tensor:
    """Element-wise BCE of similarities in [0, 1] (any shape) against labels of the same shape; float32 inputs,
    called with autocast off (see :func:`cosine_loss`)."""
    if logit_scale is None:
        return F.binary_cross_entropy(sims, target, reduction="none")
    return F.binary_cross_entropy_with_logits(float(logit_scale) * (sims - 0.5), target, reduction="none")


sync_loss = cosine_loss


def sync_accuracy(vision_embeds: torch.Tensor, audio_embeds: torch.Tensor, y: torch.Tensor,
                  threshold: float = 0.5) -> torch.Tensor:
    """Fraction of pairs whose (similarity > threshold) equals the label; a 0-d float tensor."""
    predicted = cosine_similarity(vision_embeds, audio_embeds) > threshold
    return (predicted == y.reshape(-1).bool()).float().mean()


def pack_frames_for_syncnet(frames: torch.Tensor, lower_half: bool = True) -> torch.Tensor:
    """(B, F, C, H, W) clip -> (B, F*C, H', W) SyncNet input, channel index = C*f + c (frame-major).

    With ``lower_half`` only rows H//2 .. H-1 are kept (the mouth), so H' = H - H//2.
    """
    if frames.ndim != 5:
        raise ValueError(f"expected frames (B, F, C, H, W), got shape {tuple(frames.shape)}")
    b, f, c, h, w = frames.shape
    packed = frames.reshape(b, f * c, h, w)
    return packed[:, :, h // 2:] if lower_half else packed


def load_syncnet(path: str | Path, config: Mapping[str, Any], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> StableSyncNet:
    """Build a StableSyncNet from ``config`` and strictly load ``path`` (``stable_syncnet.pt``, a bare state
    dict, or safetensors), in eval mode on ``device``/``dtype``."""
    model = StableSyncNet(config)
    load_state_dict_strict(model, read_state_dict(path).state_dict, source=str(path))
    return model.to(device=device, dtype=dtype).eval()
