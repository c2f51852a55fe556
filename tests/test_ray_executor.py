"""The Ray executor on a real local Ray instance (2 CPUs, 2 workers of one thread): the same Results as
the local executor, a killed worker replaced with its candidate retried, a candidate that kills its
worker twice recorded as failed, and a run on Ray resuming a local run's log to the same end.
Skipped where Ray is not installed (the error without Ray is checked either way)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from evogm.config import from_dict
from evogm.errors import EvogmError
from evogm.executors import LocalExecutor, make_executor
from evogm.errors import EvogmWarning
from evogm.runlog import Result
from evogm.ray_executor import RayExecutor, import_ray
from evogm.workspace import objective_factory

EXPERTS = ("lora_qv", "lora_mlp", "full_mlp")
WORDS = ["red", "blue", "green", "black", "white", "pink", "gray", "brown", "cold", "hot", "big", "small"]


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module (starting one takes seconds), shut down after it."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def run_config(tiny_models, tmp_path_factory) -> dict:
    """A run over three tiny experts (2 LoRA, 1 full) and one 12-item multiple-choice task, as plain data."""
    root = tmp_path_factory.mktemp("ray_task")
    items = [{"question": f"Which is {w}?", "choices": dict(zip("ABCD", np.roll(WORDS, i)[:4].tolist())),
              "answer": "A"} for i, w in enumerate(WORDS)]
    (root / "pick.json").write_text(json.dumps({"dev": items, "test": items[:6]}))
    return {"models": {"base": str(tiny_models["base"]), "experts": {e: str(tiny_models[e]) for e in EXPERTS}},
            "tasks": [{"name": "pick", "path": str(root / "pick.json"), "type": "multiple_choice"}],
            "output": str(root / "run"), "seed": 3,
            "search": {"optimizer": "evogm", "budget": 12, "popsize": 4,
                       "options": {"rounds": 2, "iterations": 1, "steps": 5, "hidden_sizes": [16, 16]}},
            "baselines": {"methods": ["uniform"]}}


@pytest.fixture(scope="module")
def candidates() -> np.ndarray:
    return np.random.default_rng(0).normal(0.5, 0.6, size=(8, len(EXPERTS)))


@pytest.fixture(scope="module")
def local_results(run_config, candidates) -> list[Result]:
    factory = objective_factory(from_dict(run_config), "multi_task")
    return LocalExecutor(factory).map(candidates)


@pytest.fixture(scope="class")
def executor(ray_instance, run_config):
    """Two workers holding the instance's two CPUs: closed after its class, so later workers can start."""
    executor = RayExecutor(objective_factory(from_dict(run_config), "multi_task"), workers=2, cpus_per_worker=1)
    yield executor
    executor.close()


def same(a: list[Result], b: list[Result]) -> None:
    assert [r.coefficients for r in a] == [r.coefficients for r in b]
    assert [r.loss for r in a] == [r.loss for r in b] and all(r.ok for r in a)
    assert [r.metrics for r in a] == [r.metrics for r in b]


class TestOnTinyModels:
    """Two workers on tiny real models (two LoRA experts, one full), against the local executor."""

    def test_results_are_the_local_executors_in_row_order(self, executor, candidates, local_results):
        assert len(set(executor.ready().values())) == 2  # two worker processes, each with its resident model
        arrived = []
        results = executor.map(candidates, on_result=lambda row, r: arrived.append((row, r)))
        same(results, local_results)
        assert sorted(row for row, _ in arrived) == list(range(len(candidates)))  # each reported once, as it came
        assert all(results[row] is r for row, r in arrived) and executor.restarts == 0

    def test_a_killed_worker_is_replaced_and_every_candidate_evaluated(self, executor, candidates, local_results):
        killed = []

        def kill_once(row: int, result: Result) -> None:  # mid-run: the other candidates are in flight or waiting
            if not killed:
                killed.append(next(iter(executor.pids.values())))
                os.kill(killed[0], signal.SIGKILL)

        with pytest.warns(EvogmWarning, match="a Ray worker died .* a fresh worker replaces it") as said:
            results = executor.map(candidates, on_result=kill_once)
        same(results, local_results)
        assert len(said) == 1 and executor.restarts == 1 and killed[0] not in executor.pids.values()
        same(executor.map(candidates[:2]), local_results[:2])  # the replacement works on


