"""Task weights, one rule (evogm.scoring): finite and ≥ 0 at load, a positive sum, normalized before
any product, so the fitness, the adaptive bounds and the report's noise line never overflow."""

from __future__ import annotations

import math

import pytest
from test_tasks_fixtures import em_items, write_task

from evogm.errors import EvogmError
from evogm.report import search_gain
from evogm.scoring import MULTI_TASK, fitness, scored_tasks, task_weights
from evogm.tasks import load_task


class Task:
    def __init__(self, name: str, weight: float):
        self.name, self.weight, self.primary = name, weight, "accuracy"


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -float("inf"), "nan", "inf", -1, None, True, "heavy"])
def test_a_weight_that_is_not_a_finite_number_at_least_zero_is_refused_at_load(tmp_path, weight):
    with pytest.raises(EvogmError, match=rf"task sums: weight is {__import__('re').escape(repr(weight))}: a weight is "
                                         r"a finite number ≥ 0") as caught:
        load_task({"path": write_task(tmp_path / "sums.json", em_items(2, 0)), "weight": weight})
    assert "\n" not in str(caught.value)


def test_weights_are_checked_when_the_config_loads():
    from evogm.config import load_config
    from evogm.zoo.packaged import zoo_config

    for text in (".nan", "inf", "-2"):
        with pytest.raises(EvogmError, match="weight is"):
            load_config(zoo_config(), [f"tasks.0.weight={text}"])
    assert load_config(zoo_config(), ["tasks.0.weight=1e308"]).tasks[0]["weight"] == 1e308
    assert load_task({"name": "t", "type": "python", "function": "math:fsum", "weight": "2.5"}).weight == 2.5


def test_huge_weights_give_the_weighted_mean_without_overflow():
    metrics = {"a/accuracy": 0.5, "b/accuracy": 0.9}
    assert fitness(metrics, [Task("a", 1e308), Task("b", 1e308)]) == pytest.approx(0.7)  # was 0.0: the sum overflowed
    assert fitness(metrics, [Task("a", 1e308), Task("b", 1.0)]) == pytest.approx(0.5)
    assert fitness(metrics, [Task("a", 3.0), Task("b", 1.0)]) == pytest.approx(0.6)
    assert fitness(metrics, scored_tasks([Task("a", 0.0), Task("b", 5.0)], "b"), "b") == 0.9  # its metric
    assert task_weights([Task("a", 1e308), Task("b", 1e308), Task("c", 1e308)]).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -1.0], [1.0, math.nan], [math.inf, 1.0]])
def test_weights_without_a_positive_finite_sum_are_refused(weights):
    with pytest.raises(EvogmError, match="task weights must be finite and ≥ 0 with a positive sum"):
        scored_tasks([Task(str(i), w) for i, w in enumerate(weights)], MULTI_TASK)
    assert scored_tasks([Task(str(i), w) for i, w in enumerate(weights)], "0")  # one task's target ignores weights


def test_the_reports_noise_line_normalizes_the_weights_as_the_fitness_does():
    entry = lambda score, a, b: {"dev": {"score": score, "metrics": {"a/accuracy": a, "b/accuracy": b}}}  # noqa: E731
    final = {"target": MULTI_TASK, "tasks": {"a": "a/accuracy", "b": "b/accuracy"}, "dev_items": {"a": 50, "b": 20},
             "candidates": {"best": entry(0.7, 0.6, 0.8), "initial_best": entry(0.6, 0.5, 0.7)}}
    config = lambda wa, wb: {"tasks": [{"name": "a", "weight": wa}, {"name": "b", "weight": wb}]}  # noqa: E731
    huge = search_gain(config(1e308, 1e308), final)  # was OverflowError: 1e308 ** 2
    assert huge == search_gain(config(1, 1), final) and "× the dev split's noise" in huge
    by_hand = math.sqrt(sum(0.25 * p * (1 - p) / n for p, n in ((0.6, 50), (0.8, 20), (0.5, 50), (0.7, 20))))
    assert f"±{by_hand:.4f}" in huge
    assert search_gain(config(1e308, 1), final) == search_gain(config(1, 0), final)
