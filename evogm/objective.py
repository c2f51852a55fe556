"""The objective: a coefficient vector x becomes a scored Result.

An evaluation is a record: failures are data (loss = inf and the error text), never exceptions
that stop a search.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Sequence

import numpy as np

from evogm.adaptive import ChunkedScorer, Cutoff
from evogm.runlog import Result, flip
from evogm.scoring import MULTI_TASK, fitness, score, scored_tasks

log = logging.getLogger(__name__)


class Objective:
    """x → Result: merge x into the resident model, score the target's tasks on dev, one loss.

    `merger(coefficients)` writes θ₀ + Σ λτ into the model in place and returns it. The target is
    `MULTI_TASK` (loss = −weighted mean of every task's primary score) or one task's name (loss =
    −that task's primary score; only that task is run). Any exception while merging or scoring
    (out of memory, non-finite logits, a user function's error, its SystemExit) becomes a Result
    with loss = inf and the error's text. A time limit is the executor's (`evogm.worker`): only a
    process can stop an evaluation that does not want to stop.

    The search sees the dev split only: there is no other split here. Test scores are made once,
    after the search, by the final stage and `evogm eval`, with `evogm.scoring` directly.

    >>> # objective = Objective(merger, tokenizer, load_tasks(specs))
    >>> # result = objective(np.array([0.5, 0.5]))   # Result(loss=-0.61, metrics={"add/accuracy": 0.61, ...})
    """

    def __init__(self, merger: Callable, tokenizer, tasks: Sequence, *, target: str = MULTI_TASK,
                 adaptive: dict | None = None):
        self.merger, self.tokenizer, self.target = merger, tokenizer, target
        self.scored = scored_tasks(tasks, target)
        self.chunked = ChunkedScorer(self.scored, target, **adaptive) if adaptive else None

    @property
    def split(self) -> str:
        return "dev"

    def __call__(self, x, threshold: Cutoff | None = None) -> Result:
        """The Result of candidate x; with adaptive evaluation and a `threshold` (the kept set's cut-off,
        `evogm.adaptive.Cutoff`), scoring may stop early and the Result is partial."""
        start = time.perf_counter()
        x = np.asarray(x, dtype=np.float64)
        items, partial, outcomes = {}, False, {}
        try:
            model = self.merger(x)
            metrics, items, partial, outcomes = self._score(model, threshold)
            value = fitness(metrics, self.scored, self.target)
            if not math.isfinite(value):
                raise FloatingPointError(f"fitness is {value}")
            loss, error = flip(value), None
        except (Exception, SystemExit) as exc:  # noqa: BLE001 — inside a search a failure is data
            metrics, loss, error, partial, outcomes = {}, math.inf, _describe(exc), False, {}
        return Result(tuple(x.ravel().tolist()), loss, metrics,
                      time.perf_counter() - start, error, items, partial, outcomes)

    def _score(self, model, threshold: Cutoff | None) -> tuple[dict, dict, bool, dict]:
        if self.chunked is None:
            return score(model, self.tokenizer, self.scored, self.split), {}, False, {}
        return self.chunked(model, self.tokenizer, threshold)


def _describe(exc: BaseException) -> str:
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
