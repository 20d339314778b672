"""AnimateDiff-style temporal "motion module" (LatentSync's ``Vanilla`` type).

For every spatial position of every clip, the F frames form one sequence: activations go from the U-Net's
frame-major ``(B*F, C, H, W)`` layout to ``(B*H*W, F, C)`` batches, run through temporal self-attention blocks
and come back, with a residual around the whole module. The output projection is zero-initialised, so a freshly
inserted module is the identity.

State-dict names follow the released checkpoint: ``temporal_transformer.{norm, proj_in, transformer_blocks.N.
{attention_blocks.M.{to_q,to_k,to_v,to_out.0,pos_encoder.pe}, norms.M, ff, ff_norm}, proj_out}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from lsync.models.attention import Attention

# The reference always builds the motion-module GroupNorm with its default 32 groups, whatever the U-Net's
# ``norm_num_groups`` says.
MOTION_MODULE_NORM_GROUPS = 32


class SinusoidalPositionalEncoding(nn.Module):
    """Adds a fixed sinusoid table ``pe[:, :F]`` to (N, F, C) sequences.

    ``pe`` (1, max_len, C) has sin at even channels and cos at odd channels, frequencies
    ``10000^(-2i/C)``. It is a persistent buffer because the released checkpoint stores it.
    """

    def __init__(self, dim: int, max_len: int = 24):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num_frames = x.shape[1]
        max_len = self.pe.shape[1]
        if num_frames > max_len:
            raise ValueError(f"clips of {num_frames} frames exceed the temporal position table ({max_len} frames)")
        return x + self.pe[:, :num_frames]


class TemporalSelfAttention(Attention):
    """Self-attention across frames, with the position table added to its (already normalised) input."""

    def __init__(self, dim: int, heads: int, dim_head: int, position_encoding_max_len: int | None, dropout=0.0):
        super().__init__(dim, heads, dim_head, dropout=dropout)
        self.pos_encoder = (
            SinusoidalPositionalEncoding(dim, position_encoding_max_len) if position_encoding_max_len else None
        )

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """hidden_states (B*H*W, F, C) -> (B*H*W, F, C)."""
        if self.pos_encoder is not None:
            hidden_states = self.pos_encoder(hidden_states)
        return super().forward(hidden_states)


class TemporalTransformerBlock(nn.Module):
    """Per attention: LayerNorm -> temporal self-attention -> +residual; then LayerNorm -> GEGLU FF -> +residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        num_attention_blocks: int,
        position_encoding_max_len: int | None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [
                TemporalSelfAttention(dim, num_heads, head_dim, position_encoding_max_len, dropout=dropout)
                for _ in range(num_attention_blocks)
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B*H*W, F, C) -> (B*H*W, F, C)."""
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states)) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer(nn.Module):
    """GroupNorm (per frame) -> Linear in -> temporal blocks over (B*H*W, F, C) -> Linear out -> + input."""

    def __init__(
        self,
        in_channels: int,
        num_heads: int,
        head_dim: int,
        num_layers: int,
        num_attention_blocks: int,
        position_encoding_max_len: int | None,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = num_heads * head_dim
        self.norm = nn.GroupNorm(MOTION_MODULE_NORM_GROUPS, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(
                    inner_dim, num_heads, head_dim, num_attention_blocks, position_encoding_max_len, dropout=dropout
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(inner_dim, in_channels)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """
        Args:
            hidden_states: (B*F, C, H, W) frame-major feature maps.
            num_frames: F.

        Returns:
            (B*F, C, H, W).
        """
        frames, channels, height, width = hidden_states.shape
        batch = frames // num_frames
        residual = hidden_states
        normed = self.norm(hidden_states)
        # (B, F, C, H*W) -> (B, H*W, F, C): one F-long sequence per spatial position (one copy).
        sequences = normed.view(batch, num_frames, channels, height * width).permute(0, 3, 1, 2)
        sequences = self.proj_in(sequences.reshape(batch * height * width, num_frames, channels))
        for block in self.transformer_blocks:
            sequences = block(sequences)
        sequences = self.proj_out(sequences)
        # (B*H*W, F, C) viewed as (B, F, C, H, W); the residual add writes the frame-major result.
        update = sequences.view(batch, height, width, num_frames, channels).permute(0, 3, 4, 1, 2)
        output = residual.view(batch, num_frames, channels, height, width) + update
        return output.reshape(frames, channels, height, width)


class VanillaTemporalModule(nn.Module):
    """LatentSync/AnimateDiff ``Vanilla`` motion module (the keyword arguments are ``motion_module_kwargs``).

    Args:
        in_channels: channels of the feature map.
        num_attention_heads: heads of the temporal attentions.
        num_transformer_block: temporal transformer blocks.
        attention_block_types: one entry per attention in a block; only ``"Temporal_Self"`` exists in LatentSync.
        temporal_position_encoding: add the sinusoid frame-position table before each attention.
        temporal_position_encoding_max_len: length of that table (longest clip).
        temporal_attention_dim_div: attention width = ``in_channels // temporal_attention_dim_div``.
        zero_initialize: zero the output projection so the new module starts as the identity.
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 2,
        attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = False,
        temporal_position_encoding_max_len: int = 24,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
    ):
        super().__init__()
        unsupported = [kind for kind in attention_block_types if kind != "Temporal_Self"]
        if unsupported:
            raise ValueError(f"unsupported motion-module attention types {unsupported}; only 'Temporal_Self' exists")
        head_dim = in_channels // num_attention_heads // temporal_attention_dim_div
        self.temporal_transformer = TemporalTransformer(
            in_channels,
            num_attention_heads,
            head_dim,
            num_layers=num_transformer_block,
            num_attention_blocks=len(attention_block_types),
            position_encoding_max_len=temporal_position_encoding_max_len if temporal_position_encoding else None,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        return self.temporal_transformer(hidden_states, num_frames)


def get_motion_module(motion_module_type: str, in_channels: int, motion_module_kwargs: Mapping[str, Any]) -> nn.Module:
    """Build the motion module named by the U-Net config's ``motion_module_type``."""
    if motion_module_type == "Vanilla":
        return VanillaTemporalModule(in_channels, **dict(motion_module_kwargs or {}))
    raise ValueError(f"unknown motion_module_type {motion_module_type!r}; LatentSync only has 'Vanilla'")
