"""Adaptive evaluation: score a candidate chunk by chunk, stop once it cannot enter the kept set.

The kept set is what the search carries forward; its cut-off (`cutoff`) is the k-th best full
evaluation logged so far (k: `search.keep`, by default 1: the best so far), taken from the log before each generation, so a
resumed run replays it exactly. Before a generation holds k full evaluations there is no cut-off and
candidates are scored in full.

A candidate is scored in `chunks` looks; each look scores one chunk of every task that can be cut
(`evogm.tasks.chunks`: the same seeded permutation of the dev items for every candidate), the others
in full at the first look. After every look but the last, an upper confidence bound is compared with
the cut-off; below it, scoring stops and the Result is partial: each task's score is `estimate`d from
the items seen, with the cut-off's outcomes on every item as a control variate. Either bound is taken
at level δ = (1 − confidence) / (chunks − 1), a union bound over the looks.

- `paired` (default): a bound on the candidate's full fitness minus the cut-off's. Every evaluation
  keeps its per-item outcomes (`Result.outcomes`), so on the items seen so far the candidate is
  compared with the cut-off candidate item by item: merges near each other answer most items alike,
  and the differences vary far less than the scores. The bound is the normal approximation of the
  differences' mean (finite-population corrected; one pseudo-item each way keeps the variance of a
  handful of discordant items from collapsing): approximate, so the benchmark measures its error rate.
- `hoeffding`: Hoeffding's bound on the candidate's own score in [0, 1] with Serfling's
  finite-population factor. Exact at its confidence, and wide: it rarely stops anything on dev
  splits of a few hundred items.

>>> round(upper_bound([0.5, 0.5], [0.4, 0.6], seen=[50, 200], totals=[200, 200], delta=0.05), 4)
0.5752
>>> upper_bound([1.0], [0.7], seen=[200], totals=[200], delta=0.05)   # every item seen: the score itself
0.7
>>> round(paired_bound([1.0], [np.array([-1.0] * 6 + [0.0] * 44)], totals=[200], delta=0.05), 4)
-0.0393
>>> items_scored([{"items": {"a": 50, "b": 50}}, {"items": {"a": 10, "b": 10}, "partial": True}], {"a": 50, "b": 50})
(120, 200)
>>> cutoff([{"loss": -0.3}, {"loss": -0.9}, {"loss": -0.5, "partial": True}, {"loss": None}], keep=2).fitness
0.3
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

from evogm.runlog import flip, is_full
from evogm.scoring import MULTI_TASK, primary_key, score, task_weights
from evogm.tasks.chunks import dev_size, split_dev


@dataclass(frozen=True)
class Cutoff:
    """The kept set's cut-off: the k-th best full evaluation's fitness, its metrics, and its per-item
    outcomes (task → "0110…" in the seeded order; empty for a log written without them)."""

    fitness: float
    metrics: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)


def upper_bound(weights: Sequence[float], means: Sequence[float], *, seen: Sequence[int], totals: Sequence[int],
                delta: float) -> float:
    """An upper bound, holding with probability ≥ 1 − δ, on Σ wₜ·(the mean of all totalsₜ items of task t)
    (w normalized to sum 1), from the means of the first seenₜ items of a random order of each."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    n, big = np.asarray(seen, dtype=float), np.asarray(totals, dtype=float)
    factor = np.where(n >= big, 0.0, 1.0 - (n - 1.0) / np.maximum(big, 1.0))  # Serfling; 0 once all are seen
    variance = float(np.sum(w ** 2 * factor / np.maximum(n, 1.0)))
    return float(w @ np.asarray(means, dtype=float)) + math.sqrt(variance * math.log(1.0 / delta) / 2.0)


