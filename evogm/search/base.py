"""The optimizer contract (ask/tell) and the small numeric helpers every optimizer shares.

An optimizer sees numbers only: it proposes coefficient vectors and is told their losses (lower is
better; ``inf`` marks a failed evaluation). The loop lives outside it:

>>> import numpy as np
>>> from evogm.search import OPTIMIZERS
>>> opt = OPTIMIZERS["random"](3, popsize=4, seed=0)
>>> xs = opt.ask()                        # (4, 3) candidates in original-expert coordinates
>>> opt.tell(xs, np.sum(xs**2, axis=1))   # same rows, same order
>>> opt.ask().shape
(4, 3)

Two protocols live here. ``Optimizer`` is what the runner drives. ``Strategy`` is one round of a
search in round coordinates, inside the box, asked and told in whole generations; the rounds
wrapper (``rounds.py``) turns any strategy into an ``Optimizer``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from evogm.errors import EvogmError
from evogm.registry import did_you_mean

Bounds = tuple[float, float]
POPSIZE = 20  # P when the config leaves search.popsize out: the paper's (2N for its 10 experts)
PAPER_HIDDEN_SIZES = (128, 256, 256, 256, 128)  # the paper's generators' hidden layers


class Optimizer(Protocol):
    """What the runner drives: ``while evals < budget: xs = ask(); tell(xs, losses)``."""

    budget: int | None  # evaluations the optimizer's own schedule plans; None = no plan
    round: int  # the round the next ask belongs to (0-based; an optimizer without rounds stays at 0)

    def ask(self) -> np.ndarray: ...  # (n, dim) candidates in original-expert coordinates

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None: ...  # a prefix of the asked rows


class Strategy(Protocol):
    """One round of a search in round coordinates: whole generations, losses already sanitized."""

    def ask(self) -> np.ndarray: ...  # (n, k) rows inside the box

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None: ...  # all n rows; losses finite or inf


# --- losses -------------------------------------------------------------------------------------


def failed_as_inf(losses) -> np.ndarray:
    """Losses as float64 with every non-finite value (nan, ±inf) marked failed (+inf).

    A failed evaluation carries no information about its point, so −inf is not "infinitely good".
    >>> failed_as_inf([1.0, float("nan"), -float("inf")]).tolist()
    [1.0, inf, inf]
    """
    out = np.asarray(losses, dtype=np.float64).reshape(-1).copy()
    out[~np.isfinite(out)] = np.inf
    return out


def failed_as_worst(losses: np.ndarray) -> np.ndarray:
    """Replace inf by one finite value worse than every finite loss (for rank-based methods).

    >>> failed_as_worst(np.array([2.0, np.inf, -1.0])).tolist()
    [2.0, 5.0, -1.0]
    """
    finite = np.isfinite(losses)
    if finite.all():
        return losses.copy()
    worst = float(losses[finite].max()) if finite.any() else 0.0
    spread = float(np.ptp(losses[finite])) if finite.any() else 0.0
    return np.where(finite, losses, worst + max(spread, 1.0))


def ranking(losses: np.ndarray) -> np.ndarray:
    """Indices from best to worst; stable, so ties keep their order and runs stay reproducible."""
    return np.argsort(losses, kind="stable")


# --- populations ----------------------------------------------------------------------------------


def hybrid_population(dim: int, popsize: int, rng: np.random.Generator, bounds: Bounds,
                      groups: int = 1) -> np.ndarray:
    """The paper's initial population: every one-hot vector (each expert alone), the uniform vector
    (each expert at 1/experts), then uniform-random vectors in the box until there are ``popsize``
    (truncated if experts + 1 > popsize). Shape (popsize, dim).

    With ``groups`` coefficients per expert (layer groups, expert-major: expert e owns coordinates
    e·groups … e·groups + groups − 1), "each expert alone" sets all of that expert's groups to 1.

    >>> hybrid_population(2, 4, np.random.default_rng(0), (-1, 1))[:3].tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    >>> hybrid_population(4, 3, np.random.default_rng(0), (-1, 1), groups=2).tolist()
    [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]]
    """
    experts = dim // groups
    alone = np.kron(np.eye(experts), np.ones(groups))
    structured = np.vstack([alone, np.full((1, dim), 1.0 / experts)])[:popsize]
    random_rows = rng.uniform(*bounds, size=(popsize - len(structured), dim))
    return np.vstack([structured, random_rows])


def initial_population(init: str, dim: int, popsize: int, rng, bounds: Bounds, groups: int = 1) -> np.ndarray:
    """``hybrid`` (the paper's) or ``random`` (uniform in the box) initial population."""
    if init == "hybrid":
        return hybrid_population(dim, popsize, rng, bounds, groups)
    return rng.uniform(*bounds, size=(popsize, dim))


# --- seeds and options ----------------------------------------------------------------------------


def child_seed(seed: int, *path: int) -> int:
    """A reproducible seed for a named sub-stream (round r, generator reset t, ...).

    >>> child_seed(42, 1) == child_seed(42, 1) != child_seed(42, 2)
    True
    """
    return int(np.random.SeedSequence([int(seed), *path]).generate_state(1)[0])


def check_choice(name: str, value, choices) -> None:
    """A wrong option value is a user mistake at the edge: say which values exist."""
    if value not in choices:
        hint = did_you_mean(str(value), choices, f"use one of {list(choices)}", cutoff=0.6)
        raise EvogmError(f"{name}={value!r} is not an option", f"{name} is one of {list(choices)}", hint)


def check_positive(**values) -> None:
    """Sizes and counts must be at least 1."""
    for name, value in values.items():
        if value is not None and (int(value) != value or value < 1):
            raise EvogmError(f"{name}={value!r} is not allowed", f"{name} counts something", "give an integer ≥ 1")


def check_fraction(**values) -> None:
    """Shares and probabilities lie strictly between 0 and 1 (1 itself allowed)."""
    for name, value in values.items():
        if not 0.0 < value <= 1.0:
            raise EvogmError(f"{name}={value!r} is not allowed", f"{name} is a share", "give a number in (0, 1]")


def check_bounds(bounds) -> Bounds:
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise EvogmError(f"bounds={bounds!r} is empty", "the lower bound must be below the upper", "e.g. [-1, 1]")
    return lo, hi
