"""Executors: parallelism is a map from candidate rows to Results.

An executor is built from a zero-argument factory that makes the objective (so that a distributed
executor can build one objective per worker, next to its own resident model) and reports each
Result as soon as it exists through `on_result(row, result)` — the run logs it there, durably —
whatever order the rows finish in. `map` returns the Results in row order. A `threshold` given to
`map` (adaptive evaluation's cut-off, `evogm.adaptive`) is passed to the objective with every row.

>>> from evogm.runlog import Result
>>> square = lambda x: Result(coefficients=tuple(x), loss=float((x ** 2).sum()))
>>> import numpy as np
>>> [r.loss for r in LocalExecutor(lambda: square).map(np.array([[1.0], [2.0]]))]
[1.0, 4.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from evogm.errors import EvogmError
from evogm.runlog import Result
from evogm.worker import WorkerDied, WorkerPool, WorkerTimeout, evaluate, map_by_submitting
from evogm.ray_executor import RayExecutor  # imports ray only when one is built

if TYPE_CHECKING:
    from evogm.adaptive import Cutoff

OnResult = Callable[[int, Result], None]
ObjectiveFactory = Callable[[], Callable[[np.ndarray], Result]]


class Executor(Protocol):
    workers: int  # candidates it evaluates at once; more than 1 makes an asynchronous search possible

    def map(self, xs: np.ndarray, on_result: OnResult | None = None,
            threshold: "Cutoff | None" = None) -> list[Result]: ...

    def submit(self, key, x: np.ndarray, threshold: "Cutoff | None" = None) -> None: ...  # one candidate

    def next(self) -> tuple[object, Result]: ...  # (key, Result) of the first submitted one to finish

    def close(self) -> None: ...


class LocalExecutor:
    """Evaluates candidates on this machine. One worker (the default): one after another on one
    resident model in this process. Several `workers`, or a time limit (`search.timeout`): in that
    many worker processes (`evogm.worker`), each holding its own model and an equal share of this
    process's CPU threads, a candidate going to the first free one; a worker past the limit is stopped
    and replaced. On a CPU small models evaluate faster as several single-threaded workers than as
    one worker on every thread; several GPUs want one Ray worker each (`executor.kind: ray`)."""

    def __init__(self, make_objective: ObjectiveFactory, *, timeout: float | None = None, workers: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise EvogmError(f"executor.workers is {workers!r}", "the local executor runs a whole number of worker "
                             "processes, at least 1", "set executor.workers to 1, 2, …")
        self._make_objective, self._objective, self.timeout, self.workers = make_objective, None, timeout, workers
        self._queued: dict = {}  # submitted, not yet answered: key → (candidate, threshold), first first
        self._pool = None
        if timeout is not None or workers > 1:
            self._pool = WorkerPool(make_objective, workers)

    @property
    def pool(self) -> WorkerPool | None:
        """The worker processes (None: candidates are evaluated in this process); the run's final
        stage scores and exports on them too (`evogm.final`)."""
        return self._pool

    @property
    def objective(self):
        if self._objective is None:
            self._objective = self._make_objective()
        return self._objective

    def map(self, xs: np.ndarray, on_result: OnResult | None = None, threshold: "Cutoff | None" = None) -> list[Result]:
        """Results in row order; `threshold` (adaptive evaluation's cut-off) goes to the objective when set."""
        xs = np.asarray(xs, dtype=np.float64)
        if self._pool is not None:
            return map_by_submitting(self, xs, on_result, threshold)
        results = []
        for row, x in enumerate(xs):
            result = evaluate(self.objective, x, threshold)
            if on_result is not None:
                on_result(row, result)
            results.append(result)
        return results

    def submit(self, key, x: np.ndarray, threshold: "Cutoff | None" = None) -> None:
        self._queued[key] = (np.asarray(x, dtype=np.float64), threshold)
        if self._pool is not None:
            self._pool.submit(key, evaluate, *self._queued[key], limit=self.timeout)

    def next(self) -> tuple[object, Result]:
        """The first submitted candidate to finish (in this process: the first submitted, evaluated now)."""
        if self._pool is None:
            key = next(iter(self._queued))
            return key, evaluate(self.objective, *self._queued.pop(key))
        key, answer = self._pool.next()
        x, _ = self._queued.pop(key)
        if isinstance(answer, WorkerTimeout):
            return key, Result.failed(x, f"TimeoutError: {answer}", seconds=self.timeout)
        if isinstance(answer, WorkerDied):
            return key, Result.failed(x, f"WorkerDied: {answer}")
        return key, answer

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


# kind → executor class; plain dict, so a new executor is one entry (RayExecutor: next to LocalExecutor,
# importing ray inside its constructor so that the core never needs ray).
EXECUTORS: dict[str, type] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(kind: str, make_objective: ObjectiveFactory, *, timeout: float | None = None,
                  **options) -> Executor:
    """The executor of `kind`, built with its options (the config's executor.options) and the time
    limit per evaluation (`search.timeout`)."""
    try:
        return EXECUTORS[kind](make_objective, timeout=timeout, **options)
    except TypeError as exc:
        raise EvogmError(f"executor.options do not fit executor {kind!r}", str(exc), "check executor.options") from None
