"""Weight presets: lookup order, found/missing report, offline errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lsync.cli import cli
from lsync.errors import InputError, UsageError
from lsync import weights as w


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Point every search folder at empty temp dirs so the machine's real caches do not leak in."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LSYNC_WEIGHTS", raising=False)
    monkeypatch.setattr(w, "_find_in_hf_cache", lambda file: None)


def test_tiny_needs_nothing():
    assert w.resolve_weights("tiny") == {}
    assert w.weight_status("tiny") == []


def test_missing_files_are_reported_with_where_to_put_them(tmp_path):
    rows = w.weight_status("latentsync-1.5", tmp_path / "mine")
    assert rows and not any(r["found"] for r in rows)
    assert rows[0]["path"] == str(tmp_path / "mine" / "latentsync-1.5" / "latentsync_unet.pt")
    with pytest.raises(InputError) as err:
        w.resolve_weights("latentsync-1.5", tmp_path / "mine")
    assert "latentsync_unet.pt" in str(err.value) and "whisper/tiny.pt" in str(err.value)
    assert "stable_syncnet.pt" not in str(err.value)  # only needed for training


def test_search_order_and_checkout_layout(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    (env_dir / "whisper").mkdir(parents=True)
    (env_dir / "whisper" / "tiny.pt").write_bytes(b"whisper")
    (env_dir / "latentsync_unet.pt").write_bytes(b"env")  # LatentSync checkpoints/ layout: no preset folder
    flag_dir = tmp_path / "flag" / "latentsync-1.6"
    flag_dir.mkdir(parents=True)
    (flag_dir / "latentsync_unet.pt").write_bytes(b"flag")
    monkeypatch.setenv("LSYNC_WEIGHTS", str(env_dir))
    vae = tmp_path / "xdg" / "lsync" / "sd-vae-ft-mse"
    vae.mkdir(parents=True)
    (vae / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"vae")

    found = w.resolve_weights("latentsync-1.6", tmp_path / "flag")
    assert found["unet"] == flag_dir / "latentsync_unet.pt"  # --weights-dir beats $LSYNC_WEIGHTS
    assert found["whisper"] == env_dir / "whisper" / "tiny.pt"
    assert found["vae/config.json"] == vae / "config.json"  # ~/.cache/lsync last
    rows = {r["role"]: r for r in w.weight_status("latentsync-1.6", tmp_path / "flag")}
    assert rows["unet"]["sha256"] == w.file_digest(flag_dir / "latentsync_unet.pt")
    assert not rows["syncnet"]["found"]


def test_unknown_preset():
    with pytest.raises(UsageError, match="unknown weights preset"):
        w.preset_files("latentsync-9")


def test_fetch_offline_fails_fast_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["weights", "fetch", "--preset", "latentsync-1.5", "--weights-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, InputError)
    assert str(tmp_path / "latentsync-1.5") in str(result.exception)


def test_weights_list_cli_runs_offline(tmp_path):
    result = CliRunner().invoke(cli, ["weights", "list", "--json", "--weights-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["preset"] for r in rows} == {"latentsync-1.5", "latentsync-1.6"}
    assert all(r["found"] is False for r in rows)
    table = CliRunner().invoke(cli, ["weights", "list"])
    assert table.exit_code == 0 and "missing" in table.stdout and "tiny" in table.stdout
