"""CMA-ES through pycma (the ``cma`` package), the field's reference implementation.

>>> import numpy as np
>>> opt = CMAES(5, popsize=8, seed=0, sigma0=0.3)
>>> xs = opt.ask(); xs.shape, bool(np.all(np.abs(xs) <= 1))
((8, 5), True)
>>> opt.tell(xs, np.sum(xs**2, axis=1))

pycma handles the box with its own ``BoundTransform`` (asked solutions lie in the box). Its
sampling normally reads numpy's *global* random state (and ``seed`` reseeds it); here pycma's
``randn`` option is given this optimizer's own generator, so runs are reproducible and nothing else
in the process can change them. Failed evaluations are told as one value worse than every finite
loss of the generation (CMA-ES only uses ranks). pycma has no 1-D mode: a one-coefficient round
(e.g. ``top_k=1``) runs a 2-D CMA-ES whose second coordinate is ignored.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from evogm.errors import EvogmError
from evogm.search.base import POPSIZE, Bounds, check_bounds, check_choice, check_positive, failed_as_worst
from evogm.search.rounds import Rounds, round_share


class CMAESRound:
    """One pycma ``CMAEvolutionStrategy`` over [lo, hi]^k, starting at ``x0`` with step ``sigma0``."""

    def __init__(self, dim: int, *, popsize: int, seed: int, sigma0: float, x0: str, bounds: Bounds,
                 groups: int = 1):
        import cma  # imported where it is used: it takes a while

        rng = np.random.default_rng(seed)
        self.dim = dim
        start = np.full(dim, groups / dim) if x0 == "uniform" else np.full(dim, (bounds[0] + bounds[1]) / 2)
        start = np.append(start, start) if dim == 1 else start  # pycma needs two coordinates
        options = {
            "popsize": popsize,
            "bounds": list(bounds),
            "randn": lambda *shape: rng.standard_normal(shape),  # (λ, N) samples from our generator
            "seed": np.nan,  # no global reseeding
            "verbose": -9,
            "verb_log": 0,
            "verb_disp": 0,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycma warns about small dimensions, not our business
            self.es = cma.CMAEvolutionStrategy(start, sigma0, options)

    def ask(self) -> np.ndarray:
        self.asked = np.array(self.es.ask())  # (λ, max(k, 2))
        return self.asked[:, : self.dim]

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "flat fitness" when every candidate failed
            self.es.tell(list(self.asked), failed_as_worst(losses).tolist())


@dataclass(frozen=True)
class CMAESOptions:
    """CMA-ES's options. ``x0="uniform"`` starts at the average merge (1/experts each; in later
    rounds, the average of the elites), ``x0="center"`` at the middle of the box. ``sigma0`` is
    pycma's initial step size in the box's units (about a quarter of its width is the usual advice).
    ``budget`` is the planned number of evaluations; with ``rounds > 1`` each round gets an equal
    share. ``pycma_popsize=True`` uses pycma's own population size for the round's dimension k,
    4 + ⌊3 ln k⌋, instead of P (the library's recommendation, for a fair comparison)."""

    budget: int = 160
    rounds: int = 1
    top_k: int | None = None
    sigma0: float = 0.5
    x0: str = "uniform"  # uniform | center
    pycma_popsize: bool = False
    bounds: Bounds = (-1.0, 1.0)
    groups: int = 1

    def __post_init__(self):
        check_choice("x0", self.x0, ("uniform", "center"))
        check_bounds(self.bounds)


class CMAES(Rounds):
    """CMA-ES (Sakana-style evolutionary merge search) over the coefficients; ``options`` are the
    fields of ``CMAESOptions``."""

    Options = CMAESOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        check_positive(popsize=popsize)
        if popsize < 2:
            raise EvogmError(f"popsize={popsize} is too small for CMA-ES", "it ranks at least two samples",
                             "use popsize ≥ 2")
        o = self.options = CMAESOptions(**options)
        bounds = check_bounds(o.bounds)
        size = lambda k: 4 + int(3 * np.log(max(k, 2))) if o.pycma_popsize else popsize
        start_round = lambda k, s: CMAESRound(k, popsize=size(k), seed=s, sigma0=o.sigma0, x0=o.x0, bounds=bounds,
                                             groups=self.round_groups)
        super().__init__(dim, seed=seed, rounds=o.rounds, top_k=o.top_k, groups=o.groups,
                         round_budget=round_share(o.budget, o.rounds, popsize), start_round=start_round)
