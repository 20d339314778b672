"""Resnet, down/mid/up blocks and resamplers of the LatentSync 3D U-Net.

All modules take frame-major activations ``(B*F, C, H, W)`` plus ``num_frames`` (see ``attention.py``):
convolutions and resamplers act per frame, while resnet GroupNorms pool their statistics over all frames of a clip.

Each block runs, per layer: resnet -> spatial transformer (cross-attention blocks only) -> motion module
(when enabled). Blocks honour diffusers' gradient checkpointing switch (``ModelMixin.enable_gradient_checkpointing``
sets ``gradient_checkpointing`` and ``_gradient_checkpointing_func`` on every module that has the attribute).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.activations import get_activation
from torch import nn

from lsync.models.attention import SpatialTransformer
from lsync.models.motion_module import get_motion_module


class ClipGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics pool every frame of a clip, applied to frame-major input.

    Equivalent to ``nn.GroupNorm`` on the (B, C, F, H, W) clip tensor, which is what the reference resnets do.
    """

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        if num_frames == 1:
            return super().forward(hidden_states)
        frames, channels, height, width = hidden_states.shape
        clip = hidden_states.view(frames // num_frames, num_frames, channels, height * width).transpose(1, 2)
        normed = F.group_norm(clip, self.num_groups, self.weight, self.bias, self.eps)  # (B, C, F, H*W)
        return normed.transpose(1, 2).reshape(frames, channels, height, width)


def add_per_clip(hidden_states: torch.Tensor, per_clip: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Add a (B, C) vector to every frame of (B*F, C, H, W) frame-major maps."""
    frames, channels, height, width = hidden_states.shape
    clips = hidden_states.view(frames // num_frames, num_frames, channels, height, width)
    return (clips + per_clip[:, None, :, None, None]).view(frames, channels, height, width)


def modulate_per_clip(
    hidden_states: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, num_frames: int
) -> torch.Tensor:
    """``x * scale + shift`` with (B, C) vectors broadcast over every frame of (B*F, C, H, W) maps."""
    frames, channels, height, width = hidden_states.shape
    clips = hidden_states.view(frames // num_frames, num_frames, channels, height, width)
    modulated = clips * scale[:, None, :, None, None] + shift[:, None, :, None, None]
    return modulated.view(frames, channels, height, width)


class ResnetBlock3D(nn.Module):
    """GroupNorm(clip) -> act -> 3x3 conv -> + time embedding -> GroupNorm(clip) -> act -> dropout -> 3x3 conv,
    plus the input (through a 1x1 conv when channels change), divided by ``output_scale_factor``.

    ``time_embedding_norm="scale_shift"`` applies the time embedding as ``x * (1 + scale) + shift`` after norm2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int | None,
        groups: int,
        eps: float,
        act_fn: str = "silu",
        time_embedding_norm: str = "default",
        output_scale_factor: float = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(
                f"unknown resnet_time_scale_shift {time_embedding_norm!r} (use 'default' or 'scale_shift')"
            )
        self.time_embedding_norm = time_embedding_norm
        self.output_scale_factor = output_scale_factor
        self.norm1 = ClipGroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        if temb_channels is not None:
            scale_and_shift = 2 if time_embedding_norm == "scale_shift" else 1
            self.time_emb_proj = nn.Linear(temb_channels, out_channels * scale_and_shift)
        else:
            self.time_emb_proj = None
        self.norm2 = ClipGroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = get_activation(act_fn)
        self.conv_shortcut = None
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None, num_frames: int) -> torch.Tensor:
        """input_tensor (B*F, C_in, H, W), temb (B, T) -> (B*F, C_out, H, W)."""
        hidden_states = self.conv1(self.nonlinearity(self.norm1(input_tensor, num_frames)))
        time_emb = None
        if temb is not None and self.time_emb_proj is not None:
            time_emb = self.time_emb_proj(self.nonlinearity(temb))  # (B, C_out) or (B, 2*C_out)
        if time_emb is not None and self.time_embedding_norm == "default":
            hidden_states = add_per_clip(hidden_states, time_emb, num_frames)
        hidden_states = self.norm2(hidden_states, num_frames)
        if time_emb is not None and self.time_embedding_norm == "scale_shift":
            scale, shift = time_emb.chunk(2, dim=1)
            hidden_states = modulate_per_clip(hidden_states, 1 + scale, shift, num_frames)
        hidden_states = self.conv2(self.dropout(self.nonlinearity(hidden_states)))
        shortcut = input_tensor if self.conv_shortcut is None else self.conv_shortcut(input_tensor)
        output = shortcut + hidden_states
        if self.output_scale_factor != 1.0:
            output = output / self.output_scale_factor
        return output


class Downsample3D(nn.Module):
    """Per-frame stride-2 3x3 conv; with ``padding=0`` the maps are first zero-padded on the right and bottom."""

    def __init__(self, channels: int, out_channels: int, padding: int = 1):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B*F, C, H, W) -> (B*F, C_out, ceil(H/2), ceil(W/2))."""
        if self.padding == 0:
            hidden_states = F.pad(hidden_states, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(hidden_states)


class Upsample3D(nn.Module):
    """Per-frame nearest x2 upsampling (or to ``output_size``) followed by a 3x3 conv."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        """(B*F, C, H, W) -> (B*F, C_out, 2H, 2W), or (B*F, C_out, *output_size)."""
        dtype = hidden_states.dtype
        if dtype == torch.bfloat16:
            # nearest upsampling had no bfloat16 kernel in older PyTorch; the cast is exact both ways.
            hidden_states = hidden_states.float()
        if output_size is None:
            hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        else:
            hidden_states = F.interpolate(hidden_states, size=output_size, mode="nearest")
        return self.conv(hidden_states.to(dtype))


class _Block3D(nn.Module):
    """Shared plumbing of the down/mid/up blocks: module lists and the gradient-checkpointing switch."""

    def __init__(self):
        super().__init__()
        # Toggled by diffusers' ModelMixin.enable_gradient_checkpointing(), which also sets
        # self._gradient_checkpointing_func (non-reentrant torch.utils.checkpoint by default).
        self.gradient_checkpointing = False

    def _run(self, module: nn.Module, *args: Any) -> torch.Tensor:
        """Call ``module(*args)``, recomputing its activations in backward when checkpointing is on."""
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(module, *args)
        return module(*args)

    def _layer(
        self,
        index: int,
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        """resnet -> spatial transformer (if any) -> motion module (if any) of layer ``index``."""
        hidden_states = self._run(self.resnets[index], hidden_states, temb, num_frames)
        if self.attentions is not None:
            hidden_states = self._run(self.attentions[index], hidden_states, encoder_hidden_states)
        if self.motion_modules is not None:
            hidden_states = self._run(self.motion_modules[index], hidden_states, num_frames)
        return hidden_states


def _spatial_transformers(
    count: int, channels: int, num_heads: int, norm_num_groups: int, cross_attention_dim: int, add_audio_layer: bool
) -> nn.ModuleList:
    # LatentSync passes its `attention_head_dim` config value as the NUMBER of heads; head size = channels / heads.
    return nn.ModuleList(
        [
            SpatialTransformer(
                num_heads,
                channels // num_heads,
                in_channels=channels,
                norm_num_groups=norm_num_groups,
                cross_attention_dim=cross_attention_dim,
                add_audio_layer=add_audio_layer,
            )
            for _ in range(count)
        ]
    )


def _motion_modules(
    count: int, channels: int, use_motion_module: bool, motion_module_type: str, motion_module_kwargs: Mapping
) -> nn.ModuleList | None:
    if not use_motion_module:
        return None
    return nn.ModuleList(
        [get_motion_module(motion_module_type, channels, motion_module_kwargs) for _ in range(count)]
    )


class DownBlock3D(_Block3D):
    """``num_layers`` x (resnet [-> transformer] [-> motion module]), then an optional stride-2 downsampler.

    With ``has_cross_attention`` this is LatentSync's ``CrossAttnDownBlock3D``, else its ``DownBlock3D``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_downsample: bool,
        has_cross_attention: bool,
        resnet_eps: float,
        resnet_act_fn: str,
        resnet_groups: int,
        resnet_time_scale_shift: str,
        downsample_padding: int,
        num_attention_heads: int,
        cross_attention_dim: int,
        add_audio_layer: bool,
        use_motion_module: bool,
        motion_module_type: str,
        motion_module_kwargs: Mapping,
    ):
        super().__init__()
        self.has_cross_attention = has_cross_attention
        # Registration order fixes the state-dict order: attentions, resnets, motion_modules, downsamplers.
        self.attentions = (
            _spatial_transformers(
                num_layers, out_channels, num_attention_heads, resnet_groups, cross_attention_dim, add_audio_layer
            )
            if has_cross_attention
            else None
        )
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    temb_channels,
                    groups=resnet_groups,
                    eps=resnet_eps,
                    act_fn=resnet_act_fn,
                    time_embedding_norm=resnet_time_scale_shift,
                )
                for i in range(num_layers)
            ]
        )
        self.motion_modules = _motion_modules(
            num_layers, out_channels, use_motion_module, motion_module_type, motion_module_kwargs
        )
        self.downsamplers = (
            nn.ModuleList([Downsample3D(out_channels, out_channels, padding=downsample_padding)])
            if add_downsample
            else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        num_frames: int,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B*F, C_in, H, W) -> output (B*F, C_out, H', W') and the skip connections of every layer."""
        skips: tuple[torch.Tensor, ...] = ()
        for index in range(len(self.resnets)):
            hidden_states = self._layer(index, hidden_states, temb, encoder_hidden_states, num_frames)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            for downsampler in self.downsamplers:
                hidden_states = downsampler(hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class UpBlock3D(_Block3D):
    """``num_layers`` x (concat skip -> resnet [-> transformer] [-> motion module]), then an optional upsampler.

    With ``has_cross_attention`` this is LatentSync's ``CrossAttnUpBlock3D``, else its ``UpBlock3D``.
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        add_upsample: bool,
        has_cross_attention: bool,
        resnet_eps: float,
        resnet_act_fn: str,
        resnet_groups: int,
        resnet_time_scale_shift: str,
        num_attention_heads: int,
        cross_attention_dim: int,
        add_audio_layer: bool,
        use_motion_module: bool,
        motion_module_type: str,
        motion_module_kwargs: Mapping,
    ):
        super().__init__()
        self.has_cross_attention = has_cross_attention
        self.attentions = (
            _spatial_transformers(
                num_layers, out_channels, num_attention_heads, resnet_groups, cross_attention_dim, add_audio_layer
            )
            if has_cross_attention
            else None
        )
        resnets = []
        for i in range(num_layers):
            # The last layer's skip comes from the previous (shallower) down block, hence `in_channels`.
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            resnet_in_channels = prev_output_channel if i == 0 else out_channels
            resnets.append(
                ResnetBlock3D(
                    resnet_in_channels + skip_channels,
                    out_channels,
                    temb_channels,
                    groups=resnet_groups,
                    eps=resnet_eps,
                    act_fn=resnet_act_fn,
                    time_embedding_norm=resnet_time_scale_shift,
                )
            )
        self.resnets = nn.ModuleList(resnets)
        self.motion_modules = _motion_modules(
            num_layers, out_channels, use_motion_module, motion_module_type, motion_module_kwargs
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels, out_channels)]) if add_upsample else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        num_frames: int,
        upsample_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """(B*F, C, H, W) plus one skip per layer (deepest last) -> (B*F, C_out, H', W')."""
        for index in range(len(self.resnets)):
            hidden_states = torch.cat([hidden_states, skips[-1 - index]], dim=1)
            hidden_states = self._layer(index, hidden_states, temb, encoder_hidden_states, num_frames)
        if self.upsamplers is not None:
            for upsampler in self.upsamplers:
                hidden_states = upsampler(hidden_states, upsample_size)
        return hidden_states


