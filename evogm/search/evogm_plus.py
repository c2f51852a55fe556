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

It keeps EvoGM's hybrid initial population, its history H split into winners and losers, the
generator pair trained on them with the cycle term, (μ+λ) truncation, and rounds whose top-K rows
become the next round's experts. What it adds (docs/algorithm.md says why):

1. **The generator proposes, a model of the history disposes.** Each generation builds a pool of
   candidates (``pool``, default 50·P; its make-up is the ``POOL_*`` shares below): G₋₊'s proposals
   and the same proposals pushed further along their direction, pairs of the best rows recombined,
   local steps around the best rows, uniform draws in the box, and the most promising rows moved
   downhill on the model's mean. A Gaussian process fitted to every evaluation so far
   (``surrogate.py``) picks ``batch`` of them by Thompson sampling.
2. **Steps of every size, a few experts or all at once, and along the merge's own directions**
   (λ scaled as a whole, or shifted by one amount).
3. **No evaluation is spent twice.** A later round starts from its elites, whose losses are known;
   the GP lives in the original coordinates and keeps every round's evaluations.
4. **One round in large spaces.** Where the K elites would be half a round's evaluations or more,
   the schedule is one round of the same length (``EvoGMPlus``).

Failed evaluations (inf) are never winners, elites or GP data. ``screen=False`` draws each batch
from the pool at random instead (the generators and local steps alone: an ablation).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from evogm.search.base import POPSIZE, check_fraction, check_positive, child_seed, failed_as_inf, hybrid_population
from evogm.search.evogm import split_winners_losers, truncate
from evogm.search.rounds import Rounds, elite_count

# A screened generation's pool of n candidates (the rest of it: uniform draws in the box)
POOL_PER_MEMBER = 50  # n = 50·P unless options.pool says otherwise
POOL_GENERATED = Fraction(1, 4)  # G₋₊'s proposals, and the same pushed by the factors below
POOL_NEAR_BEST = Fraction(13, 20)  # recombined pairs of the best rows, and local steps around them
POOL_RECOMBINED = 0.2  # of n, out of the near-best share
PUSHES = (1.5, 2.0)  # x + α·(G₋₊(x) − x): against the generator's contraction toward the winners' mean
DENSE_STEPS = 0.5  # of the local steps: every coefficient moves (the others move 1 to 3)
MERGE_DIRECTION_STEPS = 0.2  # of the local steps: all of λ scaled in [0.5, 2], or all shifted by one amount
LOCAL_SIGMA = (0.01, 1.0)  # local steps' σ, log-uniform in this range (the box is 2 wide)


