"""Adaptive evaluation: the stopping rule's bound, chunked scoring against full scoring, partial
evaluations never the best, determinism, resume after SIGKILL, one-task targets, config errors.

Model tests run the packaged zoo (its real tiny models), cut to 24 dev items per task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evogm.adaptive import (ChunkedScorer, Cutoff, cutoff, decode, estimate, items_scored, paired_bound, thresholds,
                            upper_bound)
from evogm.config import load_config, to_dict
from evogm.errors import EvogmError
from evogm.executors import LocalExecutor
from evogm.rundir import best_entry
from evogm.runlog import RunLog
from evogm.scoring import MULTI_TASK
from evogm.workspace import make_objective
from evogm.zoo.packaged import zoo_config

LIMITS = [f"tasks.{i}.limit=24" for i in range(10)]
UNREACHABLE, NOTHING = Cutoff(1.5), Cutoff(-1.0)  # no candidate scores above 1 / every bound is above −1
# A short adaptive search on the zoo in which candidates do stop: a strict cut-off (the best so far),
# two looks of 12 items per task, a loose confidence.
ADAPTIVE = ["search.evaluation=adaptive", "search.keep=1", "search.chunks=2", "search.confidence=0.5"]
SHORT = ["search.optimizer=random", "search.options={}", "search.popsize=4", "search.budget=12", "seed=5",
         "baselines.methods=[]"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here: these tests run whole searches, and two threads on a busy two-core machine
    spend most of their time waiting for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def zoo(tmp_path: Path, *extra: str):
    return load_config(zoo_config(), [*LIMITS, f"output={tmp_path / 'run'}", *extra])


@pytest.fixture(scope="module")
def objectives(tmp_path_factory):
    """(full objective, adaptive objective with 4 chunks) on one resident zoo model."""
    out = tmp_path_factory.mktemp("adaptive")
    full = make_objective(to_dict(zoo(out)), MULTI_TASK)
    return full, make_objective(to_dict(zoo(out, "search.evaluation=adaptive", "search.chunks=4")), MULTI_TASK)


# --- the stopping rule ----------------------------------------------------------------------------


def test_the_bound_holds_over_every_look_at_its_stated_confidence():
    """Simulated 0/1 items of three tasks: how often the full score exceeds the bound at some look, with
    the union bound over looks, stays under 1 − confidence (and the rule is not vacuous: it is close)."""
    rng = np.random.default_rng(0)
    totals, weights, chunks, confidence = np.array([40, 60, 100]), np.array([1.0, 2.0, 1.0]), 4, 0.8
    delta = (1 - confidence) / (chunks - 1)
    misses, trials = 0, 4000
    for _ in range(trials):
        items = [rng.random(n) < p for n, p in zip(totals, rng.uniform(0.2, 0.8, 3))]
        full = weights @ [x.mean() for x in items] / weights.sum()
        orders = [x[rng.permutation(len(x))] for x in items]
        looks = [[np.array_split(o, chunks)[k] for o in orders] for k in range(chunks - 1)]
        seen = [np.zeros(0)] * 3
        missed = False
        for look in looks:
            seen = [np.concatenate([s, part]) for s, part in zip(seen, look)]
            ucb = upper_bound(weights, [s.mean() for s in seen], seen=[len(s) for s in seen], totals=totals,
                              delta=delta)
            missed |= full > ucb
        misses += missed
    assert misses / trials <= 1 - confidence
    assert misses > 0  # a bound that never binds would make the test say nothing


def test_the_paired_bound_holds_over_every_look_at_its_stated_confidence():
    """Simulated pairs: a cut-off's 0/1 outcomes on ten tasks of 200 items, and a candidate that answers
    30% of the items anew. The paired bound (a normal approximation) misses the full difference at
    some look less often than 1 − confidence, and it does miss sometimes."""
    rng = np.random.default_rng(0)
    totals, weights, chunks, confidence = np.full(10, 200), np.ones(10), 4, 0.8
    delta = (1 - confidence) / (chunks - 1)
    misses, trials = 0, 1000
    for _ in range(trials):
        cut = [rng.random(n) < p for n, p in zip(totals, rng.uniform(0.2, 0.8, 10))]
        diffs = [np.where(rng.random(n) < 0.3, rng.random(n) < 0.5, k) - k.astype(float) for n, k in zip(totals, cut)]
        full = weights @ [d.mean() for d in diffs] / weights.sum()
        orders = [d[rng.permutation(len(d))] for d in diffs]
        misses += any(full > paired_bound(weights, [o[: len(o) * look // chunks] for o in orders], totals=totals,
                                          delta=delta) for look in range(1, chunks))
    assert 0 < misses / trials <= 1 - confidence


def test_the_cut_off_is_the_keep_th_best_full_evaluation():
    records = [{"gen": 0, "loss": -0.2}, {"gen": 0, "loss": -0.6}, {"gen": 1, "loss": -0.9, "partial": True},
               {"gen": 1, "loss": None, "error": "boom"}, {"gen": 2, "loss": -0.4}]
    assert cutoff(records, 1).fitness == 0.6 and cutoff(records, 3).fitness == 0.2 and cutoff(records, 4) is None
    assert thresholds(records, 2) == {0: None, 1: 0.2, 2: 0.2}


def test_a_partial_evaluation_is_never_the_best():
    records = [{"gen": 0, "row": 0, "loss": -0.5, "coefficients": [1.0], "metrics": {}},
               {"gen": 1, "row": 0, "loss": -0.9, "coefficients": [2.0], "metrics": {}, "partial": True}]
    assert best_entry(records, ["e"])["evaluation"] == 1
    with pytest.raises(EvogmError, match="no evaluation succeeded"):
        best_entry(records[1:], ["e"])
    assert items_scored([{"items": {"a": 6}}, {}], {"a": 24}) == (30, 48)


# --- chunked scoring on the zoo's real models -------------------------------------------------------


def test_chunked_scoring_equals_full_scoring_when_nothing_stops(objectives):
    full, adaptive = objectives
    for x in np.random.default_rng(1).uniform(-0.2, 1.0, size=(3, 8)):
        a, b = full(x), adaptive(x, threshold=NOTHING)  # every look is scored
        assert not b.partial and b.items == {name: 24 for name in b.items} and len(b.items) == 10
        assert b.metrics.keys() == a.metrics.keys()
        assert all(math.isclose(b.metrics[k], a.metrics[k], abs_tol=1e-12) for k in a.metrics)
        assert math.isclose(a.loss, b.loss, abs_tol=1e-12)
        c = adaptive(x)  # no cut-off yet (the first generation): every item, one batch per task
        assert (c.loss, c.metrics, c.items, c.partial, c.outcomes) == (a.loss, a.metrics, b.items, False, b.outcomes)
        assert all(len(o) == 24 and decode(o).mean() == c.metrics[f"{name}/accuracy"] for name, o in c.outcomes.items())


def test_a_candidate_that_cannot_reach_the_cut_off_stops_after_its_first_look(objectives):
    full, adaptive = objectives
    x = np.full(8, 0.3)
    stopped = adaptive(x, threshold=UNREACHABLE)
    assert stopped.partial and stopped.ok and set(stopped.items.values()) == {6}  # 24 items in 4 chunks
    assert math.isclose(stopped.fitness, float(np.mean(list(stopped.metrics.values()))))  # of the items it saw
    assert stopped.seconds < full(x).seconds * 2


def test_a_one_task_target_scores_and_stops_on_that_task_alone(tmp_path):
    objective = make_objective(to_dict(zoo(tmp_path, "search.evaluation=adaptive", "search.chunks=4")), "add")
    stopped = objective(np.full(8, 0.3), threshold=UNREACHABLE)
    assert stopped.partial and stopped.items == {"add": 6} and list(stopped.metrics) == ["add/accuracy"]
    whole = objective(np.full(8, 0.3), threshold=NOTHING)
    assert not whole.partial and whole.items == {"add": 24}


def test_a_task_whose_metric_is_not_a_mean_is_scored_whole_at_the_first_look(objectives):
    _, adaptive = objectives
    scorer = adaptive.chunked
    scorer_tasks = {t.name: parts for t, parts in zip(scorer.tasks, scorer.parts)}
    assert all(parts is not None and len(parts) == 4 for parts in scorer_tasks.values())

    class Whole:  # a task without per-item scores (a Python fitness, say)
        name, weight, primary = "whole", 1.0, "value"

        def evaluate(self, model, tokenizer, split):
            return {"value": 0.25}

    chunked = ChunkedScorer([*scorer.tasks[:1], Whole()], MULTI_TASK, chunks=4, confidence=0.9, seed=0)
    model = adaptive.merger(np.full(8, 0.3))
    metrics, items, partial, outcomes = chunked(model, adaptive.tokenizer, UNREACHABLE)
    assert partial and metrics["whole/value"] == 0.25 and items == {scorer.tasks[0].name: 6}
    assert list(outcomes) == [scorer.tasks[0].name] and len(outcomes[scorer.tasks[0].name]) == 6


def as_cutoff(result) -> Cutoff:
    return Cutoff(result.fitness, result.metrics, result.outcomes)


def test_the_paired_rule_stops_a_clear_loser_and_never_the_cut_off_itself(objectives):
    """Against a real cut-off (a full evaluation with its outcomes), a much worse merge stops after its first
    look (of 6 items per task) or the next; the cut-off's own merge, equal item by item, is scored in full."""
    _, adaptive = objectives
    good, bad = np.full(8, 0.5), np.full(8, -1.0)
    cut = as_cutoff(adaptive(good))
    loser = adaptive(bad, threshold=cut)
    assert cut.fitness - loser.fitness > 0.1 and loser.partial and max(loser.items.values()) < 24
    same = adaptive(good, threshold=cut)
    assert not same.partial and same.outcomes == cut.outcomes
    for task, seen in loser.outcomes.items():  # a stopped candidate's score: the control-variate estimate
        assert loser.metrics[f"{task}/accuracy"] == estimate(decode(seen), decode(cut.outcomes[task]))


