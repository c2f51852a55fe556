"""The objective: a coefficient vector x becomes a scored Result.

An evaluation is a record: failures are data (loss = inf and the error text), never exceptions
that stop a search.
"""

from __future__ import annotations

import difflib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from evogm.errors import EvogmError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """One evaluation of one candidate.

    >>> r = Result(x=(0.5, 0.5), coefficients=(0.5, 0.5), loss=-0.7, metrics={"add/accuracy": 0.7}, seconds=0.4)
    >>> r.ok, r.fitness
    (True, 0.7)
    """

    x: tuple[float, ...]  # as asked by the optimizer
    coefficients: tuple[float, ...]  # what was merged (flattened experts × groups)
    loss: float  # −(weighted mean of task scores); inf if it failed
    metrics: dict[str, float] = field(default_factory=dict)  # "task/metric" → value, higher is better
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.loss)

    @property
    def fitness(self) -> float:
        return -self.loss


class Objective:
    """x → Result: merge x into the resident model, score every task on dev, one loss.

    `merger(coefficients)` writes θ₀ + Σ λτ into the model in place and returns it. In multi-task
    mode the loss is −(weighted mean of the tasks' primary scores); with `mode="<task name>"` it
    is −(that task's primary score) and only that task is run. Any exception while merging or
    scoring (out of memory, non-finite logits, a user function's error) becomes a Result with
    loss = inf and the error's text.

    The search sees the dev split only: the constructor refuses any other. Test scores come from
    `Objective.for_final_report(...)`, which the runner's final report and `evogm eval` use.

    >>> # objective = Objective(merger, tokenizer, load_tasks(specs))
    >>> # result = objective(np.array([0.5, 0.5]))   # Result(loss=-0.61, metrics={"add/accuracy": 0.61, ...})
    """

    def __init__(self, merger: Callable, tokenizer, tasks: Sequence, *, split: str = "dev",
                 mode: str = "multi_task", space: Callable[[np.ndarray], np.ndarray] | None = None):
        if split != "dev":
            raise EvogmError(f"an Objective for the search scores the dev split, not {split!r}",
                             "test scores must never steer the search",
                             "use Objective.for_final_report(...) for the final test report, "
                             "or `evogm eval --split test`")
        self.merger, self.tokenizer, self.space = merger, tokenizer, space
        self.scored = _select(list(tasks), mode)
        self.mode, self._split = mode, split

    @classmethod
    def for_final_report(cls, merger: Callable, tokenizer, tasks: Sequence, *, mode: str = "multi_task",
                         space: Callable[[np.ndarray], np.ndarray] | None = None) -> "Objective":
        """The one way to score the test split: for the report after the search, never inside it."""
        objective = cls(merger, tokenizer, tasks, mode=mode, space=space)
        objective._split = "test"
        return objective

    @property
    def split(self) -> str:
        return self._split

    def __call__(self, x) -> Result:
        start = time.perf_counter()
        x = np.asarray(x, dtype=np.float64)
        coefficients = x
        try:
            coefficients = np.asarray(self.space(x) if self.space else x, dtype=np.float64)
            model = self.merger(coefficients)
            coefficients = _as_merged(self.merger, coefficients)
            metrics = self.score(model)
            fitness = self.fitness(metrics)
            if not math.isfinite(fitness):
                raise FloatingPointError(f"fitness is {fitness}")
            loss, error = -fitness, None
        except Exception as exc:  # noqa: BLE001 — inside a search a failure is data
            metrics, loss, error = {}, math.inf, _describe(exc)
        return Result(tuple(x.ravel().tolist()), tuple(coefficients.ravel().tolist()), loss, metrics,
                      time.perf_counter() - start, error)

    def score(self, model) -> dict[str, float]:
        """{"task/metric": value} for the scored tasks on this objective's split."""
        model.eval()  # dropout off, whatever mode the merge left it in
        metrics: dict[str, float] = {}
        for task in self.scored:
            scores = task.evaluate(model, self.tokenizer, self._split)
            metrics.update({f"{task.name}/{key}": float(value) for key, value in scores.items()})
        return metrics

    def fitness(self, metrics: dict[str, float]) -> float:
        """Weighted mean of the scored tasks' primary metrics (single-task mode: that task's, whatever its weight)."""
        weights = np.array([task.weight if self.mode == "multi_task" else 1.0 for task in self.scored])
        scores = np.array([metrics[f"{task.name}/{task.primary}"] for task in self.scored], dtype=np.float64)
        return float(weights @ scores / weights.sum())


def _select(tasks: list, mode: str) -> list:
    if not tasks:
        raise EvogmError("no tasks to score", "the objective needs at least one task",
                         "list tasks in the config (tasks: [...])")
    if mode == "multi_task":
        if sum(task.weight for task in tasks) <= 0 or any(task.weight < 0 for task in tasks):
            raise EvogmError("task weights must be ≥ 0 with a positive sum", f"got {[t.weight for t in tasks]}",
                             "fix the weights")
        return tasks
    chosen = [task for task in tasks if task.name == mode]
    if not chosen:
        close = difflib.get_close_matches(mode, [task.name for task in tasks] + ["multi_task"], n=1)
        why = f"did you mean {close[0]!r}?" if close else f"tasks: {[task.name for task in tasks]}"
        raise EvogmError(f"mode {mode!r} is neither multi_task nor a task name", why,
                         "use mode: multi_task or one task's name")
    return chosen


def _as_merged(merger, coefficients: np.ndarray) -> np.ndarray:
    """What the merge used, (experts × groups) when the merger says (one λ per expert is spread over groups)."""
    expand = getattr(merger, "coefficients", None)
    return np.asarray(expand(coefficients)) if callable(expand) else coefficients


def _describe(exc: Exception) -> str:
    log.debug("evaluation failed", exc_info=exc)
    if _is_out_of_memory(exc):
        _release_device_memory()
    return f"{type(exc).__name__}: {exc}"


def _is_out_of_memory(exc: Exception) -> bool:
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc)


def _release_device_memory() -> None:
    # Cached blocks from the failed batch would make the next candidate fail too.
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