@dataclass(frozen=True)
class EvoGMPlusOptions:
    """EvoGM+'s options. The generator options are EvoGM's, with smaller generators trained with a
    larger learning rate (warm across a round's iterations)."""

    rounds: int | None = None  # None: 2, or in large spaces 1 as long as both (EvoGMPlus says when)
    iterations: int = 3  # a round spends P·(1 + iterations) evaluations
    top_k: int | None = None  # elites kept as the next round's experts; None: N
    winner_portion: float = 0.3
    hidden_sizes: tuple[int, ...] = (32, 32)
    lr: float = 1e-3
    steps: int = 30  # Adam steps per generation
    cycle_scale: float = 100.0
    opt_scale: float = 1.0
    pool: int | None = None  # candidates screened per generation; None: 50·P
    batch: int = 10  # rows each screened generation asks for (fewer rows: more GP refits per budget)
    screen: bool = True  # False: each batch drawn from the pool at random (an ablation)
    threads: int | None = 1
    groups: int = 1

    def __post_init__(self):
        check_positive(rounds=self.rounds, iterations=self.iterations, steps=self.steps, pool=self.pool,
                       threads=self.threads, batch=self.batch)
        check_fraction(winner_portion=self.winner_portion)


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
                 options: EvoGMPlusOptions, make_generators, groups: int, round_budget: int):
        self.dim, self.popsize, self.basis, self.archive, self.options = dim, popsize, basis, archive, options
        self.pool_size = max(options.pool or POOL_PER_MEMBER * popsize, popsize, options.batch)
        self.left = round_budget  # evaluations this round still plans
        self.rng = np.random.default_rng(seed)
        from evogm.search.surrogate import GaussianProcess  # torch, imported where it is used

        self.generators = make_generators(child_seed(seed, 1, 0))
        self.gp = GaussianProcess()
        self.population = self.population_losses = None
        start = hybrid_population(dim, popsize, self.rng, (-1.0, 1.0), groups)
        known = archive.lookup(start @ basis)  # a later round's one-hots are the elites: known
        self.history_rows, self.history_losses = start[~np.isnan(known)], known[~np.isnan(known)]
        later = len(self.history_losses) > 0  # a later round starts from its elites, already evaluated
        self.start = start[:0] if later else start  # round 1 asks the hybrid population; a later one, screened rows
        if later:
            self.population, self.population_losses = truncate(self.history_rows, self.history_losses, popsize)
            self.rng.uniform(-1.0, 1.0, size=(len(self.history_losses), dim))  # keeps the random stream of recorded runs
        self._next_start, self._open_pool, self._told_since_pool, self._fitted = 0, None, 0, 0  # the asynchronous search's place

    def ask(self) -> np.ndarray:
        if self.population is None:
            return self.start
        pool, screened = self._candidates()
        batch = min(self.options.batch, self.left) if self.left > 0 else self.options.batch  # the round's last rows
        if not screened:
            return self._to_round(pool[self.rng.choice(len(pool), batch, replace=False)])
        return self._to_round(pool[self.gp.thompson(pool, batch, self.rng)])

    def _candidates(self) -> tuple[np.ndarray, bool]:
        """A generation's pool (original coordinates), made after training the generators on H, and
        whether the GP screens it: then the GP is fitted to every evaluation so far, and the pool
        holds the most promising rows moved downhill on its mean too."""
        winners, losers = split_winners_losers(self.history_rows, self.history_losses, self.options.winner_portion)
        if len(winners):
            self.generators.train(winners, losers, steps=self.options.steps, rng=self.rng)
        pool = self._pool()
        if not self.options.screen or np.isfinite(self.archive.losses).sum() < 2:
            return pool, False
        self.gp.fit(self.archive.rows, self.archive.losses)
        mean, _ = self.gp.predict(pool)
        return np.vstack([pool, self.gp.descend(pool[np.argsort(mean)[: self.popsize // 2]])]), True

    # --- asynchronous: one row at a time, aware of the rows still being evaluated ---------------

    def ask_one(self, pending: np.ndarray) -> np.ndarray:
        """One row (round coordinates) while the rows `pending` (original coordinates) are evaluated:
        the start's rows in order, then rows of a pool made as a synchronous generation makes it, and
        made again after every `batch` results (the generators trained as often as the synchronous
        search trains them). Each row is the minimizer of one Thompson draw from the GP, fitted again
        to every result told so far and believing the pending rows score its mean there
        (`GaussianProcess.believing`); the row leaves the pool. (Fitted only with each pool, the GP
        would miss up to `batch` + workers results at a draw, against at most `batch` in a synchronous
        generation.)"""
        if self._next_start < len(self.start):
            self._next_start += 1
            return self.start[self._next_start - 1]
        if self.population is None:  # nothing told yet (more workers than the start has rows)
            return self.rng.uniform(-1.0, 1.0, size=self.dim)
        if self._open_pool is None or self._told_since_pool >= self.options.batch or not len(self._open_pool[0]):
            self._open_pool, self._told_since_pool, self._fitted = self._candidates(), 0, len(self.archive.losses)
        pool, screened = self._open_pool
        if screened and len(self.archive.losses) > self._fitted:
            self.gp.fit(self.archive.rows, self.archive.losses)
            self._fitted = len(self.archive.losses)
        if screened:
            pick = int(self.gp.believing(pending).thompson(pool, 1, self.rng)[0])
        else:
            pick = int(self.rng.integers(len(pool)))
        self._open_pool = (np.delete(pool, pick, axis=0), screened)
        return self._to_round(pool[pick][None])[0]

    def tell_one(self, row: np.ndarray, loss: float) -> None:
        """One result of `ask_one`'s rows (round coordinates), in any order: into H and the (μ+λ) population."""
        self.left -= 1
        self._told_since_pool += 1
        row, losses = np.asarray(row, dtype=np.float64)[None], np.array([loss])
        self.history_rows = np.vstack([self.history_rows, row])
        self.history_losses = np.concatenate([self.history_losses, losses])
        if self.population is None:
            self.population, self.population_losses = row, losses
        else:
            self.population, self.population_losses = truncate(
                np.vstack([self.population, row]), np.concatenate([self.population_losses, losses]), self.popsize)

    def _to_round(self, xs: np.ndarray) -> np.ndarray:
        """Original coordinates → this round's, by least squares: exact when the basis is invertible
        (K = N independent elites), else the nearest point of the elites' span."""
        return np.linalg.lstsq(self.basis.T, xs.T, rcond=None)[0].T

    def tell(self, xs: np.ndarray, losses: np.ndarray) -> None:
        self.left -= len(xs)
        self.history_rows = np.vstack([self.history_rows, xs])
        self.history_losses = np.concatenate([self.history_losses, losses])
        if self.population is None:  # the start
            self.population, self.population_losses = truncate(self.history_rows, self.history_losses, self.popsize)
            return
        self.population, self.population_losses = truncate(
            np.vstack([self.population, xs]), np.concatenate([self.population_losses, losses]), self.popsize)

    # --- the pool ------------------------------------------------------------------------------

    def _pool(self) -> np.ndarray:
        """Candidates in original coordinates: the generators' (made in round coordinates), pairs of
        good rows recombined, steps around the best rows evaluated so far, uniform draws in the box."""
        n, dim = self.pool_size, self.basis.shape[1]
        generated = self._generated(int(n * POOL_GENERATED)) @ self.basis
        finite = np.flatnonzero(np.isfinite(self.archive.losses))
        top = self.archive.rows[finite[np.argsort(self.archive.losses[finite], kind="stable")[: self.popsize]]]
        n_recombined = int(round(POOL_RECOMBINED * n)) if len(top) >= 2 else 0
        recombined = np.clip(self._recombined(top, n_recombined), -1.0, 1.0)
        local = np.clip(self._local(top[:3], int(n * POOL_NEAR_BEST) - n_recombined), -1.0, 1.0) if len(top) \
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
        pushed = [np.clip(inputs + a * (out - inputs), -1.0, 1.0) for a in PUSHES]
        return np.vstack([out, *pushed])[:n]

    def _local(self, centers: np.ndarray, n: int) -> np.ndarray:
        """Steps around the centers by σ log-uniform in LOCAL_SIGMA: most change 1 to 3 coefficients
        (an expert switched on, off or re-weighted), DENSE_STEPS of them every coefficient (what
        correlated experts need), and MERGE_DIRECTION_STEPS of them scale or shift all of λ at once."""
        dim = centers.shape[1]
        base = centers[self.rng.integers(len(centers), size=n)]
        changed = np.minimum(self.rng.integers(1, 4, size=n), dim)
        changed[: int(round(DENSE_STEPS * n))] = dim
        mask = np.argsort(self.rng.random((n, dim)), axis=1) < changed[:, None]
        sigma = 10.0 ** self.rng.uniform(np.log10(LOCAL_SIGMA[0]), np.log10(LOCAL_SIGMA[1]), size=(n, 1))
        steps = base + mask * sigma * self.rng.standard_normal((n, dim))
        k = int(round(MERGE_DIRECTION_STEPS * n))
        if k:  # the merge's own directions: all of λ scaled, or all of λ shifted by one amount
            scale = 2.0 ** self.rng.uniform(-1.0, 1.0, size=(k, 1))
            shift = sigma[-k:] * self.rng.standard_normal((k, 1))
            steps[-k:] = np.where(self.rng.random((k, 1)) < 0.5, base[-k:] * scale, base[-k:] + shift)
        return steps


class EvoGMPlus(Rounds):
    """EvoGM+ with its defaults; ``options`` are the fields of ``EvoGMPlusOptions``.

    Unless ``rounds`` is given it runs two rounds of P·(1 + iterations) evaluations, or, where the
    K elites would be half a round's evaluations or more (K = N ≥ 40 at P = 20), one round of the
    same 2·P·(1 + iterations): elites that are most of the round are no selection, and a later round
    would only search a skewed box over them, far outside the original one, instead of going on.

    >>> EvoGMPlus(8).rounds, EvoGMPlus(64).rounds, EvoGMPlus(64).budget, EvoGMPlus(64, rounds=2).rounds
    (2, 1, 160, 2)
    """

    Options = EvoGMPlusOptions

    def __init__(self, dim: int, *, popsize: int = POPSIZE, seed: int = 42, **options):
        from evogm.search.generators import GeneratorPair  # torch, imported where it is used

        check_positive(popsize=popsize)
        o = self.options = EvoGMPlusOptions(**options)
        self.archive = Archive(dim)
        rounds, round_budget = o.rounds or 2, popsize * (1 + o.iterations)
        if o.rounds is None and 2 * elite_count(o.top_k, dim) >= round_budget:  # the elites would be no selection
            rounds, round_budget = 1, 2 * round_budget

        def start_round(k: int, round_seed: int) -> EvoGMPlusRound:
            make_generators = lambda s: GeneratorPair(k, seed=s, hidden_sizes=tuple(o.hidden_sizes), lr=o.lr,
                                                      cycle_scale=o.cycle_scale, opt_scale=o.opt_scale,
                                                      threads=o.threads)
            return EvoGMPlusRound(k, popsize=popsize, seed=round_seed, basis=self.basis, archive=self.archive,
                                  options=o, make_generators=make_generators, groups=self.round_groups,
                                  round_budget=round_budget)

        super().__init__(dim, seed=seed, rounds=rounds, top_k=o.top_k, groups=o.groups,
                         round_budget=round_budget, start_round=start_round)

    def _finish_generation(self) -> None:
        self.archive.add(self._generation @ self.basis, np.array(self._told))
        super()._finish_generation()

    def tell_one(self, x: np.ndarray, loss: float) -> None:
        loss = float(failed_as_inf([loss])[0])
        self.archive.add(np.asarray(x, dtype=np.float64)[None], np.array([loss]))  # the GP sees every round's rows
        super().tell_one(x, loss)
