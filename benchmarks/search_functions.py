"""Every optimizer on standard test functions in [−1, 1]^d at the paper's budget (160 evaluations).

    python -m benchmarks.search_functions                    # d = 10 and 40, 10 seeds, all configs
    python -m benchmarks.search_functions --seeds 3 --dims 10 --configs evogm cmaes random
    python -m benchmarks.search_functions --functions ackley levy styblinski_tang griewank

The first four functions (sphere, ellipsoid, Rastrigin, Rosenbrock) are the default; Ackley, Levy,
Styblinski–Tang and Griewank were added later as a second set, run on their own, to check that what
was tuned on the first four carries over to functions it was not tuned on.

Prints, for every configuration, the best loss found within the budget (mean ± std over seeds;
lower is better; * marks the best mean of a column), the mean rank over columns, and each optimizer's
own cost: seconds per ask() after the initial population (EvoGM's generator training, EvoGM+'s
training and screening, the BO samplers' model fits) and the thread count that trains EvoGM fastest.
The optimum of every function sits at a fixed point o ~ U(−0.5, 0.5)^d (not the centre, not a
one-hot vector, not the uniform vector), so no initialization is favoured by construction.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

import numpy as np
import torch

from benchmarks.variants import VARIANTS
from evogm.compare import parse_methods
from evogm.search import make_optimizer
from evogm.search.generators import GeneratorPair

CONFIGS = {  # name -> method spec, as evogm compare reads it; the paper's P = 20 everywhere
    "evogm": "evogm",
    "evogm 1 round (T=7)": VARIANTS["evogm-norounds"],
    "evogm single gen": VARIANTS["evogm-single"],
    "cmaes": "cmaes",
    "cmaes 2 rounds": "cmaes:rounds=2",
    "cmaes-pycma": VARIANTS["cmaes-pycma"],
    "pso": "pso",
    "de": "de",
    "random": "random",
    "evogm-plus": "evogm-plus",
    "evogm-plus 2 rounds": "evogm-plus:rounds=2",  # against its default's one round from 40 coefficients
    "evogm-plus-noscreen": VARIANTS["evogm-plus-noscreen"],
    "bo": "bo",
    "tpe": "tpe",
}


def optimum(dim: int) -> np.ndarray:
    return np.random.default_rng(1000 + dim).uniform(-0.5, 0.5, dim)


def sphere(x, o):
    return np.sum((x - o) ** 2, axis=1)


def ellipsoid(x, o):  # condition number 1e3
    weights = 10.0 ** (3.0 * np.arange(x.shape[1]) / max(x.shape[1] - 1, 1))
    return np.sum(weights * (x - o) ** 2, axis=1)


def rastrigin(x, o):  # z in about [−3.8, 3.8]: several local minima per axis inside the box
    z = 2.56 * (x - o)
    return 10 * x.shape[1] + np.sum(z**2 - 10 * np.cos(2 * np.pi * z), axis=1)


def rosenbrock(x, o):  # minimum 0 at x = o
    z = 2.0 * (x - o) + 1.0
    return np.sum(100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2, axis=1)


def ackley(x, o):  # z in about [−7.5, 7.5]: a rugged plateau around one funnel
    z = 5.0 * (x - o)
    return (-20.0 * np.exp(-0.2 * np.sqrt(np.mean(z**2, axis=1))) - np.exp(np.mean(np.cos(2 * np.pi * z), axis=1))
            + 20.0 + np.e)


def levy(x, o):  # w = 1 at x = o; ridges of sines on a slow bowl
    w = 1.0 + 5.0 * (x - o) / 4.0
    inner = np.sum((w[:, :-1] - 1) ** 2 * (1 + 10 * np.sin(np.pi * w[:, :-1] + 1) ** 2), axis=1)
    last = (w[:, -1] - 1) ** 2 * (1 + np.sin(2 * np.pi * w[:, -1]) ** 2)
    return np.sin(np.pi * w[:, 0]) ** 2 + inner + last


def styblinski_tang(x, o):  # minimum 0 at x = o; a second, shallower basin on every axis
    z = 5.0 * (x - o) - 2.903534027771178
    return 0.5 * np.sum(z**4 - 16 * z**2 + 5 * z, axis=1) + 39.16616570377142 * x.shape[1]


def griewank(x, o):  # a bowl under many shallow local minima
    z = 100.0 * (x - o)
    return 1.0 + np.sum(z**2, axis=1) / 4000.0 - np.prod(np.cos(z / np.sqrt(np.arange(1, x.shape[1] + 1))), axis=1)


FUNCTIONS = {f.__name__: f for f in (sphere, ellipsoid, rastrigin, rosenbrock,
                                     ackley, levy, styblinski_tang, griewank)}
FIRST_FOUR = ["sphere", "ellipsoid", "rastrigin", "rosenbrock"]


def run(job) -> tuple:
    """One search: (config, function, dim, seed) -> (best loss, training seconds, trainings)."""
    config, function, dim, seed, budget = job
    torch.set_num_threads(1)  # the cost figures are per thread (Optuna's GP runs on torch too)
    method = parse_methods(CONFIGS[config])[0]
    opt = make_optimizer(method.optimizer, dim, popsize=20, seed=seed, options=method.options)
    loss, o = FUNCTIONS[function], optimum(dim)
    done, best, train_seconds, trainings = 0, np.inf, 0.0, 0
    while done < budget:
        start = time.perf_counter()
        xs = opt.ask()[: budget - done]
        if done:  # every ask after the initial population: the optimizer's own cost
            train_seconds, trainings = train_seconds + time.perf_counter() - start, trainings + 1
        losses = loss(xs, o)
        opt.tell(xs, losses)
        done, best = done + len(xs), min(best, float(losses.min()))
    return (config, function, dim, seed), best, train_seconds, trainings


def thread_timing(dim: int = 10, steps: int = 10) -> dict:
    """Seconds per 200 Adam steps of the paper's generators at the largest batch of a run."""
    rng = np.random.default_rng(0)
    winners, losers = rng.uniform(-1, 1, (24, dim)), rng.uniform(-1, 1, (56, dim))
    out = {}
    for threads in (1, 2):
        pair = GeneratorPair(dim, seed=0, threads=threads)
        pair.train(winners, losers, steps=2, rng=rng)  # warm up
        start = time.perf_counter()
        pair.train(winners, losers, steps=steps, rng=rng)
        out[threads] = (time.perf_counter() - start) * 200 / steps
    return out


