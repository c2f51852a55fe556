"""RayExecutor: candidates evaluated in parallel by Ray actors, one resident model per worker.

Each worker is a Ray actor that builds the objective once, from the factory's paths, on its own
device (base model, expert task vectors or LoRA factors, tokenized tasks), then evaluates every
candidate it is sent by merging in place. Only a candidate's coefficients go out and only its
Result comes back: no model weights travel through Ray's object store.

Dispatch: a free worker gets the next waiting candidate at once (one call in flight per worker).
`map` evaluates a generation: each Result is reported through `on_result` as it arrives, and they are
returned in row order, so a search on Ray gives the same losses and the same best as the local
executor. `submit` and `next` evaluate candidates one at a time, for the asynchronous search
(`evogm.search.loop`): a candidate is submitted as soon as a worker frees up, and `next` answers
whichever finishes first. A worker that dies
(killed, out of memory) is replaced, and its candidate tried once more on whichever worker is free
next; a candidate whose worker died twice is recorded as a failed Result and the search goes on.
A worker that dies while starting twice stops the run (its models do not load there), unless a node
was lost meanwhile: Ray can place a replacement on a node that has just died before it knows.
Workers are spread over the cluster's nodes (Ray's SPREAD strategy), and the executor counts the
evaluations answered on each node (`evaluations`), so a lost node shows in the counts and the warning.

`address=None` starts a local Ray instance; `"auto"` (or `"HOST:PORT"`) joins a running cluster.
Ray is imported here only, on first use: the core never needs it (`pip install evogm[ray]`).

>>> from evogm.workspace import objective_factory
>>> executor = RayExecutor(objective_factory(cfg, "multi_task"), workers=2)          # doctest: +SKIP
>>> results = executor.map(xs, on_result=lambda row, r: print(row, r.loss))          # doctest: +SKIP
>>> executor.close()                                                                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from collections import Counter, deque
from typing import TYPE_CHECKING, Callable

import numpy as np

from evogm.errors import EvogmError, EvogmWarning
from evogm.worker import evaluate, map_by_submitting
from evogm.runlog import Result

if TYPE_CHECKING:
    from evogm.adaptive import Cutoff

PATIENCE_S = 120  # a wait this long with no answer is worth a line in the log
RETRIES = 1  # a candidate whose worker died is tried once more, elsewhere; a second death records it as failed
QUIET = {"RAY_USAGE_STATS_ENABLED": "0"}  # no usage reporting: nothing leaves the machine

log = logging.getLogger(__name__)


class Worker:
    """The actor: one objective (resident model) per process, built once, called per candidate."""

    def __init__(self, make_objective: Callable, threads: int):
        import torch

        torch.set_num_threads(threads)  # workers sharing a node must not fight over its cores
        self._make_objective, self._objective = make_objective, None

    def start(self) -> tuple[int, str]:
        """Build the objective (load models, tokenize tasks); its errors reach the driver as they are.
        Returns where it runs: (process id, Ray node id)."""
        import ray

        self._objective = self._make_objective()
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def evaluate(self, x: np.ndarray, threshold: "Cutoff | None" = None) -> Result:
        return evaluate(self._objective, x, threshold)


class RayExecutor:
    """Evaluates candidates on `workers` Ray actors, each with `cpus_per_worker` CPUs (its torch
    threads) and `gpus_per_worker` GPUs (None: 1 when the cluster has GPUs, else 0).
    `workers=None`: as many as the cluster's CPUs (or GPUs) hold."""

    def __init__(self, make_objective: Callable, *, timeout: float | None = None, address: str | None = None,
                 workers: int | None = None, gpus_per_worker: float | None = None, cpus_per_worker: float = 1):
        self._ray = ray = import_ray()
        connect(ray, address)
        self.gpus_per_worker = default_gpus(ray, gpus_per_worker)
        self.cpus_per_worker = cpus_per_worker
        self.workers = worker_count(ray, workers, cpus_per_worker, self.gpus_per_worker)
        threads = max(1, int(cpus_per_worker))
        actor = ray.remote(Worker).options(num_cpus=cpus_per_worker, num_gpus=self.gpus_per_worker,
                                           scheduling_strategy="SPREAD")  # one node lost costs the fewest workers
        self._new_actor = lambda: actor.remote(make_objective, threads)
        self.restarts = 0  # workers replaced after dying
        self.pids: dict[int, int] = {}  # slot → process id of its live worker (once started)
        self.nodes: dict[int, str] = {}  # slot → Ray node id of its live worker (once started)
        self.evaluations: Counter = Counter()  # Ray node id → candidates evaluated there (answers received)
        self._actors: dict[int, object] = {}
        self._calls: dict[object, tuple[int, int | None]] = {}  # in flight: ref → (slot, row; None: a start)
        self.timeout = timeout  # seconds per evaluation: a worker past it is stopped and replaced
        self._deadlines: dict[object, float] = {}  # evaluation in flight → when it times out
        self._expired: set = set()  # evaluations found past their deadline
        self._start_deaths: Counter = Counter()
        self._alive_at_launch: dict[int, set[str]] = {}  # slot → the nodes alive when its worker was launched
        self._idle: deque[int] = deque()
        self._queued: dict = {}  # key → (candidate, threshold): submitted, not yet answered
        self._waiting: deque = deque()  # keys submitted and waiting for a free worker, first first
        self._deaths_of: Counter = Counter()  # key → its workers' deaths so far
        errors = ray.exceptions  # how Ray reports a worker process gone (killed, out of memory, node lost)
        self._deaths = (errors.RayActorError, errors.WorkerCrashedError, errors.OutOfMemoryError)
        alive = alive_nodes(ray)
        for slot in range(self.workers):
            self._launch(slot, alive)

    def map(self, xs: np.ndarray, on_result: Callable[[int, Result], None] | None = None,
            threshold: "Cutoff | None" = None) -> list[Result]:
        """Every row evaluated once (a row whose worker died: twice at most); Results in row order.
        `threshold`: adaptive evaluation's cut-off, sent with every row."""
        return map_by_submitting(self, np.asarray(xs, dtype=np.float64), on_result, threshold)

    def submit(self, key, x: np.ndarray, threshold: "Cutoff | None" = None) -> None:
        """Queue one candidate under `key` (hashable, not None, unique among those in flight); it goes to
        the first free worker. `next` answers it."""
        self._queued[key] = (np.asarray(x, dtype=np.float64), threshold)
        self._waiting.append(key)
        self._dispatch()

    def next(self) -> tuple[object, Result]:
        """(key, Result) of the first submitted candidate to finish; a worker's death retries it once
        on the next free worker, a timeout or a second death is a failed Result."""
        while True:
            self._dispatch()
            key, outcome = self._next()
            if key is None:
                continue  # a worker started (or was replaced): it is idle now
            x = self._queued[key][0]
            if isinstance(outcome, TimedOut):
                outcome = failed(x, f"TimeoutError: {outcome}", seconds=self.timeout)
            elif isinstance(outcome, WorkerDied):
                self._deaths_of[key] += 1
                if self._deaths_of[key] <= RETRIES:
                    self._waiting.appendleft(key)  # first in line for the next free worker
                    continue
                outcome = failed(x, f"its Ray worker died on each of {RETRIES + 1} tries: {outcome}")
            elif isinstance(outcome, Exception):
                outcome = failed(x, first_line(outcome))
            del self._queued[key]
            self._deaths_of.pop(key, None)
            self._dispatch()  # the freed worker takes the next waiting candidate before the caller hears of this one
            return key, outcome

    def ready(self) -> dict[int, int]:
        """Wait until every worker has built its objective; {slot: process id}. (`map` need not wait:
        it sends candidates to workers as they become ready.)"""
        while any(row is None for _, row in self._calls.values()):
            self._next()
        return dict(self.pids)

    def close(self) -> None:
        """Stop the workers (their models are freed); Ray itself stays up for the next executor."""
        for actor in self._actors.values():
            self._kill(actor)
        self._actors.clear()
        self._calls.clear()
        self._deadlines.clear()
        self._idle.clear()
        self._queued.clear()
        self._waiting.clear()

    # --- dispatch ---------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while self._waiting and self._idle:
            slot, key = self._idle.popleft(), self._waiting.popleft()
            ref = self._actors[slot].evaluate.remote(*self._queued[key])
            self._calls[ref] = (slot, key)
            if self.timeout is not None:
                self._deadlines[ref] = time.monotonic() + self.timeout

    def _next(self) -> tuple[int | None, object]:
        """Wait for the first call to finish: (row, its Result or what went wrong); row None: a start.
        An evaluation past its deadline is answered TimedOut, its worker stopped and replaced."""
        ref = self._wait()
        slot, row = self._calls.pop(ref)
        if self._deadlines.pop(ref, None) is not None and ref in self._expired:
            self._expired.discard(ref)
            self._replace(slot, row, None)
            return row, TimedOut(f"it took longer than {self.timeout:g} s (search.timeout); its Ray worker was "
                                 "stopped and a fresh one replaces it")
        try:
            value = self._ray.get(ref)
        except self._deaths as exc:
            self._replace(slot, row, exc)
            return row, WorkerDied(first_line(exc))
        except self._ray.exceptions.RayTaskError as exc:  # raised outside the objective (which makes its own errors data)
            if row is None:  # the models or the tasks cannot load: the error a local run would raise
                raise (exc.cause or exc) from None
            value = exc
        if row is None:
            (self.pids[slot], self.nodes[slot]), self._start_deaths[slot] = value, 0
        else:
            self.evaluations[self.nodes[slot]] += 1
        self._idle.append(slot)
        return row, value

    def _wait(self):
        """The first call to finish, or the first evaluation past its deadline (marked expired)."""
        patience = time.monotonic() + PATIENCE_S
        while True:
            first = min(self._deadlines.values(), default=math.inf)
            limit = max(0.0, min(first, patience) - time.monotonic())
            done, _ = self._ray.wait(list(self._calls), num_returns=1, timeout=limit)
            if done:
                return done[0]
            now = time.monotonic()
            late = [ref for ref, deadline in self._deadlines.items() if deadline <= now]
            if late:
                self._expired.add(late[0])
                return late[0]
            if now >= patience:
                self._say_why_nothing_answers()
                patience = now + PATIENCE_S

    def _say_why_nothing_answers(self) -> None:
        """A worker that waits for CPUs or GPUs held by other Ray work would wait silently: say so."""
        starting = sum(row is None for _, row in self._calls.values())
        if starting:
            free = self._ray.available_resources()
            log.warning("%d of %d Ray workers not started after %d s (free in the cluster: %g CPUs, %g GPUs; each "
                        "needs %g CPUs, %g GPUs): loading models, or waiting for other Ray work to free resources",
                        starting, self.workers, PATIENCE_S, free.get("CPU", 0), free.get("GPU", 0),
                        self.cpus_per_worker, self.gpus_per_worker)

    # --- workers ------------------------------------------------------------------------------------

    def _launch(self, slot: int, alive: set[str]) -> None:
        self._alive_at_launch[slot] = alive
        self._actors[slot] = actor = self._new_actor()
        self._calls[actor.start.remote()] = (slot, None)

    def _replace(self, slot: int, row: int | None, exc: Exception | None) -> None:
        """A dead worker's slot gets a fresh worker; one that dies while starting twice stops the run,
        unless a node was lost since it was launched (the node's death, not the worker's). `exc`
        None: the worker was stopped here, past its time limit."""
        self._kill(self._actors[slot])
        self.pids.pop(slot, None)
        node = self.nodes.pop(slot, None)
        alive = alive_nodes(self._ray)
        if exc is None:
            self.restarts += 1
            self._launch(slot, alive)
            return
        node_lost = bool(self._alive_at_launch[slot] - alive)
        if row is None and not node_lost:
            self._start_deaths[slot] += 1
            if self._start_deaths[slot] > RETRIES:
                raise EvogmError("a Ray worker died twice while starting", first_line(exc),
                                 "check that every node has evogm installed and the memory for the base and the "
                                 "experts (or lower executor.workers); worker logs: /tmp/ray/session_latest/logs")
        self.restarts += 1
        retried = "; its candidate goes to the next free worker" if row is not None else (
            " while starting, as a node was lost" if node_lost else " while starting")
        where = f" on node {node[:12]}" if node else ""
        warnings.warn(f"a Ray worker died{where} ({first_line(exc)}){retried}; a fresh worker replaces it "
                      f"({self.restarts} replaced so far)", EvogmWarning, stacklevel=2)
        self._launch(slot, alive)

    def _kill(self, actor) -> None:
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 — already gone
            pass


