"""EvoGM: the paper's learned evolutionary optimizer (docs/algorithm.md), behind ask/tell.

>>> import numpy as np
>>> opt = EvoGM(4, popsize=8, seed=0, iterations=2, steps=5, hidden_sizes=(16, 16))
>>> opt.budget                                  # rounds · (P + T·P)
48
>>> xs = opt.ask(); xs[:5].tolist()[4]          # hybrid start: one-hots, then the uniform vector
[0.25, 0.25, 0.25, 0.25]
>>> opt.tell(xs, np.sum((xs - 0.3) ** 2, axis=1))
>>> opt.ask().shape                             # G₋₊(population), after training on the history
(8, 4)

One round (``EvoGMRound``, in round coordinates, box [−1, 1]^k):
1. the hybrid initial population is asked and told; the history H starts as that population;
2. each later ask is one iteration: split H into winners (best ⌊ρ·|H|⌋, at least one) and losers,
   train the generators on them, and propose C = clip(G₋₊(population));
3. telling C appends it to H and keeps the best P of population ∪ C ((μ+λ) truncation).
The rounds wrapper (``rounds.py``) ends a round after P + T·P evaluations and turns the round's
top-K into the next round's experts, so ``ask()`` always returns original-expert coefficients.

Choices where the paper leaves room:
- Failed evaluations (inf) are never winners and never elites; they stay in H as losers (their
  coefficient vectors are valid generator inputs), so they cannot poison the training set.
  If no row has a finite loss, the generators are not trained and the untrained G₋₊ proposes.
- Asking past the planned budget continues iterating in the last round.
- ``generator="single"`` trains G₋₊ alone with ``opt_scale · L_opt`` (no cycle term). The reference
  implementation adds its direct loss and the optimization loss, i.e. (1 + opt_scale) · L_opt;
  under Adam the two differ only through Adam's epsilon.
- ``reset="round"`` (the reference's default) builds the generators and their Adam state once per
  round; ``reset="iteration"`` (the paper's text) rebuilds them before every training. Iteration t
  of a round uses the same initialization seed in both modes when t = 0, so the options differ
  exactly where they say.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evogm.search.base import (PAPER_HIDDEN_SIZES, POPSIZE, check_choice, check_fraction, check_positive,
                               child_seed, hybrid_population, ranking)
from evogm.search.rounds import Rounds


def split_winners_losers(rows: np.ndarray, losses: np.ndarray, portion: float):
    """Winners H⁺ = the best max(1, ⌊ρ·|H|⌋) finite rows (best first); losers H⁻ = the rest.

    >>> w, l = split_winners_losers(np.arange(5.0)[:, None], np.array([3, 1, np.inf, 0, 2.0]), 0.4)
    >>> w.ravel().tolist(), l.ravel().tolist()
    ([3.0, 1.0], [4.0, 0.0, 2.0])
    """
    order = ranking(losses)
    n_winners = min(max(1, int(portion * len(rows))), int(np.isfinite(losses).sum()))
    return rows[order[:n_winners]], rows[order[n_winners:]]


def truncate(rows: np.ndarray, losses: np.ndarray, size: int):
    """(μ+λ) truncation: the best ``size`` rows, best first."""
    keep = ranking(losses)[:size]
    return rows[keep], losses[keep]


class EvoGMRound:
    """One EvoGM round in round coordinates; ``make_generators(seed)`` builds a GeneratorPair."""

    def __init__(self, dim: int, *, popsize: int, seed: int, winner_portion: float, steps: int,
                 reset: str, make_generators, groups: int = 1):
        self.dim, self.popsize, self.seed = dim, popsize, seed
        self.winner_portion, self.steps, self.reset = winner_portion, steps, reset
        self.make_generators, self.groups = make_generators, groups
        self.rng = np.random.default_rng(seed)  # hybrid population, then training batches
        self.population = self.population_losses = None  # (P, k), (P,)
        self.history_rows, self.history_losses = np.empty((0, dim)), np.empty(0)  # H
        self.iteration = 0  # iterations proposed so far in this round
        self.generators = None  # a GeneratorPair
        self.last_loss: dict | None = None  # loss parts of the last training step

    def ask(self) -> np.ndarray:
        if self.population is None:
            return hybrid_population(self.dim, self.popsize, self.rng, (-1.0, 1.0), self.groups)
        winners, losers = split_winners_losers(self.history_rows, self.history_losses, self.winner_portion)
        generators = self._generators_for_iteration()
        if len(winners):
            self.last_loss = generators.train(winners, losers, steps=self.steps, rng=self.rng)
        return generators.propose(self.population)

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        self.history_rows = np.vstack([self.history_rows, xs])
        self.history_losses = np.concatenate([self.history_losses, losses])
        if self.population is None:
            self.population, self.population_losses = xs, losses
            return
        self.iteration += 1
        self.population, self.population_losses = truncate(
            np.vstack([self.population, xs]), np.concatenate([self.population_losses, losses]), self.popsize)

    def _generators_for_iteration(self):
        if self.generators is None or self.reset == "iteration":
            reset_index = self.iteration if self.reset == "iteration" else 0
            self.generators = self.make_generators(child_seed(self.seed, 1, reset_index))
        return self.generators


@dataclass(frozen=True)
class EvoGMOptions:
    """EvoGM's options, at the paper's settings (docs/algorithm.md); each of its ablations is one of them.

    ``rounds=1, iterations=7`` is "no rounds" at the same budget; ``generator="single"`` drops G₊₋
    and the cycle term; ``cycle_scale=0`` keeps both generators but drops the cycle term;
    ``reset="iteration"`` re-initializes the generators every iteration (the paper's text).
    ``threads``: torch intra-op threads while training (restored afterwards); None leaves torch's.
    ``groups`` (set from ``models.groups``): with layer groups, the hybrid start's "each expert
    alone" sets all of an expert's coefficients; with one coefficient per expert it is the paper's.
    """

    rounds: int = 2  # R
    iterations: int = 3  # T, per round
    top_k: int | None = None  # K elites kept as the next round's experts; None: N
    winner_portion: float = 0.3  # ρ
    hidden_sizes: tuple[int, ...] = PAPER_HIDDEN_SIZES
    lr: float = 1e-4
    steps: int = 200  # Adam steps per iteration
    cycle_scale: float = 100.0  # α_c
    opt_scale: float = 1.0  # α_o
    generator: str = "dual"  # dual | single
    reset: str = "round"  # round (the reference implementation) | iteration (the paper's text)
    threads: int | None = 1
    groups: int = 1

    def __post_init__(self):
        check_positive(iterations=self.iterations, steps=self.steps, threads=self.threads)
        check_choice("generator", self.generator, ("dual", "single"))
        check_choice("reset", self.reset, ("round", "iteration"))
        check_fraction(winner_portion=self.winner_portion)


class EvoGM(Rounds):
    """EvoGM with the paper's defaults; ``options`` are the fields of ``EvoGMOptions``."""

    Options = EvoGMOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        from evogm.search.generators import GeneratorPair  # torch, imported where it is used

        check_positive(popsize=popsize)
        o = self.options = EvoGMOptions(**options)

        def start_round(k: int, round_seed: int) -> EvoGMRound:
            make_generators = lambda s: GeneratorPair(
                k, seed=s, hidden_sizes=tuple(o.hidden_sizes), dual=o.generator == "dual", lr=o.lr,
                cycle_scale=o.cycle_scale, opt_scale=o.opt_scale, threads=o.threads)
            return EvoGMRound(k, popsize=popsize, seed=round_seed, winner_portion=o.winner_portion,
                              steps=o.steps, reset=o.reset, make_generators=make_generators,
                              groups=self.round_groups)

        super().__init__(dim, seed=seed, rounds=o.rounds, top_k=o.top_k, groups=o.groups,
                         round_budget=popsize * (1 + o.iterations), start_round=start_round)
