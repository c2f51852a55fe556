"""Bayesian optimization through Optuna's ask/tell: its GP sampler (``bo``) and its TPE (``tpe``).

>>> import numpy as np
>>> opt = BayesGP(3, popsize=6, seed=0, batch=4)
>>> xs = opt.ask(); xs.shape                  # the initial design: popsize rows
(6, 3)
>>> xs[:4].tolist()                           # hybrid: the experts alone, then the uniform merge
[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.333..., 0.333..., 0.333...]]
>>> opt.tell(xs, np.sum((xs - 0.2) ** 2, axis=1))
>>> opt.ask().shape                           # then batch rows per ask, chosen by the model
(4, 3)

Each round is one Optuna study over ``x0 … x{k−1}`` in the box (minimize). The initial design
(``popsize`` rows, ``init`` as for PSO: the hybrid population or uniform draws) is enqueued into
the study; every later ask asks ``batch`` trials at once (default ``popsize``). The GP sampler then
chooses each pending trial by q-batch log EI given the ones already pending, and TPE by its
constant liar, so a batch is spread out rather than copies of one point. ``batch=1`` is plain
sequential BO, the most sample-efficient use of a budget when evaluations run one at a time. A failed evaluation (inf) is
told as a failed trial, which both samplers ignore.

Optuna is an optional dependency (``pip install evogm[bo]``), imported when a round starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evogm.errors import EvogmError
from evogm.search.base import POPSIZE, Bounds, check_bounds, check_choice, check_positive, initial_population
from evogm.search.rounds import Rounds, round_share


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise EvogmError("the optimizers bo and tpe need Optuna", f"it is not installed ({exc})",
                         "pip install 'evogm[bo]'") from exc
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna


class OptunaRound:
    """One Optuna study over [lo, hi]^k: the initial design first, then ``batch`` trials per ask."""

    def __init__(self, dim: int, *, sampler, popsize: int, batch: int, seed: int, init: str, bounds: Bounds,
                 groups: int = 1):
        optuna = _optuna()
        self.dim, self.batch = dim, batch
        self.distributions = {f"x{i}": optuna.distributions.FloatDistribution(*bounds) for i in range(dim)}
        self.study = optuna.create_study(sampler=sampler, direction="minimize")
        for row in initial_population(init, dim, popsize, np.random.default_rng(seed), bounds, groups):
            self.study.enqueue_trial({f"x{i}": float(v) for i, v in enumerate(row)})
        self.popsize, self.trials = popsize, []

    def ask(self) -> np.ndarray:
        n = self.batch if self.trials else self.popsize
        self.trials = [self.study.ask(self.distributions) for _ in range(n)]
        return np.array([[t.params[f"x{i}"] for i in range(self.dim)] for t in self.trials])

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        from optuna.trial import TrialState

        for trial, loss in zip(self.trials, losses):
            if np.isfinite(loss):
                self.study.tell(trial, float(loss))
            else:
                self.study.tell(trial, state=TrialState.FAIL)


@dataclass(frozen=True)
class BayesGPOptions:
    """Optuna's GP sampler: ``batch`` trials per ask after the initial design (None: P; 1 is plain
    sequential BO); ``deterministic=True`` tells it the objective has no noise; ``init`` as for PSO."""

    budget: int = 160
    rounds: int = 1
    top_k: int | None = None
    batch: int | None = None
    init: str = "hybrid"  # hybrid | random
    deterministic: bool = False
    bounds: Bounds = (-1.0, 1.0)
    groups: int = 1

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class BayesTPEOptions:
    """Optuna's TPE sampler, multivariate by default (Optuna's advice for correlated parameters), with
    the constant liar for batches; ``batch`` and ``init`` as for ``bo``."""

    budget: int = 160
    rounds: int = 1
    top_k: int | None = None
    batch: int | None = None
    init: str = "hybrid"  # hybrid | random
    multivariate: bool = True
    bounds: Bounds = (-1.0, 1.0)
    groups: int = 1

    def __post_init__(self):
        _check(self)


def _check(options) -> None:
    check_positive(batch=options.batch)
    check_choice("init", options.init, ("hybrid", "random"))
    check_bounds(options.bounds)


class _Bayes(Rounds):
    """Shared constructor: the rounds wrapper around one Optuna study per round."""

    def __init__(self, dim: int, make_sampler, *, popsize: int, seed: int, options):
        check_positive(popsize=popsize)
        o, bounds = options, check_bounds(options.bounds)
        start_round = lambda k, s: OptunaRound(k, sampler=make_sampler(s), popsize=popsize,
                                               batch=o.batch or popsize, seed=s, init=o.init, bounds=bounds,
                                               groups=self.round_groups)
        super().__init__(dim, seed=seed, rounds=o.rounds, top_k=o.top_k, groups=o.groups,
                         round_budget=round_share(o.budget, o.rounds, popsize), start_round=start_round)


class BayesGP(_Bayes):
    """GP-based Bayesian optimization: Optuna's ``GPSampler`` (Matérn 5/2 ARD kernel, log EI;
    q-batch log EI for a batch); ``options`` are the fields of ``BayesGPOptions``."""

    Options = BayesGPOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        o = self.options = BayesGPOptions(**options)

        def make_sampler(s):
            return _optuna().samplers.GPSampler(seed=s, n_startup_trials=1, deterministic_objective=o.deterministic,
                                                warn_independent_sampling=False)

        super().__init__(dim, make_sampler, popsize=popsize, seed=seed, options=o)


class BayesTPE(_Bayes):
    """Tree-structured Parzen estimators: Optuna's ``TPESampler``; ``options`` are the fields of
    ``BayesTPEOptions``."""

    Options = BayesTPEOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        o = self.options = BayesTPEOptions(**options)

        def make_sampler(s):
            return _optuna().samplers.TPESampler(seed=s, n_startup_trials=1, multivariate=o.multivariate,
                                                 constant_liar=(o.batch or popsize) > 1)

        super().__init__(dim, make_sampler, popsize=popsize, seed=seed, options=o)
