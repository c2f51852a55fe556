"""An optimizer's own cost per ask against one zoo evaluation, measured side by side on one thread.

    python -m benchmarks.search_cost                                    # EvoGM+ and EvoGM
    python -m benchmarks.search_cost --configs evogm-plus evogm-plus:batch=5 --runs 3

The target (a tenth of one zoo evaluation per ask) is a ratio of two timings, and on a shared
machine either can drift by half between runs; this script takes both in one process, alternating:
a few full zoo evaluations (merge + every task on its whole dev split, as a search pays them), then
one 160-evaluation run of each optimizer, timing every ask() after the first generation, then the
evaluations again. The optimizer's losses come from a sphere in the zoo's dimension (the search's
work per ask depends on the number of rows and coefficients, not on the merge), so a run costs
seconds. Prints the median evaluation, each configuration's median and mean seconds per ask, their
ratio to the evaluation, and each configuration's seconds per ask by the evaluations told before it. Uses the packaged zoo, or a zoo-shaped stand-in with random weights
(benchmarks/eval_speed.py) where it is not built.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from benchmarks.eval_speed import zoo_workspace
from benchmarks.search_functions import optimum, sphere
from benchmarks.variants import method
from evogm.compare import parse_methods
from evogm.errors import EvogmError
from evogm.objective import Objective
from evogm.search import make_optimizer


def evaluation_seconds(objective: Objective, dim: int, n: int, rng: np.random.Generator) -> list[float]:
    out = []
    for x in rng.uniform(-1, 1, size=(n, dim)):
        result = objective(x)
        assert result.ok, result.error
        out.append(result.seconds)
    return out


def ask_seconds(name: str, dim: int, seed: int, budget: int) -> dict[int, float]:
    """Evaluations told so far → seconds of the ask() made then, for every ask after the first
    generation of one run on a sphere (test_functions' optimum for this dimension)."""
    spec = parse_methods(method(name))[0]
    opt = make_optimizer(spec.optimizer, dim, popsize=20, seed=seed, options=spec.options)
    target, seconds, told = optimum(dim), {}, 0
    while told < budget:
        start = time.perf_counter()
        xs = opt.ask()[: budget - told]
        if told:
            seconds[told] = time.perf_counter() - start
        opt.tell(xs, sphere(xs, target))
        told += len(xs)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["evogm-plus", "evogm"],
                        help="optimizers, variants of benchmarks/variants.py, or inline specs (evogm-plus:batch=5)")
    parser.add_argument("--runs", type=int, default=2, help="160-evaluation runs per configuration")
    parser.add_argument("--evaluations", type=int, default=3, help="zoo evaluations before each round of runs")
    parser.add_argument("--budget", type=int, default=160)
    args = parser.parse_args()
    try:
        parse_methods([method(c) for c in args.configs])
    except EvogmError as exc:
        parser.error(str(exc))

    torch.set_num_threads(1)
    ws, label = zoo_workspace(None)
    objective = Objective(ws.merger, ws.models.tokenizer, list(ws.tasks.values()))
    rng, dim = np.random.default_rng(0), ws.merger.dim
    evaluation_seconds(objective, dim, 1, rng)  # the first call tokenizes every task
    evaluations, runs = [], {c: [] for c in args.configs}
    for run in range(args.runs):
        evaluations += evaluation_seconds(objective, dim, args.evaluations, rng)
        for config in args.configs:
            runs[config].append(ask_seconds(config, dim, run, args.budget))
    evaluations += evaluation_seconds(objective, dim, args.evaluations, rng)

    one = statistics.median(evaluations)
    print(f"{label}: {dim} coefficients, 1 thread, load average {os.getloadavg()[0]:.1f}")
    print(f"one zoo evaluation: median {one:.2f} s over {len(evaluations)} "
          f"(min {min(evaluations):.2f}, max {max(evaluations):.2f}); a tenth: {one / 10:.3f} s\n")
    print(f"{'configuration':<24}{'asks':>6}{'median s':>10}{'mean s':>9}{'median / evaluation':>21}")
    for config, timed in runs.items():
        seconds = [s for run in timed for s in run.values()]
        median = statistics.median(seconds)
        print(f"{config:<24}{len(seconds):>6}{median:>10.3f}{statistics.mean(seconds):>9.3f}{median / one:>21.1%}")
    print("\nseconds per ask by evaluations told before it (mean over the runs; an ask's GP fit grows with them):")
    for config, timed in runs.items():
        cells = [f"{told}: {statistics.mean(run[told] for run in timed if told in run):.2f}" for told in timed[0]]
        print(f"  {config:<22} " + ", ".join(cells))


if __name__ == "__main__":
    main()
