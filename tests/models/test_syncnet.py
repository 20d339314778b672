"""StableSyncNet: reference key layout, golden outputs, loss and frame packing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lsync.errors import ConfigError
from lsync.models.syncnet import StableSyncNet, cosine_loss, load_syncnet, pack_frames_for_syncnet, sync_accuracy

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"


def _config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def tiny() -> StableSyncNet:
    torch.manual_seed(0)
    return StableSyncNet(_config("syncnet_tiny")).eval()


# ----------------------------------------------------------------------------------------------- behaviour
def test_tiny_forward_gives_unit_embeddings(tiny):
    images = torch.rand(2, 48, 32, 64) * 2 - 1
    audio = torch.randn(2, 1, 80, 52)
    with torch.no_grad():
        vision, sound = tiny(images, audio)
        vision_raw, audio_raw = tiny.encode_towers(images, audio)
    assert vision.shape == sound.shape == (2, tiny.embed_dim) == (2, 64)
    assert vision_raw.shape == audio_raw.shape == (2, 64, 1, 1)
    torch.testing.assert_close(vision.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(sound.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(tiny.embed_images(images), vision)
    torch.testing.assert_close(tiny.embed_audio(audio), sound)


@pytest.mark.parametrize("name", ["syncnet_16_pixel_attn", "syncnet_16_pixel"])
def test_released_geometries_end_at_2048_by_1_by_1(name):
    with torch.device("meta"):
        model = StableSyncNet(_config(name))
        vision, audio = model.encode_towers(torch.empty(2, 48, 128, 256), torch.empty(2, 1, 80, 52))
    assert vision.shape == audio.shape == (2, 2048, 1, 1)
    has_attention = any(k.endswith("attn.to_q.weight") for k in model.state_dict())
    assert has_attention == name.endswith("attn")


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(1)
    model = StableSyncNet(_config("syncnet_tiny")).train()
    images, audio, y = torch.rand(2, 48, 32, 64), torch.randn(2, 1, 80, 52), torch.tensor([[1.0], [0.0]])

    def grads():
        model.zero_grad()
        cosine_loss(*model(images, audio), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = grads()
    model.enable_gradient_checkpointing()
    checkpointed = grads()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cosine_loss_is_bce_of_the_similarity():
    vision = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    audio = torch.tensor([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0]])
    y = torch.tensor([[1.0], [1.0], [0.0]])
    cos = torch.tensor([0.6, 1.0, 0.0])
    expected = torch.stack([-torch.log(cos[0]), torch.tensor(0.0), torch.tensor(0.0)])
    per_sample = cosine_loss(vision, audio, y, reduction="none")
    torch.testing.assert_close(per_sample, expected)
    torch.testing.assert_close(cosine_loss(vision, audio, y), expected.mean())
    assert sync_accuracy(vision, audio, y).item() == pytest.approx(1.0)


def test_a_logit_scale_gives_bce_of_the_scaled_cosine_with_the_same_threshold():
    vision = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.6, 0.8]])
    audio = torch.tensor([[0.6, 0.8], [0.6, 0.8], [1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    cos = torch.tensor([0.6, 1.0, 0.0, 0.6])
    scale = 10.0
    p = torch.sigmoid(scale * (cos - 0.5))
    expected = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
    torch.testing.assert_close(cosine_loss(vision, audio, y, reduction="none", logit_scale=scale), expected)
    torch.testing.assert_close(cosine_loss(vision, audio, y, logit_scale=scale), expected.mean())
    # a pair exactly at the threshold costs ln 2 under both losses: chance is the same number
    half = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.75 ** 0.5]]), torch.tensor([1.0])
    assert cosine_loss(*half).item() == pytest.approx(0.6931, abs=1e-4)
    assert cosine_loss(*half, logit_scale=scale).item() == pytest.approx(0.6931, abs=1e-4)


def test_a_logit_scale_steepens_the_gradient_at_the_threshold():
    """At cos c ~ 0.5 a negative's raw BCE has slope 1 / (1 - c) ~ 2 in c; with scale s it is s sigmoid(.) ~ s / 2."""
    def gradient(logit_scale):
        angle = torch.tensor(1.0472 - 0.05, requires_grad=True)  # cos a little above 0.5
        vision = torch.stack([torch.cos(angle), torch.sin(angle)])[None]
        audio = torch.tensor([[1.0, 0.0]])
        cosine_loss(vision, audio, torch.tensor([0.0]), logit_scale=logit_scale).backward()
        return abs(angle.grad.item())

    assert gradient(10.0) > 1.2 * gradient(None)
    assert gradient(20.0) > 1.8 * gradient(10.0)


