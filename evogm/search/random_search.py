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

from dataclasses import dataclass

import numpy as np

from evogm.search.base import POPSIZE, Bounds, check_bounds, check_positive
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

    def ask_one(self, pending: np.ndarray) -> np.ndarray:
        return self.rng.uniform(*self.bounds, size=self.dim)

    def tell_one(self, row: np.ndarray, loss: float) -> None:
        pass


@dataclass(frozen=True)
class RandomOptions:
    """Random search's options; ``budget`` is only the planned number of evaluations (and how rounds
    split it): asking past it keeps sampling."""

    budget: int = 160
    rounds: int = 1
    top_k: int | None = None
    bounds: Bounds = (-1.0, 1.0)

    def __post_init__(self):
        check_bounds(self.bounds)


class RandomSearch(Rounds):
    """Uniform random search; ``options`` are the fields of ``RandomOptions``."""

    Options = RandomOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        check_positive(popsize=popsize)
        o = self.options = RandomOptions(**options)
        bounds = check_bounds(o.bounds)
        super().__init__(dim, seed=seed, rounds=o.rounds, top_k=o.top_k,
                         round_budget=round_share(o.budget, o.rounds, popsize),
                         start_round=lambda k, s: RandomRound(k, popsize=popsize, seed=s, bounds=bounds))
