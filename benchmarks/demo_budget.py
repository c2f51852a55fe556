"""Where the time of `evogm demo` goes, and whether it fits in 10 minutes on this machine.

Measures, on a zoo (default: the packaged one): one search evaluation (merge + every task's dev
split), one test evaluation, the optimizer's own cost over its whole budget (EvoGM's generator
training, paper settings, on stand-in losses), and the run log's durable append; then projects the
demo's wall time: budget × evaluation + optimizer + final stage (dev sweeps of the static baselines,
test evaluations of six candidates), as one process scores them (`evogm demo executor.workers=1`;
the demo itself runs two worker processes on a CPU with two threads or more, which
`python -m benchmarks.executor_scaling` compares).

    python -m benchmarks.demo_budget                 # the packaged zoo
    python -m benchmarks.demo_budget my-zoo --evals 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from evogm.config import build_optimizer, load_config, resolve
from evogm.runlog import Result, RunLog, record
from evogm.scoring import score
from evogm.workspace import objective_factory, workspace
from evogm.zoo.packaged import zoo_config

LIMIT_S = 600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo", nargs="?", help="zoo folder (default: the packaged zoo)")
    parser.add_argument("--evals", type=int, default=3, help="evaluations to time (after one warm-up)")
    args = parser.parse_args()
    cfg = resolve(load_config(zoo_config(args.zoo)), Path(tempfile.mkdtemp()))
    dev, test = time_evaluations(cfg, args.evals)
    optimizer = time_optimizer(cfg)
    append = time_log_append(cfg.search.budget)
    n_dev = 1 + len(cfg.baselines.scales) * sum(m != "uniform" for m in cfg.baselines.methods)
    n_test = 2 + len(cfg.baselines.methods)
    rows = [("search evaluations", cfg.search.budget, dev), ("optimizer (whole budget)", 1, optimizer),
            ("log appends (fsync)", cfg.search.budget, append), ("final: dev sweeps", n_dev, dev),
            ("final: test evaluations", n_test, test)]
    print(f"{'part':<26} {'count':>6} {'s each':>8} {'s total':>8}")
    for name, count, each in rows:
        print(f"{name:<26} {count:>6} {each:>8.3f} {count * each:>8.1f}")
    total = sum(count * each for _, count, each in rows)
    print(f"{'projected demo':<26} {'':>6} {'':>8} {total:>8.1f}  (limit {LIMIT_S} s: "
          f"{'fits' if total < LIMIT_S else 'does NOT fit'})")


def time_evaluations(cfg, n: int) -> tuple[float, float]:
    """Mean wall seconds of a dev evaluation (merge + score) and of a test evaluation."""
    objective = objective_factory(cfg, "multi_task")()
    rng = np.random.default_rng(0)
    objective(rng.uniform(-1, 1, objective.merger.dim))  # warm-up: tokenizing each split once
    start = time.perf_counter()
    for _ in range(n):
        objective(rng.uniform(-1, 1, objective.merger.dim))
    dev = (time.perf_counter() - start) / n
    ws = workspace(cfg)
    tasks = list(ws.tasks.values())
    score(ws.merger(np.full(ws.merger.dim, 0.3)), ws.models.tokenizer, tasks, "test")  # warm-up
    start = time.perf_counter()
    score(ws.merger(np.full(ws.merger.dim, 0.5)), ws.models.tokenizer, tasks, "test")
    return dev, time.perf_counter() - start


def time_optimizer(cfg) -> float:
    """The optimizer's own cost over the whole budget, on stand-in losses."""
    optimizer, done, start = build_optimizer(cfg), 0, time.perf_counter()
    while done < cfg.search.budget:
        xs = optimizer.ask()[: cfg.search.budget - done]
        optimizer.tell(xs, np.sum((xs - 0.3) ** 2, axis=1))
        done += len(xs)
    return time.perf_counter() - start


def time_log_append(n: int) -> float:
    log = RunLog(Path(tempfile.mkdtemp()) / "evaluations.jsonl")
    metrics = {f"t{i}/accuracy": 0.5 for i in range(10)}
    result = Result(coefficients=(0.1,) * 8, loss=-0.5, metrics=metrics)
    start = time.perf_counter()
    for i in range(n):
        log.append(record(i // 20, i % 20, result))
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    main()
