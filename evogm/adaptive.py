"""Adaptive evaluation: score a candidate chunk by chunk, stop once it cannot enter the kept set.

The kept set is what the search carries forward; its cut-off (`cutoff`) is the fitness of the
k-th best full evaluation logged so far (k: the population size), computed from the log before
each generation, so a resumed run replays it exactly. Before a generation holds k full
evaluations there is no cut-off and candidates are scored in full.

A candidate is scored in `chunks` looks; each look scores one chunk of every task that can be cut
(`evogm.tasks.chunks`), the others in full at the first look. After every look but the last, an
upper confidence bound on the candidate's full fitness (`upper_bound`) is compared with the cut-off:
below it, scoring stops and the Result is partial, its loss −(weighted mean of the items seen).
The bound is Hoeffding's for scores in [0, 1] with Serfling's finite-population factor (the items
seen are a uniformly random subset of the split: a seeded permutation), at level δ = (1 −
confidence) / (chunks − 1): a union bound over the looks, so that a candidate whose full fitness
is above the cut-off is stopped with probability at most 1 − confidence.

>>> round(upper_bound([0.5, 0.5], [0.4, 0.6], seen=[50, 200], totals=[200, 200], delta=0.05), 4)
0.5752
>>> upper_bound([1.0], [0.7], seen=[200], totals=[200], delta=0.05)   # every item seen: the score itself
0.7
>>> items_scored([{"items": {"a": 50, "b": 50}}, {"items": {"a": 10, "b": 10}, "partial": True}], {"a": 50, "b": 50})
(120, 200)
>>> cutoff([{"loss": -0.3}, {"loss": -0.9}, {"loss": -0.5, "partial": True}, {"loss": None}], keep=2)
0.3
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from evogm.runlog import flip
from evogm.scoring import MULTI_TASK, score
from evogm.tasks.chunks import dev_size, split_dev


def upper_bound(weights: Sequence[float], means: Sequence[float], *, seen: Sequence[int], totals: Sequence[int],
                delta: float) -> float:
    """An upper bound, holding with probability ≥ 1 − δ, on Σ wₜ·(the mean of all totalsₜ items of task t)
    (w normalized to sum 1), from the means of the first seenₜ items of a random order of each."""
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    n, big = np.asarray(seen, dtype=float), np.asarray(totals, dtype=float)
    factor = np.where(n >= big, 0.0, 1.0 - (n - 1.0) / np.maximum(big, 1.0))  # Serfling; 0 once all are seen
    variance = float(np.sum(w ** 2 * factor / np.maximum(n, 1.0)))
    return float(w @ np.asarray(means, dtype=float)) + math.sqrt(variance * math.log(1.0 / delta) / 2.0)


def cutoff(records: Sequence[dict], keep: int) -> float | None:
    """The fitness of the `keep`-th best full, successful evaluation (None while there are fewer)."""
    full = sorted((flip(r["loss"]) for r in records
                   if r.get("loss") is not None and not r.get("error") and not r.get("partial")), reverse=True)
    return full[keep - 1] if len(full) >= keep else None


def items_scored(records: Sequence[dict], dev_items: dict[str, int]) -> tuple[int, int]:
    """(dev items the log's evaluations scored, the items scoring each of them in full costs). A record
    without an item count (full evaluation, or a failure) counts in full."""
    whole = sum(dev_items.values())
    return sum(sum(r["items"].values()) if r.get("items") else whole for r in records), whole * len(records)


def thresholds(records: Sequence[dict], keep: int) -> dict[int, float | None]:
    """generation → the cut-off its candidates were compared with (as the search loop computed it)."""
    gens = sorted({r["gen"] for r in records})
    return {g: cutoff([r for r in records if r["gen"] < g], keep) for g in gens}


class ChunkedScorer:
    """Scores the target's tasks on dev look by look; `__call__` → (metrics, items per task, partial).

    >>> # scorer = ChunkedScorer(tasks, MULTI_TASK, chunks=4, confidence=0.95, seed=42)
    >>> # metrics, items, partial = scorer(model, tokenizer, threshold=0.61)
    """

    def __init__(self, tasks: Sequence, target: str = MULTI_TASK, *, chunks: int, confidence: float, seed: int):
        self.tasks = list(tasks)
        self.weights = [t.weight if target == MULTI_TASK else 1.0 for t in self.tasks]
        self.parts = [split_dev(t, chunks, seed) for t in self.tasks]  # None: scored whole at the first look
        self.totals = [dev_size(t) or 1 for t in self.tasks]
        self.looks = max([len(p) for p in self.parts if p] or [1])
        self.delta = (1.0 - confidence) / max(1, self.looks - 1)

    def full(self, model, tokenizer) -> tuple[dict, dict, bool]:
        """Every task on its whole dev split: the plain scorer's metrics."""
        return score(model, tokenizer, self.tasks, "dev"), self._items(self.totals), False

    def __call__(self, model, tokenizer, threshold: float | None) -> tuple[dict, dict, bool]:
        if threshold is None:
            return self.full(model, tokenizer)
        sums = [dict() for _ in self.tasks]  # per task: metric → Σ (items · value)
        seen = [0] * len(self.tasks)
        for look in range(self.looks):
            for t, task in enumerate(self.tasks):
                self._score_look(model, tokenizer, t, look, sums, seen)
            if look < self.looks - 1 and self._bound(sums, seen) < threshold:
                return self._metrics(sums, seen), self._items(seen), True
        return self._metrics(sums, seen), self._items(seen), False

    def _score_look(self, model, tokenizer, t: int, look: int, sums: list, seen: list) -> None:
        parts = self.parts[t]
        if (parts is None and look > 0) or (parts is not None and look >= len(parts)):
            return
        task = self.tasks[t] if parts is None else parts[look]
        n = self.totals[t] if parts is None else dev_size(task)
        for key, value in score(model, tokenizer, [task], "dev").items():
            sums[t][key] = sums[t].get(key, 0.0) + n * value
        seen[t] += n

    def _metrics(self, sums: list, seen: list) -> dict[str, float]:
        return {key: total / seen[t] for t in range(len(self.tasks)) for key, total in sums[t].items()}

    def _bound(self, sums: list, seen: list) -> float:
        means = [sums[t][f"{task.name}/{task.primary}"] / seen[t] for t, task in enumerate(self.tasks)]
        return upper_bound(self.weights, means, seen=seen, totals=self.totals, delta=self.delta)

    def _items(self, seen: list) -> dict[str, int]:
        return {task.name: int(n) for task, n in zip(self.tasks, seen) if dev_size(task) is not None}
