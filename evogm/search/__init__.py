"""Search: EvoGM and the baselines behind one ask/tell contract (numbers only, no models).

>>> import numpy as np
>>> {"evogm", "evogm-plus", "cmaes", "pso", "de", "random", "bo", "tpe"} <= set(OPTIMIZERS)
True
>>> opt = make_optimizer("cmaes", 4, popsize=6, seed=1, options={"rounds": 2})   # any optimizer, with rounds
>>> while opt.round == 0:
...     xs = opt.ask(); opt.tell(xs, np.sum((xs - 0.3) ** 2, axis=1))
>>> opt.basis.shape                                         # round 2 searches the elites' span
(4, 4)

Every entry is built as ``OPTIMIZERS[name](dim, *, popsize, seed, **options)``, and its options are
one frozen dataclass, ``OPTIMIZERS[name].Options``: the config's schema, with the defaults in one
place (a wrong key or a wrong type is refused in one line by ``check_options``). Each optimizer has
``budget`` (the evaluations its own schedule plans), ``ask() -> (n, dim)`` in original-expert
coordinates and ``tell(xs, losses)`` with a prefix of the asked rows (inf = failed). See
``base.py`` and ``rounds.py``.

Resuming is by replay: rebuild the optimizer with the same seed and options, then for every
logged evaluation in order call ``ask()`` and ``tell()`` with the logged losses; the asked rows
equal the logged ones (check it), and the optimizer is then exactly where it was.
"""

from __future__ import annotations

import dataclasses

from evogm.errors import EvogmError
from evogm.registry import did_you_mean
from evogm.schema import build, plain
from evogm.search.base import POPSIZE, Optimizer
from evogm.search.bayes import BayesGP, BayesTPE
from evogm.search.cmaes import CMAES
from evogm.search.de import DE
from evogm.search.evogm import EvoGM
from evogm.search.evogm_plus import EvoGMPlus
from evogm.search.pso import PSO
from evogm.search.random_search import RandomSearch

OPTIMIZERS: dict[str, type] = {
    "evogm": EvoGM,
    "evogm-plus": EvoGMPlus,
    "cmaes": CMAES,
    "pso": PSO,
    "de": DE,
    "random": RandomSearch,
    "bo": BayesGP,
    "tpe": BayesTPE,
}


def options_class(name: str, key: str = "search.optimizer") -> type:
    """The frozen dataclass of an optimizer's options (an unknown name, given as `key`, suggests the closest)."""
    if name not in OPTIMIZERS:
        raise EvogmError(f"{key} {name!r} is unknown", did_you_mean(str(name), OPTIMIZERS, "no optimizer like it"),
                         f"choose one of {', '.join(sorted(OPTIMIZERS))}")
    return OPTIMIZERS[name].Options


def check_options(name: str, options: dict, where: str = "search.options.") -> None:
    """Every key is an option of the optimizer, of its type and in its range (one-line errors)."""
    cls = options_class(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in valid:
            raise EvogmError(f"{where}{key} is not an option of optimizer {name!r}",
                             did_you_mean(str(key), valid, "no option like it"), f"its options: {', '.join(valid)}")
    build(cls, options, where)


def default_options(name: str) -> dict:
    """The optimizer's options at their defaults, as plain data (for the resolved config.yaml)."""
    return {f.name: plain(f.default) for f in dataclasses.fields(options_class(name))}


def make_optimizer(name: str, dim: int, *, popsize: int = POPSIZE, seed: int = 42, options: dict | None = None):
    """``OPTIMIZERS[name](dim, popsize=popsize, seed=seed, **options)``."""
    return OPTIMIZERS[name](dim, popsize=popsize, seed=seed, **(options or {}))


__all__ = ["OPTIMIZERS", "POPSIZE", "Optimizer", "options_class", "check_options", "default_options",
           "make_optimizer", "EvoGM", "EvoGMPlus", "CMAES", "PSO", "DE", "RandomSearch", "BayesGP", "BayesTPE"]