# --- Ray itself -------------------------------------------------------------------------------------


def import_ray():
    for key, value in QUIET.items():
        os.environ.setdefault(key, value)
    try:
        import ray
    except ImportError:
        raise EvogmError("executor.kind is 'ray' but Ray is not installed", "Ray is an optional extra of evogm",
                         "pip install 'evogm[ray]' (or pip install 'ray>=2.40'), or use executor.kind=local") from None
    return ray


def connect(ray, address: str | None) -> None:
    """Join the cluster at `address` ("auto", "HOST:PORT"), or start a local instance (None)."""
    if ray.is_initialized():
        return  # this process already talks to a Ray instance: reuse it
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise EvogmError(f"no Ray cluster at executor.address={address!r}", first_line(exc),
                         "start one (`ray start --head` on one node, `ray start --address=HEAD:6379` on the "
                         "others), or set executor.address: null to start a local Ray instance") from None


def alive_nodes(ray) -> set[str]:
    """The ids of the cluster's live nodes, as Ray's control service sees them now."""
    return {node["NodeID"] for node in ray.nodes() if node["Alive"]}


def default_gpus(ray, gpus_per_worker: float | None) -> float:
    if gpus_per_worker is not None:
        return gpus_per_worker
    return 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0


def worker_count(ray, workers: int | None, cpus: float, gpus: float) -> int:
    """The number of workers, checked against the cluster's total CPUs and GPUs (else nothing would start)."""
    total = ray.cluster_resources()
    have_cpu, have_gpu = total.get("CPU", 0), total.get("GPU", 0)
    limits = [have // need for have, need in ((have_cpu, cpus), (have_gpu, gpus)) if need]
    fit = int(min(limits)) if limits else (workers or 1)  # a worker that needs nothing always fits
    n = fit if workers is None else workers
    if n < 1 or n > fit:
        raise EvogmError(f"{n} Ray workers of {cpus:g} CPUs and {gpus:g} GPUs do not fit",
                         f"the Ray cluster has {have_cpu:g} CPUs and {have_gpu:g} GPUs (room for {fit})",
                         "lower executor.workers, cpus_per_worker or gpus_per_worker, or add nodes")
    return n


class WorkerDied(Exception):
    """A call's worker died (killed, out of memory, its node lost) before it answered."""


class TimedOut(Exception):
    """A call ran past the time limit; its worker was stopped."""


failed = Result.failed  # a candidate that could not be evaluated: recorded as a failure, the search goes on


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
