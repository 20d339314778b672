"""Worker processes for ``lsync preprocess``: one task at a time each, and a worker that dies costs only its task.

``multiprocessing.Pool`` loses the task of a worker that dies (the OOM killer on a 4K source, a crash inside
MediaPipe or ffmpeg) and then waits for it forever. Here every worker is a process of its own that the parent
hands one task at a time over a pipe, so the parent always knows which task each worker holds:

* a worker that dies is seen through its sentinel; its task comes back as a :class:`WorkerCrash` (exit code or
  signal), a fresh worker takes its place and the other tasks go on;
* every worker leads its own process group, which its ffmpeg children inherit, and a dead worker's group is killed
  whole: no decoder or encoder outlives the worker that started it;
* leaving the pool - normally, through an error, Ctrl-C or ``kill`` (see :func:`sigterm_as_interrupt`) - kills
  every worker group; a worker whose parent vanished without that (``kill -9``) kills its own group.

Workers are started with ``spawn`` (no forked copies of MediaPipe or torch state) and replaced after
``max_tasks`` tasks, which bounds what a leaking native library can accumulate.
"""

from __future__ import annotations

import collections
import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from lsync.console import get_logger

log = get_logger(__name__)

#: How often (s) a worker checks that its parent is still there.
PARENT_CHECK_S = 0.5


@dataclass(frozen=True)
class WorkerCrash:
    """A worker that died while it held a task: ``exitcode`` as :class:`multiprocessing.Process` reports it
    (``-N``: killed by signal N)."""

    pid: int
    exitcode: int | None

    @property
    def signal_name(self) -> str | None:
        if self.exitcode is None or self.exitcode >= 0:
            return None
        with contextlib.suppress(ValueError):
            return signal.Signals(-self.exitcode).name
        return f"signal {-self.exitcode}"

    @property
    def detail(self) -> str:
        if self.signal_name is not None:
            cause = f"was killed by {self.signal_name} (signal {-self.exitcode})"
            if self.exitcode == -signal.SIGKILL:
                cause += ", often the out-of-memory killer: rerun with fewer --workers"
        else:
            cause = f"exited with code {self.exitcode}"
        return f"worker process {self.pid} {cause} while processing this source"


class WorkerError(Exception):
    """A task raised an exception in a worker that cannot be sent back as it is (it does not pickle)."""


class _Worker:
    def __init__(self, context, target: Callable[[Any, Any], Any], max_tasks: int):
        self.conn, child_conn = context.Pipe(duplex=True)
        self.counter = context.RawValue("q", 0)  # written by this worker only, so it needs no lock
        self.process = context.Process(target=_worker_main, args=(child_conn, target, self.counter, max_tasks),
                                       daemon=True, name="lsync-preprocess-worker")
        self.process.start()
        child_conn.close()
        self.task: Any = None
        self.busy = False
        self.tasks_left = max_tasks

    def send(self, task: Any) -> None:
        self.conn.send(task)
        self.task, self.busy = task, True
        self.tasks_left -= 1

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (the worker and every ffmpeg it started), then reap it.

        The group outlives a dead worker while any of its children lives, so this also reaches the ffmpeg
        processes of a worker that is already gone."""
        kill_group(self.process.pid, reaped=self.process.exitcode is not None)
        self.process.join(timeout=10)
        self.conn.close()


def kill_group(pid: int, reaped: bool = False) -> None:
    """SIGKILL the process group led by ``pid`` (a worker makes itself its leader); if there is no such group
    and the process was not reaped yet (it died before leading one), the process alone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if hasattr(os, "killpg"):
            try:
                os.killpg(pid, signal.SIGKILL)
                return
            except ProcessLookupError:
                pass
        if not reaped:  # a reaped pid may already belong to another process
            os.kill(pid, signal.SIGKILL)


