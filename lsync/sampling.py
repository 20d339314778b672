"""Inference models and the per-chunk sampler: 16 aligned faces + their audio in, lip-synced faces out.

Shared by inference, U-Net validation during training, the sync filter and the evaluations, so it lives below
``stages/`` beside :mod:`lsync.diffusion` (the schedulers it drives).

Per chunk (LatentSync's pipeline):

1. pixel values ``(x / 255 - 0.5) / 0.5``; masked frames = pixels x the mouth mask (1 keeps, 0 repaints);
2. two VAE encodes, once per chunk (not per step): masked-frame latents and reference latents (the reference
   is the frames themselves); the mask downsampled (nearest) to the latent grid;
3. DDIM from noise that is one ``(1, 4, 1, h, w)`` draw repeated over every frame (drawn once per run from
   ``seed``, so every chunk starts from the same noise); the U-Net reads 13 channels = noisy latents (4) +
   mask (1) + masked latents (4) + reference latents (4), and cross-attends per frame to the audio tokens
   :meth:`ChunkSampler.audio_window` cuts for the U-Net's ``audio_feat_length`` (Whisper positions
   ``2i - 2 left .. 2i + 2 right + 1`` of frame ``i``, all hidden states);
4. classifier-free guidance ``uncond + s (cond - uncond)`` with all-zero audio as "uncond" (one batch of 2);
5. decode, then composite: generated pixels only where the mask repaints, ``decoded (1 - m) + pixels m``.

Optional speed-ups: bf16/fp16 weights on CUDA, ``torch.compile`` of the U-Net, and :class:`DeepFeatureCache`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lsync.console import get_logger
from lsync.errors import CheckpointError, InputError, UsageError

log = get_logger(__name__)

__all__ = ["ChunkSampler", "DeepFeatureCache", "choose_dtype", "cpu_native_bf16", "load_inference_models", "pick_device",
           "resolve_unet_source"]


# ================================================================================================ models
def pick_device(device: str | None, dtype: str = "auto", cpu_bf16: bool = False) -> tuple[torch.device, torch.dtype]:
    """``device`` (None: CUDA when present) and the model dtype (see :func:`choose_dtype`)."""
    resolved = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device", "use --device cpu")
    return resolved, choose_dtype(resolved, dtype, cpu_bf16)[0]


def cpu_native_bf16() -> str | None:
    """The instruction set with which this CPU computes bfloat16 natively (``AMX-BF16``, ``AVX512-BF16``), as
    torch's own CPU probe reports it, or None. Without one, oneDNN emulates bf16 and it is slower than float32."""
    import torch.cpu

    probes = (("AMX-BF16", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))
    for name, probe in probes:
        check = getattr(torch.cpu, probe, None)
        if check is not None and check() and torch.backends.mkldnn.is_available():
            return name
    return None


def choose_dtype(device: torch.device, dtype: str = "auto", cpu_bf16: bool = False) -> tuple[torch.dtype, str]:
    """The model dtype for ``device`` and why it was chosen (recorded in ``lsync.json``).

    ``auto``: bf16 on CUDA where supported, else fp16; on a CPU bf16 where it computes bf16 natively and
    ``cpu_bf16`` (inference: the U-Net and the VAE run about twice as fast with ~1 % relative error, the size of
    the fp16 error LatentSync accepts on GPUs), else float32. Any other value is taken as asked.
    """
    if dtype != "auto":
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype], "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: the CUDA device supports bfloat16"
        return torch.float16, "auto: the CUDA device lacks bfloat16, float16 instead"
    if device.type != "cpu":
        return torch.float32, f"auto: float32 on {device.type}"
    native = cpu_native_bf16()
    if cpu_bf16 and native:
        return torch.bfloat16, f"auto: the CPU computes bfloat16 natively ({native})"
    if cpu_bf16:
        return torch.float32, "auto: the CPU has no native bfloat16 (no AMX-BF16 or AVX512-BF16), float32"
    return torch.float32, "auto: float32 on the CPU"


