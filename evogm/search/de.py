"""Differential evolution, DE/rand/1/bin: the classic hand-crafted operator set.

>>> import numpy as np
>>> opt = DE(4, popsize=6, seed=0)
>>> xs = opt.ask(); opt.tell(xs, np.sum((xs - 0.2) ** 2, axis=1))
>>> trials = opt.ask(); trials.shape, bool(np.all(np.abs(trials) <= 1))
((6, 4), True)

Per generation, for every target xᵢ: mutant v = x_r1 + F·(x_r2 − x_r3) with r1, r2, r3 distinct
random members other than i; binomial crossover takes each coordinate from v with probability CR
(and at least one, j_rand); coordinates that leave the box are redrawn uniformly inside it (as
scipy's differential_evolution does). A trial replaces its target if its loss is not worse.
A failed trial (inf) never replaces a finite target. Defaults F = 0.5, CR = 0.9 (Storn & Price).
Populations smaller than four draw r1, r2, r3 with repetition (a degenerate but working DE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evogm.search.base import (POPSIZE, Bounds, check_bounds, check_choice, check_fraction, check_positive,
                               initial_population)
from evogm.search.rounds import Rounds, round_share


class DERound:
    """One DE population of ``popsize`` members in [lo, hi]^k."""

    def __init__(self, dim: int, *, popsize: int, seed: int, mutation: float, crossover: float, init: str,
                 bounds: Bounds, groups: int = 1):
        self.rng = np.random.default_rng(seed)
        self.mutation, self.crossover, self.bounds = mutation, crossover, bounds
        self.population = initial_population(init, dim, popsize, self.rng, bounds, groups)  # (P, k)
        self.losses = None  # (P,) once the initial population is told

    def ask(self) -> np.ndarray:
        if self.losses is None:
            return self.population
        return np.array([self._trial(i) for i in range(len(self.population))])

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        if self.losses is None:
            self.losses = losses.copy()
            return
        replace = losses <= self.losses
        self.population[replace], self.losses[replace] = xs[replace], losses[replace]

    def _trial(self, i: int) -> np.ndarray:
        pop, (lo, hi) = self.population, self.bounds
        others = np.delete(np.arange(len(pop)), i) if len(pop) > 1 else np.array([i])
        r1, r2, r3 = self.rng.choice(others, 3, replace=len(others) < 3)
        mutant = pop[r1] + self.mutation * (pop[r2] - pop[r3])
        take = self.rng.random(pop.shape[1]) < self.crossover
        take[self.rng.integers(pop.shape[1])] = True
        trial = np.where(take, mutant, pop[i])
        outside = (trial < lo) | (trial > hi)
        trial[outside] = self.rng.uniform(lo, hi, size=int(outside.sum()))
        return trial


@dataclass(frozen=True)
class DEOptions:
    """DE's options: F = 0.5, CR = 0.9 (Storn & Price); ``init`` as for PSO."""

    budget: int = 160
    rounds: int = 1
    top_k: int | None = None
    mutation: float = 0.5  # F
    crossover: float = 0.9  # CR
    init: str = "hybrid"  # hybrid | random
    bounds: Bounds = (-1.0, 1.0)
    groups: int = 1

    def __post_init__(self):
        check_choice("init", self.init, ("hybrid", "random"))
        check_fraction(crossover=self.crossover)
        check_bounds(self.bounds)


class DE(Rounds):
    """Differential evolution over the coefficients; ``options`` are the fields of ``DEOptions``."""

    Options = DEOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        check_positive(popsize=popsize)
        o = self.options = DEOptions(**options)
        bounds = check_bounds(o.bounds)
        start_round = lambda k, s: DERound(k, popsize=popsize, seed=s, mutation=o.mutation, crossover=o.crossover,
                                           init=o.init, bounds=bounds, groups=self.round_groups)
        super().__init__(dim, seed=seed, rounds=o.rounds, top_k=o.top_k, groups=o.groups,
                         round_budget=round_share(o.budget, o.rounds, popsize), start_round=start_round)