def paired_bound(weights: Sequence[float], diffs: Sequence, *, totals: Sequence[int], delta: float) -> float:
    """An upper confidence bound (normal approximation, level 1 − δ) on Σ wₜ·(the mean over all totalsₜ
    items of task t of candidate − cut-off), from the differences on the items seen (an array per task;
    a float: the task's exact difference, known in full). One pseudo-pair of items (+1 and −1), shared
    by the tasks still partly seen, keeps a handful of discordant items from making it overconfident."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    partly = [not np.isscalar(d) and len(d) < n for d, n in zip(diffs, totals)]
    pseudo = 1.0 / max(1, sum(partly))
    means, variances = zip(*(_difference(d, n, pseudo) if p else (float(np.mean(d)), 0.0)
                             for d, n, p in zip(diffs, totals, partly)))
    z = NormalDist().inv_cdf(1.0 - delta)
    return float(w @ np.array(means) + z * math.sqrt(float(np.sum(w ** 2 * np.array(variances)))))


def _difference(d, total: int, pseudo: float) -> tuple[float, float]:
    """(estimate of a task's mean difference over all its items, its variance) from the first n seen,
    with `pseudo` items of +1 and of −1 added."""
    d, n = np.asarray(d, dtype=float), len(d)
    squares = float(np.sum((d - d.mean()) ** 2)) + 2 * pseudo
    return float(d.sum() / (n + 2 * pseudo)), squares / (n + 2 * pseudo - 1) * (1.0 - n / total) / n


def stops(bound: str, weights: Sequence[float], mine: Sequence, theirs: Sequence | None, *, totals: Sequence[int],
          delta: float, cut_fitness: float) -> bool:
    """Whether the bound puts the candidate's full fitness below the cut-off's. Per task, `mine`: the
    candidate's outcomes on the items seen (an array) or its exact metric (a float, the task seen in
    full); `theirs` (paired only): the cut-off's outcomes on every item, or its metric."""
    if bound == "hoeffding":
        seen = [total if np.isscalar(m) else len(m) for m, total in zip(mine, totals)]
        return upper_bound(weights, [float(np.mean(m)) for m in mine], seen=seen, totals=totals,
                           delta=delta) < cut_fitness
    diffs = [m - t if np.isscalar(m) else np.asarray(m, dtype=float) - t[: len(m)] for m, t in zip(mine, theirs)]
    return paired_bound(weights, diffs, totals=totals, delta=delta) < 0.0


def cutoff(records: Sequence[dict], keep: int) -> Cutoff | None:
    """The `keep`-th best full, successful evaluation (None while there are fewer)."""
    full = sorted(filter(is_full, records), key=lambda r: r["loss"])
    if len(full) < keep:
        return None
    chosen = full[keep - 1]
    return Cutoff(flip(chosen["loss"]), dict(chosen.get("metrics", {})), dict(chosen.get("outcomes", {})))


def items_scored(records: Sequence[dict], dev_items: dict[str, int]) -> tuple[int, int]:
    """(dev items the log's evaluations scored, the items scoring each of them in full costs). A record
    without an item count (full evaluation, or a failure) counts in full."""
    whole = sum(dev_items.values())
    return sum(sum(r["items"].values()) if r.get("items") else whole for r in records), whole * len(records)


def thresholds(records: Sequence[dict], keep: int) -> dict[int, float | None]:
    """generation → the cut-off fitness its candidates were compared with (as the search loop computed it)."""
    gens = sorted({r["gen"] for r in records})
    return {g: (c.fitness if (c := cutoff([r for r in records if r["gen"] < g], keep)) else None) for g in gens}


def estimate(seen: Sequence, reference: np.ndarray | None = None) -> float:
    """A task's score from the outcomes on the first items of its seeded order: their mean, or, given
    a reference merge's outcomes on every item (the cut-off's), the regression estimator that uses it
    as a control variate: mean + β·(the reference's mean over all items − its mean over the items
    seen), β fitted on the items seen. Merges of the same experts answer most items alike, so the
    correction removes most of the sample's noise; clipped to [0, 1].

    >>> estimate([1, 0, 0, 0])
    0.25
    >>> estimate([1, 0, 0, 0], np.array([1, 0, 0, 0, 1, 1, 1, 1]))   # the reference did better on the unseen half
    0.625
    """
    mine = np.asarray(seen, dtype=float)
    if reference is None:
        return float(mine.mean())
    theirs = reference[: len(mine)]
    spread = float(np.var(theirs))
    beta = float(np.mean((mine - mine.mean()) * (theirs - theirs.mean()))) / spread if spread > 0 else 0.0
    return float(np.clip(mine.mean() + beta * (reference.mean() - theirs.mean()), 0.0, 1.0))


def encode(outcomes: Sequence) -> str:
    """Per-item 0/1 outcomes as a compact string for the log."""
    return "".join("1" if o else "0" for o in outcomes)


def decode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(float) - ord("0")


