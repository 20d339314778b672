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
