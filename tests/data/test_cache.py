"""The per-clip feature cache shared by concurrent jobs: entries appear whole and are never removed under a reader."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from lsync.data.cache import FeatureCache

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32

# Two of these run at once on one cache: each stores the same entry again and again (as two training jobs that
# both miss it would) and loads it right after, checking every value - a half-written, missing or removed file
# fails the check or raises.
JOB = textwrap.dedent("""
    import sys, time
    import numpy as np
    from lsync.data.cache import FeatureCache

    cache = FeatureCache(sys.argv[1], "syncnet-64")
    frames = np.arange(40 * 64 * 64 * 3, dtype=np.int64).astype(np.uint8).reshape(40, 64, 64, 3)
    mel = np.linspace(-4, 4, 80 * 200, dtype=np.float32).reshape(80, 200)
    deadline, rounds = time.time() + float(sys.argv[2]), 0
    while time.time() < deadline:
        cache.store("clip/1", sys.argv[3], {"frames": frames, "mel": mel})
        loaded = cache.load("clip/1", sys.argv[3], ["frames", "mel"])
        assert np.array_equal(loaded["frames"], frames) and np.array_equal(loaded["mel"], mel)
        del loaded
        rounds += 1
    print(rounds)
""")


def test_two_processes_sharing_a_cache_never_see_a_partial_or_removed_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    jobs = [subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path), "4", DIGEST], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=120) for job in jobs]
    for job, (out, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-2000:]
        assert int(out) > 5  # each job stored and re-read the entry many times while the other did too
    cache = FeatureCache(tmp_path, "syncnet-64")
    assert cache.has("clip/1", DIGEST, ["frames", "mel"])
    assert [p.name for p in cache.entry_dir("clip/1", DIGEST).iterdir()] and \
        sorted(p.name for p in cache.entry_dir("clip/1", DIGEST).iterdir()) == ["frames.npy", "mel.npy"]
    assert [p.name for p in cache.root.iterdir()] == [cache.entry_dir("clip/1", DIGEST).name]  # no debris


def test_an_entry_gains_missing_arrays_without_losing_the_others(tmp_path):
    cache = FeatureCache(tmp_path, "kind")
    cache.store("c", DIGEST, {"a": np.arange(3)})
    kept = cache.load("c", DIGEST, ["a"])  # a reader holding a memory map of the entry
    cache.get_or_build("c", DIGEST, ["a", "b"], lambda: {"a": np.arange(3), "b": np.ones(2)})
    assert list(kept["a"]) == [0, 1, 2]
    assert cache.has("c", DIGEST, ["a", "b"]) and list(cache.load("c", DIGEST, ["b"])["b"]) == [1.0, 1.0]