class Crasher:
    """A real objective on numbers whose worker process dies on a poisoned candidate (x₀ > 100),
    as one does when a merge runs out of memory."""

    def __call__(self, x: np.ndarray) -> Result:
        if x[0] > 100:
            os._exit(1)
        return Result(tuple(x), float(np.sum((x - 0.3) ** 2)))


def test_a_candidate_that_kills_its_worker_twice_is_recorded_failed(ray_instance):
    xs = np.array([[0.1, 0.2], [0.3, 0.4], [101.0, 0.0], [0.5, 0.6], [0.7, 0.8]])
    executor = RayExecutor(Crasher, workers=2)
    try:
        with pytest.warns(EvogmWarning, match="a Ray worker died") as said:
            results = executor.map(xs)
        assert executor.restarts == 2 and len(said) == 2
        assert not results[2].ok and results[2].loss == math.inf and "died" in results[2].error
        assert results[2].coefficients == tuple(xs[2])
        assert [r.loss for i, r in enumerate(results) if i != 2] == [float(np.sum((x - 0.3) ** 2)) for x in np.delete(xs, 2, 0)]
        assert executor.map(xs[:2])[1].ok  # and the search goes on
    finally:
        executor.close()


def test_a_run_on_ray_resumes_a_local_runs_log_and_ends_the_same(ray_instance, run_config, tmp_path: Path):
    from evogm.run import run

    local = tmp_path / "local"
    run(from_dict({**run_config, "output": str(local)}))
    on_ray = tmp_path / "ray"
    on_ray.mkdir()
    lines = (local / "evaluations.jsonl").read_text().splitlines(keepends=True)
    (on_ray / "evaluations.jsonl").write_text("".join(lines[:5]))  # killed after 5 of 12 evaluations
    for record in ("config.yaml", "inputs.json"):
        shutil.copy(local / record, on_ray / record)
    ray_cfg = from_dict({**run_config, "output": str(on_ray), "executor": {"kind": "ray", "workers": 2, "address": None}})
    assert ray_cfg.executor.options == {"workers": 2, "address": None}  # flat keys are the executor's options
    run(ray_cfg, run_dir=on_ray, resume=True)

    def by_row(run_dir):
        recs = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
        return sorted((r["gen"], r["row"], r["coefficients"], r["loss"]) for r in recs)

    assert by_row(on_ray) == by_row(local)
    best = [json.loads((d / "best.json").read_text()) for d in (local, on_ray)]
    assert best[0]["loss"] == best[1]["loss"]


def test_evogm_plus_on_two_workers_searches_asynchronously_and_a_resume_replays_it(ray_instance, run_config,
                                                                                   tmp_path: Path):
    """Two Ray workers kept busy: EvoGM+ is asked a row whenever one frees up; the log is in completion
    order, and a run killed after 5 results resumes (here on the local executor) by replaying it."""
    from evogm.run import run

    search = {**run_config["search"], "optimizer": "evogm-plus",
              "options": {"rounds": 2, "iterations": 1, "steps": 3, "hidden_sizes": [8], "pool": 40, "batch": 2}}
    cfg = {**run_config, "search": search, "baselines": {"methods": []}}
    whole = tmp_path / "whole"
    run(from_dict({**cfg, "output": str(whole), "executor": {"kind": "ray", "workers": 2, "address": None}}))
    done = lambda d: sorted((json.loads(line) for line in (d / "evaluations.jsonl").read_text().splitlines()),
                            key=lambda r: r["done"])
    records = done(whole)
    assert [r["done"] for r in records] == list(range(12)) and [r["inflight"] for r in records][:10] == [2] * 10
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    for record in ("config.yaml", "inputs.json"):
        shutil.copy(whole / record, cut / record)
    run(from_dict({**cfg, "output": str(cut)}), run_dir=cut, resume=True)
    resumed = done(cut)
    assert resumed[:5] == records[:5] and len(resumed) == 12
    asked = {r["asked"]: r["coefficients"] for r in records if r["asked"] < 7}  # the 5 done, 1 in flight, 1 more
    assert {r["asked"]: r["coefficients"] for r in resumed if r["asked"] < 7} == asked


