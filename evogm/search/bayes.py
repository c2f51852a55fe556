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

import numpy as np

from evogm.errors import EvogmError
from evogm.search.base import Bounds, check_bounds, check_choice, check_positive, initial_population
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


class _Bayes(Rounds):
    """Shared constructor: the rounds wrapper around one Optuna study per round."""

    def __init__(self, dim: int, make_sampler, *, popsize: int, seed: int, budget: int, rounds: int,
                 top_k: int | None, batch: int | None, init: str, bounds: Bounds, groups: int):
        check_positive(popsize=popsize, batch=batch)
        check_choice("init", init, ("hybrid", "random"))
        bounds = check_bounds(bounds)
        start_round = lambda k, s: OptunaRound(k, sampler=make_sampler(s), popsize=popsize,
                                               batch=batch or popsize, seed=s, init=init, bounds=bounds,
                                               groups=self.round_groups)
        super().__init__(dim, seed=seed, rounds=rounds, top_k=top_k, groups=groups,
                         round_budget=round_share(budget, rounds, popsize),
                         start_round=start_round)


class BayesGP(_Bayes):
    """GP-based Bayesian optimization: Optuna's ``GPSampler`` (Matérn 5/2 ARD kernel, log EI;
    q-batch log EI for a batch). ``deterministic=True`` tells it the objective has no noise."""

    def __init__(self, dim: int, *, popsize: int = 20, seed: int = 42, budget: int = 160, rounds: int = 1,
                 top_k: int | None = None, batch: int | None = None, init: str = "hybrid",
                 deterministic: bool = False, bounds: Bounds = (-1.0, 1.0), groups: int = 1):
        def make_sampler(s):
            return _optuna().samplers.GPSampler(seed=s, n_startup_trials=1, deterministic_objective=deterministic,
                                                warn_independent_sampling=False)

        super().__init__(dim, make_sampler, popsize=popsize, seed=seed, budget=budget, rounds=rounds,
                         top_k=top_k, batch=batch, init=init, bounds=bounds, groups=groups)


class BayesTPE(_Bayes):
    """Tree-structured Parzen estimators: Optuna's ``TPESampler``, multivariate by default (the
    setting Optuna's documentation recommends for correlated parameters), with the constant liar
    for batches."""

    def __init__(self, dim: int, *, popsize: int = 20, seed: int = 42, budget: int = 160, rounds: int = 1,
                 top_k: int | None = None, batch: int | None = None, init: str = "hybrid", multivariate: bool = True,
                 bounds: Bounds = (-1.0, 1.0), groups: int = 1):
        def make_sampler(s):
            return _optuna().samplers.TPESampler(seed=s, n_startup_trials=1, multivariate=multivariate,
                                                 constant_liar=(batch or popsize) > 1)

        super().__init__(dim, make_sampler, popsize=popsize, seed=seed, budget=budget, rounds=rounds,
                         top_k=top_k, batch=batch, init=init, bounds=bounds, groups=groups)
