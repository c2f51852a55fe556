"""The asynchronous search: several workers kept busy, rows asked one at a time while others are in
flight, told in the order they finish, and a resume that replays that order exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evogm.errors import EvogmError
from evogm.executors import LocalExecutor, evaluate
from evogm.runlog import Result, RunLog
from evogm.search import make_optimizer
from evogm.search.loop import search

SMALL = {"evogm-plus": {"rounds": 2, "iterations": 2, "steps": 3, "hidden_sizes": (8,), "pool": 60, "batch": 3},
         "random": {"rounds": 2}}


def bowl(x: np.ndarray) -> Result:
    return Result(tuple(float(v) for v in x), float(np.sum((x - 0.3) ** 2)))


class OutOfOrder(LocalExecutor):
    """`workers` workers on one process: candidates evaluated here, answered in the order workers with
    seeded random evaluation times would answer them (the order a cluster gives, reproducibly)."""

    def __init__(self, workers: int, seed: int = 0, objective=bowl):
        super().__init__(lambda: objective)
        self.workers, self.rng, self.clock, self.finish, self.most_in_flight = workers, np.random.default_rng(seed), 0.0, {}, 0

    def submit(self, key, x, threshold=None):
        super().submit(key, x, threshold)
        self.finish[key] = self.clock + 1.0 + self.rng.exponential(1.0)
        self.most_in_flight = max(self.most_in_flight, len(self.finish))

    def next(self):
        key = min(self.finish, key=self.finish.get)
        self.clock = self.finish.pop(key)
        return key, evaluate(self.objective, *self._queued.pop(key))


def optimizer(name: str, seed: int = 0):
    return make_optimizer(name, 4, popsize=6, seed=seed, options=SMALL[name])


def by_completion(path: Path) -> list[dict]:
    return sorted(RunLog(path).records(), key=lambda r: r["done"])


@pytest.mark.parametrize("name", ["evogm-plus", "random"])
def test_every_worker_is_kept_busy_and_every_ask_evaluated_once(name, tmp_path: Path):
    cluster = OutOfOrder(workers=4)
    search(optimizer(name), cluster, RunLog(tmp_path / "e.jsonl"), budget=30, generation=6)
    records = by_completion(tmp_path / "e.jsonl")
    assert [r["done"] for r in records] == list(range(30)) and sorted(r["asked"] for r in records) == list(range(30))
    assert [(r["gen"], r["row"]) for r in records] == [divmod(r["asked"], 6) for r in records]
    assert cluster.most_in_flight == 4
    assert [r["inflight"] for r in records] == [4] * 27 + [3, 2, 1]  # full until the budget is sent, then drained
    assert [r["asked"] for r in records] != sorted(r["asked"] for r in records)  # told in the order they finished


@pytest.mark.parametrize("name", ["evogm-plus", "random"])
def test_a_resume_replays_the_completion_order_and_asks_the_same_rows(name, tmp_path: Path):
    whole = tmp_path / "whole.jsonl"
    search(optimizer(name), OutOfOrder(workers=4), RunLog(whole), budget=30, generation=6)
    records = by_completion(whole)
    for cut in (1, 9, 17, 29):
        log = tmp_path / f"cut{cut}.jsonl"
        log.write_text("".join(json.dumps(r) + "\n" for r in records[:cut]))  # killed after `cut` results
        search(optimizer(name), OutOfOrder(workers=4, seed=99), RunLog(log), budget=30, generation=6)
        resumed = by_completion(log)
        assert resumed[:cut] == records[:cut] and len(resumed) == 30
        asked_by_then = min(30, cut + records[cut - 1]["inflight"])  # the asks made by then: the done, the pending, one more
        before = {r["asked"]: r["coefficients"] for r in records if r["asked"] < asked_by_then}
        again = {r["asked"]: r["coefficients"] for r in resumed if r["asked"] < asked_by_then}
        assert again == before  # the rows in flight at the kill are the ones asked again


def test_a_log_that_differs_from_the_optimizers_asks_is_refused(tmp_path: Path):
    log = tmp_path / "e.jsonl"
    search(optimizer("evogm-plus"), OutOfOrder(workers=3), RunLog(log), budget=12, generation=6)
    records = by_completion(log)
    with pytest.raises(EvogmError, match="differs from what the optimizer asks now"):
        search(optimizer("evogm-plus", seed=1), OutOfOrder(workers=3), RunLog(log), budget=12, generation=6)
    assert by_completion(log) == records  # nothing written


def test_optimizers_asked_by_generation_stay_synchronous_on_many_workers(tmp_path: Path):
    """The paper's EvoGM (and the other population methods) is asked whole generations; so is EvoGM+
    when search.asynchronous is off, or when its log was started synchronously."""
    for name, options, ok in (("evogm", {"rounds": 1, "iterations": 1, "steps": 2}, True),
                              ("evogm-plus", SMALL["evogm-plus"], False)):
        log = tmp_path / f"{name}.jsonl"
        opt = make_optimizer(name, 4, popsize=6, seed=0, options=options)
        search(opt, OutOfOrder(workers=4), RunLog(log), budget=12, asynchronous_ok=ok)
        assert all("done" not in r for r in RunLog(log).records())
    log = tmp_path / "evogm-plus.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:6]))
    search(optimizer("evogm-plus"), OutOfOrder(workers=4), RunLog(log), budget=12)  # resumed as it started
    assert all("done" not in r for r in RunLog(log).records()) and len(RunLog(log).records()) == 12


def test_a_generation_of_failures_in_a_row_stops_the_search(tmp_path: Path):
    failing = lambda x: Result.failed(x, "RuntimeError: out of memory")
    with pytest.raises(EvogmError, match="failed"):
        search(optimizer("random"), OutOfOrder(workers=3, objective=failing), RunLog(tmp_path / "e.jsonl"),
               budget=30, generation=6)
    assert len(RunLog(tmp_path / "e.jsonl").records()) == 6


def test_the_gp_believing_pending_rows_draws_elsewhere():
    """The kriging believer: a pending row's posterior variance collapses, so Thompson draws move away
    from it, and the fitted GP itself is unchanged."""
    from evogm.search.surrogate import GaussianProcess

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 0, size=(20, 2))  # nothing evaluated near the pending row
    gp = GaussianProcess().fit(X, np.sum((X + 0.5) ** 2, axis=1))
    pending = np.array([[0.8, 0.8]])
    before = gp.predict(pending)
    believing = gp.believing(pending)
    after = believing.predict(pending)
    assert after[1][0] < 0.5 * before[1][0] and abs(after[0][0] - before[0][0]) < 0.1 * before[1][0]
    assert np.allclose(gp.predict(pending)[1], before[1])  # the fit itself is unchanged


def test_each_asynchronous_row_is_drawn_from_a_gp_that_knows_every_result_told():
    opt = optimizer("evogm-plus")
    pending, screened = [opt.ask_one(np.empty((0, 4))) for _ in range(4)], 0
    for _ in range(12):  # 4 in flight: tell the oldest, ask one more (the pool is made every 3 results)
        x = pending.pop(0)
        opt.tell_one(x, bowl(x).loss)
        pending.append(opt.ask_one(np.array(pending)))
        if opt.strategy._open_pool is not None and opt.strategy._open_pool[1]:
            screened += 1
            assert len(opt.strategy.gp.X) == len(opt.archive.losses)
    assert screened >= 6


def test_a_later_asynchronous_round_asks_screened_rows_as_a_synchronous_one_does():
    """A later round starts from its elites, already evaluated: its first rows are screened by the GP,
    not random combinations of the elites (which reach far outside the box), in either mode."""
    opt = optimizer("evogm-plus")
    draws = []
    pending = [opt.ask_one(np.empty((0, 4))) for _ in range(4)]
    while opt.round == 0 or len(draws) < 8:
        x = pending.pop(0)
        opt.tell_one(x, bowl(x).loss)
        pending.append(opt.ask_one(np.array(pending)))
        if opt.round == 1:  # no row of the round's start was asked; the row came from a screened pool
            draws.append(opt.strategy._next_start == 0 and opt.strategy._open_pool[1])
    assert all(draws)  # every row of round 2 came from the screened pool
    sync = optimizer("evogm-plus")
    while sync.round == 0:
        xs = sync.ask()
        sync.tell(xs, [bowl(x).loss for x in xs])
    assert len(sync.ask()) == SMALL["evogm-plus"]["batch"]  # round 2's first ask: a screened batch
