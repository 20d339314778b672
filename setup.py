"""Build hook: a wheel carries copies of the top-level ``configs/`` and ``pipelines/`` inside ``lsync/``.

All metadata lives in ``pyproject.toml``; this file only adds the copy, so presets and recipes are found after a
plain ``pip install .`` without symlinks in the source tree (see :mod:`lsync.package_data`).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED_FOLDERS = ("configs", "pipelines")
SHIPPED_SUFFIXES = {".yaml", ".yml", ".json"}


class BuildPyWithShippedData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the folders in place
        for name in SHIPPED_FOLDERS:
            source = ROOT / name
            target = Path(self.build_lib) / "lsync" / name
            for path in sorted(source.rglob("*")):
                if path.is_file() and path.suffix in SHIPPED_SUFFIXES:
                    destination = target / path.relative_to(source)
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, destination)


setup(cmdclass={"build_py": BuildPyWithShippedData})