def test_packing_is_frame_major_and_keeps_the_lower_half():
    frames = torch.arange(2 * 16 * 3 * 6 * 4, dtype=torch.float32).reshape(2, 16, 3, 6, 4)
    packed = pack_frames_for_syncnet(frames)
    assert packed.shape == (2, 48, 3, 4)
    for f in (0, 7, 15):
        for c in range(3):
            assert torch.equal(packed[:, 3 * f + c], frames[:, f, c, 3:])
    assert pack_frames_for_syncnet(frames, lower_half=False).shape == (2, 48, 6, 4)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["audio_encoder"].update(attn_blocks=[0]), "same non-zero length"),
        (lambda c: c["visual_encoder"].update(block_out_channels=[33, 32, 32, 32, 32, 64]), "divisible"),
        (lambda c: c["visual_encoder"].update(downsample_factors=[[1, 1], 2, 2, 2, 2, 2]), "bad downsample"),
        (lambda c: c["audio_encoder"].update(layers=2), "unknown key"),
        (lambda c: c.pop("audio_encoder"), "must be a mapping"),
        (lambda c: c.update(extra={}), "unknown key"),
    ],
)
def test_bad_configs_are_reported(change, message):
    config = _config("syncnet_tiny")
    change(config)
    with pytest.raises(ConfigError, match=message):
        StableSyncNet(config)


# ----------------------------------------------------------------------------------------------- golden
def _read_tsv(path: Path) -> list[tuple[str, list[int]]]:
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["key", "shape", "numel"]
    return [(key, json.loads(shape)) for key, shape, _ in (line.split("\t") for line in lines[1:])]


@pytest.mark.golden
def test_state_dict_layout_matches_every_reference_key_list(reference):
    cases = sorted((reference / "keys").glob("syncnet_keys_*.tsv"))
    assert cases, "no keys/syncnet_keys_*.tsv"
    for tsv in cases:
        name = tsv.stem[len("syncnet_keys_"):]
        config = json.loads((reference / "keys" / f"syncnet_{name}_model.json").read_text())
        with torch.device("meta"):
            model = StableSyncNet(config)
        ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        assert ours == _read_tsv(tsv), name


@pytest.mark.golden
def test_released_config_file_equals_the_reference_model_section(reference):
    ours = _config("syncnet_16_pixel_attn")
    assert ours == json.loads((reference / "keys" / "syncnet_16_pixel_attn_model.json").read_text())
    without_attention = _config("syncnet_16_pixel")
    for tower in ("audio_encoder", "visual_encoder"):
        assert without_attention[tower]["attn_blocks"] == [0] * len(ours[tower]["attn_blocks"])
        rest = {k: v for k, v in without_attention[tower].items() if k != "attn_blocks"}
        assert rest == {k: v for k, v in ours[tower].items() if k != "attn_blocks"}


def _golden_cases(reference: Path) -> list[Path]:
    cases = sorted((reference / "syncnet").glob("*_config.json"))
    assert cases, "no syncnet/*_config.json"
    return cases


@pytest.mark.golden
def test_golden_outputs_from_both_checkpoint_formats(reference):
    for config_path in _golden_cases(reference):
        stem = config_path.name[: -len("_config.json")]
        io = load_file(config_path.with_name(f"{stem}_io.safetensors"))
        config = json.loads(config_path.read_text())
        for weights in (f"{stem}_weights.safetensors", f"{stem}_latentsync_format.pt"):
            path = config_path.with_name(weights)
            model = load_syncnet(path, config)
            with torch.no_grad():
                vision_raw, audio_raw = model.encode_towers(io["image_sequences"], io["audio_sequences"])
                vision, audio = model(io["image_sequences"], io["audio_sequences"])
            torch.testing.assert_close(vision_raw, io["vision_encoder_raw"], rtol=0, atol=2e-5)
            torch.testing.assert_close(audio_raw, io["audio_encoder_raw"], rtol=0, atol=2e-5)
            torch.testing.assert_close(vision, io["vision_embeds"], rtol=0, atol=1e-5)
            torch.testing.assert_close(audio, io["audio_embeds"], rtol=0, atol=1e-5)
            cos = torch.nn.functional.cosine_similarity(vision, audio)
            torch.testing.assert_close(cos, io["cosine_similarity"], rtol=0, atol=1e-5)
            per_sample = cosine_loss(vision, audio, io["y"], reduction="none")
            torch.testing.assert_close(per_sample, io["loss_per_sample"], rtol=0, atol=1e-5)
            torch.testing.assert_close(cosine_loss(vision, audio, io["y"]), io["loss_mean"], rtol=0, atol=1e-5)


@pytest.mark.golden
def test_golden_frame_packing(reference):
    for config_path in _golden_cases(reference):
        io = load_file(config_path.with_name(config_path.name.replace("_config.json", "_io.safetensors")))
        assert torch.equal(pack_frames_for_syncnet(io["packing_frames"], lower_half=True), io["packing_expected"])

