"""The preprocess worker pool: a worker that dies costs only its task, an error stops everything."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from lsync.stages.preprocess_pool import WorkerCrash, WorkerPool


def workers_left() -> list[psutil.Process]:
    """Child processes of this one, apart from multiprocessing's resource tracker (it lives as long as we do)."""
    return [p for p in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())]


def shout(task: str, counter) -> str:
    """The task in capitals - or the worker dies by SIGKILL, exits with code 3, or raises, as the task says."""
    counter.value += 1
    if task == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if task == "exit":
        os._exit(3)
    if task == "raise":
        raise ValueError(f"bad task {task!r}")
    return task.upper()


def test_a_worker_that_dies_costs_only_its_task():
    tasks = ["a", "die", "b", "exit", "c", "d", "e"]
    with WorkerPool(2, shout, max_tasks=2) as pool:  # workers are also replaced after two tasks
        results = dict(pool.run(tasks))
        assert pool.counted == len(tasks)  # every task started, in some worker
    assert {k: v for k, v in results.items() if not isinstance(v, WorkerCrash)} == \
        {"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}
    killed, exited = results["die"], results["exit"]
    assert killed.exitcode == -signal.SIGKILL and "killed by SIGKILL (signal 9)" in killed.detail
    assert exited.exitcode == 3 and "exited with code 3" in exited.detail
    assert not workers_left()


def test_a_task_that_raises_stops_every_worker_and_raises_here():
    pool = WorkerPool(2, shout)
    with pytest.raises(ValueError, match="bad task 'raise'"):
        with pool:
            list(pool.run(["a", "raise", "b", "c"]))
    assert not workers_left()


def sleep_in_ffmpeg(task: str, counter) -> str:
    """Runs an ffmpeg that would take a minute (the stand-in for a decode), then answers."""
    from lsync.media.ffmpeg import run_ffmpeg

    # -re: at the input's own pace, so it really lasts a minute (unpaced, a minute of silence takes a split second)
    run_ffmpeg(["-re", "-f", "lavfi", "-i", "anullsrc", "-t", "60", "-f", "null", "-"], what="idle")
    return task


def test_a_worker_terminated_from_outside_takes_its_ffmpeg_along():
    import threading
    import time

    outcomes = []
    with WorkerPool(1, sleep_in_ffmpeg) as pool:
        running = threading.Thread(target=lambda: outcomes.extend(pool.run(["a"])))
        running.start()
        deadline = time.time() + 60
        while time.time() < deadline and not [p for p in workers_left() if "ffmpeg" in p.name()]:
            time.sleep(0.05)
        (ffmpeg,) = [p for p in workers_left() if "ffmpeg" in p.name()]
        ffmpeg.parent().terminate()  # SIGTERM to the worker, as a user's kill would
        running.join(timeout=30)
    ((task, crash),) = outcomes
    assert task == "a" and crash.exitcode == -signal.SIGTERM and "SIGTERM" in crash.detail
    ffmpeg.wait(timeout=10)
    assert not workers_left()
