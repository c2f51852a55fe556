"""Rounds and the basis shift, the same wrapper for every optimizer."""

from __future__ import annotations

import numpy as np
import pytest

from evogm.search import OPTIMIZERS

NAMES = sorted(OPTIMIZERS)
SHORT = {"evogm": dict(iterations=1, hidden_sizes=(16,), steps=5),  # two generations per round
         "evogm-plus": dict(iterations=1, hidden_sizes=(16,), steps=5, pool=60)}
SHORT_BASELINE = dict(budget=30)  # with rounds=3 and popsize=5: two generations per round


def make(name, dim, **kw):
    return OPTIMIZERS[name](dim, **{**SHORT.get(name, SHORT_BASELINE), **kw})


@pytest.mark.parametrize("name", NAMES)
def test_defaults_plan_the_paper_budget(name):
    assert OPTIMIZERS[name](10, popsize=20, seed=0).budget == 160


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("top_k", [None, 2])
def test_basis_shift_equals_materializing_the_elites_as_experts(name, top_k):
    """Merging θ₀ + λ·τ with λ = μ @ B must equal merging the round's own experts, where each
    round's experts are the previous round's top-K merged models, built densely here."""
    rng = np.random.default_rng(0)
    n_experts, size = 4, 9
    base, task_vectors = rng.normal(size=size), rng.normal(size=(n_experts, size))  # θ₀, τ (N × size)
    target = rng.normal(size=size)
    loss = lambda weights: np.sum((weights - target) ** 2, axis=-1)

    opt = make(name, n_experts, popsize=5, seed=1, rounds=3, top_k=top_k)
    experts = task_vectors.copy()  # this round's experts as dense task vectors (k × size)
    round_rows, round_losses = [], []
    while opt.round < 2 or len(round_rows) < 2:
        current_round, xs, mus = opt.round, opt.ask(), opt.round_rows.copy()
        merged = base + xs @ task_vectors  # what the worker merges: original-expert coordinates
        np.testing.assert_allclose(merged, base + mus @ experts, atol=1e-10)
        opt.tell(xs, loss(merged))
        round_rows.append(mus), round_losses.append(loss(merged))
        if opt.round != current_round:  # the round ended: materialize its top-K as the new experts
            rows, losses = np.vstack(round_rows), np.concatenate(round_losses)
            top = np.argsort(losses, kind="stable")[: top_k or n_experts]
            experts = (base + rows[top] @ experts) - base
            round_rows, round_losses = [], []
            assert opt.basis.shape == (len(top), n_experts)
            np.testing.assert_allclose(base + opt.basis @ task_vectors, base + experts, atol=1e-10)


def test_failed_rows_never_become_experts():
    opt = OPTIMIZERS["random"](3, popsize=6, seed=0, rounds=2, budget=24, top_k=3)
    rows = []
    for _ in range(2):
        xs = opt.ask()
        rows.append(xs)
        opt.tell(xs, np.where(np.arange(6) < 4, np.inf, np.sum(xs, axis=1)))  # only 2 rows per generation ok
    finite = np.vstack([r[4:] for r in rows])
    expected = finite[np.argsort(np.sum(finite, axis=1))[:3]]
    np.testing.assert_array_equal(opt.basis, expected)


def test_a_round_without_any_result_keeps_the_basis():
    opt = OPTIMIZERS["random"](3, popsize=6, seed=0, rounds=2, budget=24)
    for _ in range(2):
        xs = opt.ask()
        opt.tell(xs, np.full(6, np.inf))
    assert opt.round == 1 and np.array_equal(opt.basis, np.eye(3))


def test_round_rows_map_to_asked_rows():
    opt = make("cmaes", 3, popsize=5, seed=0, rounds=3)
    while opt.round == 0:
        xs = opt.ask()
        opt.tell(xs, np.sum(xs**2, axis=1))
    np.testing.assert_allclose(opt.ask(), opt.round_rows @ opt.basis)
    assert np.all(np.abs(opt.round_rows) <= 1)  # the box applies in round coordinates


@pytest.mark.parametrize("name", [n for n in NAMES if n != "random"])
def test_grouped_start_sets_each_expert_alone_in_every_layer_group(name):
    """With groups, "each expert alone" means all of that expert's coefficients at 1, in round 1 only."""
    opt = make(name, 6, popsize=8, seed=0, rounds=2, top_k=2, groups=2)
    xs = opt.ask()
    alone = np.kron(np.eye(3), np.ones(2))
    if name == "cmaes":  # a mean, not a population: the average merge, 1/experts per coefficient
        assert np.allclose(opt.strategy.es.x0, 1 / 3)
    else:
        assert np.allclose(xs[:3], alone) and np.allclose(xs[3], 1 / 3)
    while opt.round == 0:
        opt.tell(xs, np.sum((xs - 0.2) ** 2, axis=1))
        xs = opt.ask()
    assert opt.round_groups == 1 and len(opt.basis) == 2


def test_groups_must_divide_the_coefficients():
    from evogm.errors import EvogmError

    with pytest.raises(EvogmError, match="groups=4 does not divide"):
        OPTIMIZERS["pso"](6, groups=4)


def test_resolve_hands_the_layer_groups_to_optimizers_that_take_them(tmp_path):
    from evogm.config import load_config, resolve

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    for optimizer, expected in (("pso", 4), ("evogm-plus", 4), ("evogm", 4), ("random", None)):
        cfg = load_config(root / "configs" / "zoo.yaml", ["models.groups=4", f"search.optimizer={optimizer}",
                                                          "search.options={}"])
        assert resolve(cfg, tmp_path).search.options.get("groups") == expected
