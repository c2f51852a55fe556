"""Asynchronous against synchronous EvoGM+ where evaluation times vary: a cluster kept busy.

    python -m benchmarks.async_cluster cluster                  # Ray, 8 workers, sleeps: utilization, wall-clock
    python -m benchmarks.async_cluster landscapes --workers 2   # the suite, quick mode: quality at equal evaluations

Evaluation times follow one spread throughout: a fixed part (merging, the prompts' forward passes),
an exponential part, and for one candidate in ten a long generation (a merge that never emits its
stop token generates to the limit): FIXED + Exp(SPREAD) + LONG with probability P_LONG seconds.

`cluster`: EvoGM+ (its defaults, 160 evaluations, P = 20) on a test function (`--function`, d = 8,
benchmarks/search_functions.py) whose every evaluation sleeps for a time drawn from the spread, on
Ray in local mode with 8 workers (the sleeps overlap, so it runs on 2 cores). Each seed runs
synchronously (`search.asynchronous: false`: a generation is asked whole and told once its slowest
candidate is back) and asynchronously (a worker that frees up gets a new row at once). Prints per
mode, mean over seeds: worker utilization (the seconds workers spent evaluating over workers ×
wall-clock), from the first candidate's start to the last one's end, and until the last candidate
started (the end of any budgeted search drains the workers, whatever its schedule), and the ceiling
for the run's evaluation times (`ceiling`: each sent to the first free worker the moment it frees,
with no time lost between); wall-clock; and the best loss found by fixed fractions of the
synchronous run's wall-clock.

`landscapes`: the landscape suite's EvoGM+ runs again (quick mode, 5 seeds, OUT/LANDSCAPE/), each
candidate now answered in the order 8 workers with these times would answer it: a simulated
cluster (`SimulatedCluster`: one process evaluates the candidates, a virtual clock orders the
answers, so the search sees what it sees on a real cluster at one process's cost). Prints per
landscape the best dev and its test at 160 evaluations, asynchronous against the suite's
synchronous runs (benchmarks/landscapes.py, read from its runs), and whether the asynchronous mean
test is within one standard error of the synchronous one.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import math
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.landscapes import FULL, ROOT, landscape_config, quick_overrides, run_models
from evogm.executors import EXECUTORS, LocalExecutor, evaluate
from evogm.runlog import Result, RunLog

FIXED, SPREAD, LONG, P_LONG = 2.0, 0.5, 6.0, 0.1  # seconds: the spread of evaluation times
WORKERS = 8
SUITE = ("zoo", "zoo-groups", "zoo-interior", "zoo-correlated")


def duration(rng: np.random.Generator, scale: float = 1.0) -> float:
    """One evaluation's seconds, drawn from the spread."""
    return scale * (FIXED + rng.exponential(SPREAD) + (LONG if rng.random() < P_LONG else 0.0))


# --- cluster: Ray, sleeps ------------------------------------------------------------------------


class SleepingFunction:
    """The objective factory of `cluster`: a test function that takes a drawn time to answer (seeded
    by the candidate, so a candidate takes as long in either mode)."""

    def __init__(self, function: str, dim: int, scale: float):
        self.function, self.dim, self.scale = function, dim, scale

    def __call__(self):
        from benchmarks.search_functions import FUNCTIONS, optimum

        f, o = FUNCTIONS[self.function], optimum(self.dim)

        def evaluate(x: np.ndarray, threshold=None) -> Result:
            seed = int.from_bytes(hashlib.sha256(np.asarray(x, dtype=np.float64).tobytes()).digest()[:8], "little")
            seconds = duration(np.random.default_rng(seed), self.scale)
            start = time.time()
            time.sleep(seconds)
            return Result(tuple(float(v) for v in x), float(f(np.asarray(x)[None], o)[0]), seconds=seconds,
                          metrics={"start": start, "end": time.time()})

        return evaluate


class TimedLog(RunLog):
    """The run log, with when each record arrived."""

    def __init__(self, path):
        super().__init__(path, fresh=True)
        self.arrivals: list[tuple[float, float]] = []  # (monotonic time, loss)

    def append(self, rec: dict) -> None:
        super().append(rec)
        self.arrivals.append((time.monotonic(), math.inf if rec["loss"] is None else rec["loss"]))