def test_the_control_variate_estimate_is_unbiased_and_tighter_than_the_plain_mean():
    """Two merges that answer most items alike (the items' own difficulty decides most answers): over
    random orders, the first 40 of 400 items corrected with the reference's outcomes on every item
    estimate the candidate's full score without bias and with the regression estimator's error: the plain
    mean's times √(1 − ρ²), ρ the two merges' correlation over items."""
    rng = np.random.default_rng(0)
    difficulty = rng.random(400)
    reference = (difficulty < 0.6).astype(float)
    mine = np.where(rng.random(400) < 0.08, 1.0 - (difficulty < 0.45), difficulty < 0.45).astype(float)
    plain, corrected = [], []
    for _ in range(2000):
        order = rng.permutation(400)
        plain.append(estimate(mine[order][:40]) - mine.mean())
        corrected.append(estimate(mine[order][:40], reference[order]) - mine.mean())
    plain, corrected = np.array(plain), np.array(corrected)
    assert abs(corrected.mean()) < 0.005
    rho = np.corrcoef(mine, reference)[0, 1]
    assert 0.5 < rho < 0.8
    assert np.sqrt(np.mean(corrected ** 2)) < (np.sqrt(1 - rho ** 2) + 0.05) * np.sqrt(np.mean(plain ** 2))
    assert estimate(mine[:40], mine) == mine.mean()  # its own outcomes as the reference: the full score


