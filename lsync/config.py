"""Stage configs: one dataclass per stage, resolved from layers with a fixed precedence.

    defaults (the dataclass) < preset (configs/<stage>/<name>.yaml) or --config FILE < named flags < --set key=value

Every layer is validated on its own, so an unknown key or a wrong type is reported with the layer it came from
and the nearest valid key. Nested dataclasses are sections, addressed with dots: ``--set loss.sync_weight=0.03``.
The resolved config is what a stage records in its output directory (``config.yaml`` and ``lsync.json``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lsync.errors import ConfigError
from lsync.package_data import shipped_dir

C = TypeVar("C")

#: The shipped presets: the repository's configs/ folder, or its copy inside an installed wheel.
CONFIGS_DIR = shipped_dir("configs")
#: Model architectures (constructor configs) that presets name, e.g. ``model.unet: unet_stage2``.
MODELS_DIR = CONFIGS_DIR / "models"


# ----------------------------------------------------------------------------------------------- building
def section(cls: type[C], **defaults: Any) -> C:
    """A config field holding a fresh ``cls(**defaults)``: sections are mutable, so no two configs may share one.

    ``train: LoopConfig = section(LoopConfig, lr=1e-3)`` is a section whose defaults differ from the class's.
    """
    return dataclasses.field(default_factory=functools.partial(cls, **defaults))


def config_from_dict(cls: type[C], data: Mapping[str, Any], source: str = "config", prefix: str = "") -> C:
    """Build ``cls`` from a (possibly partial) mapping; missing keys keep their defaults.

    Raises :class:`ConfigError` naming the dotted key, the source and the nearest valid key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'config'}' must be a mapping, got {_kind(data)}",
                          "write it as `key: value` lines")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}' in {source}", _suggest(str(key), fields, prefix))
        kwargs[key] = _coerce(value, hints[key], source, f"{prefix}{key}")
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-safe dict of a config dataclass (Paths become strings, tuples lists)."""
    return _plain(dataclasses.asdict(config))


def resolve_config(
    cls: type[C],
    stage: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> C:
    """Merge the layers in precedence order and return the validated config.

    Args:
        cls: the stage's config dataclass.
        stage: folder under ``configs/`` where ``preset`` is looked up.
        preset: preset name (``configs/<stage>/<preset>.yaml``) - or a path to a YAML file.
        config_file: a user's YAML file (``--config FILE``); applied after the preset.
        flags: values of named CLI flags by dotted key; ``None`` means "flag not given" and is skipped.
        overrides: ``--set`` strings, ``section.key=value`` with YAML-parsed values.
    """
    layers: list[tuple[str, dict[str, Any]]] = []
    if preset is not None:
        path = preset_path(stage, preset)
        layers.append((str(path), load_yaml(path)))
    if config_file is not None:
        layers.append((str(config_file), load_yaml(config_file)))
    if flags:
        layers.append(("command-line flags", _nest({k: v for k, v in flags.items() if v is not None})))
    for item in overrides:
        layers.append((f"--set {item}", parse_override(item)))

    merged: dict[str, Any] = {}
    for source, layer in layers:
        config_from_dict(cls, layer, source)  # validate each layer on its own to name the culprit
        merged = _deep_merge(merged, layer)
    return config_from_dict(cls, merged, "the merged config")


def parse_override(item: str) -> dict[str, Any]:
    """``"loss.sync_weight=0.03"`` -> ``{"loss": {"sync_weight": 0.03}}`` (value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} is not of the form key=value", "write e.g. --set loss.sync_weight=0.03")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML", "quote strings, e.g. key='a b'") from exc
    return _nest({key.strip(): value})


# ----------------------------------------------------------------------------------------------- files
def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found", "check the path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML ({exc.__class__.__name__})", "fix the syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of config keys, got {_kind(data)}", "write `key: value` lines")
    return data


def preset_path(stage: str | None, name: str) -> Path:
    """Resolve a preset name (or a path to a YAML file) to a file, with the list of valid names on error."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    folder = CONFIGS_DIR / (stage or "")
    candidate = folder / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = list_presets(stage)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(names) or '(none)'}"
    raise ConfigError(f"unknown {stage or ''} preset '{name}'".replace("  ", " "), hint)


def load_model_config(name: str, key: str, family: str) -> dict[str, Any]:
    """The architecture a config key names: ``configs/models/<name>.yaml``, or ``name`` itself when it is a YAML
    path. ``key`` (e.g. ``model.unet``) and the shipped ``<family>_*`` files make the error of an unknown name."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else MODELS_DIR / f"{name}.yaml"
    if not path.is_file():
        choices = sorted(p.stem for p in MODELS_DIR.glob(f"{family}_*.yaml"))
        raise ConfigError(f"{key} '{name}' not found", f"choose one of: {', '.join(choices)}")
    return load_yaml(path)


def list_presets(stage: str | None) -> list[str]:
    folder = CONFIGS_DIR / (stage or "")
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def changed_config_keys(previous: Mapping[str, Any], current: Mapping[str, Any],
                        ignore: Iterable[str] = ()) -> list[str]:
    """The top-level keys whose values differ between the config an output folder was made with (its
    ``config.yaml``) and the one resolved now, leaving out ``ignore``: settings such as worker counts that do not
    change what is written. Values compare in their JSON form, as a digest of the config would: the list that YAML
    reads back equals the tuple it was written from."""
    from lsync.manifest import json_digest

    def value(config: Mapping[str, Any], key: str) -> str | None:  # absent differs from null, as in a digest
        return json_digest([config[key]]) if key in config else None

    ignore = set(ignore)
    return sorted(key for key in set(previous) | set(current)
                  if key not in ignore and value(previous, key) != value(current, key))


def save_config_yaml(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML atomically (``config.yaml`` in run directories)."""
    from lsync.manifest import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True))


# ----------------------------------------------------------------------------------------------- internals
def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, source, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if isinstance(value, bool):  # PyYAML follows YAML 1.1, which reads off/on/no/yes as booleans
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((word for word in words if word in args), value)
        if value in args:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint_text = f"did you mean '{close[0]}'?" if close else f"choose one of: {', '.join(map(str, args))}"
        raise ConfigError(f"{key}={value!r} in {source} is not a valid choice", hint_text)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, source, prefix=f"{key}.")
    if origin in (list, tuple, Iterable) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, "a list", source)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} in {source} needs {len(args)} items, got {len(value)}", "fix the list")
            return tuple(_coerce(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_hint = args[0] if args else Any
        items = [_coerce(v, item_hint, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _type_error(key, value, "a mapping", source)
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, "true or false", source)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _type_error(key, value, "an integer", source)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML follows YAML 1.1, which reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, value, "a number", source)
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _type_error(key, value, "a string", source)
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _type_error(key, value, "a path", source)
    return value


def _type_error(key: str, value: Any, expected: str, source: str) -> ConfigError:
    return ConfigError(f"{key} in {source} must be {expected}, got {value!r} ({_kind(value)})",
                       f"set {key} to {expected}")


def _suggest(key: str, fields: Mapping[str, Any], prefix: str) -> str:
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    if close:
        return f"did you mean '{prefix}{close[0]}'?"
    return f"valid keys: {', '.join(prefix + f for f in fields)}"


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(type(value), type(value).__name__)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
