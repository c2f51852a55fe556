"""A worker process with a time limit: the only way to stop an evaluation that does not want to stop.

A hung user fitness, one that catches every exception, or a generation that never emits its stop
token cannot be interrupted from inside its own process (a signal only reaches Python code in the
main thread, and `except Exception` swallows what it raises). So an evaluation with a time limit runs
in a child process that holds its own resident model: past the limit the child is killed, the call
fails with `WorkerTimeout`, and the next call starts a fresh child (which loads the model again).

The child is built by `setup()` (a picklable zero-argument factory: the objective, or the run's
workspace) once, before the first timed call, so loading a model never counts against the limit;
each call sends `fn` (a module-level function, pickled by reference) and its arguments and gets
`fn(context, *args)` back. Children are spawned (never forked: CUDA and thread pools do not survive
a fork) and die with their parent.

>>> worker = ProcessWorker(functools.partial(dict, a=1), timeout=5.0)     # doctest: +SKIP
>>> worker.call(operator.getitem, "a")                                   # doctest: +SKIP
1
"""

from __future__ import annotations

import multiprocessing
import signal
from typing import Any, Callable

from evogm.errors import EvogmError


class WorkerTimeout(Exception):
    """A call ran past the worker's time limit; its process was killed."""


class WorkerDied(Exception):
    """The worker process ended without answering (killed, out of memory, os._exit in user code)."""


class ProcessWorker:
    """One child process holding `setup()`'s context; `call(fn, *args)` runs `fn(context, *args)` there,
    for at most `timeout` seconds (None: no limit)."""

    def __init__(self, setup: Callable[[], Any], timeout: float | None, threads: int | None = None):
        self.setup, self.timeout, self.threads = setup, timeout, threads
        self.replaced = 0  # children killed or lost and started again
        self._process = self._conn = None

    def call(self, fn: Callable, *args, limit: float | None = None):
        """`fn(context, *args)` in the child; its exceptions come back as they are. Raises WorkerTimeout
        past the limit (`limit`, else the worker's timeout) and WorkerDied if the child ends without an
        answer (it is replaced either way)."""
        limit = self.timeout if limit is None else limit
        self._start()
        self._conn.send((fn, args))
        if limit is not None and not self._conn.poll(limit):
            self._stop()
            raise WorkerTimeout(f"it took longer than {limit:g} s (search.timeout); its worker process "
                                "was stopped and a fresh one takes the next candidate")
        ok, value = self._receive()
        if not ok:
            raise value
        return value

    def close(self) -> None:
        if self._process is not None:
            try:
                self._conn.send(None)
                self._process.join(timeout=10)
            except (OSError, EOFError):
                pass
            self._stop()

    # --- the child -----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        if self._process is not None:  # it ended on its own since the last call
            self._stop()
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child, self.setup, self.threads), daemon=True)
        self._process.start()
        child.close()
        ok, value = self._receive()  # the context is built: loading models is not timed
        if not ok:
            self._stop()
            raise value

    def _receive(self) -> tuple[bool, Any]:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            self._stop()
            raise WorkerDied(f"its worker process ended without answering (exit code {code})") from None

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join()
            self._conn.close()
            self.replaced += 1
        self._process = self._conn = None


def serve(conn, setup: Callable[[], Any], threads: int | None) -> None:
    """The child's loop: build the context, then answer (ok, value) for every call until told to stop."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl-C is the parent's to handle: it stops the child
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        context = setup()
    except BaseException as exc:  # noqa: BLE001 — the parent raises it, as a local run would
        conn.send((False, _sendable(exc)))
        return
    conn.send((True, None))
    while (message := conn.recv()) is not None:
        fn, args = message
        try:
            conn.send((True, fn(context, *args)))
        except BaseException as exc:  # noqa: BLE001 — SystemExit in user code included: the caller's to judge
            conn.send((False, _sendable(exc)))


def _sendable(exc: BaseException) -> BaseException:
    """The exception itself if it pickles, else its text in an EvogmError."""
    import pickle

    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001
        return EvogmError(f"{type(exc).__name__}: {exc}")


def die_with_parent() -> None:
    """End this process when its parent process dies, even by SIGKILL: a daemon thread checks twice a
    second that the parent is still the one that started it (the kernel hands an orphan to another
    process); a parent gone already (before this ran) ends it now.

    Not Linux's PR_SET_PDEATHSIG: that follows the parent *thread*, and a multiprocessing pool starts
    its replacement workers from a thread that ends before they do. Killed then, a worker waiting
    for a task dies holding the pool's queue lock, and the pool hangs when it is finalized."""
    import os
    import threading
    import time

    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None else os.getppid()

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != pid:
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()
