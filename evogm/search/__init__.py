"""Search: EvoGM and the baselines behind one ask/tell contract (numbers only, no models).

>>> import numpy as np
>>> from evogm.search import OPTIMIZERS
>>> {"evogm", "evogm-plus", "cmaes", "pso", "de", "random", "bo", "tpe"} <= set(OPTIMIZERS)
True
>>> opt = OPTIMIZERS["cmaes"](4, popsize=6, seed=1, rounds=2)   # any optimizer, with rounds
>>> while opt.round == 0:
...     xs = opt.ask(); opt.tell(xs, np.sum((xs - 0.3) ** 2, axis=1))
>>> opt.basis.shape                                         # round 2 searches the elites' span
(4, 4)

Every entry is ``OPTIMIZERS[name](dim, *, popsize, seed, **options)``: its signature is its
config schema (a wrong key is a TypeError), and each has ``budget`` (the evaluations its own
schedule plans), ``ask() -> (n, dim)`` in original-expert coordinates and ``tell(xs, losses)``
with a prefix of the asked rows (inf = failed). See ``base.py`` and ``rounds.py``.

Resuming is by replay: rebuild the optimizer with the same seed and options, then for every
logged evaluation in order call ``ask()`` and ``tell()`` with the logged losses; the asked rows
equal the logged ones (check it), and the optimizer is then exactly where it was.
"""

from __future__ import annotations

from evogm.search.base import Optimizer
from evogm.search.bayes import BayesGP, BayesTPE
from evogm.search.cmaes import CMAES
from evogm.search.de import DE
from evogm.search.evogm import EvoGM
from evogm.search.evogm_plus import EvoGMPlus
from evogm.search.pso import PSO
from evogm.search.random_search import RandomSearch

OPTIMIZERS: dict[str, type] = {
    "evogm": EvoGM,
    "cmaes": CMAES,
    "pso": PSO,
    "de": DE,
    "random": RandomSearch,
    "bo": BayesGP,
    "tpe": BayesTPE,
    "evogm-plus": EvoGMPlus,
}


__all__ = ["OPTIMIZERS", "Optimizer", "EvoGM", "EvoGMPlus", "CMAES", "PSO", "DE", "RandomSearch",
           "BayesGP", "BayesTPE"]
