"""EvoGM+: EvoGM's generators and rounds, with the population kept alive and every batch screened.

>>> import numpy as np
>>> opt = EvoGMPlus(4, popsize=8, seed=0, iterations=2, steps=5, hidden_sizes=(16,))
>>> opt.budget
48
>>> xs = opt.ask(); xs.shape                    # round 1 starts from the hybrid population
(8, 4)
>>> opt.tell(xs, np.sum((xs - 0.3) ** 2, axis=1))
>>> opt.ask().shape                             # then batches of rows picked from a screened pool
(10, 4)

What it keeps from EvoGM (ALGORITHM.md): the hybrid initial population, the history H split into
winners and losers, the generator pair G₋₊ / G₊₋ trained on them with the cycle term, (μ+λ)
truncation of the population, and rounds whose top-K rows become the next round's experts.

What it changes, each for a measured failure of the paper's algorithm (docs/results.md):
1. **The generator proposes, a model of the history disposes.** Each iteration builds a pool of
   ``pool`` candidates (default 50·P) instead of P: G₋₊ applied to the population, to rows of H
   and to jittered population rows, those proposals pushed further along their direction
   (x + α·(G₋₊(x) − x), α ∈ {1.5, 2}, against the generator's contraction); sparse steps around
   the best rows of H; pairs of the P best rows recombined (``recombine``, default 20% of the pool:
   added, as task arithmetic adds experts, crossed coordinate by coordinate, or a differential step
   as large as their spread); uniform draws in the box; and the P/2 most promising moved downhill
   on the model's mean. A Gaussian process fitted to every evaluation so far (``surrogate.py``)
   picks P of them by Thompson sampling, so a batch goes where the history says a gain is likely,
   and the batch stays diverse.
2. **Steps of every size, a few experts or all at once.** Half the local steps change 1 to 3
   coordinates (an expert switched on, off or re-weighted), half change every coordinate (what
   correlated experts need), each by σ log-uniform in [0.01, 1]; the model, not a fixed schedule,
   decides which pay. Merges that use some experts at full weight and others not
   at all (the zoo's best merges) are a few such steps from one expert; a first version that
   moved every coordinate at once stayed at the best single expert for 80 evaluations there.
3. **No evaluation is spent twice.** A new round's hybrid population starts with the elites
   themselves (one-hots in the new coordinates), whose losses are known: they join the history
   at once, and random rows take their place in the P rows evaluated. The GP lives in the
   original coordinates and keeps every round's evaluations.

Failed evaluations (inf) are never winners, elites or GP data. ``dense_share`` (default 0.5) of the
local steps move every coefficient at once instead of 1 to 3: correlated experts need that (their
best merge shifts every coefficient to cancel what they share; docs/results.md); 0 keeps every step
sparse. ``scale_shift`` (default 0.2; 0 is the variant ``evogm-plus-noshift``) turns that share
of the local steps into moves along the merge's own directions: every λ scaled by one factor in
[0.5, 2] (task arithmetic's scale), or every λ shifted by one amount (toward or away from the
uniform merge). Isotropic steps rarely move along those two directions, and on a merge landscape
they matter most: the global scale is task arithmetic's one knob, and experts that share a
component need every λ lowered together to cancel it. ``sum_input`` (default on; off is the variant
``evogm-plus-nosum``) gives the GP the coefficients' sum as one more input with its own length scale,
so that the model, not only the steps, sees the all-ones direction. ``warp`` (default on; off is the
variant ``evogm-plus-nowarp``) fits the GP to the normal scores of the losses' ranks rather than to
the standardized losses themselves; ``warp="auto"`` (the variant ``evogm-plus-autowarp``) fits it
both ways at every ask and keeps the fit whose leave-one-out means order the losses best.
``lengthscale`` (default ``"auto"``) fits the GP with two length-scale priors at every ask, the
one whose median grows with √d and one at half the box in every dimension, and keeps the fit whose
leave-one-out means order the losses best; None keeps the first alone, a number sets the median
(1.0 is the variant ``evogm-plus-short``).
``batch`` (default 10; None: P) is the number of rows each screened generation asks for: fewer rows
per generation refit the GP more often within the same budget; the start is still P rows and a
round still spends P·(1 + iterations) evaluations. ``round_start`` (default ``"screened"``) starts
every round after the first from its elites, already evaluated, and screens its first generation
like any other; ``"hybrid"`` spends it on the paper's hybrid population in the elites' span, random
rows in place of the elites. These three, with ``gp_restarts=True``, are the variant ``evogm-plus-b10rs``; EvoGM+'s
first defaults (None, None, ``"hybrid"``) are the variant ``evogm-plus-first``, and every other
variant named here keeps them, as docs/results.md measured it, with its one change. ``start`` (default
``"hybrid"``, the paper's P rows) set to ``"experts"`` starts round 1 with each expert alone and the
uniform merge only, and screens every row after them (the variant ``evogm-plus-screened``); a
round's last generation takes what is left of its budget. ``gp_restarts`` (default False) refits
the GP from its last fit and the prior's centre only; True (the variant ``evogm-plus-restarts``, and
every variant measured before, b10rs included) also starts every refit from short length scales:
three L-BFGS fits per prior instead of two.
``surrogate=False`` turns off the screening (P pool rows drawn at random: the generators and local
steps alone), for ablations.
"""

