"""Scoring, written once: score tasks on a model, and turn their metrics into the fitness.

The search's objective, the final stage (test split, static baselines; `Scoring`) and `evogm eval`
all call `score` and `fitness`, so a score means the same everywhere; a metric is keyed
"task/metric" (`metric_key`) wherever it is stored. The optimization target is
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

import dataclasses
import json
import math
from typing import Callable, Sequence

import numpy as np

from evogm.errors import EvogmError
from evogm.registry import did_you_mean
from evogm.runlog import is_full, stored_metrics

MULTI_TASK = "multi_task"  # the target that scores every task; any other target is one task's name


def metric_key(task: str, metric: str) -> str:
    """The key of one task's metric in every metrics dict: "task/metric"."""
    return f"{task}/{metric}"


def primary_key(task) -> str:
    """The key of the metric a task is searched on."""
    return metric_key(task.name, task.primary)


def scored_tasks(tasks: Sequence, target: str = MULTI_TASK) -> list:
    """The tasks a target scores: all of them (weights checked), or the one task it names."""
    tasks = list(tasks)
    if not tasks:
        raise EvogmError("no tasks to score", "the objective needs at least one task",
                         "list tasks in the config (tasks: [...])")
    if target == MULTI_TASK:
        task_weights(tasks)  # refuses weights that are not finite, ≥ 0, with a positive sum
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
    return {metric_key(task.name, key): value for task in tasks
            for key, value in score_task(model, tokenizer, task, split).items()}


def score_task(model, tokenizer, task, split: str) -> dict[str, float]:
    """{metric: value} of one task on `split`."""
    model.eval()  # dropout off, whatever mode the merge left it in
    return {key: float(value) for key, value in task.evaluate(model, tokenizer, split).items()}


def fitness(metrics: dict[str, float], tasks: Sequence, target: str = MULTI_TASK) -> float:
    """Weighted mean of the tasks' primary metrics (one task's target: its metric, whatever its weight)."""
    scores = np.array([metrics[primary_key(task)] for task in tasks], dtype=np.float64)
    weights = scaled_weights([task.weight if target == MULTI_TASK else 1.0 for task in tasks])
    return float(weights @ scores / weights.sum())


# --- task weights: the one rule ---------------------------------------------------------------------


def check_weight(task: str, value: object) -> float:
    """A task's weight as given: a finite number ≥ 0 (refused at load otherwise)."""
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < 0:
        raise EvogmError(f"task {task}: weight is {value!r}", "a weight is a finite number ≥ 0 (the fitness is "
                         "the tasks' weighted mean)", "write weight: 1.0 (or leave it out)")
    return number


def task_weights(tasks: Sequence, target: str = MULTI_TASK) -> np.ndarray:
    """The weights a target gives its tasks, summing to 1 (one task's target: equal weights)."""
    return normalized_weights([task.weight if target == MULTI_TASK else 1.0 for task in tasks])


