"""The U-Net validation's sync score, with a SyncNet whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lsync.audio.timing import mel_start_index, mel_window_length
from lsync.stages.train_unet_val import SyncScorer, ValidationRenderer


class MelMeanSyncNet(nn.Module):
    """Vision embedding (1, 0); audio embedding (c, sqrt(1 - c^2)) with c = the first column of the mel window: the
    cosine of a window is that value, whatever the faces."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # a parameter, for the dtype the renderer reads
        self.seen = []

    def forward(self, images, mel):
        self.seen.append((tuple(images.shape), tuple(mel.shape)))
        c = mel[..., 0].mean().clamp(-1, 1)
        vision = torch.tensor([[1.0, 0.0]])
        return vision, torch.stack([c, (1 - c * c).sqrt()])[None]


def renderer_with(model: nn.Module, mel: torch.Tensor, num_frames: int) -> ValidationRenderer:
    renderer = object.__new__(ValidationRenderer)  # only what score() reads
    renderer.scorer, renderer.mel, renderer.num_frames = SyncScorer(model, 32), mel, num_frames
    renderer.device = torch.device("cpu")
    return renderer


def test_sync_score_is_the_mean_cosine_of_each_whole_window_against_its_mel():
    # the first mel column of the windows at frames 0, 16, 32 holds 0.9, 0.2, 0.6; the rest is noise
    num_frames = 52  # three whole windows and 4 frames left over
    mel = torch.rand(80, 1 + num_frames * 640 // 200, generator=torch.Generator().manual_seed(0)) * 8 - 4
    values = {0: 0.9, 16: 0.2, 32: 0.6}
    for start, value in values.items():
        mel[:, mel_start_index(start)] = value
    model = MelMeanSyncNet()
    frames = np.zeros((num_frames, 64, 64, 3), np.uint8)
    score = renderer_with(model, mel, num_frames).score(frames)
    assert score == {"sync_cosine": pytest.approx(np.mean(list(values.values())), abs=1e-6),
                     "sync_accuracy": pytest.approx(2 / 3), "sync_windows": 3.0}
    assert model.seen == [((1, 48, 16, 32), (1, 1, 80, mel_window_length(16)))] * 3  # lower half, 32 px


def test_no_whole_window_gives_no_score():
    assert renderer_with(MelMeanSyncNet(), torch.zeros(80, 60), 15).score(np.zeros((15, 64, 64, 3), np.uint8)) == {}
