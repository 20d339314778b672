"""Checkpoint formats: reference containers, strict loading with named errors, our safetensors + JSON format."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lsync.errors import CheckpointError
from lsync.checkpoints import (
    CONFIG_NAME,
    MAX_KEYS_IN_MESSAGE,
    WEIGHTS_NAME,
    check_state_dict,
    load_model_config,
    load_model_weights,
    load_safetensors,
    load_state_dict_strict,
    load_torch_checkpoint,
    read_state_dict,
    save_model,
    state_dict_from_reference,
)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.GroupNorm(2, 8))
        self.head = nn.Linear(8, 3)
        self.register_buffer("table", torch.arange(5.0))


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


# ----------------------------------------------------------------------------------------------- strict loading
def test_strict_load_copies_every_tensor():
    source, target = _randomised(Small(), 1), Small()
    load_state_dict_strict(target, source.state_dict(), "test")
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name


def test_renamed_key_is_named_on_both_sides():
    state = OrderedDict(_randomised(Small()).state_dict())
    state["head.kernel"] = state.pop("head.weight")
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(Small(), state, "renamed.pt")
    message = str(err.value)
    assert "renamed.pt" in message
    assert "1 missing: head.weight" in message
    assert "1 unexpected: head.kernel" in message
    assert "(checkpoint has head.kernel?)" in message


def test_nothing_is_loaded_when_keys_do_not_match():
    model = Small()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = dict(_randomised(Small(), 3).state_dict())
    del state["table"]
    with pytest.raises(CheckpointError, match="missing: table"):
        load_state_dict_strict(model, state)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_shape_mismatch_names_both_shapes():
    state = dict(Small().state_dict())
    state["head.weight"] = torch.zeros(3, 9)
    with pytest.raises(CheckpointError, match=r"head\.weight \[3, 9\] \(model wants \[3, 8\]\)"):
        check_state_dict(Small(), state, "x")


def test_long_key_lists_are_capped_but_counted():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(20)])  # 40 tensors
    with pytest.raises(CheckpointError) as err:
        check_state_dict(model, {}, "empty")
    message = str(err.value)
    assert "40 missing" in message
    assert f"and {40 - MAX_KEYS_IN_MESSAGE} more" in message
    assert "19.bias" not in message


# ----------------------------------------------------------------------------------------------- reference containers
def test_unwraps_every_reference_container():
    sd = {"w": torch.ones(2)}
    latentsync = state_dict_from_reference({"state_dict": sd, "global_step": 7})
    assert (latentsync.container, latentsync.global_step, list(latentsync.state_dict)) == ("state_dict", 7, ["w"])
    syncnet = state_dict_from_reference({"state_dict": sd})
    assert syncnet.global_step is None
    whisper = state_dict_from_reference({"dims": {"n_mels": 80}, "model_state_dict": sd})
    assert (whisper.container, whisper.dims) == ("whisper", {"n_mels": 80})
    assert state_dict_from_reference({"model": sd, "epoch": 3}).container == "model"
    assert state_dict_from_reference({"module": sd}).container == "module"
    assert state_dict_from_reference(sd).container == "bare"


def test_non_tensor_entries_are_refused():
    with pytest.raises(CheckpointError, match="not tensors"):
        state_dict_from_reference({"state_dict": {"w": torch.ones(1), "oops": "text"}})
    with pytest.raises(CheckpointError, match="not a dict"):
        state_dict_from_reference([torch.ones(1)])


class _Opaque:
    pass


def test_torch_load_errors_become_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_torch_checkpoint(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_torch_checkpoint(garbage)
    pickled = tmp_path / "object.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": _Opaque()}, pickled)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_torch_checkpoint(pickled)


def test_read_state_dict_handles_both_file_kinds(tmp_path):
    folder = tmp_path / "dir with spaces ünïcode"
    folder.mkdir()
    model = _randomised(Small(), 5)
    torch.save({"state_dict": model.state_dict(), "global_step": 11}, folder / "m.pt")
    from_pt = read_state_dict(folder / "m.pt")
    assert from_pt.global_step == 11
    save_model(model, folder / "ours", {"kind": "small"})
    from_st = read_state_dict(folder / "ours" / WEIGHTS_NAME)
    assert from_st.container == "bare"
    for name, value in model.state_dict().items():
        assert torch.equal(from_pt.state_dict[name], value)
        assert torch.equal(from_st.state_dict[name], value)


# ----------------------------------------------------------------------------------------------- our format
def test_save_and_load_round_trip(tmp_path):
    model = _randomised(Small(), 2)
    out = save_model(model, tmp_path / "ckpt", {"width": 8, "name": "small"})
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_NAME, CONFIG_NAME])
    assert load_model_config(out) == {"width": 8, "name": "small"}
    restored = load_model_weights(Small(), out)
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name


def test_save_handles_tensors_sharing_memory(tmp_path):
    model = Small()
    model.head.weight = nn.Parameter(model.encoder[0].weight[:3].detach().clone())
    model.register_buffer("view", model.head.weight.detach()[0])  # a view into another tensor
    save_model(model, tmp_path, {})
    loaded = load_file(tmp_path / WEIGHTS_NAME)
    assert torch.equal(loaded["view"], model.head.weight[0].detach())


def test_loading_our_format_into_the_wrong_model_fails(tmp_path):
    save_model(Small(), tmp_path, {})
    with pytest.raises(CheckpointError, match="unexpected"):
        load_model_weights(nn.Linear(4, 8), tmp_path)


def test_missing_or_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_model_config(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_config(tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_safetensors(tmp_path / WEIGHTS_NAME)


# ----------------------------------------------------------------------------------------------- golden files
UNET_CHECKPOINT_SUFFIX = "_latentsync_format.pt"


def reference_unet_checkpoints(reference: Path) -> list[Path]:
    """The reference's U-Net checkpoints in the released format (there must be at least one)."""
    cases = sorted((reference / "unet").glob(f"*{UNET_CHECKPOINT_SUFFIX}"))
    assert cases, f"no unet/*{UNET_CHECKPOINT_SUFFIX} in the reference dir"
    return cases


