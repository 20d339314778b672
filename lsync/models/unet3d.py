"""LatentSync's audio-conditioned 3D U-Net, loadable from the released ``latentsync_unet.pt`` key for key.

AnimateDiff-style: the SD-1.5 U-Net geometry with 2-D convolutions applied per frame, spatial transformers whose
cross-attention reads the frame's audio tokens, and temporal motion modules. Internally activations are kept
frame-major ``(B*F, C, H, W)`` (see ``lsync.models.attention``); the public interface is clip-major
``(B, C, F, H, W)`` like the reference. Use :func:`frames_to_clip` to view a block's output (e.g. from a forward
hook) in the reference layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from lsync.audio.timing import DEFAULT_AUDIO_FEAT_LENGTH, audio_context
from lsync.models.unet_blocks import ClipGroupNorm, UNetMidBlock3DCrossAttn, get_down_block, get_up_block


@dataclass
class UNet3DConditionOutput(BaseOutput):
    """``sample``: (B, out_channels, F, H, W) predicted noise."""

    sample: torch.Tensor


def clip_to_frames(clip: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> frame-major (B*F, C, H, W) (one copy)."""
    batch, channels, num_frames, height, width = clip.shape
    return clip.transpose(1, 2).reshape(batch * num_frames, channels, height, width)


