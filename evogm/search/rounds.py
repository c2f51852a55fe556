"""Rounds and the basis shift, written once for every optimizer.

A ``Strategy`` searches one round in round coordinates λ (rows of length k, inside the box).
``Rounds`` turns it into an ``Optimizer``: every asked row leaves as ``λ @ B`` in original-expert
coordinates, where the basis B (k × dim) starts as the identity. After every round but the last
the round's top-K rows become the next round's experts, ``B ← Λ_top @ B``, and a fresh strategy
(its own seed, a K-dimensional box) starts the next round. Because merging is linear, this is the
same as materializing the elites as new experts, with no new weights.

>>> import numpy as np
>>> from evogm.search.random_search import RandomRound
>>> opt = Rounds(3, seed=0, rounds=2, top_k=2, round_budget=4,
...              start_round=lambda k, seed: RandomRound(k, popsize=4, seed=seed, bounds=(-1, 1)))
>>> xs = opt.ask(); opt.tell(xs, np.arange(4.0))     # round 1 ends after 4 evaluations
>>> opt.round, opt.basis.shape                      # round 2 searches the span of 2 elites
(1, (2, 3))
>>> np.allclose(opt.basis, xs[:2])                  # the elites, best first
True

Bookkeeping lives here too, so strategies only see whole generations and clean losses:
- ``ask()`` returns the rows of the current generation that still await losses. Asking again
  without telling returns the same rows (so a resumed runner can replay); a new generation is
  drawn only once every row of the previous one has its loss.
- ``tell(xs, losses)`` accepts any prefix of those rows (a runner may truncate the last ask to its
  budget); the strategy is told when the generation is complete. Non-finite losses become inf.
- A round ends at the first generation boundary at or after ``round_budget`` evaluations. In the
  last round the strategy simply goes on, so asking past ``budget`` keeps working.
- ``groups`` (coefficients per expert, for layer groups) is known to round 1 only, as
  ``round_groups``: a strategy's structured start ("each expert alone") uses it; later rounds'
  experts are whole merges, one coefficient each. ``resolve`` sets it from ``models.groups`` for
  every optimizer that takes it (all but ``random``; with one group every start is as before).
- Asynchronously (``ask_one`` / ``tell_one``, for a strategy that has them): one row at a time, told
  in any order; a round ends once it has asked its budget, from the elites told by then.
- Elites are the best finite rows of the round (failed rows are never experts). If the round had
  fewer than K finite rows the next round has fewer experts; with none, the basis stays as it was.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from evogm.errors import EvogmError
from evogm.search.base import Strategy, check_positive, child_seed, failed_as_inf, ranking

StartRound = Callable[[int, int], Strategy]  # (round dimension k, round seed) -> a fresh strategy


def elite_count(top_k: int | None, dim: int) -> int:
    """K, the elites a round hands to the next as its experts: `top_k`, or N (the paper's default)."""
    return top_k or dim


class Rounds:
    """The ask/tell optimizer every entry of OPTIMIZERS is: a strategy run for ``rounds`` rounds."""

    def __init__(self, dim: int, *, seed: int, rounds: int, top_k: int | None, round_budget: int,
                 start_round: StartRound, groups: int = 1):
        check_positive(dim=dim, rounds=rounds, top_k=top_k, round_budget=round_budget, groups=groups)
        if dim % groups:
            raise EvogmError(f"groups={groups} does not divide the {dim} coefficients",
                             "each expert has one coefficient per layer group", "set groups to models.groups")
        self.dim, self.rounds, self.round_budget, self.groups = dim, rounds, round_budget, groups
        self.top_k = elite_count(top_k, dim)
        self.seed = seed
        self._start_round = start_round
        self.round = 0
        self.basis = np.eye(dim)  # (k, dim): round coordinates -> original-expert coordinates
        self.best_x: np.ndarray | None = None  # best row seen in any round, original coordinates
        self.best_loss = np.inf
        self._pending: list[tuple[np.ndarray, np.ndarray, int]] = []  # ask_one's rows awaiting losses: (x, row, round)
        self._begin_round()

    @property
    def budget(self) -> int:
        """Evaluations the schedule plans: ``rounds · round_budget``."""
        return self.rounds * self.round_budget

    @property
    def round_groups(self) -> int:
        """Coefficients per expert in the current round's coordinates: ``groups`` in round 1, then 1
        (the next rounds' experts are whole merges)."""
        return self.groups if self.round == 0 else 1

    @property
    def strategy(self) -> Strategy:
        """The current round's strategy (e.g. EvoGM's population, history H and generators)."""
        return self._strategy

    @property
    def round_rows(self) -> np.ndarray:
        """The rows awaiting losses, in round coordinates, shape (n, k); ``ask() == round_rows @ basis``."""
        if self._generation is None:
            return np.empty((0, len(self.basis)))
        return self._generation[len(self._told):]

    def ask(self) -> np.ndarray:
        if self._generation is None:
            self._generation = np.asarray(self._strategy.ask(), dtype=np.float64)
        return self.round_rows @ self.basis

    def tell(self, xs, losses) -> None:
        losses = failed_as_inf(losses)
        if len(losses) == 0:
            return
        self._check_rows(np.atleast_2d(np.asarray(xs, dtype=np.float64)), len(losses))
        self._remember(self.round_rows[: len(losses)], losses)
        self._told.extend(losses)
        if len(self._told) == len(self._generation):
            self._finish_generation()

    # --- asynchronous: one row at a time ------------------------------------------------------

    @property
    def asynchronous(self) -> bool:
        """Whether it can be asked one row at a time while others are evaluated (`ask_one`): its
        strategy says how (EvoGM+ and random search do; the others are asked whole generations)."""
        return hasattr(self._strategy, "ask_one")

    def ask_one(self, pending: np.ndarray) -> np.ndarray:
        """One row in original coordinates while the rows `pending` (n, dim) are still being evaluated.

        A round ends once it has asked its budget: the next ask starts the next round from the elites
        among the round's rows told by then. A row of an earlier round told later reaches the
        optimizer's own records (`tell_one`), not the round it came from."""
        if self._asked >= self.round_budget and self.round < self.rounds - 1:
            self._shift_basis()
        pending = np.asarray(pending, dtype=np.float64).reshape(-1, self.dim)
        row = np.asarray(self._strategy.ask_one(pending), dtype=np.float64)
        self._asked += 1
        x = row @ self.basis
        self._pending.append((x, row, self.round))
        return x

    def tell_one(self, x: np.ndarray, loss: float) -> None:
        """The loss of one row `ask_one` returned (the same array values), in any order."""
        x = np.asarray(x, dtype=np.float64)
        match = next((i for i, (asked, _, _) in enumerate(self._pending) if np.array_equal(asked, x)), None)
        if match is None:
            raise ValueError("tell_one() got a row that ask_one() did not return, or one already told")
        _, row, round_ = self._pending.pop(match)
        loss = float(failed_as_inf([loss])[0])
        if round_ == self.round:
            self._strategy.tell_one(row, loss)
            self._history_rows = np.vstack([self._history_rows, row[None]])
            self._history_losses = np.append(self._history_losses, loss)
        if loss < self.best_loss:
            self.best_x, self.best_loss = x, loss

    # --- steps ---------------------------------------------------------------------------------

    def _begin_round(self) -> None:
        k = len(self.basis)
        self._strategy = self._start_round(k, child_seed(self.seed, self.round))
        self._history_rows, self._history_losses = np.empty((0, k)), np.empty(0)
        self._generation, self._told = None, []
        self._asked = 0  # rows the round's strategy was asked one at a time (`ask_one`)

    def _finish_generation(self) -> None:
        rows, losses = self._generation, np.array(self._told)
        self._strategy.tell(rows, losses)
        self._history_rows = np.vstack([self._history_rows, rows])
        self._history_losses = np.concatenate([self._history_losses, losses])
        self._generation, self._told = None, []
        if len(self._history_losses) >= self.round_budget and self.round < self.rounds - 1:
            self._shift_basis()

    def _shift_basis(self) -> None:
        """The round's top-K become the next round's experts: B ← Λ_top @ B."""
        finite = np.flatnonzero(np.isfinite(self._history_losses))
        top = finite[ranking(self._history_losses[finite])][: self.top_k]
        if len(top):
            self.basis = self._history_rows[top] @ self.basis
        self.round += 1
        self._begin_round()

    def _remember(self, rows: np.ndarray, losses: np.ndarray) -> None:
        if len(losses) and losses.min() < self.best_loss:
            i = int(np.argmin(losses))
            self.best_x, self.best_loss = rows[i] @ self.basis, float(losses[i])

    def _check_rows(self, xs: np.ndarray, n: int) -> None:
        """tell() must get a prefix of what ask() returned, in order (a runner bug otherwise)."""
        if len(xs) != n:
            raise ValueError(f"tell() got {len(xs)} rows but {n} losses")
        if n > len(self.round_rows):
            raise ValueError(f"tell() got {n} rows; only {len(self.round_rows)} were asked and not yet told")
        expected = self.round_rows[: len(xs)] @ self.basis
        if xs.shape != expected.shape or not np.allclose(xs, expected, rtol=1e-7, atol=1e-9):
            raise ValueError("tell() got rows that differ from the ones ask() returned (same rows, same order)")


def round_share(budget: int, rounds: int, popsize: int) -> int:
    """Evaluations per round for a total ``budget``: whole generations, rounded up (rounds > 1).

    >>> round_share(160, 1, 20), round_share(160, 2, 20), round_share(150, 2, 20)
    (160, 80, 80)
    """
    check_positive(budget=budget, rounds=rounds, popsize=popsize)
    if rounds == 1:
        return budget
    return -(-budget // (rounds * popsize)) * popsize
