"""The ask/tell contract, one suite that every entry of OPTIMIZERS passes with no special cases.

EvoGM runs here with small generators (the same algorithm, cheaper MLPs) so the suite stays quick;
tests/test_search_evogm.py keeps a run on the paper's defaults.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from evogm.errors import EvogmError
from evogm.search import OPTIMIZERS, check_options

NAMES = sorted(OPTIMIZERS)
# Interface tests: two generations per round for everyone; EvoGM's training barely matters here.
SHORT = {"evogm": dict(iterations=1, hidden_sizes=(16,), steps=5),
         "evogm-plus": dict(iterations=1, hidden_sizes=(16,), steps=5, pool=60)}
SHORT_BASELINE = dict(budget=20)
# Quality test: the paper's schedule (160 evaluations) for everyone; EvoGM with smaller generators
# and a larger learning rate (the same algorithm, ten times cheaper to train).
SEARCH = {"evogm": dict(hidden_sizes=(64, 64), steps=100, lr=1e-3), "evogm-plus": {}}
SEARCH_BASELINE = dict(budget=160)
# Optuna's GP sampler spends about a second per candidate: its quality test uses 40 evaluations, for
# it and for the random search it is compared with.
EVALUATIONS = {"bo": 40}


def make(name, dim, **kw):
    return OPTIMIZERS[name](dim, **{**SHORT.get(name, SHORT_BASELINE), **kw})


def shifted_sphere(xs, dim):
    optimum = np.random.default_rng(123).uniform(-0.6, 0.6, dim)
    return np.sum((xs - optimum) ** 2, axis=1)


def drive(opt, loss_fn, evaluations, log=None):
    """The runner's loop: ask, evaluate, tell; the last ask is truncated to the budget."""
    done, best = 0, np.inf
    while done < evaluations:
        xs = opt.ask()[: evaluations - done]
        losses = loss_fn(xs)
        opt.tell(xs, losses)
        if log is not None:
            log.append((xs.copy(), losses.copy()))
        done, best = done + len(xs), min(best, float(np.min(losses)))
    return best


@pytest.mark.parametrize("name", NAMES)
def test_the_options_dataclass_is_the_config_schema(name):
    cls = OPTIMIZERS[name]
    params = inspect.signature(cls).parameters
    assert {"popsize", "seed"} <= set(params)
    assert all(p.kind is p.KEYWORD_ONLY for n, p in params.items() if n not in ("dim", "options"))
    assert {"rounds", "top_k"} <= {f.name for f in dataclasses.fields(cls.Options)}
    assert cls.Options.__dataclass_params__.frozen
    opt = cls(4, popsize=6, seed=0, rounds=2)
    assert isinstance(opt.budget, int) and opt.options == cls.Options(rounds=2)
    with pytest.raises(TypeError):
        cls(4, popsize=6, seed=0, not_an_option=1)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(EvogmError, match="'cmaes'"):
        check_options("cma-es", {})


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_bounds(name):
    opt = make(name, 5, popsize=7, seed=0, rounds=1)
    for _ in range(4):
        xs = opt.ask()
        assert xs.ndim == 2 and xs.shape[1] == 5 and len(xs) >= 1
        assert np.all(np.isfinite(xs)) and np.all(np.abs(xs) <= 1.0)
        opt.tell(xs, shifted_sphere(xs, 5))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim, popsize, top_k", [(1, 3, None), (3, 2, 1), (12, 4, None)])
def test_small_and_odd_sizes_work(name, dim, popsize, top_k):
    opt = make(name, dim, popsize=popsize, seed=0, rounds=2, top_k=top_k)
    drive(opt, lambda xs: shifted_sphere(xs, dim), 6 * popsize)
    assert opt.round == 1
    xs = opt.ask()  # a round starts with P rows, or (EvoGM+'s screened start) with a screened batch
    assert xs.shape[1] == dim and 1 <= len(xs) <= max(popsize, 10)
    k = len(opt.basis)  # K elites, or fewer if the round evaluated fewer rows
    assert opt.basis.shape == (k, dim) and 1 <= k <= (top_k or dim)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_asks_other_seed_other_asks(name):
    def asks(seed, scramble_global_rngs=False):
        opt, out = make(name, 3, popsize=8, seed=seed, rounds=2), []

        def evaluate(xs):
            out.append(xs)
            if scramble_global_rngs:  # other code in the process must not change the search
                np.random.seed(len(out))
                torch.manual_seed(len(out))
            return shifted_sphere(xs, 3)

        drive(opt, evaluate, 40)
        return np.vstack(out)

    np.testing.assert_array_equal(asks(1), asks(1, scramble_global_rngs=True))
    assert not np.allclose(asks(1), asks(2))


@pytest.mark.parametrize("name", NAMES)
def test_failed_evaluations_never_crash_or_poison(name):
    opt = make(name, 4, popsize=6, seed=0, rounds=2)
    for generation in range(6):
        xs = opt.ask()
        losses = shifted_sphere(xs, 4)
        losses[::2] = np.inf
        losses[1] = np.nan
        if generation in (1, 2):
            losses[:] = np.inf  # a whole generation failed, and then a whole round's tail
        opt.tell(xs, losses)
    xs = opt.ask()
    assert np.all(np.isfinite(xs))
    assert np.isfinite(opt.best_loss)


@pytest.mark.parametrize("name", NAMES)
def test_tell_accepts_a_prefix_and_asks_for_the_rest(name):
    full, cut = make(name, 4, popsize=6, seed=3), make(name, 4, popsize=6, seed=3)
    for _ in range(2):
        xs = full.ask()
        full.tell(xs, shifted_sphere(xs, 4))
        head = cut.ask()[:2]
        cut.tell(head, shifted_sphere(head, 4))
        tail = cut.ask()
        np.testing.assert_array_equal(np.vstack([head, tail]), xs)
        cut.tell(tail, shifted_sphere(tail, 4))
    np.testing.assert_array_equal(full.ask(), cut.ask())
    with pytest.raises(ValueError):
        cut.tell(cut.ask()[:1] + 0.5, [1.0])


@pytest.mark.parametrize("name", NAMES)
def test_resume_by_replaying_the_log(name):
    options = dict(popsize=5, seed=7, rounds=2)
    original, log = make(name, 3, **options), []
    drive(original, lambda xs: shifted_sphere(xs, 3), 23, log)  # crosses a round, ends mid-generation

    resumed = make(name, 3, **options)
    rows = np.vstack([xs for xs, _ in log])
    losses = np.concatenate([ls for _, ls in log])
    done = 0
    while done < len(rows):  # the runner's replay: ask, check against the log, tell the logged losses
        asked = resumed.ask()[: len(rows) - done]
        np.testing.assert_array_equal(asked, rows[done : done + len(asked)])
        resumed.tell(asked, losses[done : done + len(asked)])
        done += len(asked)
    np.testing.assert_array_equal(resumed.ask(), original.ask())
    assert resumed.round == original.round == 1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim", [5, 10])
def test_beats_random_search_on_a_shifted_sphere(name, dim):
    evaluations = EVALUATIONS.get(name, 160)

    def mean_best(opt_name):
        options = {**SEARCH.get(opt_name, SEARCH_BASELINE)}
        if "budget" in options:
            options["budget"] = evaluations
        bests = [drive(OPTIMIZERS[opt_name](dim, popsize=20, seed=s, **options),
                       lambda xs: shifted_sphere(xs, dim), evaluations) for s in range(3)]
        return np.mean(bests)

    # "no worse than random on the same seeds": random itself ties; every search is strictly better
    assert mean_best(name) <= mean_best("random")