def frames_to_clip(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Frame-major (B*F, C, H, W) -> (B, C, F, H, W) (a view)."""
    total, channels, height, width = frames.shape
    return frames.view(total // num_frames, num_frames, channels, height, width).transpose(1, 2)


def _per_block(value: int | Sequence[int], num_blocks: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * num_blocks
    if len(value) != num_blocks:
        raise ValueError(f"{name} has {len(value)} entries but there are {num_blocks} down blocks")
    return list(value)


#: Constructor keys that describe the model's inputs for the data side rather than its architecture; the
#: reference's ``model:`` section (``unet_stage2.yaml``) has none of them.
DATA_CONFIG_KEYS = frozenset({"audio_feat_length"})


class UNet3DConditionModel(ModelMixin, ConfigMixin):
    """LatentSync's ``UNet3DConditionModel``; constructor keywords are exactly the ``model:`` section of its yaml.

    Notable config semantics (kept for checkpoint compatibility):
      * ``attention_head_dim`` is the NUMBER of spatial attention heads (head size = channels / value).
      * ``add_audio_layer`` adds the per-frame audio cross-attention (``attn2``) to every spatial transformer.
      * motion modules go into down blocks at resolutions ``2**i`` and up blocks at ``2**(n-1-i)`` listed in
        ``motion_module_resolutions``, only into up blocks with ``motion_module_decoder_only``, and into the
        mid block only with ``motion_module_mid_block``.
      * ``motion_module_kwargs`` are the keyword arguments of
        :class:`lsync.models.motion_module.VanillaTemporalModule`.

    ``audio_feat_length`` (not in the reference's ``model:`` section, which keeps it with the data) is metadata
    the data side reads, like ``sample_size``: the audio context each frame's tokens cover, in video frames
    left/right (LatentSync's ``audio_feat_length``; the released U-Nets use ``(2, 2)``, 10 Whisper positions per
    frame). The model itself takes any token count; whoever cuts its audio tokens
    (:func:`lsync.audio.whisper.feature_window`) passes ``unet.config.audio_feat_length`` as the context.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        act_fn: str = "silu",
        add_audio_layer: bool = True,
        attention_head_dim: int | Sequence[int] = 8,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        center_input_sample: bool = False,
        cross_attention_dim: int = 384,
        down_block_types: Sequence[str] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        mid_block_type: str = "UNetMidBlock3DCrossAttn",
        up_block_types: Sequence[str] = ("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        downsample_padding: int = 1,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        in_channels: int = 13,
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        norm_eps: float = 1e-5,
        norm_num_groups: int = 32,
        out_channels: int = 4,
        sample_size: int = 64,
        resnet_time_scale_shift: str = "default",
        use_motion_module: bool = True,
        motion_module_resolutions: Sequence[int] = (1, 2, 4, 8),
        motion_module_mid_block: bool = False,
        motion_module_decoder_only: bool = False,
        motion_module_type: str = "Vanilla",
        motion_module_kwargs: Mapping[str, Any] | None = None,
        audio_feat_length: Sequence[int] = DEFAULT_AUDIO_FEAT_LENGTH,
    ):
        super().__init__()
        # Stored as a [left, right] list whatever sequence was passed, as config.json round-trips it.
        self.register_to_config(audio_feat_length=list(audio_context(audio_feat_length)))
        num_blocks = len(down_block_types)
        if len(block_out_channels) != num_blocks or len(up_block_types) != num_blocks:
            raise ValueError(
                f"block_out_channels ({len(block_out_channels)}), down_block_types ({num_blocks}) and "
                f"up_block_types ({len(up_block_types)}) must have the same length"
            )
        if mid_block_type != "UNetMidBlock3DCrossAttn":
            raise ValueError(f"unknown mid_block_type {mid_block_type!r}; expected 'UNetMidBlock3DCrossAttn'")
        motion_module_kwargs = dict(motion_module_kwargs or {})
        heads = _per_block(attention_head_dim, num_blocks, "attention_head_dim")
        time_embed_dim = block_out_channels[0] * 4

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_embed_dim, act_fn=act_fn)

        # Both lists are registered before the mid block, which fixes the reference state-dict order.
        self.down_blocks = nn.ModuleList([])
        self.up_blocks = nn.ModuleList([])
        common = dict(
            temb_channels=time_embed_dim,
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            resnet_groups=norm_num_groups,
            resnet_time_scale_shift=resnet_time_scale_shift,
            cross_attention_dim=cross_attention_dim,
            add_audio_layer=add_audio_layer,
            motion_module_type=motion_module_type,
            motion_module_kwargs=motion_module_kwargs,
        )

        for i, block_type in enumerate(down_block_types):
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    in_channels=block_out_channels[max(i - 1, 0)],  # conv_in already gives block 0 its width
                    out_channels=block_out_channels[i],
                    num_layers=layers_per_block,
                    add_downsample=i < num_blocks - 1,
                    downsample_padding=downsample_padding,
                    num_attention_heads=heads[i],
                    use_motion_module=(
                        use_motion_module and 2**i in motion_module_resolutions and not motion_module_decoder_only
                    ),
                    **common,
                )
            )

        self.mid_block = UNetMidBlock3DCrossAttn(
            in_channels=block_out_channels[-1],
            output_scale_factor=mid_block_scale_factor,
            num_attention_heads=heads[-1],
            use_motion_module=use_motion_module and motion_module_mid_block,
            **common,
        )

        reversed_channels = list(reversed(block_out_channels))
        reversed_heads = list(reversed(heads))
        output_channel = reversed_channels[0]
        for i, block_type in enumerate(up_block_types):
            prev_output_channel, output_channel = output_channel, reversed_channels[i]
            self.up_blocks.append(
                get_up_block(
                    block_type,
                    in_channels=reversed_channels[min(i + 1, num_blocks - 1)],
                    prev_output_channel=prev_output_channel,
                    out_channels=output_channel,
                    num_layers=layers_per_block + 1,
                    add_upsample=i < num_blocks - 1,
                    num_attention_heads=reversed_heads[i],
                    use_motion_module=use_motion_module and 2 ** (num_blocks - 1 - i) in motion_module_resolutions,
                    **common,
                )
            )
        self.num_upsamplers = num_blocks - 1

        self.conv_norm_out = ClipGroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    def _timestep_embedding(
        self, timestep: torch.Tensor | float | int, batch: int, device: torch.device
    ) -> torch.Tensor:
        """Broadcast ``timestep`` (python number, 0-d or (B,) tensor) to (B,) and embed it: (B, 4*C0)."""
        if not torch.is_tensor(timestep):
            dtype = torch.float64 if isinstance(timestep, float) else torch.int64
            if device.type == "mps":  # MPS has no 64-bit types
                dtype = torch.float32 if isinstance(timestep, float) else torch.int32
            timestep = torch.tensor([timestep], dtype=dtype, device=device)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(device)
        else:
            timestep = timestep.to(device)
        timesteps = timestep.expand(batch)
        # The sinusoid is computed in float32; cast to the weights' dtype as fp16 inference expects.
        t_emb = self.time_proj(timesteps).to(dtype=self.dtype)
        return self.time_embedding(t_emb)

    def _frame_audio_tokens(
        self, encoder_hidden_states: torch.Tensor | None, batch: int, num_frames: int
    ) -> torch.Tensor | None:
        """(B, F, S, D) -> (B*F, S, D) in frame order (a view); (B*F, S, D) passes through."""
        if encoder_hidden_states is None:
            if self.config.add_audio_layer:
                raise ValueError(
                    "this U-Net has audio cross-attention: pass encoder_hidden_states (B, F, S, D); "
                    "for the unconditional branch pass zeros"
                )
            return None
        if encoder_hidden_states.ndim == 4:
            if encoder_hidden_states.shape[:2] != (batch, num_frames):
                raise ValueError(
                    f"encoder_hidden_states {tuple(encoder_hidden_states.shape)} must be "
                    f"(B={batch}, F={num_frames}, S, D)"
                )
            return encoder_hidden_states.reshape(batch * num_frames, *encoder_hidden_states.shape[2:])
        if encoder_hidden_states.ndim == 3 and encoder_hidden_states.shape[0] == batch * num_frames:
            return encoder_hidden_states
        raise ValueError(
            f"encoder_hidden_states {tuple(encoder_hidden_states.shape)} must be (B={batch}, F={num_frames}, S, D) "
            f"or (B*F={batch * num_frames}, S, D)"
        )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet3DConditionOutput | tuple[torch.Tensor]:
        """
        Args:
            sample: (B, in_channels, F, H, W); for LatentSync: noisy latents (4), mask (1), masked-frame latents (4),
                reference-frame latents (4).
            timestep: (B,) tensor, 0-d tensor or python number (broadcast to the batch).
            encoder_hidden_states: (B, F, S, D) audio tokens per frame (any S: 50 for whisper-tiny with the
                reference's ``audio_feat_length`` (2, 2); D = cross_attention_dim), or
                already flattened (B*F, S, D). Required when ``add_audio_layer``; zeros = unconditional.
            return_dict: return :class:`UNet3DConditionOutput` instead of a tuple.

        Returns:
            ``UNet3DConditionOutput(sample=(B, out_channels, F, H, W))``.
        """
        if sample.ndim != 5:
            raise ValueError(f"sample must be (B, C, F, H, W), got shape {tuple(sample.shape)}")
        batch, _, num_frames, height, width = sample.shape
        # When H or W is not a multiple of the total downsampling, each upsampler must hit its skip's size.
        forward_upsample_size = any(size % 2**self.num_upsamplers != 0 for size in (height, width))

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self._timestep_embedding(timestep, batch, sample.device)
        audio = self._frame_audio_tokens(encoder_hidden_states, batch, num_frames)

        hidden_states = self.conv_in(clip_to_frames(sample))
        skips: tuple[torch.Tensor, ...] = (hidden_states,)
        for block in self.down_blocks:
            hidden_states, block_skips = block(hidden_states, emb, audio, num_frames)
            skips += block_skips

        hidden_states = self.mid_block(hidden_states, emb, audio, num_frames)

        for i, block in enumerate(self.up_blocks):
            num_layers = len(block.resnets)
            block_skips, skips = skips[-num_layers:], skips[:-num_layers]
            upsample_size = None
            if forward_upsample_size and i < len(self.up_blocks) - 1:
                upsample_size = tuple(skips[-1].shape[2:])
            hidden_states = block(hidden_states, block_skips, emb, audio, num_frames, upsample_size)

        hidden_states = self.conv_act(self.conv_norm_out(hidden_states, num_frames))
        hidden_states = self.conv_out(hidden_states)
        output = frames_to_clip(hidden_states, num_frames).contiguous()
        if not return_dict:
            return (output,)
        return UNet3DConditionOutput(sample=output)
