"""LatentSync 3D U-Net: checkpoint layout, golden forward passes, config variants, checkpointing, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lsync.models.motion_module import VanillaTemporalModule
from lsync.models.unet3d import DATA_CONFIG_KEYS, UNet3DConditionModel, UNet3DConditionOutput, frames_to_clip

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"
GOLDEN_ATOL = 2e-5  # the reference README's tolerance for U-Net outputs, whose values reach ~3


def micro_config(**changes) -> dict:
    """A two-level U-Net small enough to run many variants in well under a second each."""
    config = yaml.safe_load((CONFIGS / "unet_tiny.yaml").read_text())
    config.update(
        block_out_channels=[32, 64],
        down_block_types=["CrossAttnDownBlock3D", "DownBlock3D"],
        up_block_types=["UpBlock3D", "CrossAttnUpBlock3D"],
        layers_per_block=1,
        cross_attention_dim=16,
        motion_module_resolutions=[1, 2],
    )
    config.update(changes)
    return config


def micro_inputs(batch=2, frames=3, size=8, audio_dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, size, size, generator=generator)
    audio = torch.randn(batch, frames, 50, audio_dim, generator=generator)
    return sample, torch.tensor([3, 900][:batch]), audio


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (including zero-initialised motion-module outputs) non-trivial values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            fan_in = max(1, param[0].numel()) if param.ndim >= 2 else 1
            param.copy_(torch.randn(param.shape, generator=generator) / fan_in**0.5)
    return model


def read_key_table(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["key", "shape", "numel"]
    return [(key, tuple(json.loads(shape))) for key, shape, _ in (line.split("\t") for line in lines[1:])]


def key_cases(reference: Path) -> list[tuple[Path, Path]]:
    cases = []
    for table in sorted((reference / "keys").glob("unet_keys_*.tsv")):
        name = table.stem.removeprefix("unet_keys_")
        cases.append((table, reference / "keys" / f"unet_{name}_model.json"))
    assert cases, "no keys/unet_keys_*.tsv in the reference directory"
    return cases


def golden_cases(reference: Path) -> list[tuple[Path, Path, Path]]:
    cases = []
    for config in sorted((reference / "unet").glob("*_config.json")):
        stem = config.name.removesuffix("_config.json")
        weights, io = config.with_name(f"{stem}_weights.safetensors"), config.with_name(f"{stem}_io.safetensors")
        if weights.is_file() and io.is_file():
            cases.append((config, weights, io))
    assert cases, "no unet/*_config.json with weights and io in the reference directory"
    return cases


def load_golden_model(config: Path, weights: Path) -> UNet3DConditionModel:
    model = UNet3DConditionModel.from_config(json.loads(config.read_text()))
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------ checkpoint layout
@pytest.mark.golden
def test_full_size_state_dict_matches_released_layout(reference):
    for table, config_path in key_cases(reference):
        expected = read_key_table(table)
        with torch.device("meta"):
            model = UNet3DConditionModel(**json.loads(config_path.read_text()))
        got = [(key, tuple(tensor.shape)) for key, tensor in model.state_dict().items()]
        assert set(got) == set(expected), table.name
        assert len(got) == len(expected)
        # Same order too, so state dicts saved by either implementation list tensors alike.
        assert [key for key, _ in got] == [key for key, _ in expected]
        buffers = {name for name, _ in model.named_buffers()}
        assert buffers and all(name.endswith("pos_encoder.pe") for name in buffers)


@pytest.mark.golden
def test_stage2_yaml_is_the_reference_model_section(reference):
    ours = yaml.safe_load((CONFIGS / "unet_stage2.yaml").read_text())
    theirs = json.loads((reference / "keys" / "unet_stage2_model.json").read_text())
    assert ours == theirs
    assert type(ours["norm_eps"]) is float


def test_tiny_yaml_has_the_stage2_keys():
    """The tiny preset has the reference's architecture keys, plus data-side keys the reference keeps elsewhere."""
    tiny = yaml.safe_load((CONFIGS / "unet_tiny.yaml").read_text())
    stage2 = yaml.safe_load((CONFIGS / "unet_stage2.yaml").read_text())
    assert not stage2.keys() & DATA_CONFIG_KEYS
    assert tiny.keys() - DATA_CONFIG_KEYS == stage2.keys()
    assert DATA_CONFIG_KEYS <= set(UNet3DConditionModel.extract_init_dict(tiny)[0])  # constructor keys, not typos
    model = UNet3DConditionModel.from_config(tiny)
    assert model.config.cross_attention_dim == tiny["cross_attention_dim"]
    assert model.config.audio_feat_length == tiny["audio_feat_length"] == [0, 0]
    with torch.device("meta"):  # the released size: no memory needed for a config check
        assert UNet3DConditionModel.from_config(stage2).config.audio_feat_length == [2, 2]  # the reference's