def test_workers_score_lm_eval_tasks_as_the_local_executor(ray_instance, zoo_tiny, tmp_path: Path):
    """An lm-eval task (type: lm_eval) on a worker: set up there once, scored as the local executor scores it."""
    pytest.importorskip("lm_eval")
    from evogm.zoo.harness_tasks import write_harness_tasks

    harness = write_harness_tasks(zoo_tiny, tmp_path / "harness", items=8)
    config = {"models": {"base": str(zoo_tiny / "base"),
                         "experts": {e: str(zoo_tiny / "experts" / e) for e in ("successor", "capitals", "add")}},
              "tasks": [{"name": "capitals_lm", "type": "lm_eval", "task": "zoo_capitals", "include_path": str(harness),
                         "include_defaults": False, "dev_split": "validation", "test_split": "test"}],
              "output": str(tmp_path / "run")}
    factory = objective_factory(from_dict(config), "multi_task")
    candidates = np.random.default_rng(0).uniform(0, 1.5, size=(3, 3))
    executor = RayExecutor(factory, workers=1, cpus_per_worker=1)
    try:
        same(executor.map(candidates), LocalExecutor(factory).map(candidates))
    finally:
        executor.close()


def test_workers_that_do_not_fit_are_a_clear_error(ray_instance):
    with pytest.raises(EvogmError, match="do not fit"):
        RayExecutor(Crasher, workers=3)  # 3 workers of one CPU on a 2-CPU instance would never all start


def test_an_unknown_option_is_a_clear_error():
    with pytest.raises(EvogmError, match="executor.options do not fit"):
        make_executor("ray", Crasher, worker=2)  # checked before Ray is touched


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as where Ray is not installed: `import ray` fails
    with pytest.raises(EvogmError, match=r"pip install 'evogm\[ray\]'"):
        import_ray()


class Stubborn:
    """An objective factory whose candidate with x[0] > 0.9 hangs for two minutes, swallowing every
    exception meanwhile (no signal can stop it); the others answer at once."""

    def __call__(self):
        return self.evaluate

    @staticmethod
    def evaluate(x, threshold=None):
        import time

        if x[0] > 0.9:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                try:
                    time.sleep(0.05)
                except BaseException:  # noqa: BLE001 — as stubborn as a user's code can be
                    pass
        return Result(tuple(x), float(np.sum(np.square(x))))


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_candidate_past_the_timeout_fails_its_worker_is_replaced_and_the_rest_are_evaluated(kind, request):
    import time

    if kind == "ray":
        request.getfixturevalue("ray_instance")
        executor = RayExecutor(Stubborn(), timeout=5, workers=2, cpus_per_worker=1)
    else:
        executor = LocalExecutor(Stubborn(), timeout=5)
    xs = np.array([[0.1, 0.2], [0.95, 0.0], [0.3, 0.4], [0.5, 0.1]])
    try:
        executor.map(xs[:1])  # workers started (starting is not timed)
        start = time.monotonic()
        results = executor.map(xs)
        assert time.monotonic() - start < 100
    finally:
        executor.close()
    assert results[1].loss == math.inf and results[1].error.startswith("TimeoutError: it took longer than 5 s")
    assert [r.loss for i, r in enumerate(results) if i != 1] == [float(np.sum(xs[i] ** 2)) for i in (0, 2, 3)]
