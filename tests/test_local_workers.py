"""Several local worker processes (`executor: {kind: local, workers: N}`): candidates evaluated side
by side on this machine without Ray, scored as this process scores them, and a search kept busy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from evogm.cli import main as cli
from evogm.config import load_config
from evogm.executors import LocalExecutor
from evogm.runlog import Result
from evogm.workspace import objective_factory


def napping(x: np.ndarray, threshold=None) -> Result:
    """Sleeps x[0] seconds and says when it ran."""
    start = time.monotonic()
    time.sleep(float(x[0]))
    return Result(tuple(float(v) for v in x), float(x[0]), metrics={"start": start, "end": time.monotonic()})


def make_napping():
    return napping


def test_two_workers_evaluate_side_by_side_and_answer_in_row_order():
    executor = LocalExecutor(make_napping, workers=2)
    try:
        executor.map(np.array([[0.0], [0.0]]))  # both workers started
        results = executor.map(np.array([[0.6], [0.6], [0.1], [0.1]]))
    finally:
        executor.close()
    assert [r.loss for r in results] == [0.6, 0.6, 0.1, 0.1]
    first, second = (r.metrics for r in results[:2])
    assert first["start"] < second["end"] and second["start"] < first["end"]  # at the same time


def test_a_waiting_candidate_goes_to_the_worker_that_frees_up_before_its_result_is_read():
    executor = LocalExecutor(make_napping, workers=2)
    try:
        executor.map(np.array([[0.0], [0.0]]))  # both workers started
        for key, seconds in (("a", 0.3), ("b", 1.0), ("c", 0.3)):
            executor.submit(key, np.array([seconds]))
        key, first = executor.next()
        time.sleep(0.5)  # the caller is busy: c runs meanwhile, on a's worker
        later = dict(executor.next() for _ in range(2))
    finally:
        executor.close()
    assert key == "a" and later["c"].metrics["start"] < first.metrics["end"] + 0.2


def test_local_workers_score_candidates_as_this_process_does(zoo_tiny):
    factory = objective_factory(load_config(zoo_tiny / "run.yaml"), "multi_task")
    xs = np.random.default_rng(0).uniform(-0.5, 1.0, size=(4, 3))
    here = LocalExecutor(factory).map(xs)
    workers = LocalExecutor(factory, workers=2)
    try:
        there = workers.map(xs)
    finally:
        workers.close()
    assert [r.loss for r in there] == [r.loss for r in here]
    assert [r.metrics for r in there] == [r.metrics for r in here]


def test_evogm_plus_on_two_local_workers_searches_asynchronously(zoo_tiny, tmp_path: Path, monkeypatch):
    """Both workers kept busy; and one pool for the whole run: the final stage scores and exports on
    the workers whose models the search loaded, so this process never loads a model."""
    from evogm import workspace
    from evogm.worker import WorkerPool

    pools, build = [], WorkerPool.__init__
    monkeypatch.setattr(WorkerPool, "__init__", lambda self, *a, **k: (pools.append(self), build(self, *a, **k))[1])
    workspace._CACHE.clear()
    out = tmp_path / "run"
    small = '{rounds: 2, iterations: 1, steps: 3, hidden_sizes: [8], pool: 40, batch: 2}'
    assert cli(["run", str(zoo_tiny / "run.yaml"), "search.optimizer=evogm-plus", "search.budget=12",
                "search.popsize=4", f"search.options={small}", "baselines.methods=[uniform]",
                "executor.workers=2", f"output={out}", "--quiet"]) == 0
    records = sorted((json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()),
                     key=lambda r: r["done"])
    assert [r["done"] for r in records] == list(range(12)) and sorted(r["asked"] for r in records) == list(range(12))
    assert [r["inflight"] for r in records] == [2] * 11 + [1]  # both workers busy until the budget is sent
    final = json.loads((out / "final.json").read_text())
    assert final["evaluations"] == 12 and final["candidates"]["uniform"]["test"]["score"] is not None
    assert len(pools) == 1 and not workspace._CACHE and (out / "model" / "model.safetensors").is_file()


def test_a_worker_count_that_is_not_a_whole_number_is_refused_in_one_line(zoo_tiny, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert cli(["run", str(zoo_tiny / "run.yaml"), "search.optimizer=random", "search.budget=4",
                "executor.workers=0", f"output={out}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "executor.workers is 0" in err and "set executor.workers" in err


class Unpicklable(Exception):
    """Pickles, but its __init__ takes two arguments where its args hold one: it does not unpickle."""

    def __init__(self, what, why):
        super().__init__(f"{what}: {why}")


def raising(_context, what):
    raise Unpicklable(what, "disk full")


def test_an_exception_that_does_not_unpickle_reaches_the_caller_as_its_text():
    from evogm.errors import EvogmError
    from evogm.worker import WorkerPool

    pool = WorkerPool(make_napping, 1)
    try:
        pool.submit("a", raising, "cannot write out")
        with pytest.raises(EvogmError, match="^Unpicklable: cannot write out: disk full$"):
            pool.next()
    finally:
        pool.close()