def normalized_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights scaled to sum to 1, without overflow (`scaled_weights` first).

    >>> normalized_weights([1e308, 1e308]).tolist(), normalized_weights([3, 1]).tolist()
    ([0.5, 0.5], [0.75, 0.25])
    """
    values = scaled_weights(weights)
    return values / values.sum()


def scaled_weights(weights: Sequence[float]) -> np.ndarray:
    """Weights times the power of two that puts the largest in [0.5, 1): no weight, sum or product
    overflows (1e308), and since the scaling is exact a weighted mean Σ w·s / Σ w is the same to the last
    bit as with the weights given. Refused: a weight not finite or below 0, or none above 0."""
    values = np.asarray(weights, dtype=np.float64)
    if not values.size or not np.isfinite(values).all() or (values < 0).any() or not (values > 0).any():
        raise EvogmError("task weights must be finite and ≥ 0 with a positive sum", f"got {list(weights)}",
                         "fix the tasks' weights")
    return np.ldexp(values, -math.frexp(float(values.max()))[1])


@dataclasses.dataclass(frozen=True)
class Request:
    """One scoring of the final stage, on `split`: the task-arithmetic merge of `coefficients`, a
    candidate of the search space (`candidate`: outside the default space its numbers are not λ), or
    the static merge `method` with its `options` (JSON, so that a request is hashable: the memo's key)."""

    split: str
    coefficients: tuple[float, ...] = ()
    candidate: bool = False
    method: str = ""
    options: str = "{}"

    def on(self, split: str) -> "Request":
        return dataclasses.replace(self, split=split)


def merge_request(coefficients, split: str, candidate: bool = False) -> Request:
    return Request(split, tuple(float(c) for c in coefficients), candidate)


def static_request(method: str, split: str, **options) -> Request:
    return Request(split, method=method, options=json.dumps(options, sort_keys=True))


class Scoring:
    """The final stage's scorer: requests (a merge, a candidate or a static merge on dev or test)
    scored once each. `run([(fn, args, limit), …])` calls each `fn(ws, *args)` on a workspace (its
    resident model and tasks; `evogm.workspace`): here, or in worker processes side by side and with
    a time limit (`evogm.final`), a failure turned into data. `tasks` are the run's tasks
    (`evogm.tasks`), `timeout` the search's seconds per dev evaluation: a test evaluation gets as
    much more as its split has more items."""

    def __init__(self, tasks, target: str, run: Callable, timeout: float | None = None, plain: bool = True):
        self.tasks, self.target, self.timeout, self.plain = scored_tasks(tasks, target), target, timeout, plain
        self.primary = {t.name: primary_key(t) for t in self.tasks}
        self._run, self._memo = run, {}

    def dev_items(self) -> dict[str, int]:
        """Items each scored task has on dev (tasks from a data file; a Python fitness has none)."""
        return {t.name: len(t.data.items("dev")) for t in self.tasks if hasattr(t, "data")}

    def remember(self, records: list[dict]) -> None:
        """Take the search's full dev evaluations as scored: the best single expert's one-hots and the
        uniform merge are in the first population, so the dev sweeps of the final stage find them here."""
        for rec in filter(is_full, records):
            self._memo.setdefault(self._key(merge_request(rec["coefficients"], "dev", candidate=True)),
                                  {"score": -rec["loss"], "metrics": rec["metrics"]})

    def score(self, request: Request) -> dict:
        """{"score", "metrics"} of a request; one scored before (the best may be the initial best, the
        best single expert is one of the first population) is not scored again."""
        self.ahead([request])
        return self._memo[self._key(request)]

    def ahead(self, requests: list[Request]) -> None:
        """Score the requests not scored yet, all in one go: side by side where the stage has several
        workers. `score` then finds them."""
        missing = list(dict.fromkeys(key for key in map(self._key, requests) if key not in self._memo))
        for key, scored in zip(missing, self._run([self._job(key) for key in missing])):
            self._memo[key] = scored

    def _key(self, request: Request) -> Request:
        """In the default space a candidate is the task-arithmetic merge of its λ: one memo key for both."""
        return dataclasses.replace(request, candidate=False) if self.plain else request

    def _job(self, key: Request) -> tuple[Callable, tuple, float | None]:
        if key.method:
            args = (score_static, (self.target, key.method, json.loads(key.options), key.split))
        else:
            args = (score_candidate if key.candidate else score_merge, (self.target, list(key.coefficients), key.split))
        return (*args, self.limit(key.split))

    def limit(self, split: str) -> float | None:
        """Seconds for one evaluation on `split`: the timeout, times the split's items over dev's."""
        if self.timeout is None:
            return None
        items = {s: sum(len(t.data.items(s)) for t in self.tasks if hasattr(t, "data")) for s in ("dev", split)}
        return self.timeout * max(1.0, items[split] / items["dev"]) if items["dev"] else self.timeout


def score_merge(ws, target: str, coefficients, split: str) -> dict:
    """Merge `coefficients` into the workspace's resident model, then score it (`score_resident`)."""
    ws.merger(np.asarray(coefficients, dtype=np.float64))
    return score_resident(ws, target, split)


def score_candidate(ws, target: str, coefficients, split: str) -> dict:
    """Merge a candidate of the search space into the resident model (`Merger.candidate`), then score it."""
    ws.merger.candidate(np.asarray(coefficients, dtype=np.float64))
    return score_resident(ws, target, split)


def score_static(ws, target: str, method: str, options: dict, split: str) -> dict:
    """Write a static merge into the resident model, then score it (`score_resident`)."""
    ws.merger.static(method, **options)
    return score_resident(ws, target, split)


def score_resident(ws, target: str, split: str) -> dict:
    """{"score": the search's fitness (weighted mean), "metrics": {"task/metric": value}} of the
    resident model, as the search's log stores an evaluation: a metric that is not finite is None (an
    auxiliary one is data), a fitness that is not finite is a failure. A failure (a user fitness that
    raises, say) is {"score": None, "metrics": {}, "error": its text}, so that the final stage goes on
    and the report says what could not be scored."""
    tasks = scored_tasks(ws.tasks.values(), target)
    try:
        metrics = score(ws.merger.model, ws.models.tokenizer, tasks, split)
        value = fitness(metrics, tasks, target)
        if not math.isfinite(value):
            raise FloatingPointError(f"fitness is {value}")
        return {"score": value, "metrics": stored_metrics(metrics)}
    except EvogmError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — one candidate's failure must not lose the others' scores
        return failure(f"{type(exc).__name__}: {exc}")


def failure(error: str) -> dict:
    """A final-stage score that could not be computed."""
    return {"score": None, "metrics": {}, "error": error}
