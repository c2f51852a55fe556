"""Particle swarm over the coefficients (PSO-Merging style), with Model Swarms' global-worst term.

>>> import numpy as np
>>> opt = PSO(4, popsize=6, seed=0)
>>> xs = opt.ask(); xs[0].tolist()            # particles start as the hybrid population
[1.0, 0.0, 0.0, 0.0]
>>> opt.tell(xs, np.sum((xs - 0.2) ** 2, axis=1))
>>> opt.ask().shape
(6, 4)

Synchronous update, one generation per ask, per dimension r ~ U(0, 1):

    v ← inertia·v + cognitive·r₁·(personal best − x) + social·r₂·(global best − x)
        − repel·r₃·(global worst − x)
    v ← clip(v, ±max_velocity·(hi − lo));  x ← clip(x + v, lo, hi)

Velocities start at zero (particles first move toward the best one); the defaults are the
constriction-factor constants of Clerc & Kennedy (0.729, 1.49445, 1.49445) and no repulsion
(Model Swarms' global-worst term is ``repel > 0``). A failed particle (inf) never becomes a
personal or global best; the global worst is the worst *finite* position seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evogm.search.base import POPSIZE, Bounds, check_bounds, check_choice, check_positive, initial_population
from evogm.search.rounds import Rounds, round_share


class PSORound:
    """One swarm of ``popsize`` particles in [lo, hi]^k."""

    def __init__(self, dim: int, *, popsize: int, seed: int, inertia: float, cognitive: float, social: float,
                 repel: float, max_velocity: float, init: str, bounds: Bounds, groups: int = 1):
        self.rng = np.random.default_rng(seed)
        self.coef = (inertia, cognitive, social, repel)
        self.bounds, self.vmax = bounds, max_velocity * (bounds[1] - bounds[0])
        self.x = initial_population(init, dim, popsize, self.rng, bounds, groups)  # (P, k) positions
        self.v = np.zeros_like(self.x)  # (P, k) velocities
        self.personal, self.personal_loss = self.x.copy(), np.full(popsize, np.inf)
        self.worst, self.worst_loss = None, -np.inf  # worst finite position seen
        self.started = False

    def ask(self) -> np.ndarray:
        if self.started:
            self.v = np.clip(self._velocity(), -self.vmax, self.vmax)
            self.x = np.clip(self.x + self.v, *self.bounds)
        self.started = True
        return self.x

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        better = losses < self.personal_loss
        self.personal[better], self.personal_loss[better] = xs[better], losses[better]
        finite = np.isfinite(losses)
        if finite.any() and losses[finite].max() > self.worst_loss:
            i = np.flatnonzero(finite)[np.argmax(losses[finite])]
            self.worst, self.worst_loss = xs[i].copy(), losses[i]

    def _velocity(self) -> np.ndarray:
        inertia, cognitive, social, repel = self.coef
        best = self.personal[np.argmin(self.personal_loss)]
        r1, r2, r3 = (self.rng.random(self.x.shape) for _ in range(3))
        v = inertia * self.v + cognitive * r1 * (self.personal - self.x) + social * r2 * (best - self.x)
        if repel and self.worst is not None:
            v -= repel * r3 * (self.worst - self.x)
        return v


@dataclass(frozen=True)
class PSOOptions:
    """PSO's options: the constriction-factor constants, no repulsion; ``init="hybrid"`` seeds the
    swarm with the experts (one-hot), the uniform merge and random vectors, as EvoGM's population;
    ``"random"`` is uniform."""

    budget: int = 160
    rounds: int = 1
    top_k: int | None = None
    inertia: float = 0.729
    cognitive: float = 1.49445
    social: float = 1.49445
    repel: float = 0.0  # Model Swarms' global-worst term
    max_velocity: float = 0.5  # of the box's width
    init: str = "hybrid"  # hybrid | random
    bounds: Bounds = (-1.0, 1.0)
    groups: int = 1

    def __post_init__(self):
        check_choice("init", self.init, ("hybrid", "random"))
        check_bounds(self.bounds)


class PSO(Rounds):
    """Particle swarm optimization; ``options`` are the fields of ``PSOOptions``."""

    Options = PSOOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        check_positive(popsize=popsize)
        o = self.options = PSOOptions(**options)
        bounds = check_bounds(o.bounds)
        start_round = lambda k, s: PSORound(k, popsize=popsize, seed=s, inertia=o.inertia, cognitive=o.cognitive,
                                            social=o.social, repel=o.repel, max_velocity=o.max_velocity,
                                            init=o.init, bounds=bounds, groups=self.round_groups)
        super().__init__(dim, seed=seed, rounds=o.rounds, top_k=o.top_k, groups=o.groups,
                         round_budget=round_share(o.budget, o.rounds, popsize), start_round=start_round)
