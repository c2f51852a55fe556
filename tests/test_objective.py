"""The objective on the real Merger and tiny LoRA / full experts: x → Result, failures as data."""

import math
import sys
import textwrap

import numpy as np
import pytest
from test_tasks_fixtures import em_items, mc_items, one_thread, write_task  # noqa: F401

from evogm.errors import EvogmError
from evogm.merge import Merger
from evogm.models import load_models
from evogm.objective import Objective
from evogm.runlog import Result
from evogm.scoring import fitness, score
from evogm.tasks import load_tasks

FITNESS_MODULE = """
import torch

calls = []

def flaky(model, tokenizer, split="dev"):
    calls.append(split)
    if len(calls) == 1:
        raise ValueError("the judge is down")
    return {"reward": 0.25, "is_test": float(split == "test")}

def unnamed(model, tokenizer):
    return {"reward": 1.0}

def oom(model, tokenizer):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
"""


@pytest.fixture(scope="module")
def models(tiny_models):
    experts = {name: tiny_models[name] for name in ("lora_qv", "lora_mlp", "full_mlp")}
    return load_models(tiny_models["base"], experts, dtype="float32", device="cpu")


@pytest.fixture
def merger(models):
    merger = Merger(models.model, models.experts)
    yield merger
    merger.reset()


@pytest.fixture
def fitness_module(tmp_path, monkeypatch):
    package = tmp_path / "userfit"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fitness.py").write_text(textwrap.dedent(FITNESS_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userfit.fitness"
    for name in [m for m in sys.modules if m.startswith("userfit")]:
        del sys.modules[name]


@pytest.fixture
def tasks(tmp_path):
    mc, em = mc_items(6, 0), em_items(6, 1)
    return load_tasks([{"path": write_task(tmp_path / "mc.json", mc, mc_items(4, 9)), "weight": 1.0},
                       {"path": write_task(tmp_path / "em.json", em), "weight": 3.0, "max_new_tokens": 3}])


def test_a_result_records_the_merge_the_scores_and_the_loss(merger, models, tasks):
    objective = Objective(merger, models.tokenizer, tasks)
    x = np.array([0.5, -0.25, 1.5])
    result = objective(x)
    assert isinstance(result, Result) and result.ok and result.error is None
    assert result.coefficients == (0.5, -0.25, 1.5)
    assert set(result.metrics) == {"mc/accuracy", "em/accuracy"}
    expected = (1.0 * result.metrics["mc/accuracy"] + 3.0 * result.metrics["em/accuracy"]) / 4.0
    assert result.loss == pytest.approx(-expected) and result.seconds > 0
    assert objective(x).metrics == result.metrics  # the merge is rewritten from θ₀: no drift


def test_single_task_mode_scores_one_task_whatever_its_weight(merger, models, tmp_path):
    tasks = load_tasks([{"path": write_task(tmp_path / "mc.json", mc_items(6, 0)), "weight": 0.0},
                        {"path": write_task(tmp_path / "em.json", em_items(6, 1))}])
    result = Objective(merger, models.tokenizer, tasks, target="mc")(np.ones(3))
    assert list(result.metrics) == ["mc/accuracy"] and result.loss == -result.metrics["mc/accuracy"]
    with pytest.raises(EvogmError, match="did you mean 'mc'"):
        Objective(merger, models.tokenizer, tasks, target="mcc")


def test_a_failing_user_function_is_data_and_the_next_evaluation_works(merger, models, fitness_module):
    tasks = load_tasks([{"name": "judge", "type": "python", "function": f"{fitness_module}:flaky", "primary": "reward"}])
    objective = Objective(merger, models.tokenizer, tasks)
    failed = objective(np.zeros(3))
    assert failed.loss == math.inf and not failed.ok and failed.metrics == {}
    assert failed.error == "ValueError: the judge is down" and failed.coefficients == (0.0, 0.0, 0.0)
    after = objective(np.zeros(3))
    assert after.ok and after.loss == -0.25 and after.metrics == {"judge/reward": 0.25, "judge/is_test": 0.0}
    no_primary = load_tasks([{"name": "judge", "type": "python", "function": f"{fitness_module}:unnamed"}])
    missing = Objective(merger, models.tokenizer, no_primary)(np.zeros(3))
    assert missing.error.startswith("KeyError") and "without the primary metric 'score'" in missing.error
    with pytest.raises(EvogmError, match="cannot import userfit.fitness:nothing"):
        load_tasks([{"name": "j", "type": "python", "function": f"{fitness_module}:nothing"}])


def test_out_of_memory_non_finite_logits_and_bad_coefficients_are_data(merger, models, tasks, fitness_module):
    oom = load_tasks([{"name": "big", "type": "python", "function": f"{fitness_module}:oom"}])
    result = Objective(merger, models.tokenizer, oom)(np.zeros(3))
    assert result.loss == math.inf and result.error.startswith("OutOfMemoryError: CUDA out of memory")
    objective = Objective(merger, models.tokenizer, tasks)
    exploded = objective(np.full(3, 1e30))  # finite λ, but the merged weights overflow
    assert exploded.loss == math.inf and exploded.error.startswith("FloatingPointError: non-finite logits in task")
    nan = objective(np.array([np.nan, 0.0, 0.0]))
    assert nan.loss == math.inf and nan.error == "ValueError: coefficients must be finite" and math.isnan(nan.coefficients[0])
    assert objective(np.full(3, 0.5)).ok


def test_the_test_split_is_reachable_only_through_the_final_report(merger, models, tasks, fitness_module):
    with pytest.raises(TypeError):  # the search's objective has no split to choose: it scores dev
        Objective(merger, models.tokenizer, tasks, split="test")
    judge = load_tasks([{"name": "judge", "type": "python", "function": f"{fitness_module}:flaky", "primary": "reward"}])
    search = Objective(merger, models.tokenizer, judge)
    final = lambda x: score(merger(x), models.tokenizer, judge, "test")  # what the final stage and `evogm eval` call
    assert search.split == "dev"
    search(np.zeros(3))  # the function's first call fails by design
    assert search(np.zeros(3)).metrics["judge/is_test"] == 0.0
    assert final(np.zeros(3))["judge/is_test"] == 1.0
    with pytest.raises(AttributeError):
        search.split = "test"
    dev = Objective(merger, models.tokenizer, tasks)
    assert dev.scored[0].prompts("dev") != dev.scored[0].prompts("test")  # mc.json's test items differ
    assert math.isfinite(fitness(score(merger(np.ones(3)), models.tokenizer, tasks, "test"), tasks))
