"""Weight presets build runnable models: ``tiny`` from configs, released layouts from files on disk."""

from __future__ import annotations

import json

import torch
import pytest
from safetensors.torch import load_file

from lsync.errors import CheckpointError, InputError
from lsync.models.presets import load_models, load_unet
from lsync.models.vae import load_vae
from lsync import weights


@pytest.fixture(autouse=True)
def no_machine_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LSYNC_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "_find_in_hf_cache", lambda file: None)


def test_tiny_preset_runs_end_to_end_shapes():
    bundle = load_models("tiny")
    unet = bundle.unet
    assert unet.config.in_channels == 13
    features = bundle.audio(torch.zeros(16000).numpy())  # 1 s of silence -> 50 Whisper positions
    assert features.shape[0] == 50
    tokens = features.shape[1] * 10
    sample = torch.randn(1, 13, 2, 8, 8)
    audio = torch.randn(1, 2, tokens, unet.config.cross_attention_dim)
    with torch.no_grad():
        out = unet(sample, torch.tensor([500]), audio).sample
    assert out.shape == (1, 4, 2, 8, 8)
    assert bundle.scheduler.config.num_train_timesteps == 1000


@pytest.mark.golden
def test_released_layout_loads_from_a_weights_dir(reference, tmp_path):
    """The latentsync-1.5 file layout, filled with the golden tiny files, loads strictly."""
    folder = tmp_path / "checkpoints"
    (folder / "whisper").mkdir(parents=True)
    (folder / "latentsync_unet.pt").write_bytes((reference / "unet" / "tiny_unet_latentsync_format.pt").read_bytes())
    (folder / "whisper" / "tiny.pt").write_bytes((reference / "whisper" / "tiny_whisper.pt").read_bytes())
    load_vae().save_pretrained(folder / "sd-vae-ft-mse")
    config = json.loads((reference / "unet" / "tiny_unet_config.json").read_text())

    bundle = load_models("latentsync-1.5", weights_dir=folder, unet_config=config)
    golden = load_file(reference / "unet" / "tiny_unet_weights.safetensors")
    state = bundle.unet.state_dict()
    assert set(state) == set(golden)
    assert all(torch.equal(state[k], golden[k]) for k in golden)
    assert bundle.resolution == 256
    dims = json.loads((reference / "whisper" / "tiny_whisper_dims.json").read_text())
    assert bundle.audio.encoder.dims.n_audio_state == dims["n_audio_state"]
    assert bundle.unet.config.cross_attention_dim == config["cross_attention_dim"]


def test_missing_released_files_name_the_fix(tmp_path):
    with pytest.raises(InputError, match="lsync weights fetch --preset latentsync-1.6"):
        load_models("latentsync-1.6", weights_dir=tmp_path)


@pytest.mark.golden
def test_checkpoint_for_another_config_is_refused(reference):
    config = json.loads((reference / "unet" / "tiny_unet_config.json").read_text())
    config["cross_attention_dim"] += 16  # another config: audio tokens of another width than the checkpoint's
    with pytest.raises(CheckpointError, match="wrong shape.*attn2.to_k.weight"):
        load_unet(reference / "unet" / "tiny_unet_latentsync_format.pt", config)


def _released_folder_with_own_architecture(folder, unet_config: dict):
    """A latentsync-1.5 weights folder of random tiny models: U-Net + ``unet_config.json``, Whisper, VAE."""
    from lsync.audio.whisper import build_whisper_encoder
    from lsync.models.presets import build_unet, model_config

    (folder / "whisper").mkdir(parents=True)
    torch.manual_seed(0)
    unet = build_unet(unet_config)
    torch.save({"global_step": 7, "state_dict": unet.state_dict()}, folder / "latentsync_unet.pt")
    (folder / "unet_config.json").write_text(json.dumps({"_note": "ignored", **unet_config}))
    dims = {**model_config("whisper_tiny"), "n_audio_state": unet_config["cross_attention_dim"], "n_audio_head": 2,
            "n_audio_layer": 2}
    encoder = build_whisper_encoder(dims, seed=1)
    torch.save({"dims": dims, "model_state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}},
               folder / "whisper" / "tiny.pt")
    load_vae().save_pretrained(folder / "sd-vae-ft-mse")
    return unet


def test_unet_config_json_beside_the_weights_sets_the_architecture(tmp_path):
    from lsync.models.presets import model_config

    config = {**model_config("unet_tiny"), "block_out_channels": [32, 64, 64, 64], "cross_attention_dim": 24}
    unet = _released_folder_with_own_architecture(tmp_path / "weights", config)
    bundle = load_models("latentsync-1.5", weights_dir=tmp_path / "weights")
    assert list(bundle.unet.config.block_out_channels) == [32, 64, 64, 64]
    assert all(torch.equal(bundle.unet.state_dict()[k], v) for k, v in unet.state_dict().items())
    assert bundle.audio.encoder.dims.n_audio_state == 24 and len(bundle.audio.encoder.blocks) == 2
    assert bundle.files["unet_config"].name == "unet_config.json"
    # Without the file the released stage2 architecture applies, and the strict load names the mismatch.
    (tmp_path / "weights" / "unet_config.json").unlink()
    with pytest.raises(CheckpointError, match="latentsync_unet.pt"):
        load_models("latentsync-1.5", weights_dir=tmp_path / "weights")
    (tmp_path / "weights" / "unet_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unet_config.json"):
        load_models("latentsync-1.5", weights_dir=tmp_path / "weights")
