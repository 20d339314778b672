"""The classic SyncNet v2 (Chung & Zisserman, "Out of time", 2016) for paper-comparable LSE-C / LSE-D.

Papers (LatentSync among them) report lip-sync quality with the ``syncnet_v2.model`` weights of
syncnet_python. This module rebuilds that network with the same state-dict layout, so the released file loads
strictly (``torch.load(weights_only=True)``: it is a plain dict of tensors), and its inputs are made the way
syncnet_python's ``evaluate`` makes them (the scorer, :class:`lsync.sync_metrics.SyncNetV2Scorer`, sits beside
LatentSync's):

* video: 5-frame windows of ``224 x 224`` face crops, BGR, raw 0-255 values (no normalisation),
  ``(B, 3, 5, 224, 224)`` -> 3D-conv lip tower -> 1024-d;
* audio: 13 MFCCs at 100 Hz of the 16 kHz int16 samples (python_speech_features' defaults: 25 ms rectangular
  window, 10 ms step, 512-point FFT, 26 filters, pre-emphasis 0.97, lifter 22, energy in coefficient 0), 20
  columns per window starting at ``4 * frame`` -> ``(B, 1, 13, 20)`` -> 2D-conv audio tower -> 1024-d;
* distance: Euclidean (``pairwise_distance``) between the raw, un-normalised embeddings.

Difference from syncnet_python: it crops faces around S3FD boxes (``crop_scale`` 0.4); lsync feeds the aligned
face (the LatentSync alignment) resized to 224, so numbers are close to, not identical with, the published ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.fft import dct
from torch import nn

from lsync.errors import CheckpointError, InputError

EMBED_DIM = 1024
FACE_SIZE = 224
VIDEO_WINDOW = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC columns per 25 fps frame
MFCC_WINDOW = 20  # columns per 5-frame window
SAMPLE_RATE = 16000


# ----------------------------------------------------------------------------------------------- the network
def _conv2d_bn(cin: int, cout: int, kernel, padding) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=kernel, stride=1, padding=padding), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _conv3d_bn(cin: int, cout: int, kernel, stride=1, padding=0) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel_size=kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


def _fc(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNetV2(nn.Module):
    """Two towers whose ``nn.Sequential`` indices reproduce the released keys (``netcnnaud.0.weight``, ...).

    ``embed_audio((B, 1, 13, 20))`` and ``embed_lips((B, 3, 5, 224, 224))`` return (B, 1024) raw embeddings.
    """

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            *_conv2d_bn(1, 64, 3, 1), nn.MaxPool2d(kernel_size=1, stride=1),
            *_conv2d_bn(64, 192, 3, 1), nn.MaxPool2d(kernel_size=3, stride=(1, 2)),
            *_conv2d_bn(192, 384, 3, 1),
            *_conv2d_bn(384, 256, 3, 1),
            *_conv2d_bn(256, 256, 3, 1), nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv2d_bn(256, 512, (5, 4), 0),
        )
        self.netfcaud = _fc(embed_dim)
        self.netfclip = _fc(embed_dim)
        self.netcnnlip = nn.Sequential(
            *_conv3d_bn(3, 96, (5, 7, 7), stride=(1, 2, 2)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d_bn(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3d_bn(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_bn(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            *_conv3d_bn(256, 256, (1, 3, 3), padding=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3d_bn(256, 512, (1, 6, 6)),
        )

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, 1024)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0-255 face clips -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(clips).flatten(1))


def load_syncnet_v2(path: str | Path, device: torch.device | str = "cpu") -> SyncNetV2:
    """SyncNet v2 in eval mode from ``syncnet_v2.model`` (a state dict saved by syncnet_python).

    Loaded with ``weights_only=True`` and checked key by key; only BatchNorm's ``num_batches_tracked`` counters
    (absent from files saved by old torch versions, and unused in eval mode) may be missing.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist", "pass the syncnet_v2.model file of syncnet_python")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a plain tensor dict"
        raise CheckpointError(f"cannot read {path} as a SyncNet v2 state dict ({type(exc).__name__})",
                              "pass syncnet_python's syncnet_v2.model") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a dict of tensors", "pass syncnet_python's syncnet_v2.model")
    model = SyncNetV2()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{path} does not match SyncNet v2 ({len(missing)} missing keys e.g. "
                              f"{missing[:2]}, {len(unexpected)} unexpected e.g. {unexpected[:2]})",
                              "pass syncnet_python's syncnet_v2.model (--metric stable for LatentSync's SyncNet)")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(f"{path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, SyncNet v2 needs "
                              f"{tuple(expected[wrong[0]].shape)}", "pass syncnet_python's syncnet_v2.model")
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------- MFCC
def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def _triangular_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """(num_filters, nfft/2 + 1) triangles on FFT bins placed evenly on the mel scale from 0 to Nyquist."""
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mel_points) / sample_rate).astype(int)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        left, centre, right = bins[j], bins[j + 1], bins[j + 2]
        for i in range(left, centre):
            bank[j, i] = (i - left) / (centre - left)
        for i in range(centre, right):
            bank[j, i] = (right - i) / (right - centre)
    return bank


def mfcc(samples_16k: np.ndarray, num_ceps: int = 13, num_filters: int = 26, nfft: int = 512,
         win_length: int = 400, hop: int = 160, preemphasis: float = 0.97, lifter: int = 22) -> np.ndarray:
    """python_speech_features-style MFCC of int16-scaled samples: ``(N,)`` -> ``(num_ceps, frames)`` at 100 Hz.

    ``samples_16k`` may be float in [-1, 1) (scaled by 32768 here, as syncnet_python reads int16 wavs) or int16.
    Frames: ``1 + ceil((N - win) / hop)`` rectangular windows, the last one zero-padded.
    """
    samples = np.asarray(samples_16k)
    signal = samples.astype(np.float64) * (32768.0 if samples.dtype.kind == "f" else 1.0)
    signal = np.append(signal[:1], signal[1:] - preemphasis * signal[:-1])
    num_frames = 1 if len(signal) <= win_length else 1 + int(np.ceil((len(signal) - win_length) / hop))
    padded = np.concatenate([signal, np.zeros((num_frames - 1) * hop + win_length - len(signal))])
    index = np.arange(win_length)[None, :] + hop * np.arange(num_frames)[:, None]
    power = np.abs(np.fft.rfft(padded[index], nfft)) ** 2 / nfft  # (frames, nfft/2 + 1)
    eps = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ _triangular_filterbank(num_filters, nfft, SAMPLE_RATE).T
    bands = np.where(bands == 0, eps, bands)
    ceps = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :num_ceps]
    ceps *= 1 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter)
    ceps[:, 0] = np.log(energy)  # appendEnergy: coefficient 0 replaced by the log frame energy
    return ceps.T.astype(np.float32)
