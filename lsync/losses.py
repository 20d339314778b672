"""The four U-Net training losses of LatentSync and the rule that combines them.

* **recon** - MSE between the predicted and the true noise, in latent space (every stage).
* **lpips** - LPIPS (VGG) between the one-step decoded frames and the ground truth, on the lower half of the face.
* **sync** - a frozen SyncNet on the lower half of the decoded frames and the window's mel: BCE of the cosine
  similarity to 1 ("in sync").
* **trepa** - TREPA: MSE between L2-normalised VideoMAE-v2 features of the decoded and the real clip, full frames.

Every loss function returns the **unweighted** scalar. :func:`compute_losses` multiplies by :class:`LossWeights`
and runs a loss only when its weight is non-zero: a zero weight never runs that loss's model (nor needs it), so
stage 1 (recon only) does not pay for SyncNet, LPIPS or TREPA. The pixel losses all take frames as
``(B, 3, F, H, W)`` in ``[-1, 1]``; gradients flow through the frozen loss networks to the generated frames.

LPIPS needs torchvision's ImageNet VGG16 (``vgg16-397923af.pth``) which cannot be downloaded here; see
:func:`make_lpips` for where it is looked for and what happens without it.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lsync.console import get_logger
from lsync.errors import CheckpointError, ConfigError, InputError
from lsync.models.syncnet import cosine_loss, pack_frames_for_syncnet

log = get_logger(__name__)

LOSS_NAMES = ("recon", "sync", "lpips", "trepa")
PIXEL_LOSSES = ("sync", "lpips", "trepa")

#: torchvision's ImageNet backbones, as LPIPS uses them (``features`` only), by LPIPS ``net`` name.
LPIPS_BACKBONE_FILES = {
    "vgg": "vgg16-397923af.pth",
    "alex": "alexnet-owt-7be5be79.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


# ============================================================================================== weights
@dataclass
class LossWeights:
    """Weight of each loss in the total; 0 switches a loss off (its model is then never run).

    Defaults are LatentSync's stage-2 weights. Stage 1 is ``LossWeights(sync=0, lpips=0, trepa=0)``.
    """

    recon: float = 1.0
    sync: float = 0.05
    lpips: float = 0.1
    trepa: float = 10.0

    def __post_init__(self) -> None:
        for name in LOSS_NAMES:
            value = float(getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"loss weight {name}={getattr(self, name)!r} is not a finite number >= 0",
                                  f"pass --{name}-weight with a value >= 0 (0 turns the loss off)")
            setattr(self, name, value)
        if not any(getattr(self, name) for name in LOSS_NAMES):
            raise ConfigError("every loss weight is 0, so there is nothing to train",
                              "give at least one of --recon-weight, --sync-weight, --lpips-weight, "
                              "--trepa-weight a value above 0")

    def active(self) -> tuple[str, ...]:
        """Names of the losses with a non-zero weight, in :data:`LOSS_NAMES` order."""
        return tuple(name for name in LOSS_NAMES if getattr(self, name) > 0)

    @property
    def needs_pixels(self) -> bool:
        """Whether any pixel-space loss is on, i.e. whether the trainer must decode the one-step x0."""
        return any(getattr(self, name) > 0 for name in PIXEL_LOSSES)

    def recon_only(self) -> LossWeights:
        """These weights with every pixel loss off (a step that skips the x0 decode)."""
        return LossWeights(recon=self.recon, sync=0.0, lpips=0.0, trepa=0.0)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# ============================================================================================== the four losses
def _check_video(name: str, frames: torch.Tensor) -> None:
    if frames.ndim != 5 or frames.shape[1] != 3:
        raise ValueError(f"{name} must be (B, 3, F, H, W), got shape {tuple(frames.shape)}")


def _frames_first(videos: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, F, C, H, W)."""
    return videos.permute(0, 2, 1, 3, 4)


