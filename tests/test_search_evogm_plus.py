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


@pytest.mark.parametrize("round_start", ["hybrid", "screened"])
def test_a_new_round_never_re_evaluates_its_elites(round_start):
    opt = EvoGMPlus(4, popsize=8, seed=0, iterations=1, batch=8, round_start=round_start, **SMALL)
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
    def mean_best(surrogate):
        return np.mean([drive(EvoGMPlus(6, popsize=10, seed=s, surrogate=surrogate, **SMALL), 80)[1].min()
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


@pytest.mark.parametrize("sum_input", [False, True])
def test_the_gp_fit_gradient_is_the_marginal_likelihood_s_own(sum_input):
    """The closed-form gradient the fit follows equals autograd's through the same value, away
    from the fit's optimum (length scales, signal and noise all moved) and at 1 to 120 rows."""
    import torch

    rng = np.random.default_rng(1)
    for n in (1, 12, 120):
        X = rng.uniform(-1, 1, (n, 5))
        gp = GaussianProcess(sum_input=sum_input).fit(X, shifted_sphere(X) + 0.05 * rng.standard_normal(n))
        raw = (gp.raw + torch.as_tensor(rng.normal(0.0, 0.5, len(gp.raw)))).requires_grad_(True)
        value, grad = gp._neg_log_posterior(raw)
        value.backward()
        assert torch.allclose(grad, raw.grad, rtol=1e-6, atol=1e-8)



@pytest.mark.parametrize("restarts, refit_starts", [(True, 3), (False, 2)])
def test_a_refit_starts_from_the_last_fit_and_without_restarts_from_nothing_but_the_prior(restarts, refit_starts):
    """Every fit starts L-BFGS at the prior's centre and at short length scales; a refit adds the
    last fit, and ``restarts=False`` drops the short start once that exists."""
    import torch

    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (30, 4))
    gp, starts = GaussianProcess(restarts=restarts), []
    optimize = gp._optimize
    gp._optimize = lambda start: (starts.append(start.clone()), optimize(start))[1]
    gp.fit(X[:20], shifted_sphere(X[:20]))
    first, fitted = len(starts), gp.raw.clone()
    gp.fit(X, shifted_sphere(X))
    assert first == 2 and len(starts) - first == refit_starts
    assert torch.equal(starts[-1], fitted) and torch.equal(starts[first], starts[0])  # the last fit; the prior

def test_the_sum_input_fits_a_landscape_along_the_all_ones_direction():
    """A loss that depends on λ's sum alone (what a component all experts share makes of a merge):
    the GP with the sum as an input predicts it better than axis length scales alone, on each of
    three draws; EI and descent run through the same inputs."""
    along = lambda X: (X.sum(1) / np.sqrt(X.shape[1]) - 0.3) ** 2
    for seed in range(3):
        rng = np.random.default_rng(seed)
        X, probe = rng.uniform(-1, 1, (40, 6)), rng.uniform(-1, 1, (300, 6))
        errors = []
        for sum_input in (False, True):
            gp = GaussianProcess(warp=False, sum_input=sum_input).fit(X, along(X))
            errors.append(np.sqrt(np.mean((gp.predict(probe)[0] - along(probe)) ** 2)))
        assert errors[1] < errors[0]
        assert len(set(gp.expected_improvement(probe, 4).tolist())) == 4
        assert along(gp.descend(probe[:5])).mean() < along(probe[:5]).mean()


def test_the_pool_holds_good_rows_added_together():
    """Recombination puts the sum of two good merges (task arithmetic of two merges) into the pool;
    ``recombine=0`` leaves it out."""
    def pool_after_start(recombine):
        opt = EvoGMPlus(4, popsize=6, seed=0, iterations=1, recombine=recombine, **SMALL)
        xs = opt.ask()
        opt.tell(xs, np.arange(6.0))                 # the first two experts alone are the best rows
        return opt.strategy._pool()

    target = np.array([1.0, 1.0, 0.0, 0.0])         # expert 0 + expert 1
    assert np.isclose(pool_after_start(0.2), target, atol=1e-12).all(axis=1).any()
    assert not np.isclose(pool_after_start(0.0), target, atol=1e-12).all(axis=1).any()


def test_scale_shift_steps_move_every_coefficient_by_one_amount():
    """With ``scale_shift`` the pool holds the best row shifted along the all-ones direction."""
    def shifted_rows(scale_shift):
        opt = EvoGMPlus(4, popsize=6, seed=0, iterations=1, scale_shift=scale_shift, **SMALL)
        xs = opt.ask()
        opt.tell(xs, np.arange(6.0))                 # expert 0 alone is the best row
        diff = opt.strategy._local(xs[:1], 200) - xs[0]
        return np.sum(np.all(np.isclose(diff, diff[:, :1], atol=1e-12), axis=1) & (np.abs(diff[:, 0]) > 1e-9))

    assert shifted_rows(0.5) > 10 and shifted_rows(0.0) == 0


def test_warp_off_fits_the_gp_to_the_losses_themselves():
    """``warp=False`` (the variant ``evogm-plus-nowarp``): the GP's data are the standardized losses,
    so its shift is their mean; with the default rank warp it is the mean of normal scores, 0."""
    for warp in (True, False):
        opt = EvoGMPlus(4, popsize=8, seed=0, iterations=2, warp=warp, **SMALL)
        _, losses = drive(opt, 16)               # the GP was last fitted on the first 8 evaluations
        expected = losses[:8].mean() if not warp else 0.0
        assert np.isclose(opt.strategy.gp.shift, expected, atol=1e-9)


def test_auto_warp_keeps_the_fit_whose_held_out_predictions_rank_best():
    """``warp="auto"`` (the variant ``evogm-plus-autowarp``) fits the GP both ways and keeps the fit
    whose leave-one-out means order the losses best: the losses themselves on a smooth bowl sampled
    around its minimum (the ranks stretch the best few apart), the ranks where a few bad rows are
    far worse than the rest."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.uniform(-1, 1, (20, 10)), 0.2 + 0.1 * rng.standard_normal((20, 10))])
    bowl = np.sum((X - 0.2) ** 2, axis=1)
    assert GaussianProcess(warp="auto").fit(X, bowl).warped is False
    U = rng.uniform(-1, 1, (40, 10))
    heavy = np.exp(4 * np.sum((U - 0.2) ** 2, axis=1))
    assert GaussianProcess(warp="auto").fit(U, heavy).warped is True
    for y, data in ((bowl, X), (heavy, U)):  # the same fit as the kept warp asked for alone
        auto = GaussianProcess(warp="auto").fit(data, y)
        alone = GaussianProcess(warp=auto.warped).fit(data, y)
        np.testing.assert_allclose(auto.predict(data[:5])[0], alone.predict(data[:5])[0], rtol=1e-9)


def test_warp_takes_true_false_or_auto():
    with pytest.raises(EvogmError, match="warp='ranks' is not an option"):
        EvoGMPlus(4, warp="ranks")


def test_lengthscale_sets_the_prior_median_in_every_dimension():
    """``lengthscale`` (the variant ``evogm-plus-short``) puts the median of the length-scale prior at
    that value whatever the dimension; the default prior's median grows with √d. Fitted to rows
    around a point, as a screening search evaluates them, the shorter prior gives shorter scales."""
    rng = np.random.default_rng(0)
    for dim in (4, 40):
        X = 0.1 + 0.3 * rng.standard_normal((60, dim))
        y = np.sum((X - 0.3) ** 2, axis=1)
        short, default = GaussianProcess(lengthscale=1.0).fit(X, y), GaussianProcess().fit(X, y)
        assert short.prior_loc == 0.0 and np.isclose(np.exp(default.prior_loc), np.exp(2**0.5) * dim**0.5)
        assert np.median(short.raw[:dim].exp().numpy()) < np.median(default.raw[:dim].exp().numpy())


def test_auto_lengthscale_keeps_the_prior_whose_held_out_predictions_rank_best():
    """``lengthscale="auto"`` (the variant ``evogm-plus-autoscale``) fits both priors and keeps the
    fit whose leave-one-out means order the losses best: the long, dimension-scaled one for a trend
    across the box, the short one for ripples; the kept fit is the one that prior gives alone."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (60, 8))
    trend, ripples = X.sum(1) + 0.05 * rng.standard_normal(60), np.sin(6 * X).sum(1)
    assert GaussianProcess(lengthscale="auto").fit(X, trend).prior_loc > 2.0
    assert GaussianProcess(lengthscale="auto").fit(X, ripples).prior_loc == 0.0
    for y, alone in ((trend, None), (ripples, 1.0)):
        auto, single = GaussianProcess(lengthscale="auto").fit(X, y), GaussianProcess(lengthscale=alone).fit(X, y)
        np.testing.assert_allclose(auto.predict(X[:5])[0], single.predict(X[:5])[0], rtol=1e-9)


@pytest.mark.parametrize("lengthscale", [0.0, -1.0, float("inf"), float("nan"), "short", True, False])
def test_lengthscale_must_be_a_positive_number(lengthscale):
    with pytest.raises(EvogmError, match="lengthscale=.* is not allowed"):
        EvoGMPlus(4, lengthscale=lengthscale)


def test_batch_sets_the_rows_of_each_screened_generation():
    """``batch`` (the variant ``evogm-plus-b10``) asks that many rows per screened generation; the
    start is still P rows and a round still spends P·(1 + iterations) evaluations."""
    opt = EvoGMPlus(4, popsize=8, seed=0, iterations=2, batch=4, **SMALL)
    sizes = []
    while opt.round == 0:
        xs = opt.ask()
        sizes.append(len(xs))
        opt.tell(xs, shifted_sphere(xs))
    assert sizes == [8, 4, 4, 4, 4]


def test_a_screened_round_start_spends_nothing_on_random_rows():
    """``round_start="screened"`` (the variant ``evogm-plus-rs``): a later round's population is its
    elites, already evaluated, and its first generation is screened like any other; round 1 keeps
    the hybrid start. With the default the first generation of round 2 is the hybrid start."""
    def second_round(round_start):
        opt = EvoGMPlus(4, popsize=8, seed=0, iterations=1, round_start=round_start, **SMALL)
        first, _ = drive(opt, 16)
        np.testing.assert_allclose(first[:4], np.eye(4))  # round 1: each expert alone first
        return opt, opt.ask()

    opt, asked = second_round("screened")
    np.testing.assert_array_equal(opt.strategy.population @ opt.basis, opt.basis)
    hybrid_opt, hybrid = second_round("hybrid")
    assert hybrid_opt.strategy.population is None
    np.testing.assert_allclose(hybrid[0], np.full(4, 0.25) @ hybrid_opt.basis)  # the elites' uniform merge
    assert not np.allclose(asked[0], hybrid[0])


def test_an_experts_start_screens_everything_after_the_experts_and_fits_the_round():
    """``start="experts"``: round 1 evaluates each expert alone and the uniform merge, no random
    rows, then screened generations of ``batch`` rows; the last one takes what is left of the
    round's P·(1 + iterations) evaluations, so the round ends on its budget."""
    opt = EvoGMPlus(4, popsize=8, seed=0, iterations=2, batch=4, start="experts", round_start="hybrid", **SMALL)
    sizes, first = [], None
    while opt.round == 0:
        xs = opt.ask()
        first = xs if first is None else first
        sizes.append(len(xs))
        opt.tell(xs, shifted_sphere(xs))
    assert sizes == [5, 4, 4, 4, 4, 3]
    np.testing.assert_allclose(first, np.vstack([np.eye(4), np.full((1, 4), 0.25)]))
    assert len(opt.ask()) == 8  # round 2 keeps its hybrid start (round_start governs it)


@pytest.mark.parametrize("options", [dict(batch=0), dict(batch=2.5), dict(round_start="random"),
                                     dict(start="random")])
def test_batch_and_starts_are_checked(options):
    with pytest.raises(EvogmError, match="(batch|round_start|start)=.* is not"):
        EvoGMPlus(4, **options)