class WorkerPool:
    """``workers`` processes running ``target(task, counter)``; use as a context manager around :meth:`run`.

    ``counter`` is a shared ``int64`` each worker may increment (progress); :attr:`counted` sums them.
    ``target`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """

    def __init__(self, workers: int, target: Callable[[Any, Any], Any], max_tasks: int = 8):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers, self.target, self.max_tasks = workers, target, max_tasks
        self._context = mp.get_context("spawn")
        self._live: list[_Worker] = []
        self._counters: list[Any] = []

    @property
    def counted(self) -> int:
        return sum(counter.value for counter in self._counters)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(graceful=exc_type is None)

    def close(self, graceful: bool = False) -> None:
        """Stop every worker: idle ones are asked to leave when ``graceful``; then every group is killed."""
        if graceful:
            for worker in self._live:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
            for worker in self._live:
                worker.process.join(timeout=2)
        for worker in self._live:
            worker.kill()
        self._live.clear()

    def run(self, tasks: Iterable[Any], poll_s: float = 0.5,
            on_wait: Callable[[], None] | None = None) -> Iterator[tuple[Any, Any]]:
        """Yield ``(task, result)`` in completion order; ``result`` is a :class:`WorkerCrash` for a task whose
        worker died. A task that raised re-raises its exception here (or a :class:`WorkerError` naming it), after
        every worker is stopped; the worker's traceback is logged at debug level.
        ``on_wait`` is called every ``poll_s`` seconds while nothing finishes (progress updates)."""
        queue = collections.deque(tasks)
        while queue or any(w.busy for w in self._live):
            self._hand_out(queue)
            busy = [w for w in self._live if w.busy]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=poll_s)
            if not ready:
                if on_wait is not None:
                    on_wait()
                continue
            for worker in busy:
                outcome = self._collect(worker, ready)
                if outcome is not None:
                    yield outcome

    def _hand_out(self, queue: collections.deque) -> None:
        self._live = [w for w in self._live if w.busy or self._still_usable(w)]
        while queue and len(self._live) < self.workers:
            self._live.append(self._start())
        for worker in self._live:
            if queue and not worker.busy:
                task = queue.popleft()
                try:
                    worker.send(task)
                except (BrokenPipeError, OSError):  # it died idle: the task never started, give it to another
                    queue.appendleft(task)
                    worker.busy = False
                    worker.tasks_left = 0

    def _still_usable(self, worker: _Worker) -> bool:
        if worker.tasks_left > 0 and worker.process.is_alive():
            return True
        worker.kill()  # used up (it leaves by itself) or dead while idle
        return False

    def _start(self) -> _Worker:
        worker = _Worker(self._context, self.target, self.max_tasks)
        self._counters.append(worker.counter)
        return worker

    def _collect(self, worker: _Worker, ready: list) -> tuple[Any, Any] | None:
        """The worker's finished task, if it sent one or died; None while it is still working."""
        if worker.conn in ready or worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                message = None  # it died before or while sending: handled as a crash below
            if message is not None:
                task, worker.task, worker.busy = worker.task, None, False
                kind, payload, remote = message
                if kind == "error":
                    self.close()
                    error = payload if isinstance(payload, BaseException) else WorkerError(str(payload))
                    log.debug("worker traceback:\n%s", remote)
                    raise error
                return task, payload
        if worker.process.sentinel in ready or not worker.process.is_alive():
            worker.process.join(timeout=10)
            crash = WorkerCrash(worker.process.pid, worker.process.exitcode)
            task, worker.task, worker.busy, worker.tasks_left = worker.task, None, False, 0
            worker.kill()  # its ffmpeg children (same process group) must not outlive it
            self._live.remove(worker)
            log.warning("%s", crash.detail)
            return task, crash
        return None


# ----------------------------------------------------------------------------------------------- worker side
def _worker_main(conn, target, counter, max_tasks: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it kills the workers)
    _lead_own_process_group()
    signal.signal(signal.SIGTERM, _terminate_with_children)
    _exit_with_parent(os.getppid())
    for _ in range(max_tasks):
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            result = target(task, counter)
        except BaseException as exc:  # noqa: BLE001 - sent to the parent, which re-raises it
            conn.send(("error", _picklable(exc), traceback.format_exc()))
            return
        conn.send(("done", result, None))


def _lead_own_process_group() -> None:
    """Make this worker a process-group leader so that it and its ffmpeg children can be killed as one."""
    if hasattr(os, "setpgid"):
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)


def _exit_with_parent(parent_pid: int) -> None:
    """A thread that kills this worker's group once the parent is gone (it was killed with SIGKILL)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_S)
        _kill_own_group()

    threading.Thread(target=watch, daemon=True, name="lsync-parent-watch").start()


def _terminate_with_children(signum, frame) -> None:
    """SIGTERM (``terminate()``, multiprocessing's clean-up at exit, or a user's ``kill``) ends the worker's ffmpeg
    children too, then the worker itself, by SIGTERM as asked."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(os, "killpg") and os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _kill_own_group() -> None:
    """SIGKILL this worker and its ffmpeg children (its group, when it leads one; never the parent's group)."""
    if hasattr(os, "killpg") and os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _picklable(exc: BaseException) -> BaseException | str:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - e.g. an exception holding an open file
        return f"{type(exc).__name__}: {exc}"
    return exc


# ----------------------------------------------------------------------------------------------- parent side
@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (plain ``kill``) raises ``KeyboardInterrupt`` like Ctrl-C, so the cleanup that
    kills worker groups and ffmpeg children runs instead of the process vanishing. Only the main thread can
    install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
