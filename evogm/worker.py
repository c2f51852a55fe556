"""Worker processes: candidates scored side by side on one machine, and a time limit that holds.

Several workers, each a process with its own resident model and a share of the CPU threads, score
candidates at once: on a CPU a small model scores more candidates a second so than as one process on
every thread. And a hung user fitness, one that catches every exception, or a generation that never
emits its stop token cannot be interrupted from inside its own process (a signal only reaches Python
code in the main thread, and `except Exception` swallows what it raises); in a worker process past
its limit it is killed, the call answers `WorkerTimeout`, and a fresh worker (which loads the model
again) takes the next call.

The child is built by `setup()` (a picklable zero-argument factory: the objective, or the run's
workspace) once, before the first timed call, so loading a model never counts against the limit;
each call sends `fn` (a module-level function, pickled by reference) and its arguments and gets
`fn(context, *args)` back. Children are spawned (never forked: CUDA and thread pools do not survive
a fork) and die with their parent.

>>> pool = WorkerPool(functools.partial(dict, a=1), size=2)              # doctest: +SKIP
>>> pool.submit("first", operator.getitem, "a", limit=5.0)               # doctest: +SKIP
>>> pool.next()                                                          # doctest: +SKIP
('first', 1)
"""

from __future__ import annotations

import math
import multiprocessing
import signal
import time
from multiprocessing.connection import wait
from typing import Any, Callable

from evogm.errors import EvogmError


class WorkerTimeout(Exception):
    """A call ran past the worker's time limit; its process was killed."""


class WorkerDied(Exception):
    """The worker process ended without answering (killed, out of memory, os._exit in user code)."""


def evaluate(objective, x, threshold=None):
    """`objective(x)`, with adaptive evaluation's cut-off (`evogm.adaptive.Cutoff`) when there is one:
    what a worker runs."""
    return objective(x) if threshold is None else objective(x, threshold=threshold)


def map_by_submitting(executor, xs, on_result: Callable | None, threshold) -> list:
    """An executor's `map` through its `submit` and `next`: every row of `xs` submitted, the Results
    in row order, each reported to `on_result(row, result)` as it arrives."""
    for row, x in enumerate(xs):
        executor.submit(row, x, threshold)
    results = {}
    while len(results) < len(xs):
        row, result = executor.next()
        results[row] = result
        if on_result is not None:
            on_result(row, result)
    return [results[row] for row in range(len(xs))]


class WorkerPool:
    """`size` worker processes holding `setup()`'s context, each on an equal share of this process's
    torch threads: a call submitted goes to the first free worker, in the order submitted, and `next`
    answers the first to finish. A call past its `limit` (seconds, None: none) stops its worker, which
    a fresh one replaces."""

    def __init__(self, setup: Callable[[], Any], size: int):
        import torch

        self.processes = [ProcessWorker(setup, max(1, torch.get_num_threads() // size)) for _ in range(size)]
        self._waiting: dict = {}  # key → (fn, args, limit), first first: submitted, not yet sent
        self._running: dict[int, tuple[object, float, float | None]] = {}  # worker → (key, deadline, limit)
        self._answered: list[tuple[object, Exception]] = []  # calls whose worker died before they were sent

    def submit(self, key, fn: Callable, *args, limit: float | None = None) -> None:
        """Queue `fn(context, *args)` under `key` (hashable, unique among the calls not yet answered)."""
        self._waiting[key] = (fn, args, limit)
        self._dispatch()

    def next(self) -> tuple[object, Any]:
        """(key, answer) of the first call to finish: its value, or a WorkerTimeout or WorkerDied;
        an exception of `fn` itself is raised here. The freed worker takes the next waiting call
        before the caller hears of this one."""
        self._dispatch()
        if self._answered:
            return self._answered.pop(0)
        deadline = min(d for _, d, _ in self._running.values())
        ready = wait([self.processes[i].connection for i in self._running],
                     timeout=None if deadline == math.inf else max(0.0, deadline - time.monotonic()))
        slot = (next(i for i in self._running if self.processes[i].connection in ready) if ready
                else min(self._running, key=lambda i: self._running[i][1]))
        key, _, limit = self._running.pop(slot)
        try:
            if not ready:
                self.processes[slot].stop()
                return key, WorkerTimeout(timed_out(limit))
            return key, self.processes[slot].answer()
        except WorkerDied as exc:
            return key, exc
        finally:
            self._dispatch()

    def close(self) -> None:
        for process in self.processes:
            process.close()

    def _dispatch(self) -> None:
        free = [i for i in range(len(self.processes)) if i not in self._running]
        if self._waiting:
            for i in free:
                self.processes[i].launch()  # every free worker at once: they build their contexts side by side
        for i in free:
            if not self._waiting:
                break
            key = next(iter(self._waiting))
            fn, args, limit = self._waiting.pop(key)
            try:
                self.processes[i].send(fn, *args)  # the deadline runs from here: building the context is not timed
            except WorkerDied as exc:  # it died building its context: the call's answer
                self._answered.append((key, exc))
                continue
            self._running[i] = (key, math.inf if limit is None else time.monotonic() + limit, limit)


class ProcessWorker:
    """One child process holding `setup()`'s context: `send(fn, *args)` runs `fn(context, *args)` there,
    `answer()` waits for what it returned."""

    def __init__(self, setup: Callable[[], Any], threads: int | None = None):
        self.setup, self.threads = setup, threads
        self._process = self._conn = None
        self._ready = False  # the child has built its context

    def launch(self) -> None:
        """Start the child if none is running, without waiting for it to build its context (several
        workers launched one after another build theirs at once)."""
        if self._process is not None and self._process.is_alive():
            return
        if self._process is not None:  # it ended on its own since the last call
            self.stop()
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child, self.setup, self.threads), daemon=True)
        self._process.start()
        child.close()
        self._ready = False

    def send(self, fn: Callable, *args) -> None:
        """Start `fn(context, *args)` in the child, once its context is built; `answer` waits for it."""
        self._start()
        self._conn.send((fn, args))

    def answer(self):
        """The answer to the call `send` started: its value, or its exception raised here; WorkerDied if
        the child ended without one."""
        ok, value = self._receive()
        if not ok:
            raise value
        return value

    @property
    def connection(self):
        """The pipe an answer arrives on (for `multiprocessing.connection.wait`); None before a launch."""
        return self._conn

    def close(self) -> None:
        if self._process is not None:
            try:
                self._conn.send(None)
                self._process.join(timeout=10)
            except (OSError, EOFError):
                pass
            self.stop()

    # --- the child -----------------------------------------------------------------------------------

    def _start(self) -> None:
        self.launch()
        if not self._ready:
            ok, value = self._receive()  # the context is built: loading models is not timed
            if not ok:
                self.stop()
                raise value
            self._ready = True

    def _receive(self) -> tuple[bool, Any]:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            self.stop()
            raise WorkerDied(f"its worker process ended without answering (exit code {code})") from None

    def stop(self) -> None:
        """Kill the child, if any (a call past its limit); the next call starts a fresh one."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join()
            self._conn.close()
        self._process = self._conn = None


def timed_out(limit: float) -> str:
    return (f"it took longer than {limit:g} s (search.timeout); its worker process was stopped and a fresh one "
            "takes the next candidate")


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
    """The exception itself if it makes the trip (pickled here, unpickled in the parent: an exception
    whose __init__ takes other arguments than its args pickles but does not unpickle), else its text in
    an EvogmError."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
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
