"""The pipelined chunk loop: order, overlap, errors from any step, and stopping the frame source."""

from __future__ import annotations

import threading
import time

import pytest

from lsync.stages.infer_render import chunks_of, pipelined


def test_chunks_of_cuts_consecutive_rows_and_keeps_a_short_tail():
    rows = [(i, i, None) for i in range(7)]
    assert [[r[0] for r in c] for c in chunks_of(rows, 3)] == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize("overlap", [True, False])
def test_every_item_is_finished_in_order(overlap):
    finished = []
    pipelined(range(20), lambda i: i * 10, lambda p: p + 1, lambda p, r: finished.append((p, r)), overlap=overlap)
    assert finished == [(10 * i, 10 * i + 1) for i in range(20)]


def test_prepare_and_finish_run_beside_compute_on_helper_threads():
    threads, busy = {}, threading.Event()
    overlapped = []

    def prepare(item):
        threads.setdefault("prepare", threading.current_thread().name)
        overlapped.append(busy.is_set())  # is the calling thread computing right now?
        return item

    def compute(item):
        threads.setdefault("compute", threading.current_thread().name)
        busy.set()
        time.sleep(0.05)
        busy.clear()
        return item

    pipelined(range(6), prepare, compute, lambda p, r: threads.setdefault("finish", threading.current_thread().name))
    assert threads == {"prepare": "lsync-prepare", "compute": threading.current_thread().name,
                       "finish": "lsync-finish"}
    assert any(overlapped)  # the next item was prepared while the previous one was computed


class _Source:
    """An endless item source that records whether it was closed (like a decoder's generator)."""

    def __init__(self):
        self.closed = False

    def __iter__(self):
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            self.closed = True


@pytest.mark.parametrize("failing", ["prepare", "compute", "finish"])
def test_an_error_in_any_step_stops_everything_and_reaches_the_caller(failing):
    source = _Source()

    def step(name):
        def run(*args):
            if name == failing and args[0] == 3:
                raise ValueError(f"{name} broke")
            return args[0]
        return run

    before = threading.active_count()
    with pytest.raises(ValueError, match=f"{failing} broke"):
        pipelined(iter(source), step("prepare"), step("compute"), step("finish"))
    assert source.closed  # the frame source was stopped, not left running
    assert threading.active_count() == before  # no helper thread outlives the call


def test_ctrl_c_during_compute_stops_the_helpers():
    source = _Source()

    def compute(item):
        if item == 2:
            raise KeyboardInterrupt
        return item

    with pytest.raises(KeyboardInterrupt):
        pipelined(iter(source), lambda i: i, compute, lambda p, r: None)
    assert source.closed
