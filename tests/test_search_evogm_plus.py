"""EvoGM+ beyond the shared contract: what it promises over the paper's EvoGM."""

from __future__ import annotations

import numpy as np
import pytest

from evogm.errors import EvogmError
from evogm.search import OPTIMIZERS
from evogm.search.evogm_plus import EvoGMPlus
from evogm.search.surrogate import GaussianProcess

SMALL = dict(hidden_sizes=(16,), steps=5)


def shifted_sphere(xs):
    optimum = np.linspace(-0.5, 0.6, xs.shape[1])
    return np.sum((xs - optimum) ** 2, axis=1)


def drive(opt, evaluations):
    rows, losses = [], []
    while sum(map(len, rows)) < evaluations:
        xs = opt.ask()[: evaluations - sum(map(len, rows))]
        ls = shifted_sphere(xs)
        opt.tell(xs, ls)
        rows.append(xs)
        losses.append(ls)
    return np.vstack(rows), np.concatenate(losses)


def test_a_new_round_never_re_evaluates_its_elites():
    opt = EvoGMPlus(4, popsize=8, seed=0, iterations=1, batch=8, **SMALL)
    first, _ = drive(opt, 16)                       # round 1: start + one iteration
    assert opt.round == 1
    second = opt.ask()
    assert second.shape == (8, 4)
    seen = np.isclose(second[:, None, :], first[None, :, :], atol=1e-9).all(axis=2)
    assert not seen.any()
    elites = opt.basis                              # the round's one-hots, already known
    assert len(opt.strategy.history_losses) == len(elites)
    np.testing.assert_array_equal(opt.strategy.history_rows @ opt.basis, elites)


def test_screening_beats_the_same_pool_unscreened():
    def mean_best(screen):
        return np.mean([drive(EvoGMPlus(6, popsize=10, seed=s, screen=screen, **SMALL), 80)[1].min()
                        for s in range(3)])

    assert mean_best(True) < 0.5 * mean_best(False)


def test_beats_the_paper_evogm_on_a_shifted_sphere():
    def mean_best(name, **options):
        return np.mean([drive(OPTIMIZERS[name](8, popsize=20, seed=s, **options), 160)[1].min() for s in range(2)])

    assert mean_best("evogm-plus") < mean_best("evogm", hidden_sizes=(64, 64), steps=100, lr=1e-3)


def test_the_gp_ignores_failed_rows_and_ranks_by_its_fit():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (40, 3))
    y = shifted_sphere(X)
    y[::5] = np.inf
    gp = GaussianProcess().fit(X, y)
    probe = rng.uniform(-1, 1, (200, 3))
    mean, sd = gp.predict(probe)
    assert np.corrcoef(mean, shifted_sphere(probe))[0, 1] > 0.9
    assert np.all(sd > 0)
    picks = gp.thompson(probe, 5, rng)
    assert len(set(picks.tolist())) == 5
    assert shifted_sphere(probe[picks]).mean() < shifted_sphere(probe).mean()
    assert shifted_sphere(gp.descend(probe[:5])).mean() < shifted_sphere(probe[:5]).mean()


def test_the_gp_fit_gradient_is_the_marginal_likelihood_s_own():
    """The closed-form gradient the fit follows equals autograd's through the same value, away
    from the fit's optimum (length scales, signal and noise all moved) and at 1 to 120 rows."""
    import torch

    rng = np.random.default_rng(1)
    for n in (1, 12, 120):
        X = rng.uniform(-1, 1, (n, 5))
        gp = GaussianProcess().fit(X, shifted_sphere(X) + 0.05 * rng.standard_normal(n))
        raw = (gp.raw + torch.as_tensor(rng.normal(0.0, 0.5, len(gp.raw)))).requires_grad_(True)
        value, grad = gp._neg_log_posterior(raw)
        value.backward()
        assert torch.allclose(grad, raw.grad, rtol=1e-6, atol=1e-8)



def test_a_refit_starts_from_the_prior_and_the_last_fit():
    """A first fit starts L-BFGS, for each of the two length-scale priors, at the prior's centre and
    at short length scales; a refit at the prior's centre and at that prior's last fit."""
    import torch

    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (30, 4))
    gp, starts = GaussianProcess(), []
    optimize = gp._optimize
    gp._optimize = lambda start: (starts.append(start.clone()), optimize(start))[1]
    gp.fit(X[:20], shifted_sphere(X[:20]))
    fitted = dict(gp.last_raw)
    gp.fit(X, shifted_sphere(X))
    assert len(starts) == 8
    for first, refit, (loc, last) in zip((starts[0:2], starts[2:4]), (starts[4:6], starts[6:8]), fitted.items()):
        assert torch.equal(refit[0], first[0]) and torch.allclose(first[0][:5], torch.full((5,), loc, dtype=torch.float64))
        assert torch.equal(refit[1], last) and torch.allclose(first[1][:5], torch.zeros(5, dtype=torch.float64))