# --- runs ------------------------------------------------------------------------------------------


def run_records(out: Path, *extra: str) -> list[dict]:
    from evogm.run import run

    run(load_config(zoo_config(), [*LIMITS, *SHORT, *ADAPTIVE, f"output={out}", *extra]))
    return RunLog(out / "evaluations.jsonl").records()


def test_an_adaptive_run_is_deterministic_and_its_best_is_a_full_evaluation(tmp_path):
    keep = ("gen", "row", "coefficients", "metrics", "loss", "items", "partial")
    a, b = (run_records(tmp_path / name) for name in ("a", "b"))
    assert [{k: r.get(k) for k in keep} for r in a] == [{k: r.get(k) for k in keep} for r in b]
    partial = [r for r in a if r.get("partial")]
    assert partial and all(sum(r["items"].values()) < 240 for r in partial)  # the setting does stop candidates
    best = json.loads((tmp_path / "a" / "best.json").read_text())
    assert not a[best["evaluation"] - 1].get("partial")
    report = (tmp_path / "a" / "report.md").read_text()
    assert f"{len(partial)} of 12 evaluations stopped early" in report


def test_an_adaptive_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    import yaml

    from evogm.config import read_raw
    from test_resume import assert_sigkill_resumes

    raw = read_raw(zoo_config())  # input paths made absolute
    raw["tasks"] = [{**task, "limit": 24} for task in raw["tasks"]]
    raw["search"] = {"optimizer": "evogm", "evaluation": "adaptive", "keep": 1, "chunks": 2, "confidence": 0.5}
    config = tmp_path / "adaptive.yaml"
    config.write_text(yaml.safe_dump(raw))
    whole = assert_sigkill_resumes(config, tmp_path)
    killed = RunLog(tmp_path / "killed" / "evaluations.jsonl").records()
    again = RunLog(whole / "evaluations.jsonl").records()
    assert [(r.get("items"), r.get("partial")) for r in killed] == [(r.get("items"), r.get("partial")) for r in again]
    assert any(r.get("partial") for r in again)