def resolve_unet_source(path: str | Path) -> Path:
    """The checkpoint a ``--unet`` argument names.

    Accepted: a checkpoint directory (``config.json`` + ``model.safetensors``, written by
    :func:`lsync.checkpoints.save_model`); a training run directory, whose newest complete
    ``checkpoints/step-*/`` is taken; or a weights file (``.pt`` in the released format, or ``.safetensors``)
    that is built with the preset's U-Net config.
    """
    from lsync.checkpoints import CONFIG_NAME, WEIGHTS_NAME

    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        raise InputError(f"--unet {p} does not exist", "pass a run directory, a checkpoint directory or a .pt file")
    if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file():
        return p
    steps = []
    for candidate in (p / "checkpoints").glob("step-*") if (p / "checkpoints").is_dir() else []:
        match = re.fullmatch(r"step-(\d+)", candidate.name)
        if match and (candidate / CONFIG_NAME).is_file() and (candidate / WEIGHTS_NAME).is_file():
            steps.append((int(match[1]), candidate))
    if not steps:
        raise InputError(f"--unet {p} holds no checkpoint ({CONFIG_NAME} + {WEIGHTS_NAME}, or checkpoints/step-*/)",
                         "pass a training run directory or one of its checkpoints")
    return max(steps)[1]


def _load_unet(source: Path, preset_config: dict[str, Any]):
    from lsync.checkpoints import load_model_config, load_state_dict_strict, read_state_dict
    from lsync.models.presets import build_unet
    from lsync.training.trainable import load_checkpoint_model

    if source.is_dir():
        config = load_model_config(source)
        # A training run may record its model config beside the constructor keys; keep only the latter.
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        try:
            unet = build_unet(config)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}/config.json is not a U-Net config ({exc})",
                                  "pass a U-Net checkpoint written by lsync") from exc
        # A training checkpoint may hold only its trained weights (the frozen rest comes from the base files its
        # config.json names) and an EMA of them, which is what inference should use.
        return load_checkpoint_model(unet, source, use_ema=True)
    checkpoint = read_state_dict(source, mmap=source.suffix != ".safetensors")
    with torch.device("meta"):
        unet = build_unet(preset_config)
    return load_state_dict_strict(unet, checkpoint.state_dict, str(source), assign=True)


def load_inference_models(preset: str, weights_dir: str | Path | None = None, unet: str | Path | None = None,
                          vae: str | Path | None = None, windowing: str = "overlap"):
    """A :class:`~lsync.models.presets.ModelBundle` for ``preset``, its U-Net optionally replaced by ``unet`` and
    its VAE by ``vae`` (or, without one, by the VAE a ``unet`` checkpoint names: :func:`choose_vae`).

    A weights folder may hold ``unet_config.json`` beside ``latentsync_unet.pt`` (and beside a ``--unet`` file):
    it sets the U-Net architecture. Whisper's size comes from its checkpoint's ``dims``, the VAE's from its
    folder's ``config.json``. ``windowing`` is the Whisper long-audio windowing (``overlap`` or ``reference``).

    Returns ``(bundle, model_ids)`` where ``model_ids`` names every model (file paths and digests where files
    were read) for the output manifest.
    """
    bundle, ids = _load_preset_and_unet(preset, weights_dir, unet, windowing)
    choose_vae(bundle, ids, vae, resolve_unet_source(unet) if unet is not None else None)
    return bundle, ids


RANDOM_VAE_WARNING = ("the tiny preset's VAE is random (no --vae, and the U-Net names none): faces come out as "
                      "noise; pass --vae RUN of `lsync train vae`, or a U-Net trained with one")


def choose_vae(bundle, ids: dict[str, Any], vae: str | Path | None, unet_source: Path | None) -> None:
    """Put the right VAE into ``bundle``: ``--vae``, else the one the U-Net checkpoint was trained with (its
    ``config.json`` names it), else the preset's - for ``tiny`` a random one, which is said out loud."""
    from lsync.models.vae import checkpoint_vae, load_vae, resolve_vae_folder, vae_digest

    folder = resolve_vae_folder(vae) if vae is not None else None
    if folder is None and unet_source is not None and unet_source.is_dir():
        folder = checkpoint_vae(unet_source)
    if folder is not None:
        bundle.vae = load_vae(folder)
        ids["vae"] = {"path": str(folder), "digest": vae_digest(folder)}
    elif bundle.preset == "tiny":
        # Said out loud where the result is reported (lsync infer warns beside "wrote ..."), not here: a warning
        # before the run would stand in front of the one-line error of a run that is refused.
        ids["vae"] = {"random": True, "warning": RANDOM_VAE_WARNING}


