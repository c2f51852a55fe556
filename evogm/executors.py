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

from typing import Callable, Protocol

import numpy as np

from evogm.errors import EvogmError
from evogm.runlog import Result
from evogm.worker import ProcessWorker, WorkerDied, WorkerTimeout
from evogm.ray_executor import RayExecutor  # imports ray only when one is built

OnResult = Callable[[int, Result], None]
ObjectiveFactory = Callable[[], Callable[[np.ndarray], Result]]


class Executor(Protocol):
    workers: int  # candidates it evaluates at once; more than 1 makes an asynchronous search possible

    def map(self, xs: np.ndarray, on_result: OnResult | None = None,
            threshold: "Cutoff | None" = None) -> list[Result]: ...

    def submit(self, key, x: np.ndarray, threshold: "Cutoff | None" = None) -> None: ...  # one candidate

    def next(self) -> tuple[object, Result]: ...  # (key, Result) of the first submitted one to finish

    def close(self) -> None: ...


def evaluate(objective, x: np.ndarray, threshold: "Cutoff | None" = None) -> Result:
    """`objective(x)`, with adaptive evaluation's cut-off when there is one (what a worker runs)."""
    return objective(x) if threshold is None else objective(x, threshold=threshold)


class LocalExecutor:
    """Evaluates rows one after another on one resident model: in this process, or, with a time
    limit (`search.timeout`), in one worker process that is stopped and replaced when a row runs
    past it (`evogm.worker`)."""

    workers = 1

    def __init__(self, make_objective: ObjectiveFactory, *, timeout: float | None = None):
        self._make_objective, self._objective, self.timeout = make_objective, None, timeout
        self._worker = None
        self._queued: dict = {}  # submitted, not yet evaluated: key → (candidate, threshold), first first
        if timeout is not None:
            import torch

            self._worker = ProcessWorker(make_objective, timeout, threads=torch.get_num_threads())

    @property
    def objective(self):
        if self._objective is None:
            self._objective = self._make_objective()
        return self._objective

    def map(self, xs: np.ndarray, on_result: OnResult | None = None, threshold: "Cutoff | None" = None) -> list[Result]:
        """Results in row order; `threshold` (adaptive evaluation's cut-off) goes to the objective when set."""
        results = []
        for row, x in enumerate(np.asarray(xs, dtype=np.float64)):
            result = self._evaluate(x, threshold)
            if on_result is not None:
                on_result(row, result)
            results.append(result)
        return results

    def submit(self, key, x: np.ndarray, threshold: "Cutoff | None" = None) -> None:
        self._queued[key] = (np.asarray(x, dtype=np.float64), threshold)

    def next(self) -> tuple[object, Result]:
        """The first submitted candidate, evaluated now (one worker: they finish in order)."""
        key = next(iter(self._queued))
        return key, self._evaluate(*self._queued.pop(key))

    def _evaluate(self, x: np.ndarray, threshold) -> Result:
        if self._worker is None:
            return evaluate(self.objective, x, threshold)
        try:
            return self._worker.call(evaluate, x, threshold)
        except WorkerTimeout as exc:
            return Result.failed(x, f"TimeoutError: {exc}", seconds=self.timeout)
        except WorkerDied as exc:
            return Result.failed(x, f"WorkerDied: {exc}")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


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