def unet_twin(checkpoint: Path, suffix: str) -> Path:
    """The file made beside a reference U-Net checkpoint: its weights (safetensors) or its config (JSON)."""
    return checkpoint.with_name(checkpoint.name.replace(UNET_CHECKPOINT_SUFFIX, suffix))


@pytest.mark.golden
def test_reference_unet_checkpoint_unwraps_with_its_global_step(reference):
    for path in reference_unet_checkpoints(reference):
        ckpt = read_state_dict(path)
        assert ckpt.container == "state_dict"
        assert isinstance(ckpt.global_step, int)
        twin = load_file(unet_twin(path, "_weights.safetensors"))
        assert set(ckpt.state_dict) == set(twin)
        for name, value in twin.items():
            assert torch.equal(ckpt.state_dict[name], value), name


@pytest.mark.golden
def test_reference_unet_checkpoint_loads_strictly_into_our_unet(reference):
    from lsync.models import unet3d

    for path in reference_unet_checkpoints(reference):
        config = json.loads(unet_twin(path, "_config.json").read_text())
        model = unet3d.UNet3DConditionModel.from_config(config)
        ckpt = read_state_dict(path)
        load_state_dict_strict(model, ckpt.state_dict, str(path))
        for name, value in model.state_dict().items():
            assert torch.equal(value, ckpt.state_dict[name]), name


@pytest.mark.golden
def test_reference_whisper_checkpoint_unwraps_with_dims(reference):
    cases = sorted((reference / "whisper").glob("*.pt"))
    assert cases, "no whisper/*.pt in the reference dir"
    for path in cases:
        ckpt = read_state_dict(path)
        assert ckpt.container == "whisper"
        dims_file = path.with_name(path.stem + "_dims.json")
        assert dims_file.is_file(), f"{dims_file} is missing (the reference README promises it)"
        assert ckpt.dims == json.loads(dims_file.read_text())
        assert any(k.startswith("encoder.") for k in ckpt.state_dict)