def recon_loss(noise_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between predicted and true noise, computed in float32 (any shape, equal shapes)."""
    if noise_pred.shape != noise.shape:
        raise ValueError(f"noise_pred {tuple(noise_pred.shape)} and noise {tuple(noise.shape)} differ in shape")
    return F.mse_loss(noise_pred.float(), noise.float())


def lower_half_frames(videos: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B*F, 3, H - H//2, W): every frame's rows H//2 .. H-1 (mouth and chin)."""
    _check_video("videos", videos)
    b, c, f, h, w = videos.shape
    frames = _frames_first(videos).reshape(b * f, c, h, w)
    return frames[:, :, h // 2:]


def lpips_lower_half(pred_frames: torch.Tensor, gt_frames: torch.Tensor, lpips_model: nn.Module) -> torch.Tensor:
    """LPIPS between generated and real frames on the lower half of the face, averaged over all frames.

    Args:
        pred_frames, gt_frames: (B, 3, F, H, W) in [-1, 1] (the range LPIPS expects).
        lpips_model: from :func:`make_lpips` (any module mapping two (N, 3, h, w) batches to (N, 1, 1, 1)).
    Returns:
        0-d float32 tensor.
    """
    if pred_frames.shape != gt_frames.shape:
        raise ValueError(f"pred_frames {tuple(pred_frames.shape)} and gt_frames {tuple(gt_frames.shape)} differ")
    pred, gt = lower_half_frames(pred_frames), lower_half_frames(gt_frames)
    dtype = _module_dtype(lpips_model, pred.dtype)
    return lpips_model(pred.to(dtype), gt.to(dtype)).float().mean()


def syncnet_input(pred_frames: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
    """Generated frames as SyncNet images: (B, 3, F, H, W) -> (B, 3F, S - S//2, S).

    Each frame is first resized (bicubic, no antialias) to ``resolution`` x ``resolution`` when it is given and
    differs from the frame size - a 512 px U-Net trained with the 256 px SyncNet - then the lower half of all
    frames is packed frame-major as :func:`lsync.models.syncnet.pack_frames_for_syncnet` does.
    """
    _check_video("pred_frames", pred_frames)
    b, c, f, h, w = pred_frames.shape
    frames = _frames_first(pred_frames)
    if resolution is not None and (h, w) != (resolution, resolution):
        flat = F.interpolate(frames.reshape(b * f, c, h, w), size=(resolution, resolution), mode="bicubic",
                             align_corners=False)
        frames = flat.reshape(b, f, c, resolution, resolution)
    return pack_frames_for_syncnet(frames, lower_half=True)


def sync_loss(pred_frames: torch.Tensor, mel: torch.Tensor, syncnet: nn.Module,
              resolution: int | None = None) -> torch.Tensor:
    """SyncNet loss of generated frames against their own audio: BCE(cos(vision, audio), 1).

    Args:
        pred_frames: (B, 3, F, H, W) in [-1, 1], F = the SyncNet's frame count (16).
        mel: (B, 1, 80, 52) Wav2Lip mel windows of the same frames.
        syncnet: a frozen :class:`~lsync.models.syncnet.StableSyncNet`.
        resolution: the face size the SyncNet was trained on (frames are resized to it), or None to feed the
            frames at their own size.
    Returns:
        0-d float32 tensor.
    """
    images = syncnet_input(pred_frames, resolution)
    dtype = _module_dtype(syncnet, images.dtype)
    vision_embeds, audio_embeds = syncnet(images.to(dtype), mel.to(device=images.device, dtype=dtype))
    in_sync = torch.ones(vision_embeds.shape[0], device=vision_embeds.device)
    return cosine_loss(vision_embeds, audio_embeds, in_sync)


def trepa_loss(pred_frames: torch.Tensor, gt_frames: torch.Tensor, trepa: nn.Module) -> torch.Tensor:
    """TREPA between generated and real clips on full frames; ``trepa`` is a :class:`~lsync.models.trepa.TrepaLoss`.

    Both (B, 3, F, H, W) in [-1, 1]; returns a 0-d float32 tensor.
    """
    _check_video("pred_frames", pred_frames)
    if pred_frames.shape != gt_frames.shape:
        raise ValueError(f"pred_frames {tuple(pred_frames.shape)} and gt_frames {tuple(gt_frames.shape)} differ")
    return trepa(pred_frames, gt_frames).float()


def _module_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    parameter = next(module.parameters(), None)
    return default if parameter is None else parameter.dtype


# ============================================================================================== combining
@dataclass
class LossModels:
    """The frozen networks the pixel losses run; each may be None when its loss weight is 0.

    ``syncnet_resolution`` is the face size the SyncNet was trained at (256 for LatentSync's); generated frames
    of another size are resized to it. None feeds the frames as they are.
    """

    lpips: nn.Module | None = None
    syncnet: nn.Module | None = None
    trepa: nn.Module | None = None
    syncnet_resolution: int | None = None


@dataclass
class LossOutput:
    """``total`` (0-d, differentiable) = sum of ``weighted``; ``raw`` holds the unweighted terms that ran.

    Only the losses with a non-zero weight appear in ``raw`` and ``weighted``.
    """

    total: torch.Tensor
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    weighted: dict[str, torch.Tensor] = field(default_factory=dict)

    def log_values(self) -> dict[str, float]:
        """Plain floats for a metrics log: ``loss``, ``<name>`` (raw) and ``<name>_weighted`` per active loss."""
        values = {"loss": float(self.total.detach())}
        for name, value in self.raw.items():
            values[name] = float(value.detach())
            values[f"{name}_weighted"] = float(self.weighted[name].detach())
        return values


def compute_losses(
    weights: LossWeights,
    *,
    noise_pred: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    pred_frames: torch.Tensor | None = None,
    gt_frames: torch.Tensor | None = None,
    mel: torch.Tensor | None = None,
    models: LossModels | None = None,
) -> LossOutput:
    """Run every loss whose weight is non-zero, and only those; return raw, weighted and total.

    Args:
        weights: the loss weights; a zero weight skips the loss entirely (its inputs and model may be None).
        noise_pred, noise: (B, 4, F, h, w) predicted and true noise (recon).
        pred_frames: (B, 3, F, H, W) one-step decoded frames in [-1, 1] (sync, lpips, trepa).
        gt_frames: (B, 3, F, H, W) real frames in [-1, 1] (lpips, trepa).
        mel: (B, 1, 80, 52) mel windows of the frames (sync).
        models: the frozen loss networks.
    """
    models = models or LossModels()
    raw: dict[str, torch.Tensor] = {}
    if weights.recon > 0:
        _require(noise_pred is not None and noise is not None, "recon", "noise_pred and noise")
        raw["recon"] = recon_loss(noise_pred, noise)
    if weights.sync > 0:
        _require(pred_frames is not None and mel is not None, "sync", "pred_frames and mel")
        _require_model(models.syncnet, "sync", "a SyncNet (--syncnet)")
        raw["sync"] = sync_loss(pred_frames, mel, models.syncnet, models.syncnet_resolution)
    if weights.lpips > 0:
        _require(pred_frames is not None and gt_frames is not None, "lpips", "pred_frames and gt_frames")
        _require_model(models.lpips, "lpips", "an LPIPS model (lsync.losses.make_lpips)")
        raw["lpips"] = lpips_lower_half(pred_frames, gt_frames, models.lpips)
    if weights.trepa > 0:
        _require(pred_frames is not None and gt_frames is not None, "trepa", "pred_frames and gt_frames")
        _require_model(models.trepa, "trepa", "a TREPA model (the VideoMAE-v2 checkpoint)")
        raw["trepa"] = trepa_loss(pred_frames, gt_frames, models.trepa)
    weighted = {name: getattr(weights, name) * value for name, value in raw.items()}
    total = torch.stack(list(weighted.values())).sum()
    return LossOutput(total=total, raw=raw, weighted=weighted)


def _require(ok: bool, loss: str, inputs: str) -> None:
    if not ok:
        raise ValueError(f"the {loss} loss has a non-zero weight but {inputs} were not given")


def _require_model(model: nn.Module | None, loss: str, what: str) -> None:
    if model is None:
        raise ConfigError(f"the {loss} loss has a non-zero weight but no model was given for it",
                          f"provide {what}, or set --{loss}-weight 0")


# ============================================================================================== LPIPS
class FrozenLPIPS(nn.Module):
    """An ``lpips.LPIPS`` network that stays frozen and in eval mode whatever its parent module does.

    ``forward(x, y)`` with (N, 3, H, W) images in [-1, 1] returns (N, 1, 1, 1) distances.
    ``pretrained_backbone`` says whether the ImageNet backbone was loaded (False: random, test-only).
    """

    def __init__(self, model: nn.Module, pretrained_backbone: bool, backbone_file: Path | None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.pretrained_backbone = pretrained_backbone
        self.backbone_file = backbone_file

    def train(self, mode: bool = True) -> FrozenLPIPS:
        # The linear heads carry dropout: training mode would make the loss random.
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, y)


def lpips_search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the backbone file, in order: ``weights_dir``, ``$LSYNC_WEIGHTS``, torch hub's
    ``checkpoints`` folder (where torchvision itself would cache the download)."""
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get("LSYNC_WEIGHTS"):
        dirs.append(Path(os.environ["LSYNC_WEIGHTS"]).expanduser())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_lpips_backbone(net: str = "vgg", weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The torchvision backbone file for LPIPS ``net``, or None. Within a folder the file may also sit in an
    ``auxiliary/`` subfolder (LatentSync's ``checkpoints/auxiliary`` layout)."""
    filename = _backbone_filename(net)
    for folder in lpips_search_dirs(weights_dir):
        for candidate in (folder / filename, folder / "auxiliary" / filename):
            if candidate.is_file():
                return candidate
    return None


def make_lpips(net: str = "vgg", weights_dir: str | os.PathLike | None = None, require_pretrained: bool = False,
               device: str | torch.device = "cpu") -> FrozenLPIPS:
    """A frozen LPIPS network (version 0.1 linear heads shipped with the ``lpips`` package).

    The backbone (torchvision's ImageNet ``vgg16-397923af.pth`` for ``net="vgg"``) is never downloaded: it is
    looked for by :func:`find_lpips_backbone` and loaded with ``weights_only=True``. When it is missing the
    backbone stays random and a WARNING says so - fine for tests, meaningless as a perceptual loss - unless
    ``require_pretrained=True``, which raises :class:`InputError` naming the file and where to put it.
    """
    filename = _backbone_filename(net)
    path = find_lpips_backbone(net, weights_dir)
    if path is None and require_pretrained:
        places = ", ".join(str(d) for d in lpips_search_dirs(weights_dir))
        raise InputError(f"the LPIPS backbone {filename} (torchvision ImageNet {net}) was not found",
                         f"put it in one of: {places} (LatentSync ships it as checkpoints/auxiliary/{filename})")
    model = _build_lpips(net)
    _load_lpips_heads(model, net)
    if path is not None:
        _load_lpips_backbone(model, path)
    else:
        log.warning("LPIPS uses a RANDOM %s backbone: %s was not found in %s. Fine for tests, wrong for real "
                    "training; place the file there to get the real perceptual loss.", net, filename,
                    ", ".join(str(d) for d in lpips_search_dirs(weights_dir)))
    return FrozenLPIPS(model, pretrained_backbone=path is not None, backbone_file=path).to(device)


def _backbone_filename(net: str) -> str:
    if net not in LPIPS_BACKBONE_FILES:
        raise ConfigError(f"unknown LPIPS network {net!r}", f"use one of: {', '.join(LPIPS_BACKBONE_FILES)}")
    return LPIPS_BACKBONE_FILES[net]


def _build_lpips(net: str) -> nn.Module:
    """``lpips.LPIPS`` with a random backbone and random heads: with ``pnet_rand`` the package asks torchvision
    for an untrained model (no download), and with ``pretrained=False`` it does not load its heads itself (it
    would do so without ``weights_only``); both are loaded by us afterwards."""
    import lpips

    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated ``pretrained=`` argument; harmless here.
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        return lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)


def _load_lpips_heads(model: nn.Module, net: str) -> None:
    """The calibrated 1x1 linear heads (``lin0..linN``) from the ``lpips`` package's ``weights/v0.1/<net>.pth``."""
    import lpips

    from lsync.checkpoints import load_torch_checkpoint

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    heads = load_torch_checkpoint(path)
    expected = {k: v for k, v in model.state_dict().items() if re.match(r"lin\d+\.", k)}
    if set(heads) != set(expected) or any(heads[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"{path} does not hold the LPIPS linear heads of {net}",
                              "reinstall the lpips package")
    model.load_state_dict(heads, strict=False)  # the heads only; `lins.*` aliases the same tensors


def _load_lpips_backbone(model: nn.Module, path: Path) -> None:
    """Copy torchvision's ``features.<i>.*`` tensors into LPIPS's ``net.slice<k>.<i>.*`` (same layer index ``i``).

    Every backbone tensor of the LPIPS model must be found with the right shape; the classifier tensors of the
    file are not used.
    """
    from lsync.checkpoints import read_state_dict

    source = read_state_dict(path).state_dict
    backbone = {}
    problems = []
    for key, tensor in model.net.state_dict().items():
        match = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", key)
        source_key = f"features.{match.group(1)}.{match.group(2)}" if match else None
        if source_key not in source:
            problems.append(f"{source_key or key} missing")
        elif source[source_key].shape != tensor.shape:
            problems.append(f"{source_key} is {list(source[source_key].shape)}, LPIPS wants {list(tensor.shape)}")
        else:
            backbone[key] = source[source_key]
    if problems:
        raise CheckpointError(f"{path} is not a torchvision {model.pnet_type} ImageNet checkpoint "
                              f"({'; '.join(problems[:4])})", "replace it with the original torchvision file")
    model.net.load_state_dict(backbone, strict=True)


__all__ = [
    "LOSS_NAMES", "PIXEL_LOSSES", "FrozenLPIPS", "LossModels", "LossOutput", "LossWeights", "compute_losses",
    "find_lpips_backbone", "lower_half_frames", "lpips_lower_half", "make_lpips", "recon_loss", "sync_loss",
    "syncnet_input", "trepa_loss",
]
