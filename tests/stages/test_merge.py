"""``lsync merge`` on hand-made shard directories: content (not size) decides what is copied, paths stay inside."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from lsync.errors import InputError
from lsync.manifest import atomic_output, read_manifest, read_records, rewrite_records, write_manifest
from lsync.media.audio import write_wav
from lsync.stages.merge import merge

CONFIG = {"resolution": 64, "crf": 15, "workers": 1}


def write_npz(path: Path, landmarks: np.ndarray) -> None:
    """An uncompressed npz, written atomically like preprocess does: same shapes, same size, whatever the values."""
    buffer = io.BytesIO()
    np.savez(buffer, landmarks3=landmarks.astype(np.float32))
    with atomic_output(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def make_shard(root: Path, index: int, seed: int) -> Path:
    """One source with one clip of 10 frames: a wav, an npz of landmarks and a stand-in mp4."""
    shard = root / f"shard{index}"
    rng = np.random.default_rng(seed)
    cid = f"src{index}-000"
    paths = {"video": f"clips/{cid}.mp4", "audio": f"clips/{cid}.wav", "meta": f"clips/{cid}.npz"}
    (shard / "clips").mkdir(parents=True, exist_ok=True)
    with atomic_output(shard / f"clips/{cid}.mp4") as tmp:
        tmp.write_bytes(b"video of source %d" % index)
    write_wav(shard / f"clips/{cid}.wav", rng.uniform(-0.5, 0.5, 6400), 16000)
    write_npz(shard / f"clips/{cid}.npz", rng.normal(size=(10, 3, 2)))
    source = f"src{index}.mp4"
    rewrite_records(shard / "clips.jsonl", [{"id": cid, "source": source, "index": 0, "split": "train",
                                             "num_frames": 10, **paths}])
    rewrite_records(shard / "rejects.jsonl", [])
    rewrite_records(shard / "sources.jsonl", [{"source": source, "status": "accepted", "clips": 1}])
    write_manifest(shard, "data", {**CONFIG, "shard": f"{index}/2"}, summary={"clips": 1, "seed": seed})
    return shard


def test_a_regenerated_shard_of_equal_sizes_is_merged_again(tmp_path):
    shards = [make_shard(tmp_path, 0, seed=1), make_shard(tmp_path, 1, seed=2)]
    out = tmp_path / "merged"
    assert merge(out, shards)["clips"] == 2
    before = {p.name: p.stat().st_size for p in (out / "clips").iterdir()}

    make_shard(tmp_path, 0, seed=3)  # preprocess run again: new landmarks and audio, the very same sizes
    assert {p.name: p.stat().st_size for p in (tmp_path / "shard0" / "clips").iterdir()} == \
        {k: v for k, v in before.items() if k.startswith("src0")}
    merge(out, shards)
    for name in ("src0-000.wav", "src0-000.npz", "src1-000.wav"):
        shard = tmp_path / ("shard0" if name.startswith("src0") else "shard1")
        assert (out / "clips" / name).read_bytes() == (shard / "clips" / name).read_bytes(), name
    np.testing.assert_array_equal(np.load(out / "clips" / "src0-000.npz")["landmarks3"],
                                  np.load(tmp_path / "shard0" / "clips" / "src0-000.npz")["landmarks3"])
    assert read_manifest(out, kind="data")["summary"]["shards"] == 2


@pytest.mark.parametrize("bad", ["../escape.wav", "/ABSOLUTE/escape.wav", "clips/../../escape.wav"])
def test_record_paths_that_leave_the_shard_are_refused(tmp_path, bad):
    bad = bad.replace("/ABSOLUTE", str(tmp_path / "elsewhere"))
    shard = make_shard(tmp_path, 0, seed=1)
    records = read_records(shard / "clips.jsonl")
    rewrite_records(shard / "clips.jsonl", [{**records[0], "audio": bad}])
    (tmp_path / "escape.wav").write_bytes(b"not yours")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "escape.wav").write_bytes(b"not yours either")
    out = tmp_path / "out" / "merged"
    with pytest.raises(InputError, match="absolute or leaves the directory"):
        merge(out, [shard])
    assert not out.exists()  # refused before anything was written
    assert (tmp_path / "escape.wav").read_bytes() == b"not yours"
    assert json.loads((shard / "lsync.json").read_text())["kind"] == "data"
