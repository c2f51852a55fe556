"""Scoring, written once: score tasks on a model, and turn their metrics into the fitness.

The search's objective, the final stage (test split, static baselines) and `evogm eval` all call
these two functions, so a score means the same everywhere. The optimization target is
`MULTI_TASK` (every task, weighted mean of their primary metrics) or one task's name (that task's
primary metric alone, whatever its weight).

>>> class Task:                     # any object with name, weight, primary and evaluate()
...     def __init__(self, name, weight, value):
...         self.name, self.weight, self.primary, self.value = name, weight, "accuracy", value
...     def evaluate(self, model, tokenizer, split):
...         return {"accuracy": self.value}
>>> class Model:
...     def eval(self): return self
>>> tasks = [Task("add", 1.0, 0.5), Task("mc", 3.0, 0.9)]
>>> metrics = score(Model(), None, tasks, "dev")
>>> metrics
{'add/accuracy': 0.5, 'mc/accuracy': 0.9}
>>> round(fitness(metrics, tasks), 3), fitness(metrics, scored_tasks(tasks, "add"), "add")
(0.8, 0.5)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from evogm.errors import EvogmError
from evogm.registry import did_you_mean

MULTI_TASK = "multi_task"  # the target that scores every task; any other target is one task's name


def scored_tasks(tasks: Sequence, target: str = MULTI_TASK) -> list:
    """The tasks a target scores: all of them (weights checked), or the one task it names."""
    tasks = list(tasks)
    if not tasks:
        raise EvogmError("no tasks to score", "the objective needs at least one task",
                         "list tasks in the config (tasks: [...])")
    if target == MULTI_TASK:
        if sum(task.weight for task in tasks) <= 0 or any(task.weight < 0 for task in tasks):
            raise EvogmError("task weights must be ≥ 0 with a positive sum", f"got {[t.weight for t in tasks]}",
                             "fix the weights")
        return tasks
    chosen = [task for task in tasks if task.name == target]
    if not chosen:
        names = [task.name for task in tasks]
        why = did_you_mean(target, [*names, MULTI_TASK], otherwise=f"tasks: {names}", cutoff=0.6)
        raise EvogmError(f"mode {target!r} is neither multi_task nor a task name", why,
                         "use mode: multi_task or one task's name")
    return chosen


def score(model, tokenizer, tasks: Sequence, split: str) -> dict[str, float]:
    """{"task/metric": value} for every task on `split`, every metric higher-is-better."""
    model.eval()  # dropout off, whatever mode the merge left it in
    metrics: dict[str, float] = {}
    for task in tasks:
        scores = task.evaluate(model, tokenizer, split)
        metrics.update({f"{task.name}/{key}": float(value) for key, value in scores.items()})
    return metrics


def fitness(metrics: dict[str, float], tasks: Sequence, target: str = MULTI_TASK) -> float:
    """Weighted mean of the tasks' primary metrics (one task's target: its metric, whatever its weight)."""
    weights = np.array([task.weight if target == MULTI_TASK else 1.0 for task in tasks])
    scores = np.array([metrics[f"{task.name}/{task.primary}"] for task in tasks], dtype=np.float64)
    return float(weights @ scores / weights.sum())
