"""Multi-head attention and the per-frame spatial transformer of the LatentSync 3D U-Net.

Layout convention shared by all U-Net modules in this package: activations travel **frame-major** as
``(B*F, C, H, W)`` (frame ``f`` of clip ``b`` is row ``b*F + f``), so 2-D convolutions and per-frame
normalisations need no rearranging. Only the modules that mix frames (resnet GroupNorm pooled over the clip,
motion modules) look at the frame axis, through views.

State-dict names follow the released LatentSync checkpoint (``norm``, ``proj_in``, ``transformer_blocks.N.{norm1,
attn1, norm2, attn2, ff, norm3}``, ``proj_out``; attention ``to_q/to_k/to_v/to_out.0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

# CUDA attention kernels put the batch on a grid axis limited to 65535 blocks; temporal attention over a
# 512 px clip (B*H*W sequences) can exceed that, so larger batches are processed in slices.
_MAX_SDPA_BATCH = 32768


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` on (N, heads, L, d) tensors, sliced over N when N is very large."""
    if query.shape[0] <= _MAX_SDPA_BATCH:
        return F.scaled_dot_product_attention(query, key, value)
    return torch.cat(
        [
            F.scaled_dot_product_attention(q, k, v)
            for q, k, v in zip(
                query.split(_MAX_SDPA_BATCH), key.split(_MAX_SDPA_BATCH), value.split(_MAX_SDPA_BATCH)
            )
        ]
    )


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention: q/k/v projections without bias, output projection with bias.

    Args:
        query_dim: channels of the queries (and of the output).
        heads: number of heads.
        dim_head: channels per head; the attention width is ``heads * dim_head``.
        cross_attention_dim: channels of the keys/values source; None means self-attention.
        dropout: dropout after the output projection (``to_out.1``).
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        context_dim = query_dim if cross_attention_dim is None else cross_attention_dim
        self.heads = heads
        self.dim_head = dim_head
        self.is_cross_attention = cross_attention_dim is not None
        self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(dropout)])

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, heads*d) -> (N, heads, L, d), a view."""
        n, length, _ = x.shape
        return x.view(n, length, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states: (N, L, query_dim) queries.
            context: (N, S, cross_attention_dim) keys/values source; defaults to ``hidden_states``.

        Returns:
            (N, L, query_dim).
        """
        context = hidden_states if context is None else context
        query = self._split_heads(self.to_q(hidden_states))
        key = self._split_heads(self.to_k(context))
        value = self._split_heads(self.to_v(context))
        out = scaled_dot_product_attention(query, key, value)  # scale 1/sqrt(dim_head)
        n, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(n, length, self.heads * self.dim_head)
        return self.to_out[1](self.to_out[0](out))


class SpatialTransformerBlock(nn.Module):
    """Pre-norm transformer block over the H*W tokens of one frame.

    LayerNorm -> self-attention -> +residual; [LayerNorm -> cross-attention to the frame's audio tokens ->
    +residual] when ``add_audio_layer``; LayerNorm -> GEGLU feed-forward (inner 4*dim) -> +residual.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        cross_attention_dim: int | None,
        add_audio_layer: bool,
        dropout: float = 0.0,
    ):
        super().__init__()
        # Registration order fixes the state-dict order: norm1, attn1, norm2, attn2, ff, norm3.
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, num_heads, head_dim, dropout=dropout)
        if add_audio_layer:
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = Attention(dim, num_heads, head_dim, cross_attention_dim=cross_attention_dim, dropout=dropout)
        else:
            self.norm2 = None
            self.attn2 = None
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> torch.Tensor:
        """hidden_states (B*F, H*W, C); encoder_hidden_states (B*F, S, D) -> (B*F, H*W, C)."""
        hidden_states = self.attn1(self.norm1(hidden_states)) + hidden_states
        if self.attn2 is not None:
            hidden_states = self.attn2(self.norm2(hidden_states), encoder_hidden_states) + hidden_states
        return self.ff(self.norm3(hidden_states)) + hidden_states


class SpatialTransformer(nn.Module):
    """Per-frame spatial transformer (LatentSync's ``Transformer3DModel``) with a residual around it.

    GroupNorm (per frame, eps 1e-6) -> 1x1 conv ``proj_in`` -> transformer blocks on the H*W tokens ->
    1x1 conv ``proj_out`` -> + input. (Running the 1x1 convs as linear maps on the token layout would save two
    copies but changes float32 rounding enough to exceed the golden tolerance in the deeper blocks.)

    Args:
        num_heads: number of attention heads (LatentSync's ``attention_head_dim`` config value).
        head_dim: channels per head (``in_channels // num_heads``).
        in_channels: channels of the feature map.
        norm_num_groups: GroupNorm groups.
        cross_attention_dim: channels of the audio tokens.
        add_audio_layer: whether the blocks have the audio cross-attention (``attn2``).
        num_layers: transformer blocks.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        in_channels: int,
        norm_num_groups: int,
        cross_attention_dim: int | None,
        add_audio_layer: bool,
        num_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        inner_dim = num_heads * head_dim
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [
                SpatialTransformerBlock(
                    inner_dim, num_heads, head_dim, cross_attention_dim, add_audio_layer, dropout=dropout
                )
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Conv2d(inner_dim, in_channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            hidden_states: (B*F, C, H, W) frame-major feature maps.
            encoder_hidden_states: (B*F, S, D) audio tokens of each frame, same row order; unused without
                ``add_audio_layer``.

        Returns:
            (B*F, C, H, W).
        """
        frames, channels, height, width = hidden_states.shape
        residual = hidden_states
        # (B*F, C', H, W) -> (B*F, H*W, C') tokens: one copy.
        tokens = self.proj_in(self.norm(hidden_states)).permute(0, 2, 3, 1).reshape(frames, height * width, -1)
        for block in self.transformer_blocks:
            tokens = block(tokens, encoder_hidden_states)
        # Back to channels-first (one copy) so the 1x1 conv runs exactly as in the reference.
        tokens = tokens.view(frames, height, width, -1).permute(0, 3, 1, 2).contiguous()
        return residual + self.proj_out(tokens)