def _load_preset_and_unet(preset: str, weights_dir: str | Path | None, unet: str | Path | None, windowing: str):
    from lsync.audio.whisper import WhisperFeatureExtractor, load_whisper_encoder
    from lsync.diffusion import make_scheduler
    from lsync.manifest import quick_file_digest
    from lsync.models.presets import ModelBundle, load_models, model_config, unet_config_beside
    from lsync.models.vae import load_vae
    from lsync.weights import PRESET_RESOLUTION, find_file, preset_files

    if preset not in PRESET_RESOLUTION:
        raise UsageError(f"unknown model preset '{preset}'", f"choose one of: {', '.join(PRESET_RESOLUTION)}")
    ids: dict[str, Any] = {"preset": preset}
    if unet is None:
        bundle = load_models(preset, weights_dir, windowing=windowing)
        ids["files"] = {role: {"path": str(path), "digest": quick_file_digest(path)}
                        for role, path in sorted(bundle.files.items())}
        return bundle, ids

    source = resolve_unet_source(unet)
    preset_unet_config = model_config("unet_tiny" if preset == "tiny" else "unet_stage2")
    if source.is_file():
        preset_unet_config = unet_config_beside(source) or preset_unet_config
    if preset == "tiny":
        bundle = load_models("tiny", windowing=windowing)
    else:
        # Only the VAE and Whisper come from the preset: the released U-Net need not be on disk.
        files = {}
        for file in preset_files(preset):
            if file.role == "whisper" or file.role.startswith("vae/"):
                found = find_file(file, preset, weights_dir)
                if found is None:
                    raise InputError(f"weights for preset '{preset}' not found: {file.filename}",
                                     f"run `lsync weights fetch --preset {preset} --for inference`")
                files[file.role] = found
        bundle = ModelBundle(preset=preset, resolution=PRESET_RESOLUTION[preset], unet=None,
                             vae=load_vae(files["vae/config.json"].parent),
                             audio=WhisperFeatureExtractor(load_whisper_encoder(files["whisper"]), windowing=windowing),
                             scheduler=make_scheduler(), files=files)
    bundle.unet = _load_unet(source, preset_unet_config).eval()
    check_audio_encoder(source, bundle)
    weights = source / "model.safetensors" if source.is_dir() else source
    ids["unet"] = {"path": str(source), "digest": quick_file_digest(weights)}
    ids["files"] = {role: {"path": str(path), "digest": quick_file_digest(path)}
                    for role, path in sorted(bundle.files.items())}
    return bundle, ids


def check_audio_encoder(unet_source: Path, bundle) -> None:
    """Refuse a U-Net checkpoint that names (``_audio_encoder`` in its ``config.json``) another Whisper encoder
    than the bundle's: it would get tokens it never saw and move the mouth with nothing in the audio. Released
    weights and checkpoints of older lsync versions name none and are not checked."""
    from lsync.audio.whisper import AUDIO_ENCODER_KEY, encoder_digest
    from lsync.checkpoints import CONFIG_NAME, load_model_config

    if not (unet_source.is_dir() and (unet_source / CONFIG_NAME).is_file()):
        return
    trained_with = load_model_config(unet_source).get(AUDIO_ENCODER_KEY)
    if trained_with is None:
        return
    here = encoder_digest(bundle.audio.encoder)
    if trained_with != here:
        raise CheckpointError(
            f"the U-Net {unet_source} was trained with another Whisper encoder ({trained_with[:19]}...) than preset "
            f"'{bundle.preset}' gives ({here[:19]}...; the tiny preset's random one differs between lsync versions)",
            "retrain the U-Net with this lsync (`lsync train unet`), or infer with the preset and weights it was "
            "trained with")


# ================================================================================================ DeepCache
class DeepFeatureCache:
    """Reuse the U-Net's deep features across denoising steps (DeepCache, Ma et al., CVPR 2024).

    Between neighbouring DDIM steps the output of the deep part of the U-Net - every down block but the first,
    the mid block and every up block but the last - changes little, while the shallow path (``conv_in``, the
    first down block, the last up block) carries the detail. On a *full* step everything runs and forward hooks
    remember the deep blocks' outputs; on the ``interval - 1`` steps after it, those blocks' ``forward`` is
    swapped (on the instance, restored afterwards) for one that returns the remembered output, so only the
    shallow path is computed. The last up block still gets fresh skip connections from ``conv_in`` and the
    first down block, and the fresh timestep embedding.

    ``interval=1`` disables it. Call :meth:`reset` when a new chunk starts.
    """

    def __init__(self, unet: nn.Module, interval: int):
        if interval < 1:
            raise UsageError(f"--cache-interval must be >= 1, got {interval}", "use 1 to disable feature reuse")
        self.interval = interval
        self.deep: list[nn.Module] = [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]
        self.outputs: dict[int, Any] = {}
        self.step = 0

    def reset(self) -> None:
        self.outputs.clear()
        self.step = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[bool]:
        """Wrap one U-Net call; yields True when this call reuses the deep features."""
        reuse = self.interval > 1 and self.step % self.interval != 0 and len(self.outputs) == len(self.deep)
        self.step += 1
        if self.interval == 1:
            yield False
            return
        handles = []
        if reuse:
            for module in self.deep:
                module.forward = _returns(self.outputs[id(module)])
        else:
            for module in self.deep:
                handles.append(module.register_forward_hook(self._remember))
        try:
            yield reuse
        finally:
            for handle in handles:
                handle.remove()
            if reuse:
                for module in self.deep:
                    del module.forward  # back to the class's forward

    def _remember(self, module: nn.Module, args, output) -> None:
        self.outputs[id(module)] = output