def cluster_run(args, seed: int, asynchronous: bool, executor) -> dict:
    from evogm.search import make_optimizer
    from evogm.search.loop import search

    optimizer = make_optimizer("evogm-plus", args.dim, popsize=20, seed=seed)
    log = TimedLog(Path(tempfile.mkdtemp(prefix="async-cluster-")) / "evaluations.jsonl")
    start = time.monotonic()
    search(optimizer, executor, log, args.budget, asynchronous_ok=asynchronous)
    wall = time.monotonic() - start
    spans = np.array([(r["metrics"]["start"], r["metrics"]["end"]) for r in log.records()])
    return {"wall": wall, "utilization": utilization(spans, spans[:, 0].min(), spans[:, 1].max(), executor.workers),
            "steady": utilization(spans, spans[:, 0].min(), spans[:, 0].max(), executor.workers),
            "ceiling": ceiling(spans, executor.workers),
            "arrivals": [(t - start, loss) for t, loss in log.arrivals]}


def utilization(spans: np.ndarray, start: float, end: float, workers: int) -> float:
    """The share of `workers` × (end − start) that the evaluations' (start, end) spans cover."""
    busy = np.clip(np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], start), 0.0, None).sum()
    return float(busy / (workers * (end - start)))


def ceiling(spans: np.ndarray, workers: int) -> float:
    """The utilization of a schedule without any overhead for the same evaluation times, in the order
    they started (each to the first free worker the moment it frees): what any scheduler that cannot
    know an evaluation's time before it ends reaches, its drain at the end included."""
    free = [0.0] * workers
    for seconds in (spans[:, 1] - spans[:, 0])[np.argsort(spans[:, 0])]:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return float((spans[:, 1] - spans[:, 0]).sum() / (workers * max(free)))


def best_by(arrivals: list[tuple[float, float]], seconds: float) -> float:
    losses = [loss for t, loss in arrivals if t <= seconds]
    return min(losses) if losses else math.inf


def cluster(args) -> None:
    from evogm.ray_executor import RayExecutor

    executor = RayExecutor(SleepingFunction(args.function, args.dim, args.scale), workers=WORKERS,
                           cpus_per_worker=0.25)
    executor.ready()
    runs = {mode: [] for mode in ("synchronous", "asynchronous")}
    try:
        for seed in range(args.seeds):
            for mode in runs:
                runs[mode].append(cluster_run(args, seed, mode == "asynchronous", executor))
                print(f"  seed {seed} {mode}: {runs[mode][-1]['wall']:.1f} s, utilization "
                      f"{runs[mode][-1]['utilization']:.1%} ({runs[mode][-1]['steady']:.1%} until the last was sent)",
                      flush=True)
    finally:
        executor.close()
    sync_wall = float(np.mean([r["wall"] for r in runs["synchronous"]]))
    marks = [0.25, 0.5, 0.75, 1.0]
    print(f"\n# {args.function} (d = {args.dim}), EvoGM+, {args.budget} evaluations, {WORKERS} Ray workers, "
          f"{args.seeds} seeds; evaluation seconds {args.scale:g} × ({FIXED:g} + Exp({SPREAD:g}) + {LONG:g} w.p. {P_LONG:g})")
    header = " | ".join(f"best by {m:.0%} of sync wall ({m * sync_wall:.0f} s)" for m in marks)
    print(f"| mode | utilization | until the last candidate was sent | without overhead | wall-clock s | {header} | "
          "best at the end |")
    print("|---|---|---|---|---|" + "---|" * len(marks) + "---|")
    for mode, rows in runs.items():
        cells = [_mean_sd([best_by(r["arrivals"], m * sync_wall) for r in rows]) for m in marks]
        print(f"| {mode} | {np.mean([r['utilization'] for r in rows]):.1%} | {np.mean([r['steady'] for r in rows]):.1%} | "
              f"{np.mean([r['ceiling'] for r in rows]):.1%} | "
              f"{np.mean([r['wall'] for r in rows]):.1f} | " + " | ".join(cells)
              + f" | {_mean_sd([min(loss for _, loss in r['arrivals']) for r in rows])} |")


def _mean_sd(values) -> str:
    values = np.asarray(values, dtype=float)
    if not np.isfinite(values).all():
        return "–"
    return f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}"


# --- landscapes: a simulated cluster's order on the real merge problems ----------------------------


class SimulatedCluster(LocalExecutor):
    """`workers` workers simulated in one process: each candidate is evaluated here, in turn, and
    answered in the order `workers` workers whose evaluation times follow the spread would answer
    it (a virtual clock: a candidate starts when it is submitted, as a freed worker takes it)."""

    def __init__(self, make_objective, *, timeout: float | None = None, workers: int = WORKERS, seed: int = 0):
        super().__init__(make_objective, timeout=timeout)
        self.workers, self._rng, self._clock, self._finish = workers, np.random.default_rng(seed), 0.0, {}

    def submit(self, key, x, threshold=None) -> None:
        super().submit(key, x, threshold)
        self._finish[key] = self._clock + duration(self._rng)

    def next(self):
        key = min(self._finish, key=self._finish.get)
        self._clock = self._finish.pop(key)
        return key, evaluate(self.objective, *self._queued.pop(key))


