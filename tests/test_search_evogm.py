"""EvoGM is the paper's algorithm (docs/algorithm.md): losses, split, population, rounds, ablations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evogm.errors import EvogmError
from evogm.search.base import hybrid_population
from evogm.search.evogm import EvoGM, split_winners_losers, truncate
from evogm.search.generators import GeneratorPair, generator_loss, make_generator, paired_batch

TINY = dict(hidden_sizes=(16,), steps=5)  # the same algorithm with cheap generators


def sphere(xs):
    return np.sum((xs - 0.3) ** 2, axis=1)


def generations(opt, n):
    """Ask and tell ``n`` whole generations on the sphere; the asked rows, one array each."""
    out = []
    for _ in range(n):
        xs = opt.ask()
        opt.tell(xs, sphere(xs))
        out.append(xs)
    return out


# --- the losses, by hand --------------------------------------------------------------------------


def test_losses_match_a_hand_computed_case():
    lose2win = lambda x: 0.5 * x
    win2lose = lambda x: x + 0.1
    winners = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    losers = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    mean = winners.mean(0, keepdim=True)  # μ⁺ = (0.5, 0.5)
    # L_opt: G₋₊(L) = [[0,1],[1,0]], every entry 0.5 from μ⁺ → 0.25
    # L_cyc: G₊₋(G₋₊(L)) = [[.1,1.1],[1.1,.1]] vs L → (.01+.81+.81+.01)/4 = .41
    #        G₋₊(G₊₋(W)) = [[.55,.05],[.05,.55]] vs W → (.2025+.0025+.0025+.2025)/4 = .1025
    parts = generator_loss(lose2win, win2lose, winners, losers, mean, cycle_scale=100.0, opt_scale=1.0)
    assert float(parts["opt"]) == pytest.approx(0.25)
    assert float(parts["cycle"]) == pytest.approx(0.5125)
    assert float(parts["total"]) == pytest.approx(100 * 0.5125 + 0.25)
    single = generator_loss(lose2win, None, winners, losers, mean, cycle_scale=100.0, opt_scale=2.0)
    assert float(single["cycle"]) == 0.0 and float(single["total"]) == pytest.approx(0.5)


def test_generators_have_the_paper_shape():
    net = make_generator(10)
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (10, 128), (128, 256), (256, 256), (256, 256), (256, 128), (128, 10)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in net) == 5 and isinstance(net[-1], torch.nn.Tanh)


def test_winners_are_the_best_finite_share():
    rows = np.arange(10.0)[:, None]
    losses = np.array([5, 3, np.inf, 0, 9, 1, 8, 7, 6, 2.0])
    winners, losers = split_winners_losers(rows, losses, 0.3)  # ⌊0.3·10⌋ = 3
    assert winners.ravel().tolist() == [3, 5, 9]
    assert sorted(losers.ravel().tolist()) == [0, 1, 2, 4, 6, 7, 8]  # the failed row 2 is a loser
    winners, _ = split_winners_losers(rows[:3], np.array([np.inf, 2.0, np.inf]), 0.9)
    assert winners.ravel().tolist() == [1]  # never an inf winner, even if ⌊ρ·|H|⌋ asks for more


def test_batches_pair_all_winners_with_a_fresh_subset_of_losers():
    rng = np.random.default_rng(0)
    winners, losers = np.zeros((3, 2)), np.arange(14.0).reshape(7, 2)
    seen = set()
    for _ in range(10):
        w, l = paired_batch(winners, losers, rng)
        assert w.shape == l.shape == (3, 2) and w is winners
        assert len({tuple(r) for r in l}) == 3  # without replacement
        seen.add(tuple(l.ravel()))
    assert len(seen) > 1  # redrawn every step


def test_training_pulls_toward_winners_and_the_cycle_keeps_diversity():
    def trained(dual):
        rng = np.random.default_rng(0)
        winners, losers = 0.5 + rng.normal(0, 0.05, (4, 3)), rng.uniform(-1, 1, (10, 3))
        pair = GeneratorPair(3, seed=0, hidden_sizes=(32, 32), lr=1e-3, dual=dual)
        before = np.abs(pair.propose(losers) - 0.5).mean()
        first = pair.train(winners, losers, steps=1, rng=rng)["total"]
        last = pair.train(winners, losers, steps=150, rng=rng)["total"]
        proposals = pair.propose(losers)
        return before, np.abs(proposals - 0.5).mean(), proposals.std(axis=0).mean(), first, last

    for dual in (True, False):
        before, after, _, first, last = trained(dual)
        assert after < 0.6 * before and last < 0.25 * first
    # the single generator collapses every loser onto μ⁺; G₊₋'s cycle term keeps G₋₊ invertible
    assert trained(True)[2] > 3 * trained(False)[2]


def test_hybrid_population():
    pop = hybrid_population(4, 8, np.random.default_rng(0), (-1, 1))
    np.testing.assert_array_equal(pop[:4], np.eye(4))
    np.testing.assert_array_equal(pop[4], np.full(4, 0.25))
    assert pop.shape == (8, 4) and np.all(np.abs(pop[5:]) <= 1) and len(np.unique(pop[5:])) == 12
    np.testing.assert_array_equal(hybrid_population(6, 4, np.random.default_rng(0), (-1, 1)), np.eye(6)[:4])


def test_truncation_keeps_the_best():
    rows, losses = truncate(np.arange(5.0)[:, None], np.array([3, np.inf, 0, 2, 1.0]), 3)
    assert rows.ravel().tolist() == [2, 4, 3] and losses.tolist() == [0, 1, 2]


# --- one round, step by step ----------------------------------------------------------------------


def test_one_round_follows_the_algorithm():
    popsize, dim = 6, 3
    opt = EvoGM(dim, popsize=popsize, seed=0, rounds=1, iterations=3, winner_portion=0.3, **TINY)
    seen_rows, seen_losses = [], []
    for iteration in range(4):
        xs = opt.ask()
        round_ = opt.strategy
        if iteration == 0:
            np.testing.assert_array_equal(xs[:dim], np.eye(dim))  # hybrid start
        else:
            # C = clip(G₋₊(population)), with the generators just trained on the history
            np.testing.assert_allclose(xs, round_.generators.propose(round_.population))
            winners, _ = split_winners_losers(np.vstack(seen_rows), np.concatenate(seen_losses), 0.3)
            assert len(winners) == int(0.3 * popsize * iteration)
        losses = sphere(xs)
        opt.tell(xs, losses)
        seen_rows.append(xs), seen_losses.append(losses)
        rows, all_losses = np.vstack(seen_rows), np.concatenate(seen_losses)
        np.testing.assert_array_equal(round_.history_rows, rows)  # H grows by P per iteration
        best = np.argsort(all_losses, kind="stable")[:popsize]  # (μ+λ): best P of everything seen
        np.testing.assert_array_equal(np.sort(round_.population_losses), np.sort(all_losses[best]))
    assert opt.best_loss == np.concatenate(seen_losses).min()


def test_generators_train_steps_per_iteration_and_persist_through_the_round():
    opt = EvoGM(3, popsize=6, seed=0, rounds=1, iterations=3, **TINY)
    generations(opt, 2)
    first = opt.strategy.generators
    generations(opt, 1)
    assert opt.strategy.generators is first  # reset="round": built once per round
    step = next(iter(first.adam.state.values()))["step"]
    assert int(step) == 2 * TINY["steps"]  # 5 Adam steps per iteration, Adam state kept


# --- ablations change what they say and nothing else ------------------------------------------


@pytest.mark.parametrize("option", [dict(generator="single"), dict(cycle_scale=0.0), dict(opt_scale=3.0),
                                    dict(winner_portion=0.5), dict(lr=1e-2), dict(steps=9)])
def test_ablation_changes_training_only(option):
    base, changed = EvoGM(3, popsize=6, seed=0, **TINY), EvoGM(3, popsize=6, seed=0, **{**TINY, **option})
    a, b = generations(base, 2), generations(changed, 2)
    np.testing.assert_array_equal(a[0], b[0])  # the initial population is untouched
    assert not np.allclose(a[1], b[1])  # the first proposals differ


def test_single_generator_has_no_cycle():
    opt = EvoGM(3, popsize=6, seed=0, generator="single", **TINY)
    generations(opt, 2)
    assert opt.strategy.generators.win2lose is None and opt.strategy.last_loss["cycle"] == 0.0
    no_cycle = EvoGM(3, popsize=6, seed=0, cycle_scale=0.0, **TINY)
    generations(no_cycle, 2)
    loss = no_cycle.strategy.last_loss
    assert no_cycle.strategy.generators.win2lose is not None and loss["total"] == pytest.approx(loss["opt"])


def test_reset_per_iteration_differs_only_from_the_second_iteration():
    per_round = generations(EvoGM(3, popsize=6, seed=0, rounds=1, **TINY), 3)
    opt = EvoGM(3, popsize=6, seed=0, rounds=1, reset="iteration", **TINY)
    per_iteration = generations(opt, 3)
    np.testing.assert_array_equal(per_round[1], per_iteration[1])  # same fresh start at iteration 1
    assert not np.allclose(per_round[2], per_iteration[2])  # then fresh generators vs warm ones
    assert int(next(iter(opt.strategy.generators.adam.state.values()))["step"]) == TINY["steps"]


def test_no_rounds_is_one_option_away_at_the_same_budget():
    two_rounds = EvoGM(3, popsize=5, seed=0, rounds=2, iterations=3, **TINY)
    one_round = EvoGM(3, popsize=5, seed=0, rounds=1, iterations=7, **TINY)
    assert two_rounds.budget == one_round.budget == 40
    a, b = generations(two_rounds, 5), generations(one_round, 5)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)  # identical first round
    assert two_rounds.round == 1 and one_round.round == 0
    np.testing.assert_allclose(a[4][:3], two_rounds.basis)  # round 2 starts from the elites


def test_bad_option_values_are_clear_errors():
    with pytest.raises(EvogmError, match="dual"):
        EvoGM(3, popsize=6, seed=0, generator="duel")
    with pytest.raises(EvogmError, match="winner_portion"):
        EvoGM(3, popsize=6, seed=0, winner_portion=0.0)


# --- the paper's defaults -------------------------------------------------------------------------


def test_paper_defaults_run_the_paper_schedule_and_improve():
    opt = EvoGM(10)  # P = 20, T = 3, R = 2, K = N, ρ = 0.3, 200 Adam steps at 1e-4, α = (100, 1)
    assert opt.budget == 160
    optimum = np.random.default_rng(123).uniform(-0.6, 0.6, 10)
    first, evaluations, initial_best = None, 0, None
    while evaluations < opt.budget:
        xs = opt.ask()
        assert len(xs) == 20
        losses = np.sum((xs - optimum) ** 2, axis=1)
        opt.tell(xs, losses)
        evaluations += len(xs)
        if evaluations == 20:
            initial_best = losses.min()  # best expert / uniform / random vector
        if evaluations == 80:
            assert opt.round == 1 and opt.basis.shape == (10, 10)
    assert opt.round == 1 and opt.strategy.iteration == 3
    assert int(next(iter(opt.strategy.generators.adam.state.values()))["step"]) == 3 * 200
    assert opt.best_loss < 0.5 * initial_best
    # better than random search's typical best at the same budget (mean over 10 seeds)
    random_bests = [np.min(np.sum((np.random.default_rng(s).uniform(-1, 1, (160, 10)) - optimum) ** 2, axis=1))
                    for s in range(10)]
    assert opt.best_loss < np.mean(random_bests)


def test_asking_past_the_budget_keeps_iterating_in_the_last_round():
    opt = EvoGM(3, popsize=5, seed=0, rounds=2, iterations=2, **TINY)
    generations(opt, opt.budget // 5 + 2)
    assert opt.round == 1 and opt.strategy.iteration == 4