class ChunkedScorer:
    """Scores the target's tasks on dev look by look; `__call__` → (metrics, items per task, partial,
    outcomes per task).

    >>> # scorer = ChunkedScorer(tasks, MULTI_TASK, chunks=4, confidence=0.95, seed=42)
    >>> # metrics, items, partial, outcomes = scorer(model, tokenizer, threshold=cutoff(records, keep=20))
    """

    def __init__(self, tasks: Sequence, target: str = MULTI_TASK, *, chunks: int, confidence: float, seed: int,
                 bound: str = "paired"):
        self.tasks, self.bound = list(tasks), bound
        self.weights = list(task_weights(self.tasks, target))  # summing to 1: no overflow in the bounds
        self.parts = [split_dev(t, chunks, seed) or None for t in self.tasks]  # None: scored whole at the first look
        self.whole = [(split_dev(t, 1, seed) or [t])[0] for t in self.tasks]  # in the chunks' order, one batch
        self.totals = [dev_size(t) or 1 for t in self.tasks]
        self.looks = max([len(p) for p in self.parts if p] or [1])
        self.delta = (1.0 - confidence) / max(1, self.looks - 1)

    def __call__(self, model, tokenizer, threshold: Cutoff | None = None) -> tuple[dict, dict, bool, dict]:
        seen, metrics = [[] for _ in self.tasks], {}  # per cut task: its outcomes so far; the uncut tasks' metrics
        if threshold is None:
            self._look(model, tokenizer, self.whole, seen, metrics)
            return self._result(seen, metrics)
        for look in range(self.looks):
            self._look(model, tokenizer, [self._chunk(t, look) for t in range(len(self.tasks))], seen, metrics)
            if look < self.looks - 1 and self._below(seen, metrics, threshold):
                return self._result(seen, metrics, stopped_by=threshold)
        return self._result(seen, metrics)

    def _chunk(self, t: int, look: int):
        parts = self.parts[t]
        if parts is None:
            return self.tasks[t] if look == 0 else None
        return parts[look] if look < len(parts) else None

    def _look(self, model, tokenizer, tasks: list, seen: list, metrics: dict) -> None:
        model.eval()
        for t, task in enumerate(tasks):
            if task is None:
                continue
            if self.parts[t] is None:
                metrics.update(score(model, tokenizer, [task], "dev"))
            else:
                seen[t] += task.outcomes(model, tokenizer, "dev")

    def _below(self, seen: list, metrics: dict, cut: Cutoff) -> bool:
        """Whether the bound says the candidate's full fitness is below the cut-off's."""
        key = [primary_key(task) for task in self.tasks]
        mine = [metrics[k] if parts is None else seen[t] for t, (k, parts) in enumerate(zip(key, self.parts))]
        bound = self.bound if self._pairable(cut) else "hoeffding"
        theirs = [cut.metrics[k] if parts is None else decode(cut.outcomes[task.name])
                  for k, parts, task in zip(key, self.parts, self.tasks)] if bound == "paired" else None
        return stops(bound, self.weights, mine, theirs, totals=self.totals, delta=self.delta, cut_fitness=cut.fitness)

    def _pairable(self, cut: Cutoff) -> bool:
        """The cut-off's evaluation holds what pairing needs: every cut task's outcomes, the others' metrics."""
        return all(len(cut.outcomes.get(task.name, "")) == total if parts is not None
                   else primary_key(task) in cut.metrics
                   for task, parts, total in zip(self.tasks, self.parts, self.totals))

    def _result(self, seen: list, metrics: dict, stopped_by: Cutoff | None = None) -> tuple[dict, dict, bool, dict]:
        """(metrics, items, partial, outcomes); a candidate `stopped_by` a cut-off is partial, its cut tasks'
        scores estimated with the cut-off's outcomes where it has them."""
        cut = [(t, task) for t, task in enumerate(self.tasks) if self.parts[t] is not None]
        paired = stopped_by is not None and self._pairable(stopped_by)
        metrics = {**metrics, **{primary_key(task): estimate(seen[t], decode(stopped_by.outcomes[task.name]) if paired
                                                             else None) for t, task in cut}}
        items = {task.name: (len(seen[t]) if self.parts[t] is not None else self.totals[t])
                 for t, task in enumerate(self.tasks) if dev_size(task) is not None}
        return metrics, items, stopped_by is not None, {task.name: encode(seen[t]) for t, task in cut}