def _returns(value):
    def cached_forward(*args, **kwargs):
        return value

    return cached_forward


# ================================================================================================ sampler
class ChunkSampler:
    """Lip-syncs one chunk of aligned faces at a time (see the module docstring).

    Args:
        bundle: models (moved to ``device`` / ``dtype`` here; Whisper stays float32).
        steps: DDIM steps; guidance: classifier-free guidance scale (<= 1 skips the unconditional branch).
        seed: the shared initial noise; cache_interval: :class:`DeepFeatureCache`; compile: ``torch.compile``
            the U-Net (not together with ``cache_interval > 1``, which swaps block methods at run time).
        mask: (R, R) float mask, 1 keeps the pixel, 0 repaints it (e.g. :func:`lsync.face.mask.load_mask_image`);
            None draws the LatentSync shape (:func:`lsync.face.mask.mouth_mask`).
        scheduler: ``ddim`` (the bundle's, LatentSync's) or ``dpm++`` (:func:`lsync.diffusion.make_sampler`).

    ``audio_feat_length`` is the U-Net's audio context and ``audio_tokens`` the tokens per frame it reads
    (``2 (left + right + 1)`` Whisper positions x the encoder's hidden states: 50 for the released models).
    """

    def __init__(self, bundle, device: torch.device, dtype: torch.dtype, steps: int = 20, guidance: float = 1.5,
                 seed: int = 1247, cache_interval: int = 1, compile: bool = False, num_frames: int = 16,
                 mask: np.ndarray | None = None, scheduler: str = "ddim"):
        from lsync.face.mask import latent_mask, mouth_mask

        if steps < 1:
            raise UsageError(f"--steps must be >= 1, got {steps}", "use e.g. --steps 20")
        if compile and cache_interval > 1:
            raise UsageError("--compile and --cache-interval > 1 cannot be combined",
                             "feature reuse swaps U-Net block methods at run time; choose one")
        from lsync.audio.timing import audio_context
        from lsync.audio.whisper import tokens_per_frame

        self.bundle = bundle
        self.device, self.dtype = device, dtype
        self.resolution = bundle.resolution
        self.audio_feat_length = audio_context(bundle.unet.config.audio_feat_length)
        self.audio_tokens = tokens_per_frame(bundle.audio.encoder, context=self.audio_feat_length)
        self.num_frames = num_frames
        self.guidance = guidance
        for model in (bundle.unet, bundle.vae):
            # torch's own Module.to: diffusers' ModelMixin.to warns on every dtype cast (about fp32-only modules
            # these models do not have), and that line would stand in front of every one-line error.
            nn.Module.to(model, device=device, dtype=dtype)
        bundle.audio.encoder.to(device=device)
        self.cache = DeepFeatureCache(bundle.unet, cache_interval)
        self.unet = torch.compile(bundle.unet) if compile else bundle.unet
        from lsync.diffusion import make_sampler

        self.scheduler = bundle.scheduler if scheduler == "ddim" else make_sampler(scheduler, bundle.scheduler.config)
        self.steps = steps
        self.step_kwargs = {"eta": 0.0} if scheduler == "ddim" else {}
        self.scheduler.set_timesteps(steps, device=device)
        self.timesteps = self.scheduler.timesteps

        mask = mouth_mask(self.resolution) if mask is None else np.asarray(mask, np.float32)  # (R, R) 1 = keep
        if mask.shape != (self.resolution, self.resolution):
            raise UsageError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the model works at "
                             f"{self.resolution}x{self.resolution}", "load it with load_mask_image(path, resolution)")
        self.mask = mask
        self.pixel_mask = torch.tensor(np.asarray(mask), device=device, dtype=torch.float32)[None, None, None]
        latent_size = self.resolution // 8
        self.latent_mask = latent_mask(mask, latent_size).to(device=device, dtype=dtype).reshape(
            1, 1, 1, latent_size, latent_size)
        generator = torch.Generator("cpu").manual_seed(seed)
        latent_channels = bundle.vae.config.latent_channels
        # One draw repeated over the frames: every frame of every chunk starts from the same noise.
        self.initial_noise = torch.randn((1, latent_channels, 1, latent_size, latent_size), generator=generator)
        self.initial_noise = self.initial_noise.to(device) * self.scheduler.init_noise_sigma

    def audio_window(self, features: torch.Tensor, start_frame: int, num_frames: int) -> torch.Tensor:
        """The U-Net's audio tokens of frames ``start_frame ..``: Whisper features (T50, L+1, D) ->
        (num_frames, audio_tokens, D), cut for the U-Net's ``audio_feat_length``."""
        from lsync.audio.whisper import feature_window

        return feature_window(features, start_frame, num_frames, context=self.audio_feat_length)

    @torch.inference_mode()
    def __call__(self, faces: np.ndarray, audio: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """faces: (F, R, R, 3) uint8 aligned faces; audio: (F, audio_tokens, D) audio tokens (:meth:`audio_window`);
        any F (16 per full chunk).

        Returns (F, 3, R, R) float32 on the CPU: the generated mouth region, the original pixels elsewhere, in
        [-1, 1] (``clamp=False`` keeps the decoder's overshoot, which the paste-back clamps after un-warping).
        """
        pixels = self.pixels(faces)
        composited = self.composite(self.denoise(pixels, audio), pixels)
        composited = composited.clamp(-1, 1) if clamp else composited
        return composited[0].permute(1, 0, 2, 3).cpu()

    def pixels(self, faces: np.ndarray) -> torch.Tensor:
        """(F, R, R, 3) uint8 -> (1, 3, F, R, R) float32 ``(x / 255 - 0.5) / 0.5`` on the device."""
        pixels = torch.from_numpy(np.ascontiguousarray(faces)).to(self.device).permute(3, 0, 1, 2)[None]
        return (pixels.float() / 255 - 0.5) / 0.5

    @torch.inference_mode()
    def denoise(self, pixels: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """The DDIM loop: pixels (1, 3, F, R, R) in [-1, 1], audio (F, audio_tokens, D) -> latents
        (1, 4, F, R/8, R/8) float32, before the VAE decode."""
        from lsync.models.vae import encode

        num_frames = pixels.shape[2]
        if audio.ndim != 3 or tuple(audio.shape[:2]) != (num_frames, self.audio_tokens):
            # The U-Net would take any token count and quietly follow audio of another context.
            raise ValueError(f"audio tokens {tuple(audio.shape)} must be (F={num_frames}, {self.audio_tokens}, D): "
                             f"this U-Net reads audio_feat_length {list(self.audio_feat_length)}; cut them "
                             "with ChunkSampler.audio_window")
        masked = pixels * self.pixel_mask
        masked_latents = encode(self.bundle.vae, masked.to(self.dtype))
        reference_latents = encode(self.bundle.vae, pixels.to(self.dtype))
        mask = self.latent_mask.expand(1, 1, num_frames, -1, -1)
        condition = torch.cat([mask, masked_latents.to(self.dtype), reference_latents.to(self.dtype)], dim=1)

        audio = audio.to(device=self.device, dtype=self.dtype)[None]  # (1, F, S, D)
        use_guidance = self.guidance > 1.0
        if use_guidance:
            audio = torch.cat([torch.zeros_like(audio), audio])
            condition = torch.cat([condition, condition])

        latents = self.initial_noise.expand(-1, -1, num_frames, -1, -1).float()
        self.cache.reset()
        self.scheduler.set_timesteps(self.steps, device=self.device)  # multistep samplers keep per-chunk history
        for t in self.timesteps:
            model_input = torch.cat([latents, latents]) if use_guidance else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input.to(self.dtype), condition], dim=1)
            with self.cache():
                noise = self.unet(model_input, t, encoder_hidden_states=audio).sample.float()
            if use_guidance:
                uncond, cond = noise.chunk(2)
                noise = uncond + self.guidance * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents, **self.step_kwargs).prev_sample
        return latents

    @torch.inference_mode()
    def composite(self, latents: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """Decode latents (1, 4, F, h, w) and keep the generated pixels only where the mask repaints:
        ``decoded (1 - m) + pixels m`` -> (1, 3, F, R, R) float32, not clamped."""
        from lsync.models.vae import decode

        decoded = decode(self.bundle.vae, latents).float()
        return decoded * (1 - self.pixel_mask) + pixels * self.pixel_mask