# --- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("search.evaluation=adaptiv", "did you mean 'adaptive'"),
    ("search.confidence=1.5", "strictly between 0 and 1"),
    ("search.chunks=1", "at least two looks"),
    ("search.keep=0", "search.keep is 0"),
    ("search.confidance=0.9", "confidence"),
    ("search.bound=paird", "did you mean 'paired'"),
])
def test_bad_adaptive_settings_are_one_line_errors(tmp_path, override, message):
    with pytest.raises(EvogmError, match=message):
        zoo(tmp_path, override)


def test_full_evaluation_is_the_default_and_logs_as_before(objectives):
    full, _ = objectives
    assert full.chunked is None
    result = full(np.full(8, 0.3), threshold=None)
    assert not result.partial and result.items == {}
    assert LocalExecutor(lambda: full).map(np.full((1, 8), 0.3))[0].loss == result.loss


def test_ray_workers_stop_candidates_as_the_local_executor_does(tmp_path):
    """The cut-off travels with each candidate to a Ray worker: the same partial Results as locally."""
    import os

    ray = pytest.importorskip("ray")
    from evogm.executors import RayExecutor
    from evogm.workspace import objective_factory

    cfg = zoo(tmp_path, "search.evaluation=adaptive", "search.chunks=4")
    xs = np.random.default_rng(2).uniform(-0.3, 1.0, size=(2, 8))
    cuts = (UNREACHABLE, NOTHING)  # every row stops after its first look; no row stops
    local = [LocalExecutor(objective_factory(cfg, MULTI_TASK)).map(xs, threshold=cut) for cut in cuts]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        executor = RayExecutor(objective_factory(cfg, MULTI_TASK), workers=1, cpus_per_worker=1)
        remote = [executor.map(xs, threshold=cut) for cut in cuts]
        executor.close()
    finally:
        ray.shutdown()
    for a, b in zip(remote, local):
        assert [(r.loss, r.items, r.partial) for r in a] == [(r.loss, r.items, r.partial) for r in b]
    assert [r.partial for r in local[0]] == [True, True] and [r.partial for r in local[1]] == [False, False]


def test_the_replay_benchmark_predicts_a_real_run_exactly(tmp_path):
    """benchmarks/adaptive_replay.py on a log scored in full (no cut-off ever) predicts the items a real
    adaptive run scores: with random search the candidates do not depend on the losses, so the real run
    asks the same ones and must stop exactly where the replay says."""
    from benchmarks.adaptive_replay import load, replay

    whole = run_records(tmp_path / "whole", "search.keep=1000000")
    assert not any(r.get("partial") for r in whole) and all(len(r["outcomes"]) == 10 for r in whole)
    real = run_records(tmp_path / "real")
    predicted = replay(*load(tmp_path / "whole"), keep=1, chunks=2, confidence=0.5, bound="paired")
    scored, full = items_scored(real, {name: 24 for name in whole[0]["outcomes"]})
    assert predicted["stopped"] * len(real) == sum(bool(r.get("partial")) for r in real) > 0
    assert math.isclose(predicted["saving"], full / scored)
    assert [r["coefficients"] for r in real] == [r["coefficients"] for r in whole]