from __future__ import annotations

import numpy as np

from evogm.errors import EvogmError
from evogm.search.base import check_choice, check_fraction, check_positive, child_seed, hybrid_population
from evogm.search.evogm import split_winners_losers, truncate
from evogm.search.generators import GeneratorPair
from evogm.search.rounds import Rounds
from evogm.search.surrogate import GaussianProcess

LOCAL_SIGMA = (0.01, 1.0)  # local steps' σ range (the box is 2 wide)


class Archive:
    """Every evaluation of the run in original coordinates (shared by the rounds)."""

    def __init__(self, dim: int):
        self.rows, self.losses = np.empty((0, dim)), np.empty(0)

    def add(self, rows: np.ndarray, losses: np.ndarray) -> None:
        self.rows, self.losses = np.vstack([self.rows, rows]), np.concatenate([self.losses, losses])

    def lookup(self, rows: np.ndarray) -> np.ndarray:
        """The logged loss of each row (nan where the row was never evaluated)."""
        out = np.full(len(rows), np.nan)
        for i, row in enumerate(rows):
            match = np.flatnonzero(np.all(np.isclose(self.rows, row, rtol=0, atol=1e-9), axis=1))
            if len(match):
                out[i] = self.losses[match[0]]
        return out


class EvoGMPlusRound:
    """One round in round coordinates (box [−1, 1]^k); ``basis`` maps rows to original coordinates."""

    def __init__(self, dim: int, *, popsize: int, seed: int, basis: np.ndarray, archive: Archive,
                 winner_portion: float, steps: int, pool: int, surrogate: bool, acquisition: str,
                 dense_share: float, recombine: float, make_generators, groups: int,
                 scale_shift: float, sum_input: bool, warp: bool | str,
                 lengthscale: float | str | None, gp_restarts: bool, batch: int, round_start: str,
                 start_rows: str, round_budget: int):  # defaults: EvoGMPlus's, the one place they live
        self.dim, self.popsize, self.basis, self.archive = dim, popsize, basis, archive
        self.batch, self.left = batch, round_budget  # evaluations this round still plans
        self.winner_portion, self.steps, self.pool_size, self.use_surrogate = winner_portion, steps, pool, surrogate
        self.acquisition, self.dense_share, self.recombine = acquisition, dense_share, recombine
        self.scale_shift = scale_shift
        self.rng = np.random.default_rng(seed)
        self.generators: GeneratorPair = make_generators(child_seed(seed, 1, 0))
        self.gp = GaussianProcess(sum_input=sum_input, warp=warp, lengthscale=lengthscale, restarts=gp_restarts)
        self.population = self.population_losses = None
        start = hybrid_population(dim, popsize, self.rng, (-1.0, 1.0), groups)
        if start_rows == "experts":  # round 1 only (EvoGMPlus passes it there): no random rows
            start = start[: min(dim // groups + 1, popsize)]
        known = archive.lookup(start @ basis)  # a later round's one-hots are the elites: known
        self.history_rows, self.history_losses = start[~np.isnan(known)], known[~np.isnan(known)]
        extra = self.rng.uniform(-1.0, 1.0, size=(len(start) - int(np.isnan(known).sum()), dim))
        self.start = np.vstack([start[np.isnan(known)], extra])  # P new rows: random ones replace the elites
        if round_start == "screened" and len(self.history_losses):  # a later round: its elites are the start
            self.population, self.population_losses = truncate(self.history_rows, self.history_losses, popsize)

    def ask(self) -> np.ndarray:
        if self.population is None:
            return self.start
        winners, losers = split_winners_losers(self.history_rows, self.history_losses, self.winner_portion)
        if len(winners):
            self.generators.train(winners, losers, steps=self.steps, rng=self.rng)
        pool = self._pool()  # original coordinates
        batch = min(self.batch, self.left) if self.left > 0 else self.batch  # the round's last rows fit it
        if not self.use_surrogate or np.isfinite(self.archive.losses).sum() < 2:
            return self._to_round(pool[self.rng.choice(len(pool), batch, replace=False)])
        self.gp.fit(self.archive.rows, self.archive.losses)
        mean, _ = self.gp.predict(pool)
        pool = np.vstack([pool, self.gp.descend(pool[np.argsort(mean)[: self.popsize // 2]])])
        if self.acquisition == "ei":
            return self._to_round(pool[self.gp.expected_improvement(pool, batch)])
        return self._to_round(pool[self.gp.thompson(pool, batch, self.rng)])

    def _to_round(self, xs: np.ndarray) -> np.ndarray:
        """Original coordinates → this round's, by least squares: exact when the basis is invertible
        (K = N independent elites), else the nearest point of the elites' span."""
        return np.linalg.lstsq(self.basis.T, xs.T, rcond=None)[0].T

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        self.left -= len(xs)
        self.history_rows = np.vstack([self.history_rows, xs])
        self.history_losses = np.concatenate([self.history_losses, losses])
        if self.population is None:  # the start, with the known elites
            self.population, self.population_losses = truncate(self.history_rows, self.history_losses, self.popsize)
            return
        self.population, self.population_losses = truncate(
            np.vstack([self.population, xs]), np.concatenate([self.population_losses, losses]), self.popsize)

    # --- the pool ------------------------------------------------------------------------------

    def _pool(self) -> np.ndarray:
        """Candidates in original coordinates: the generators' (made in round coordinates), pairs of
        good rows recombined, steps around the best rows evaluated so far, uniform draws in the box."""
        n, dim = self.pool_size, self.basis.shape[1]
        generated = self._generated(n // 4) @ self.basis
        finite = np.flatnonzero(np.isfinite(self.archive.losses))
        top = self.archive.rows[finite[np.argsort(self.archive.losses[finite], kind="stable")[: self.popsize]]]
        n_recombined = int(round(self.recombine * n)) if len(top) >= 2 else 0
        recombined = np.clip(self._recombined(top, n_recombined), -1.0, 1.0)
        local = np.clip(self._local(top[:3], (13 * n) // 20 - n_recombined), -1.0, 1.0) if len(top) \
            else np.empty((0, dim))
        uniform = self.rng.uniform(-1.0, 1.0, size=(n - len(generated) - len(recombined) - len(local), dim))
        return np.vstack([generated, recombined, local, uniform])

    def _recombined(self, top: np.ndarray, n: int) -> np.ndarray:
        """Two of the P best rows evaluated so far, combined: added (their task vectors summed, as
        task arithmetic adds experts), crossed coordinate by coordinate, or the best row moved by
        F·(a − b) with F uniform in [0.5, 1] (a step as large as the good rows' spread)."""
        if n == 0:
            return np.empty((0, top.shape[1]))
        a, b = top[self.rng.integers(len(top), size=(2, n))]
        kind = self.rng.integers(3, size=(n, 1))
        crossed = np.where(self.rng.random(a.shape) < 0.5, a, b)
        moved = top[0] + self.rng.uniform(0.5, 1.0, size=(n, 1)) * (a - b)
        return np.where(kind == 0, a + b, np.where(kind == 1, crossed, moved))

    def _generated(self, n: int) -> np.ndarray:
        """G₋₊ on the population, on rows of H and on jittered population rows; then pushed further."""
        rows = self.history_rows[self.rng.integers(len(self.history_rows), size=max(1, n // 3 - 2 * self.popsize))]
        jitter = self.population + self.rng.normal(scale=0.1, size=self.population.shape)
        inputs = np.vstack([self.population, jitter, rows])
        out = self.generators.propose(inputs)
        pushed = [np.clip(inputs + a * (out - inputs), -1.0, 1.0) for a in (1.5, 2.0)]
        return np.vstack([out, *pushed])[:n]

    def _local(self, centers: np.ndarray, n: int) -> np.ndarray:
        """Sparse steps around the centers: each changes 1 to 3 coefficients (a merge's experts are
        switched on, off or re-weighted a few at a time) by σ log-uniform in [0.01, 1]."""
        dim = centers.shape[1]
        base = centers[self.rng.integers(len(centers), size=n)]
        changed = np.minimum(self.rng.integers(1, 4, size=n), dim)
        if self.dense_share:  # that share of the steps moves every coefficient
            changed[: int(round(self.dense_share * n))] = dim
        mask = np.argsort(self.rng.random((n, dim)), axis=1) < changed[:, None]
        sigma = 10.0 ** self.rng.uniform(np.log10(LOCAL_SIGMA[0]), np.log10(LOCAL_SIGMA[1]), size=(n, 1))
        steps = base + mask * sigma * self.rng.standard_normal((n, dim))
        k = int(round(self.scale_shift * n))
        if k:  # the merge's own directions: all of λ scaled, or all of λ shifted by one amount
            scale = 2.0 ** self.rng.uniform(-1.0, 1.0, size=(k, 1))
            shift = sigma[-k:] * self.rng.standard_normal((k, 1))
            steps[-k:] = np.where(self.rng.random((k, 1)) < 0.5, base[-k:] * scale, base[-k:] + shift)
        return steps


class EvoGMPlus(Rounds):
    """EvoGM+ with its defaults; the generator options are EvoGM's (smaller generators by default,
    trained with a larger learning rate, warm across a round's iterations)."""

    # options whose default changed, at their value before: a saved run that does not name them
    # predates them, and ran with these (evogm.config.options_as_run)
    FORMER_DEFAULTS = {"lengthscale": None, "batch": None, "round_start": "hybrid", "gp_restarts": True}

    def __init__(self, dim: int, *, popsize: int = 20, seed: int = 42, rounds: int = 2, iterations: int = 3,
                 top_k: int | None = None, winner_portion: float = 0.3, hidden_sizes: tuple[int, ...] = (32, 32),
                 lr: float = 1e-3, steps: int = 30, cycle_scale: float = 100.0, opt_scale: float = 1.0,
                 pool: int | None = None, surrogate: bool = True, acquisition: str = "thompson",
                 dense_share: float = 0.5, recombine: float = 0.2, scale_shift: float = 0.2,
                 sum_input: bool = True, warp: bool | str = True, lengthscale: float | str | None = "auto",
                 batch: int | None = 10, round_start: str = "screened", start: str = "hybrid",
                 gp_restarts: bool = False, groups: int = 1, threads: int | None = 1):
        check_positive(popsize=popsize, iterations=iterations, steps=steps, pool=pool, threads=threads, batch=batch)
        check_choice("round_start", round_start, ("hybrid", "screened"))
        check_choice("start", start, ("hybrid", "experts"))
        check_fraction(winner_portion=winner_portion)
        check_choice("acquisition", acquisition, ("thompson", "ei"))
        check_choice("warp", warp, (True, False, "auto"))
        if not 0.0 <= dense_share <= 1.0:
            raise EvogmError(f"dense_share={dense_share!r} is not allowed", "it is a share of the local steps",
                             "give a number in [0, 1]")
        if not 0.0 <= scale_shift <= 1.0:
            raise EvogmError(f"scale_shift={scale_shift!r} is not allowed", "it is a share of the local steps",
                             "give a number in [0, 1]")
        if not 0.0 <= recombine <= 0.6:
            raise EvogmError(f"recombine={recombine!r} is not allowed", "it is a share of the pool taken from "
                             "the local steps' 65%", "give a number in [0, 0.6]")
        number = isinstance(lengthscale, (int, float)) and not isinstance(lengthscale, bool)
        if lengthscale not in (None, "auto") and not (number and 0.0 < lengthscale < float("inf")):
            raise EvogmError(f"lengthscale={lengthscale!r} is not allowed", "it is the median of the GP's "
                             "length-scale prior", "give a positive number (1.0 is half the box), auto or null")
        pool, batch = pool or 50 * popsize, batch or popsize
        self.archive = Archive(dim)

        def start_round(k: int, round_seed: int) -> EvoGMPlusRound:
            make_generators = lambda s: GeneratorPair(k, seed=s, hidden_sizes=tuple(hidden_sizes), lr=lr,
                                                      cycle_scale=cycle_scale, opt_scale=opt_scale, threads=threads)
            return EvoGMPlusRound(k, popsize=popsize, seed=round_seed, basis=self.basis, archive=self.archive,
                                  winner_portion=winner_portion, steps=steps, pool=max(pool, popsize, batch),
                                  surrogate=surrogate, acquisition=acquisition, dense_share=dense_share,
                                  recombine=recombine, scale_shift=scale_shift, sum_input=sum_input, warp=warp,
                                  lengthscale=lengthscale, gp_restarts=gp_restarts, batch=batch,
                                  round_start=round_start,
                                  start_rows=start if self.round == 0 else "hybrid", round_budget=round_budget,
                                  make_generators=make_generators, groups=self.round_groups)

        round_budget = popsize * (1 + iterations)
        super().__init__(dim, seed=seed, rounds=rounds, top_k=top_k, groups=groups,
                         round_budget=round_budget, start_round=start_round)

    def _finish_generation(self) -> None:
        self.archive.add(self._generation @ self.basis, np.array(self._told))
        super()._finish_generation()

