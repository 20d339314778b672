"""The command line: help speed, one-line errors with exit codes, inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from lsync import __version__
from lsync.cli import cli, main
from lsync.manifest import append_records, write_manifest


def run_main(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_help_is_fast_and_lists_commands():
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "lsync.cli", "--help"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    elapsed = time.perf_counter() - start
    assert result.returncode == 0
    for command in ("synth", "inspect"):
        assert command in result.stdout
    assert elapsed < 1.0, f"lsync --help took {elapsed:.2f}s"


def test_help_does_not_import_heavy_libraries():
    code = "import sys; from lsync.cli import cli; print(sorted(m for m in ('torch','mediapipe','diffusers','cv2') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version(capsys):
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_bad_usage_is_one_line_exit_2(capsys):
    code, _, err = run_main(["no-such-command"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("lsync: error: No such command")


def test_input_error_is_one_line_exit_2(tmp_path, capsys):
    code, _, err = run_main(["inspect", str(tmp_path / "missing dir ü")], capsys)
    assert code == 2
    assert err.strip() == f"lsync: error: {tmp_path / 'missing dir ü'} is not a directory, pass a directory written by an lsync stage"


def test_an_unexpected_exception_is_still_one_line_exit_1(monkeypatch, capsys):
    import lsync.summary

    def broken(*args, **kwargs):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(lsync.summary, "summarize", broken)
    code, _, err = run_main(["inspect", "."], capsys)
    assert code == 1
    assert err.count("\n") == 1 and "unexpected RuntimeError: kaboom second line" in err and "--verbose" in err


def test_verbose_shows_traceback(tmp_path, capsys):
    code, _, err = run_main(["-v", "inspect", str(tmp_path / "missing")], capsys)
    assert code == 2 and "Traceback" in err


def test_inspect_data_directory(tmp_path):
    write_manifest(tmp_path, "data", {"resolution": 256, "clips": {"min_seconds": 5}}, summary={"clips": 2})
    append_records(tmp_path / "clips.jsonl",
                   {"id": "a", "source": "s1", "num_frames": 250, "fps": 25, "split": "train"},
                   {"id": "b", "source": "s2", "num_frames": 125, "fps": 25, "split": "val"})
    append_records(tmp_path / "rejects.jsonl", {"source": "x", "reason": "no_face"}, {"source": "y", "reason": "no_face"},
                   {"source": "z", "reason": "too_short"})
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "data" and summary["complete"]
    assert summary["config"]["clips.min_seconds"] == 5
    assert summary["clips"]["count"] == 2 and summary["clips"]["seconds"] == 15.0
    assert summary["clips"]["splits"] == {"train": 1, "val": 1}
    assert summary["rejects_by_reason"] == {"no_face": 2, "too_short": 1}


def test_inspect_renders_tables_for_a_run(tmp_path):
    write_manifest(tmp_path, "syncnet-run", {"lr": 1e-5})
    append_records(tmp_path / "metrics.jsonl", {"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.5, "lr": 1e-5})
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads(CliRunner().invoke(cli, ["inspect", str(tmp_path), "--json"]).stdout)
    assert summary["metrics"]["last_step"] == 2
    assert summary["metrics"]["values"]["loss"] == {"last": 0.5, "min": 0.5, "max": 0.7, "count": 2}


def test_inspect_interrupted_directory(tmp_path):
    append_records(tmp_path / "clips.jsonl", {"id": "a", "num_frames": 25, "fps": 25})
    summary = json.loads(CliRunner().invoke(cli, ["inspect", str(tmp_path), "--json"]).stdout)
    assert summary["complete"] is False and summary["clips"]["count"] == 1
