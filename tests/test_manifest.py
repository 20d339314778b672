"""The manifest-directory contract: atomic lsync.json, safe JSONL, digests, kind/schema checks."""

from __future__ import annotations

import json
import logging

import pytest

from lsync import manifest as mf
from lsync.errors import InputError, ManifestError


def test_manifest_round_trip(tmp_path):
    src = tmp_path / "input file ü.bin"
    src.write_bytes(b"abc")
    written = mf.write_manifest(
        tmp_path / "out", "data", {"resolution": 256}, inputs=[mf.describe_input(src)], summary={"clips": 3}
    )
    read = mf.read_manifest(tmp_path / "out", kind="data")
    assert read == written
    assert read["schema"] == mf.SCHEMA_VERSION and read["config"] == {"resolution": 256}
    assert read["inputs"][0]["digest"] == mf.file_digest(src)
    assert read["versions"]["lsync"] and read["versions"]["python"]
    assert not list((tmp_path / "out").glob(f"{mf.TEMP_PREFIX}*"))


def test_digest_of_known_bytes(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert mf.file_digest(p) == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert mf.json_digest({"b": 1, "a": 2}) == mf.json_digest({"a": 2, "b": 1})


def test_wrong_kind_and_missing_manifest(tmp_path):
    mf.write_manifest(tmp_path, "raw", {})
    with pytest.raises(ManifestError, match="is a 'raw' directory, expected 'data'"):
        mf.read_manifest(tmp_path, kind="data")
    with pytest.raises(ManifestError, match="no lsync.json"):
        mf.read_manifest(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        mf.read_manifest(tmp_path / "missing")


def test_newer_schema_and_foreign_json_are_rejected(tmp_path):
    (tmp_path / "lsync.json").write_text(json.dumps({"kind": "data", "schema": mf.SCHEMA_VERSION + 1}))
    with pytest.raises(ManifestError, match="upgrade lsync"):
        mf.read_manifest(tmp_path)
    (tmp_path / "lsync.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ManifestError, match="lacks 'kind'"):
        mf.read_manifest(tmp_path)
    (tmp_path / "lsync.json").write_text("{")
    with pytest.raises(ManifestError, match="not valid JSON"):
        mf.read_manifest(tmp_path)


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with mf.atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            assert tmp.suffix == ".mp4" and tmp.parent == tmp_path
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with mf.atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_remove_temp_debris(tmp_path):
    (tmp_path / "clips").mkdir()
    debris = tmp_path / "clips" / f"{mf.TEMP_PREFIX}abc.mp4"
    debris.write_bytes(b"x")
    keep = tmp_path / "clips" / "real.mp4"
    keep.write_bytes(b"y")
    assert mf.remove_temp_debris(tmp_path) == [debris]
    assert keep.exists() and not debris.exists()


def test_records_append_and_read(tmp_path):
    path = tmp_path / "clips.jsonl"
    mf.append_records(path, {"id": "a"}, {"id": "b", "text": "ü"})
    with mf.RecordWriter(path) as writer:
        writer.append({"id": "c"})
    assert [r["id"] for r in mf.read_records(path)] == ["a", "b", "c"]
    assert mf.read_records(tmp_path / "missing.jsonl") == []


def test_crash_truncated_last_line_is_dropped_and_repaired(tmp_path, caplog):
    path = tmp_path / "clips.jsonl"
    mf.append_records(path, {"id": "a"}, {"id": "b"})
    with open(path, "ab") as f:
        f.write(b'{"id": "c", "fra')  # the process died mid-write
    with caplog.at_level(logging.WARNING, logger="lsync"):
        assert [r["id"] for r in mf.read_records(path)] == ["a", "b"]
    assert "truncated" in caplog.text
    mf.append_records(path, {"id": "d"})  # the rerun appends: the partial line must not swallow it
    assert [r["id"] for r in mf.read_records(path)] == ["a", "b", "d"]
    assert path.read_bytes().endswith(b"\n")


def test_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}')
    assert [r["id"] for r in mf.read_records(path)] == ["a", "b"]
    mf.append_records(path, {"id": "c"})
    assert [r["id"] for r in mf.read_records(path)] == ["a", "b", "c"]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(InputError, match=r"r.jsonl:2 is not valid JSON"):
        mf.read_records(path)


def test_rewrite_records(tmp_path):
    path = tmp_path / "r.jsonl"
    mf.append_records(path, {"id": "a"}, {"id": "a"})
    mf.rewrite_records(path, [{"id": "a"}])
    assert mf.read_records(path) == [{"id": "a"}]
