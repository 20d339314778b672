"""A wheel built from the checkout carries the presets and recipes (no symlinks; see lsync/package_data.py).

The wheel goes into a fresh folder with ``--no-deps`` and is run with this interpreter from an unrelated working
directory, so it is the installed copy (not the checkout) that must find ``configs/`` and ``pipelines/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lsync.package_data import SHIPPED_FOLDERS

REPO = Path(__file__).resolve().parents[1]
SOURCE_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # build from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    source = tmp_path_factory.mktemp("source")
    for name in SOURCE_FILES:
        shutil.copy2(REPO / name, source / name)
    for name in ("lsync", *SHIPPED_FOLDERS):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, cwd=out)
    (built,) = out.glob("lsync-*.whl")
    return built


def shipped_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for name in SHIPPED_FOLDERS for p in (root / name).rglob("*.yaml")}


def test_the_wheel_holds_every_preset_and_recipe(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"lsync/{name}" for name in shipped_files(REPO)}
    assert expected and expected <= names, sorted(expected - names)


def test_the_installed_wheel_finds_its_presets_and_recipes(wheel, tmp_path):
    target = tmp_path / "site packages ü"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import lsync, lsync.config as c, lsync.pipeline as p; "
             "print(lsync.__file__); print(c.CONFIGS_DIR); print(p.recipe_path('demo')); "
             "print(c.preset_path('syncnet', 'tiny')); print(c.preset_path('unet', 'tiny'))")
    lines = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert all(Path(line).is_relative_to(target) for line in lines), lines
    for args in (["demo", "--help"], ["pipeline", "run", "demo", "--help"]):
        done = subprocess.run([sys.executable, "-m", "lsync", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr
    assert "Shipped recipes: " in done.stdout and "demo" in done.stdout.split("Shipped recipes: ")[1]
