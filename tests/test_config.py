"""Config precedence, validation and error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from lsync.config import (
    MODELS_DIR,
    changed_config_keys,
    config_from_dict,
    config_to_dict,
    load_model_config,
    parse_override,
    resolve_config,
    save_config_yaml,
    load_yaml,
)
from lsync.errors import ConfigError


@dataclass
class LossSection:
    recon_weight: float = 1.0
    sync_weight: float = 0.05


@dataclass
class ToyConfig:
    resolution: int = 256
    detector: Literal["mediapipe", "insightface"] = "mediapipe"
    name: str = "run"
    output: Path | None = None
    sizes: tuple[int, ...] = (5, 10)
    verbose_log: bool = False
    loss: LossSection = field(default_factory=LossSection)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_when_no_layers():
    assert resolve_config(ToyConfig) == ToyConfig()


def test_precedence_defaults_file_flags_set(tmp_path):
    preset = write(tmp_path / "preset.yaml", "resolution: 512\nname: from-preset\nloss:\n  sync_weight: 0.03\n")
    user = write(tmp_path / "user.yaml", "name: from-file\nloss:\n  recon_weight: 2\n")
    config = resolve_config(
        ToyConfig,
        preset=str(preset),
        config_file=user,
        flags={"name": "from-flag", "loss.sync_weight": None, "detector": None},
        overrides=["loss.sync_weight=0.07"],
    )
    assert config.resolution == 512  # preset beats default
    assert config.name == "from-flag"  # flag beats file beats preset
    assert config.loss.recon_weight == 2.0  # file, and int coerced to float
    assert config.loss.sync_weight == 0.07  # --set beats everything
    assert config.detector == "mediapipe"  # a None flag means "not given"


def test_set_beats_flag():
    config = resolve_config(ToyConfig, flags={"resolution": 512}, overrides=["resolution=384"])
    assert config.resolution == 384


def test_unknown_key_names_key_and_suggests_nearest(tmp_path):
    bad = write(tmp_path / "bad.yaml", "resolutoin: 512\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(ToyConfig, config_file=bad)
    message = str(err.value)
    assert "resolutoin" in message and str(bad) in message and "did you mean 'resolution'" in message


def test_unknown_nested_key_via_set():
    with pytest.raises(ConfigError, match=r"unknown config key 'loss.sync_wieght'.*did you mean 'loss.sync_weight'"):
        resolve_config(ToyConfig, overrides=["loss.sync_wieght=0.1"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("resolution=abc", "resolution in --set resolution=abc must be an integer"),
        ("resolution=1.5", "must be an integer"),
        ("verbose_log=3", "must be true or false"),
        ("loss.sync_weight=high", "loss.sync_weight"),
        ("detector=insightfce", "did you mean 'insightface'"),
        ("sizes=3", "must be a list"),
        ("loss=3", "must be a mapping"),
    ],
)
def test_wrong_types_are_errors(override, fragment):
    with pytest.raises(ConfigError) as err:
        resolve_config(ToyConfig, overrides=[override])
    assert fragment in str(err.value)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 (PyYAML) reads 1e-5 as a string; a float key must still take it, from --set and from files.
    config = resolve_config(ToyConfig, config_file=write(tmp_path / "c.yaml", "loss:\n  recon_weight: 2e-1\n"),
                            overrides=["loss.sync_weight=1e-3"])
    assert config.loss.recon_weight == 0.2 and config.loss.sync_weight == 0.001


def test_override_parsing():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert parse_override("name=two words") == {"name": "two words"}
    assert parse_override("sizes=[1, 2]") == {"sizes": [1, 2]}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_optional_path_and_tuple():
    config = config_from_dict(ToyConfig, {"output": "out dir/ü", "sizes": [3, 4, 5]})
    assert config.output == Path("out dir/ü") and config.sizes == (3, 4, 5)
    assert config_from_dict(ToyConfig, {"output": None}).output is None


def test_round_trip_through_yaml(tmp_path):
    config = resolve_config(ToyConfig, overrides=["loss.sync_weight=0.5", "output=x/y", "sizes=[7]"])
    save_config_yaml(config, tmp_path / "config.yaml")
    again = resolve_config(ToyConfig, config_file=tmp_path / "config.yaml")
    assert again == config
    assert load_yaml(tmp_path / "config.yaml") == config_to_dict(config)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(ToyConfig, config_file=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(ToyConfig, config_file=write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_config(ToyConfig, config_file=write(tmp_path / "broken.yaml", "a: [1,\n"))


def test_unknown_preset_lists_choices():
    with pytest.raises(ConfigError, match="unknown .*preset 'no-such-preset'"):
        resolve_config(ToyConfig, stage="unet", preset="no-such-preset")


def test_a_choice_spelled_like_a_yaml_boolean_stays_the_word():
    from dataclasses import dataclass
    from typing import Literal

    from lsync.config import resolve_config

    @dataclass
    class Modes:
        pipeline: Literal["auto", "on", "off"] = "auto"

    assert resolve_config(Modes, None, None, None, {}, ("pipeline=off",)).pipeline == "off"
    assert resolve_config(Modes, None, None, None, {}, ("pipeline=on",)).pipeline == "on"


def test_changed_config_keys_compare_what_config_yaml_reads_back(tmp_path):
    config = resolve_config(ToyConfig, overrides=["sizes=[7, 8]"])
    save_config_yaml(config, tmp_path / "config.yaml")
    written = load_yaml(tmp_path / "config.yaml")
    assert changed_config_keys(written, config_to_dict(config)) == []
    later = config_to_dict(resolve_config(ToyConfig, overrides=["sizes=[7, 8]", "resolution=512", "loss.sync_weight=0"]))
    assert changed_config_keys(written, later) == ["loss", "resolution"]
    assert changed_config_keys(written, later, ignore=("resolution",)) == ["loss"]
    assert changed_config_keys({"output": None}, {}) == ["output"]  # a key gone is a change, even from null


@pytest.mark.parametrize("family, key", [("unet", "model.unet"), ("vae", "model.config"),
                                         ("syncnet", "model.geometry")])
def test_model_config_by_name_or_yaml_path(tmp_path, family, key):
    shipped = sorted(MODELS_DIR.glob(f"{family}_*.yaml"))
    assert load_model_config(shipped[0].stem, key, family) == load_yaml(shipped[0])
    own = write(tmp_path / "own.yaml", "block_out_channels: [4, 8]\n")
    assert load_model_config(str(own), key, family) == {"block_out_channels": [4, 8]}
    with pytest.raises(ConfigError, match=f"{key} '{family}_none' not found") as raised:
        load_model_config(f"{family}_none", key, family)
    assert raised.value.fix == f"choose one of: {', '.join(p.stem for p in shipped)}"