def test_the_gp_keeps_the_length_scale_prior_whose_held_out_predictions_rank_best():
    """Both priors are fitted and the fit whose leave-one-out means order the losses best is kept:
    the long, dimension-scaled one for a trend across the box, the short one for ripples."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 8))
    trend, ripples = X.sum(1) + 0.05 * rng.standard_normal(60), np.sin(6 * X).sum(1)
    assert GaussianProcess().fit(X, trend).prior_loc > 2.0
    assert GaussianProcess().fit(X, ripples).prior_loc == 0.0


def test_the_pool_holds_good_rows_added_together(monkeypatch):
    """Recombination puts the sum of two good merges (task arithmetic of two merges) into the pool;
    without its share of the pool it is not there."""
    from evogm.search import evogm_plus

    def pool_after_start(recombine):
        monkeypatch.setattr(evogm_plus, "POOL_RECOMBINED", recombine)
        opt = EvoGMPlus(4, popsize=6, seed=0, iterations=1, **SMALL)
        xs = opt.ask()
        opt.tell(xs, np.arange(6.0))                 # the first two experts alone are the best rows
        return opt.strategy._pool()

    target = np.array([1.0, 1.0, 0.0, 0.0])         # expert 0 + expert 1
    assert np.isclose(pool_after_start(0.2), target, atol=1e-12).all(axis=1).any()
    assert not np.isclose(pool_after_start(0.0), target, atol=1e-12).all(axis=1).any()


def test_merge_direction_steps_move_every_coefficient_by_one_amount(monkeypatch):
    """The local steps include the best row shifted along the all-ones direction (without their
    share, none)."""
    from evogm.search import evogm_plus

    def shifted_rows(share):
        monkeypatch.setattr(evogm_plus, "MERGE_DIRECTION_STEPS", share)
        opt = EvoGMPlus(4, popsize=6, seed=0, iterations=1, **SMALL)
        xs = opt.ask()
        opt.tell(xs, np.arange(6.0))                 # expert 0 alone is the best row
        diff = opt.strategy._local(xs[:1], 200) - xs[0]
        return np.sum(np.all(np.isclose(diff, diff[:, :1], atol=1e-12), axis=1) & (np.abs(diff[:, 0]) > 1e-9))

    assert shifted_rows(0.5) > 10 and shifted_rows(0.0) == 0


def test_batch_sets_the_rows_of_each_screened_generation():
    """``batch`` asks that many rows per screened generation; the
    start is still P rows and a round still spends P·(1 + iterations) evaluations."""
    opt = EvoGMPlus(4, popsize=8, seed=0, iterations=2, batch=4, **SMALL)
    sizes = []
    while opt.round == 0:
        xs = opt.ask()
        sizes.append(len(xs))
        opt.tell(xs, shifted_sphere(xs))
    assert sizes == [8, 4, 4, 4, 4]


def test_a_later_round_starts_from_its_elites_and_spends_nothing_on_random_rows():
    """A later round's population is its elites, already evaluated, and its first generation is
    screened like any other (``batch`` rows, not the uniform merge of the elites); round 1 keeps the
    hybrid start."""
    opt = EvoGMPlus(4, popsize=8, seed=0, iterations=1, **SMALL)
    first, _ = drive(opt, 16)
    np.testing.assert_allclose(first[:4], np.eye(4))  # round 1: each expert alone first
    asked = opt.ask()
    np.testing.assert_array_equal(opt.strategy.population @ opt.basis, opt.basis)
    assert len(asked) == 10 and not np.isclose(asked, np.full(4, 0.25) @ opt.basis).all(axis=1).any()


def test_where_the_elites_would_be_half_a_round_it_runs_one_round_of_both_lengths():
    """K = N = 8 elites of a round of P·(1 + 1) = 16 evaluations would be half of it: one round of
    32 instead, asking what `rounds=1` at twice the round's length asks; given rounds, it keeps them."""
    default = EvoGMPlus(8, popsize=8, seed=0, iterations=1, batch=8, **SMALL)
    assert (default.rounds, default.budget) == (1, 32)
    one_round = EvoGMPlus(8, popsize=8, seed=0, rounds=1, iterations=3, batch=8, **SMALL)
    np.testing.assert_array_equal(drive(default, 40)[0], drive(one_round, 40)[0])
    assert EvoGMPlus(8, popsize=8, iterations=1, rounds=2, **SMALL).rounds == 2
    assert EvoGMPlus(7, popsize=8, iterations=1, **SMALL).rounds == 2  # 7 elites of 16: a selection


@pytest.mark.parametrize("options", [dict(batch=0), dict(batch=2.5), dict(pool=0), dict(winner_portion=0.0),
                                     dict(rounds=0)])
def test_option_values_are_checked(options):
    with pytest.raises(EvogmError, match="(batch|pool|winner_portion|rounds)=.* is not"):
        EvoGMPlus(4, **options)
