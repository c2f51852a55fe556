"""The cluster path for real: a head and a second node of one CPU each, started with `ray start` on this
machine, a search (`executor: {kind: ray, address: auto}`, as many workers as fit: one per node) run by
a driver in its own process, and the second node killed mid-run (every process of it). Its worker's
replacement finds no room (as on a cluster of full GPU nodes) and waits; the search goes on with the
head's worker. The run must finish with every evaluation of the budget logged once, none evaluated
twice, the same log as an uninterrupted local run of the same seed, and a one-line warning naming the
lost node. About a minute; skipped without Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ray_cluster import Cluster

BUDGET, KILL_AT = 24, 8  # the second node is lost once this many evaluations are logged
ZOO = Path(__file__).resolve().parents[1] / "evogm" / "zoo" / "data"  # the packaged zoo: a landscape to search

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster():
    """A Ray cluster of this machine's own: every node's processes are killed after the test, pass or fail."""
    pytest.importorskip("ray")
    if not Path("/proc/self/stat").exists():
        pytest.skip("a node's processes are found through /proc (Linux)")
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


def run_config(folder: Path) -> dict:
    """Three of the packaged zoo's trained experts and their three tasks (16 dev items each); EvoGM, 24 evaluations."""
    zoo, names = ZOO, ("successor", "add", "capitals")
    generated = {"type": "exact_match", "max_new_tokens": 4}
    kinds = {"successor": generated, "add": generated, "capitals": {"type": "multiple_choice"}}
    return {"models": {"base": str(zoo / "base"), "experts": {e: str(zoo / "experts" / e) for e in names}},
            "tasks": [{"name": e, "path": str(zoo / "tasks" / f"{e}.json"), "limit": 16, **kinds[e]} for e in names],
            "output": str(folder / "run"), "seed": 5,
            "search": {"optimizer": "evogm", "budget": BUDGET, "popsize": 4,
                       "options": {"rounds": 2, "iterations": 1, "steps": 5, "hidden_sizes": [16, 16]}}}


def local_log(raw: dict, folder: Path) -> list[dict]:
    """The same search, uninterrupted, on the local executor in this process."""
    from evogm.config import from_dict, build_optimizer, resolve
    from evogm.executors import LocalExecutor
    from evogm.runlog import RunLog
    from evogm.scoring import MULTI_TASK
    from evogm.search.loop import search
    from evogm.workspace import objective_factory

    cfg = resolve(from_dict(raw), folder)
    log, threads = RunLog(folder / "evaluations.jsonl", fresh=True), torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray worker: on a busy machine two threads can be many times slower
    try:
        search(build_optimizer(cfg), LocalExecutor(objective_factory(cfg, MULTI_TASK)), log, cfg.search.budget)
    finally:
        torch.set_num_threads(threads)
    return log.records()


def wait_for_lines(path: Path, n: int, driver: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().count("\n") >= n):
        assert driver.poll() is None, f"the driver ended (exit {driver.returncode}) before {n} evaluations"
        assert time.monotonic() < deadline, f"fewer than {n} evaluations after {timeout} s"
        time.sleep(0.05)


def by_row(records: list[dict]) -> dict[tuple[int, int], tuple]:
    return {(r["gen"], r["row"]): (r["coefficients"], r["loss"], r["metrics"], r["error"]) for r in records}


def test_a_search_spread_over_two_nodes_loses_no_evaluation_when_one_node_is_lost(cluster, tmp_path):
    raw = run_config(tmp_path)
    config, log, summary, out = (tmp_path / name for name in ("cluster.yaml", "evaluations.jsonl", "summary.json",
                                                               "driver.out"))
    config.write_text(yaml.safe_dump({**raw, "executor": {"kind": "ray", "address": "auto"}}, sort_keys=False))
    cluster.start_head(cpus=1)
    second = cluster.add_node(cpus=1)
    with open(out, "w") as output:
        driver = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ray_cluster.py")), str(config),
                                   str(log), str(summary)], env=cluster.env, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for_lines(log, KILL_AT, driver)
            cluster.kill(second)  # mid-run: each node's worker has a candidate in flight or about to
            assert driver.wait(timeout=150) == 0, out.read_text()[-3000:]
        finally:
            driver.kill()
    ran = json.loads(summary.read_text())
    lost = set(ran["started_on"]) - set(ran["ended_on"])
    assert len(ran["started_on"]) == 2 and len(lost) == 1  # one worker per node, the second node's gone
    assert ran["live_workers"] == 1  # its replacement waits for room; the search went on without it
    assert all(ran["evaluations"].get(node, 0) > 0 for node in ran["started_on"])  # both nodes evaluated
    assert sum(ran["evaluations"].values()) == BUDGET  # each candidate answered once: none lost, none twice
    died = [w for w in ran["warnings"] if w.startswith("a Ray worker died")]  # one line per worker lost, the first
    assert ran["restarts"] == len(died) >= 1 and all("\n" not in w for w in died)  # naming the node (a replacement
    assert died[0].startswith(f"a Ray worker died on node {lost.pop()[:12]}")  # placed there in time dies too)

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == BUDGET and all(r["error"] is None for r in records)
    assert len({r["loss"] for r in records}) > 2  # a landscape, not a constant: the comparison below means something
    assert by_row(records) == by_row(local_log(raw, tmp_path / "local"))  # as the uninterrupted run, row by row
