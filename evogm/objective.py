"""The objective: a coefficient vector x becomes a scored Result.

An evaluation is a record: failures are data (loss = inf and the error text), never exceptions
that stop a search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