def register() -> None:
    """Make the simulated cluster an executor kind (`executor.kind: simulated`), in this process."""
    EXECUTORS["simulated"] = SimulatedCluster


def _run_job(job):
    from evogm.compare import run_job

    register()
    return job, run_job(job)


def landscapes(args) -> None:
    from evogm.compare import make_jobs, parse_methods

    register()
    out = (args.out or ROOT / "runs" / "async-cluster-quick").resolve()
    suite = (args.suite or ROOT / "runs" / "landscapes-quick").resolve()
    jobs, sync = [], {}
    for name in args.landscapes:
        config, overrides = landscape_config(name, args.cache)
        overrides = [*FULL, *overrides]
        overrides += quick_overrides(config, overrides)
        for seed in range(args.seeds):
            simulated = [*overrides, "baselines.methods=[]", "executor.kind=simulated",
                         f"executor.options={{workers: {WORKERS}, seed: {seed}}}"]
            jobs += [(name, job) for job in make_jobs(str(config), simulated, parse_methods("evogm-plus"), [seed],
                                                      args.budget, out / name, args.workers)]
        sync[name] = [suite / name / "runs" / "evogm-plus" / f"seed{seed}" for seed in range(args.seeds)]
    pool = get_context("spawn").Pool(args.workers, maxtasksperchild=1)
    try:
        for job, how in pool.imap_unordered(_run_job, [job for _, job in jobs]):
            print(f"  {Path(job.run_dir).parent.parent.parent.name} seed {job.seed}: {how}", flush=True)
        pool.close()
    finally:
        pool.join()
    print(f"\n# EvoGM+ at {args.budget} evaluations, quick mode, {args.seeds} seeds: synchronous (the suite's runs, "
          f"{suite}) against asynchronous on a simulated {WORKERS}-worker cluster ({out}); best dev / its test")
    print("| landscape | synchronous dev | its test | asynchronous dev | its test | test difference | within 1 SE |")
    print("|---|---|---|---|---|---|---|")
    for name in args.landscapes:
        a = [_best(job.run_dir) for landscape, job in jobs if landscape == name]
        s = [_best(path) for path in sync[name]]
        if any(v is None for v in s):
            print(f"| {name} | the suite has no finished EvoGM+ run of every seed: run benchmarks.landscapes first |")
            continue
        made_on = [run_models(path) for path in sync[name]] + [run_models(job.run_dir) for n, job in jobs if n == name]
        if any(models != made_on[0] for models in made_on):
            print(f"| {name} | the suite's runs were made on other models (another build): run benchmarks.landscapes "
                  "again here |")
            continue
        diff = np.mean([t for _, t in a]) - np.mean([t for _, t in s])
        se = math.sqrt(np.var([t for _, t in a], ddof=1) / len(a) + np.var([t for _, t in s], ddof=1) / len(s))
        print(f"| {name} | {_mean_sd([d for d, _ in s])} | {_mean_sd([t for _, t in s])} | "
              f"{_mean_sd([d for d, _ in a])} | {_mean_sd([t for _, t in a])} | {diff:+.4f} | "
              f"{'yes' if diff >= -se else 'no'} (SE {se:.4f}) |")


def _best(run_dir) -> tuple[float, float] | None:
    from evogm.rundir import RunDir

    run = RunDir(Path(run_dir))
    if not run.finished():
        return None
    best = run.read_final()["candidates"]["best"]
    return best["dev"]["score"], best["test"]["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    c = sub.add_parser("cluster", help="Ray, 8 workers, sleeping test function: utilization and wall-clock")
    c.add_argument("--function", default="rastrigin")
    c.add_argument("--dim", type=int, default=8)
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--budget", type=int, default=160)
    c.add_argument("--scale", type=float, default=1.0, help="multiplies every evaluation's seconds")
    l_ = sub.add_parser("landscapes", help="the suite on a simulated cluster: quality at equal evaluations")
    l_.add_argument("--landscapes", nargs="+", default=list(SUITE))
    l_.add_argument("--seeds", type=int, default=5)
    l_.add_argument("--budget", type=int, default=160)
    l_.add_argument("--workers", type=int, default=1, help="runs at once (processes)")
    l_.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "evogm" / "landscapes")
    l_.add_argument("--out", type=Path, default=None, help="default runs/async-cluster-quick")
    l_.add_argument("--suite", type=Path, default=None, help="the suite's quick runs (default runs/landscapes-quick)")
    args = parser.parse_args()
    cluster(args) if args.part == "cluster" else landscapes(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