def table(results, configs, columns) -> str:
    cells = {key: [] for key in ((c, f, d) for c in configs for f, d in columns)}
    for (config, function, dim, _), best, _, _ in results:
        cells[(config, function, dim)].append(best)
    means = {key: np.mean(v) for key, v in cells.items()}
    header = f"{'optimizer':<22}" + "".join(f"{f'{f} d={d}':>22}" for f, d in columns) + f"{'mean rank':>11}"
    ranks = {c: [] for c in configs}
    for f, d in columns:
        order = sorted(configs, key=lambda c: means[(c, f, d)])
        for rank, c in enumerate(order, 1):
            ranks[c].append(rank)
    lines = [header, "-" * len(header)]
    for c in configs:
        row = f"{c:<22}"
        for f, d in columns:
            v = cells[(c, f, d)]
            star = "*" if min(configs, key=lambda k: means[(k, f, d)]) == c else " "
            row += f"{f'{np.mean(v):.3g} ± {np.std(v):.2g}{star}':>22}"
        lines.append(row + f"{np.mean(ranks[c]):>11.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--dims", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--functions", nargs="+", default=FIRST_FOUR, choices=list(FUNCTIONS),
                        help="default: the first four; ackley levy styblinski_tang griewank are the others")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (each trains on 1 thread)")
    args = parser.parse_args()

    columns = [(f, d) for d in args.dims for f in args.functions]
    jobs = [(c, f, d, s, args.budget) for c in args.configs for f, d in columns for s in range(args.seeds)]
    start = time.perf_counter()
    results = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for result in pool.imap_unordered(run, jobs):
            results.append(result)
            print(f"\r{len(results)}/{len(jobs)} searches", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"best loss within {args.budget} evaluations, mean ± std over {args.seeds} seeds "
          f"(lower is better; * = best mean in the column); {time.perf_counter() - start:.0f} s wall\n")
    print(table(results, args.configs, columns))

    print("\nThe optimizer's own cost per ask() after the initial population (1 thread):")
    for config in args.configs:
        for d in args.dims:
            rows = [r for r in results if r[0][0] == config and r[0][2] == d]
            seconds, trainings = sum(r[2] for r in rows), sum(r[3] for r in rows)
            print(f"  {config:<22} d={d:<3} {seconds / max(trainings, 1):6.2f} s per ask "
                  f"({trainings} asks, {seconds / len(rows):.1f} s per 160-evaluation run)")
    timing = thread_timing()
    print("  threads: " + ", ".join(f"{t} → {s:.2f} s per 200 steps" for t, s in timing.items()))


if __name__ == "__main__":
    main()
