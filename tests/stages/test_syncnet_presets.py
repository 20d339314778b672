"""The SyncNet training presets: the released geometry keeps LatentSync's recipe and layout; tiny has its own."""

from __future__ import annotations

import json

import pytest
import torch

from lsync.config import list_presets, resolve_config
from lsync.models.syncnet import StableSyncNet
from lsync.training.syncnet_recipe import TrainSyncNetConfig, model_config


def preset(name: str) -> TrainSyncNetConfig:
    return resolve_config(TrainSyncNetConfig, "syncnet", name)


def test_the_released_preset_keeps_the_reference_recipe():
    """LatentSync's SyncNet training: AdamW 1e-5, global batch 256, clip 1.0, BCE on the raw cosine, constant lr."""
    config = preset("16_pixel_attn")
    assert config.model.geometry == "syncnet_16_pixel_attn" and config.model.image_size == 256
    assert config.model.norm_num_groups is None  # the geometry's 32 groups
    assert config.loss.logit_scale is None
    train = config.train
    assert train.lr == 1e-5 and train.batch_size * train.grad_accum == 256 and train.max_grad_norm == 1.0
    assert train.lr_schedule == "constant" and train.warmup_steps == 0 and train.mixed_precision == "auto"
    assert (config.data.min_offset, config.data.other_clip_negatives, config.data.positive_fraction) == (5, 0.5, 0.5)


def test_the_tiny_preset_trains_with_a_logit_scale():
    tiny, released = preset("tiny"), preset("16_pixel_attn")
    assert tiny.loss.logit_scale is not None and tiny.loss.logit_scale > 1
    assert released.loss.logit_scale is None
    # its pairs are drawn like the released recipe's, except that every negative is the clip's own audio shifted
    # (the offset the sync loss and the filter measure; half from other clips stalled at chance on 10 clips)
    assert (tiny.data.min_offset, tiny.data.positive_fraction) == \
        (released.data.min_offset, released.data.positive_fraction)
    assert tiny.data.other_clip_negatives == 0 and released.data.other_clip_negatives == 0.5


@pytest.mark.parametrize("name", list_presets("syncnet"))
def test_every_preset_watches_for_a_chance_plateau(name):
    assert preset(name).plateau.steps > 0


@pytest.mark.golden
def test_the_released_preset_builds_the_reference_state_dict(reference):
    """What ``--preset 16_pixel_attn`` trains has exactly the keys and shapes of the released checkpoint."""
    lines = (reference / "keys" / "syncnet_keys_16_pixel_attn.tsv").read_text().splitlines()[1:]
    expected = [(key, json.loads(shape)) for key, shape, _ in (line.split("\t") for line in lines if line.strip())]
    with torch.device("meta"):
        model = StableSyncNet(model_config(preset("16_pixel_attn").model))
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == expected
