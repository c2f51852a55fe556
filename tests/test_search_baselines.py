"""The baselines are the real ones: pycma itself, the textbook PSO and DE/rand/1/bin updates."""

from __future__ import annotations

import itertools
import warnings

import cma
import numpy as np

from evogm.search import CMAES, DE
from evogm.search.cmaes import CMAESRound
from evogm.search.pso import PSORound


def far_point(xs):
    return np.sum((np.asarray(xs) - 0.9) ** 2, axis=1)


def test_cmaes_is_pycma_step_for_step():
    ours = CMAESRound(5, popsize=8, seed=3, sigma0=0.9, x0="uniform", bounds=(-1.0, 1.0))
    rng = np.random.default_rng(3)
    options = dict(popsize=8, bounds=[-1, 1], randn=lambda *s: rng.standard_normal(s), seed=np.nan, verbose=-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = cma.CMAEvolutionStrategy(np.full(5, 0.2), 0.9, options)
        for _ in range(12):
            xs, reference = ours.ask(), direct.ask()
            np.testing.assert_array_equal(xs, np.array(reference))
            ours.tell(xs.copy(), far_point(xs))
            direct.tell(reference, far_point(reference).tolist())
    assert ours.es.sigma == direct.sigma and ours.es.countiter == direct.countiter == 12


def test_cmaes_failed_candidates_rank_last():
    opt = CMAES(3, popsize=6, seed=0)
    xs = opt.ask()
    losses = far_point(xs)
    losses[:3] = np.inf
    opt.tell(xs, losses)
    assert np.all(np.isfinite(opt.strategy.es.mean))
    assert opt.strategy.es.countiter == 1


def test_pso_update_by_hand():
    swarm = PSORound(2, popsize=3, seed=5, inertia=0.5, cognitive=1.5, social=2.0, repel=0.7,
                     max_velocity=0.5, init="hybrid", bounds=(-1.0, 1.0))  # particles e₁, e₂, (½, ½): no random draws
    x0 = swarm.ask().copy()
    swarm.tell(x0, np.array([2.0, 1.0, 3.0]))  # best = e₂, worst = (½, ½)
    x1 = swarm.ask()
    rng = np.random.default_rng(5)
    rng.uniform(-1, 1, size=(0, 2))
    r1, r2, r3 = (rng.random((3, 2)) for _ in range(3))
    v = 1.5 * r1 * (x0 - x0) + 2.0 * r2 * (x0[1] - x0) - 0.7 * r3 * (x0[2] - x0)  # v₀ = 0
    np.testing.assert_allclose(x1, np.clip(x0 + np.clip(v, -1.0, 1.0), -1, 1))
    swarm.tell(x1, np.array([np.inf, 5.0, np.inf]))  # failures never become bests
    np.testing.assert_array_equal(swarm.personal[0], x0[0])
    np.testing.assert_array_equal(swarm.worst, x1[1])  # worst *finite* position seen


def test_de_rand_1_bin():
    opt = DE(4, popsize=6, seed=2, mutation=0.5, crossover=1.0, init="random")
    pop = opt.ask()
    opt.tell(pop, far_point(pop))
    trials = opt.ask()
    def from_mutant(trial, mutant):  # coordinates outside the box are redrawn inside it
        inside = np.abs(mutant) <= 1
        return np.allclose(trial[inside], mutant[inside]) and np.all(np.abs(trial[~inside]) <= 1)

    for i, trial in enumerate(trials):  # CR = 1: the trial is a mutant x_r1 + F·(x_r2 − x_r3)
        others = itertools.permutations(np.delete(np.arange(6), i), 3)
        assert any(from_mutant(trial, pop[a] + 0.5 * (pop[b] - pop[c])) for a, b, c in others)
    losses = far_point(trials)
    losses[0] = np.inf
    before = opt.strategy.losses.copy()
    opt.tell(trials, losses)
    kept = opt.strategy.losses
    assert kept[0] == before[0]  # a failed trial never replaces its target
    np.testing.assert_array_equal(kept, np.minimum(before, losses))  # greedy one-to-one selection


def test_de_crossover_keeps_at_least_one_mutant_coordinate():
    opt = DE(5, popsize=6, seed=0, crossover=1e-9, init="random")
    pop = opt.ask()
    opt.tell(pop, far_point(pop))
    changed = (opt.ask() != pop).sum(axis=1)
    assert np.all(changed == 1)
