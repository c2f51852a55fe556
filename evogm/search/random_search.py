"""Random search: uniform samples in the box, the floor every optimizer must beat.

>>> import numpy as np
>>> opt = RandomSearch(4, popsize=5, seed=0)
>>> xs = opt.ask(); xs.shape, bool(np.all(np.abs(xs) <= 1))
((5, 4), True)
>>> opt.tell(xs, np.sum(xs**2, axis=1))

With ``rounds > 1`` it samples uniformly in round coordinates, i.e. random combinations of the
previous round's elites (the same rounds wrapper as every optimizer).
"""

from __future__ import annotations

import numpy as np

from evogm.search.base import Bounds, check_bounds, check_positive
from evogm.search.rounds import Rounds, round_share


class RandomRound:
    """One round of uniform sampling in [lo, hi]^k, ``popsize`` rows per ask."""

    def __init__(self, dim: int, *, popsize: int, seed: int, bounds: Bounds):
        self.dim, self.popsize, self.bounds = dim, popsize, bounds
        self.rng = np.random.default_rng(seed)

    def ask(self) -> np.ndarray:
        return self.rng.uniform(*self.bounds, size=(self.popsize, self.dim))

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        pass  # memoryless


class RandomSearch(Rounds):
    """Uniform random search; ``budget`` is only the planned number of evaluations (and how
    rounds split it). Asking past it keeps sampling."""

    def __init__(self, dim: int, *, popsize: int = 20, seed: int = 42, budget: int = 160,
                 rounds: int = 1, top_k: int | None = None, bounds: Bounds = (-1.0, 1.0)):
        check_positive(popsize=popsize)
        bounds = check_bounds(bounds)
        super().__init__(dim, seed=seed, rounds=rounds, top_k=top_k,
                         round_budget=round_share(budget, rounds, popsize),
                         start_round=lambda k, s: RandomRound(k, popsize=popsize, seed=s, bounds=bounds))