def test_audio_feat_length_is_validated_and_round_trips_through_config_json(tmp_path):
    model = UNet3DConditionModel.from_config(micro_config(audio_feat_length=(1, 0)))
    assert model.config.audio_feat_length == [1, 0]  # a list whatever sequence came in, as JSON stores it
    model.save_config(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["audio_feat_length"] == [1, 0]
    assert UNet3DConditionModel.from_config(saved).config.audio_feat_length == [1, 0]
    del saved["audio_feat_length"]  # a config written before the key existed: the reference's context
    assert UNet3DConditionModel.from_config(saved).config.audio_feat_length == [2, 2]
    for bad in ([1], [-1, 2], [0.5, 1], "00"):
        with pytest.raises(ValueError, match="audio_feat_length"):
            UNet3DConditionModel.from_config(micro_config(audio_feat_length=bad))


def test_the_model_takes_any_audio_token_count():
    model = UNet3DConditionModel.from_config(micro_config(audio_feat_length=[0, 0])).eval()
    sample, timestep, _ = micro_inputs(batch=1, frames=2)
    with torch.no_grad():
        for tokens in (10, 50):
            audio = torch.randn(1, 2, tokens, 16)
            assert model(sample, timestep, audio).sample.shape == (1, 4, 2, 8, 8)


# ------------------------------------------------------------------------------------------------ goldens
@pytest.mark.golden
def test_golden_forward(reference):
    for config, weights, io_path in golden_cases(reference):
        model = load_golden_model(config, weights)
        io = load_file(str(io_path))
        with torch.no_grad():
            out = model(io["sample"], io["timestep"], io["encoder_hidden_states"])
            assert isinstance(out, UNet3DConditionOutput)
            torch.testing.assert_close(out.sample, io["expected_sample"], atol=GOLDEN_ATOL, rtol=0)
            scalar = model(io["sample"], io["timestep_scalar"], io["encoder_hidden_states"]).sample
            torch.testing.assert_close(scalar, io["expected_sample_timestep_scalar"], atol=GOLDEN_ATOL, rtol=0)
            silent = model(io["sample"], io["timestep"], torch.zeros_like(io["encoder_hidden_states"])).sample
            torch.testing.assert_close(silent, io["expected_sample_zero_audio"], atol=GOLDEN_ATOL, rtol=0)


@pytest.mark.golden
def test_golden_intermediates(reference):
    for config, weights, io_path in golden_cases(reference):
        intermediates_path = io_path.with_name(io_path.name.replace("_io.", "_intermediates."))
        assert intermediates_path.is_file(), f"{intermediates_path} is missing (the reference README promises it)"
        expected = load_file(str(intermediates_path))
        model = load_golden_model(config, weights)
        io = load_file(str(io_path))
        num_frames = io["sample"].shape[2]
        captured = {}

        def capture(name):
            def hook(module, args, output):
                captured[name] = output[0] if isinstance(output, tuple) else output

            return hook

        for name in expected:
            model.get_submodule(name).register_forward_hook(capture(name))
        with torch.no_grad():
            model(io["sample"], io["timestep"], io["encoder_hidden_states"])
        for name, want in expected.items():
            got = captured[name]
            if got.ndim == 4:  # block outputs are frame-major; the goldens hold batch item 0 as (1, C, F, H, W)
                got = frames_to_clip(got, num_frames)[: want.shape[0]]
            torch.testing.assert_close(got, want, atol=intermediate_atol(want), rtol=0,
                                       msg=lambda m, n=name: f"{n}: {m}")


def intermediate_atol(want: torch.Tensor) -> float:
    """GOLDEN_ATOL scaled to the magnitude of a block output.

    Block outputs reach ~26, where float32 rounding is 8x coarser than at 3: the same model run in float64 lands
    up to 2.6e-5 from these float32 goldens (their own rounding error), and the CPU's instruction set (AVX-512 or
    AVX2 kernels) moves a float32 run by as much. A wrong head count or frame order moves them by 0.1 or more.
    """
    return GOLDEN_ATOL * max(1.0, want.abs().max().item() / 3.0)


@pytest.mark.golden
def test_golden_latentsync_container_loads_strictly(reference):
    for config, weights, _ in golden_cases(reference):
        container = config.with_name(config.name.replace("_config.json", "_latentsync_format.pt"))
        assert container.is_file(), f"{container} is missing (the reference README promises it)"
        checkpoint = torch.load(container, map_location="cpu", weights_only=True)
        model = UNet3DConditionModel.from_config(json.loads(config.read_text()))
        assert list(checkpoint["state_dict"]) == list(model.state_dict())
        model.load_state_dict(checkpoint["state_dict"], strict=True)
        state = model.state_dict()
        for key, tensor in load_file(str(weights)).items():
            assert torch.equal(state[key], tensor), key


# ----------------------------------------------------------------------------------------------- behaviour
def test_forward_shapes_and_timestep_forms():
    model = randomize_(UNet3DConditionModel.from_config(micro_config())).eval()
    sample, _, audio = micro_inputs()
    with torch.no_grad():
        by_int = model(sample, 500, audio).sample
        by_scalar = model(sample, torch.tensor(500), audio).sample
        by_batch = model(sample, torch.tensor([500, 500]), audio).sample
        by_float = model(sample, 500.0, audio).sample
        flattened_audio = model(sample, 500, audio.flatten(0, 1)).sample
        (as_tuple,) = model(sample, 500, audio, return_dict=False)
    assert by_int.shape == (2, 4, 3, 8, 8)
    assert by_int.is_contiguous()
    for other in (by_scalar, by_batch, by_float, flattened_audio, as_tuple):
        torch.testing.assert_close(other, by_int, atol=1e-6, rtol=0)
    with torch.no_grad():
        later = model(sample, 501, audio).sample
    assert not torch.allclose(later, by_int)


def test_audio_is_matched_to_its_own_frame_and_clip():
    """Changing one frame's audio changes only that frame's output when nothing mixes frames."""
    config = micro_config(use_motion_module=False)
    model = randomize_(UNet3DConditionModel.from_config(config)).eval()
    sample, timestep, audio = micro_inputs()
    changed = audio.clone()
    changed[1, 2] += 1.0
    with torch.no_grad():
        base, other = model(sample, timestep, audio).sample, model(sample, timestep, changed).sample
    differs = (base - other).abs().amax(dim=(1, 3, 4))  # (B, F)
    assert differs[1, 2] > 1e-3
    # Resnet GroupNorm statistics pool all frames of clip 1, so its other frames move slightly; clip 0 not at all.
    assert torch.all(differs[0] == 0)


def test_odd_spatial_size_follows_skip_sizes():
    model = randomize_(UNet3DConditionModel.from_config(micro_config())).eval()
    sample, timestep, audio = micro_inputs(size=5)
    with torch.no_grad():
        out = model(sample, timestep, audio).sample
    assert out.shape == (2, 4, 3, 5, 5)


@pytest.mark.parametrize(
    ("changes", "present", "absent"),
    [
        ({}, ["down_blocks.0.motion_modules.0", "up_blocks.1.motion_modules.0", "attn2"], ["mid_block.motion_modules"]),
        ({"motion_module_decoder_only": True}, ["up_blocks.0.motion_modules.0"], ["down_blocks.0.motion_modules"]),
        ({"motion_module_mid_block": True}, ["mid_block.motion_modules.0", "down_blocks.1.motion_modules"], []),
        ({"use_motion_module": False}, ["attn2"], ["motion_modules", "pos_encoder"]),
        ({"add_audio_layer": False}, ["motion_modules", "attn1"], ["attn2", "transformer_blocks.0.norm2"]),
        ({"motion_module_resolutions": [2]}, ["down_blocks.1.motion_modules"], ["down_blocks.0.motion_modules"]),
    ],
)
def test_config_switches_change_the_layout(changes, present, absent):
    model = randomize_(UNet3DConditionModel.from_config(micro_config(**changes))).eval()
    keys = "\n".join(model.state_dict())
    for fragment in present:
        assert fragment in keys, fragment
    for fragment in absent:
        assert fragment not in keys, fragment
    sample, timestep, audio = micro_inputs()
    with torch.no_grad():
        out = model(sample, timestep, None if changes.get("add_audio_layer") is False else audio).sample
    assert out.shape == (2, 4, 3, 8, 8) and torch.isfinite(out).all()


def test_scale_shift_time_embedding_runs():
    model = randomize_(UNet3DConditionModel.from_config(micro_config(resnet_time_scale_shift="scale_shift"))).eval()
    assert model.down_blocks[0].resnets[0].time_emb_proj.out_features == 2 * 32
    sample, timestep, audio = micro_inputs()
    with torch.no_grad():
        assert torch.isfinite(model(sample, timestep, audio).sample).all()


def test_missing_audio_is_an_error_when_the_model_listens():
    model = UNet3DConditionModel.from_config(micro_config())
    sample, timestep, audio = micro_inputs()
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(sample, timestep, None)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(sample, timestep, audio[:, :2])


def test_fresh_motion_module_is_identity_and_limits_clip_length():
    module = VanillaTemporalModule(32, num_attention_heads=4, num_transformer_block=1,
                                   temporal_position_encoding=True, temporal_position_encoding_max_len=4)
    frames = torch.randn(2 * 4, 32, 3, 3)
    torch.testing.assert_close(module(frames, 4), frames, atol=0, rtol=0)
    with pytest.raises(ValueError, match="exceed"):
        module(torch.randn(5, 32, 3, 3), 5)


def test_gradient_checkpointing_gives_same_output_and_grads():
    torch.manual_seed(0)
    model = randomize_(UNet3DConditionModel.from_config(micro_config())).train()
    sample, timestep, audio = micro_inputs(frames=2)

    def run():
        model.zero_grad(set_to_none=True)
        out = model(sample, timestep, audio).sample
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    plain_out, plain_grads = run()
    calls = []

    def counting_checkpoint(module, *args):
        calls.append(type(module).__name__)
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    model.enable_gradient_checkpointing(counting_checkpoint)
    assert model.is_gradient_checkpointing
    ckpt_out, ckpt_grads = run()
    assert {"ResnetBlock3D", "SpatialTransformer", "VanillaTemporalModule"} <= set(calls)
    torch.testing.assert_close(ckpt_out, plain_out, atol=1e-6, rtol=0)
    assert ckpt_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, atol=1e-5, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")

    model.enable_gradient_checkpointing()  # diffusers' default function (non-reentrant torch checkpoint)
    default_out, _ = run()
    torch.testing.assert_close(default_out, plain_out, atol=1e-6, rtol=0)
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


def test_save_and_load_pretrained_round_trip(tmp_path):
    config = yaml.safe_load((CONFIGS / "unet_tiny.yaml").read_text())
    model = randomize_(UNet3DConditionModel.from_config(config), seed=3).eval()
    target = tmp_path / "tiny unet ü"
    model.save_pretrained(target)
    assert (target / "diffusion_pytorch_model.safetensors").is_file() and (target / "config.json").is_file()
    loaded = UNet3DConditionModel.from_pretrained(target).eval()
    assert {k: v for k, v in loaded.config.items() if not k.startswith("_")} == {
        k: v for k, v in model.config.items() if not k.startswith("_")
    }
    original_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(original_state)
    for key, tensor in original_state.items():
        assert torch.equal(loaded_state[key], tensor), key
    sample, timestep, _ = micro_inputs(batch=1, frames=2)
    audio = torch.randn(1, 2, 50, config["cross_attention_dim"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(sample, timestep, audio).sample, model(sample, timestep, audio).sample)