class UNetMidBlock3DCrossAttn(_Block3D):
    """resnet, then ``num_layers`` x (transformer [-> motion module] -> resnet), at constant channels."""

    def __init__(
        self,
        in_channels: int,
        temb_channels: int,
        resnet_eps: float,
        resnet_act_fn: str,
        resnet_groups: int,
        resnet_time_scale_shift: str,
        output_scale_factor: float,
        num_attention_heads: int,
        cross_attention_dim: int,
        add_audio_layer: bool,
        use_motion_module: bool,
        motion_module_type: str,
        motion_module_kwargs: Mapping,
        num_layers: int = 1,
    ):
        super().__init__()
        self.attentions = _spatial_transformers(
            num_layers, in_channels, num_attention_heads, resnet_groups, cross_attention_dim, add_audio_layer
        )
        self.resnets = nn.ModuleList(
            [
                ResnetBlock3D(
                    in_channels,
                    in_channels,
                    temb_channels,
                    groups=resnet_groups,
                    eps=resnet_eps,
                    act_fn=resnet_act_fn,
                    time_embedding_norm=resnet_time_scale_shift,
                    output_scale_factor=output_scale_factor,
                )
                for _ in range(num_layers + 1)
            ]
        )
        self.motion_modules = _motion_modules(
            num_layers, in_channels, use_motion_module, motion_module_type, motion_module_kwargs
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        num_frames: int,
    ) -> torch.Tensor:
        """(B*F, C, H, W) -> (B*F, C, H, W)."""
        hidden_states = self._run(self.resnets[0], hidden_states, temb, num_frames)
        for index in range(len(self.attentions)):
            hidden_states = self._run(self.attentions[index], hidden_states, encoder_hidden_states)
            if self.motion_modules is not None:
                hidden_states = self._run(self.motion_modules[index], hidden_states, num_frames)
            hidden_states = self._run(self.resnets[index + 1], hidden_states, temb, num_frames)
        return hidden_states


DOWN_BLOCK_TYPES = {"CrossAttnDownBlock3D": True, "DownBlock3D": False}  # name -> has cross attention
UP_BLOCK_TYPES = {"CrossAttnUpBlock3D": True, "UpBlock3D": False}


def get_down_block(block_type: str, **kwargs: Any) -> DownBlock3D:
    """Build a down block from its config name (``CrossAttnDownBlock3D`` or ``DownBlock3D``)."""
    if block_type not in DOWN_BLOCK_TYPES:
        raise ValueError(f"unknown down block type {block_type!r}; expected one of {sorted(DOWN_BLOCK_TYPES)}")
    return DownBlock3D(has_cross_attention=DOWN_BLOCK_TYPES[block_type], **kwargs)


def get_up_block(block_type: str, **kwargs: Any) -> UpBlock3D:
    """Build an up block from its config name (``CrossAttnUpBlock3D`` or ``UpBlock3D``)."""
    if block_type not in UP_BLOCK_TYPES:
        raise ValueError(f"unknown up block type {block_type!r}; expected one of {sorted(UP_BLOCK_TYPES)}")
    return UpBlock3D(has_cross_attention=UP_BLOCK_TYPES[block_type], **kwargs)
