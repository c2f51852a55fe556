"""Evaluations per minute on the zoo: the local executor (in this process, or as worker processes)
against Ray at 1 and 2 workers, side by side.

Every setting evaluates the same candidates (uniform λ in [0, 1], seeded) after a warm-up (the
objective built, the tasks tokenized), in alternating rounds so that a load that comes and goes on
the machine falls on every setting alike; the table gives the median of the rounds. Then Ray's fixed
costs: starting Ray, starting the workers (each loads the models and tokenizes the tasks), and the
round-trip latency of one candidate (an objective that does nothing).

    python -m benchmarks.executor_scaling                        # the packaged zoo, on the CPU
    python -m benchmarks.executor_scaling --zoo DIR              # a zoo built by `evogm zoo build DIR`
    python -m benchmarks.executor_scaling --zoo DIR models.device=cuda --gpus-per-worker 1 --workers 1
    python -m benchmarks.executor_scaling --zoo DIR models.device=cuda --gpus-per-worker 0.5 --workers 1,2
    python -m benchmarks.executor_scaling --config run.yaml --address auto --gpus-per-worker 1 --workers 1,2,4,8

On a CPU, each Ray worker takes `--cpus-per-worker` cores and as many torch threads; the local
executor in this process uses `--local-threads` (default: every core), and as N worker processes
(`executor.workers`, N > 1 of `--workers`) the cores divided by N each. On a GPU machine, a worker holds its own
resident model on its GPU (Ray sets CUDA_VISIBLE_DEVICES); `--gpus-per-worker 0.5` puts two workers
on one GPU. With `--address auto` the Ray settings run on the cluster this machine has joined.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from evogm.config import load_config
from evogm.executors import LocalExecutor
from evogm.runlog import Result
from evogm.ray_executor import RayExecutor, import_ray
from evogm.workspace import objective_factory


def main() -> None:
    args = parse_args()
    cfg = load_config(zoo_config(args), args.overrides)
    factory = objective_factory(cfg, "multi_task")
    dim = len(cfg.models.experts) * cfg.models.groups
    xs = np.random.default_rng(0).uniform(0, 1, size=(args.candidates, dim))
    print(f"zoo: {len(cfg.models.experts)} experts, {len(cfg.tasks)} tasks, device {cfg.models.device}; "
          f"{args.candidates} candidates per setting, {args.rounds} rounds, {os.cpu_count()} CPU cores; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    ray, start_s = start_ray(args)
    settings = ([("local", 1, args.local_threads), ("local", 1, 1)]
                + [("local", n, max(1, args.local_threads // n)) for n in args.workers if n > 1]
                + [("ray", n, args.cpus_per_worker) for n in args.workers])
    rates, worker_start = measure(settings, factory, xs, args)
    latency_ms = round_trip_ms(args)
    print_table(settings, rates, args)
    print(f"\nRay fixed costs: start Ray {start_s:.1f} s; start workers (load models, tokenize tasks) "
          + ", ".join(f"{n}: {statistics.median(t):.1f} s" for n, t in worker_start.items())
          + f"; round trip per candidate {latency_ms:.2f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f} (other work on the machine takes cores from the workers: "
          "with Linux's per-session CPU sharing, a busy machine hides the speedup; measure on an idle one)")
    ray.shutdown()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. models.device=cuda")
    p.add_argument("--zoo", help="a zoo folder (its run.yaml) or a run config; default: the packaged zoo")
    p.add_argument("--candidates", type=int, default=16, help="evaluations per setting and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=lambda s: [int(n) for n in s.split(",")], default=[1, 2])
    p.add_argument("--cpus-per-worker", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0)
    p.add_argument("--local-threads", type=int, default=os.cpu_count())
    p.add_argument("--address", default=None, help="a Ray cluster to join (auto, HOST:PORT); default: start one")
    return p.parse_args()


def zoo_config(args) -> Path:
    if args.zoo:
        path = Path(args.zoo)
        return path / "run.yaml" if path.is_dir() else path
    from evogm.zoo.packaged import zoo_config as packaged

    return packaged()


def start_ray(args):
    ray = import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    if args.address is None:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="warning")
    else:
        ray.init(address=args.address, log_to_driver=False, logging_level="warning")
    return ray, time.perf_counter() - start


# --- measuring --------------------------------------------------------------------------------------


def measure(settings, factory, xs, args):
    """Evaluations per minute of each setting, per round; and the workers' start seconds per Ray size."""
    rates = {s: [] for s in settings}
    worker_start: dict[int, list[float]] = {}
    local = LocalExecutor(factory)
    torch.set_num_threads(args.local_threads)
    processes = {s: LocalExecutor(factory, workers=s[1]) for s in settings if s[0] == "local" and s[1] > 1}
    for _ in range(args.rounds):
        for setting in settings:
            kind, workers, threads = setting
            if setting in processes:
                rates[setting].append(per_minute(processes[setting], xs))
            elif kind == "local":
                torch.set_num_threads(threads)
                rates[setting].append(per_minute(local, xs))
            else:
                rates[setting].append(ray_rate(factory, xs, workers, args, worker_start))
    for executor in processes.values():
        executor.close()
    return rates, worker_start


def ray_rate(factory, xs, workers: int, args, worker_start: dict) -> float:
    start = time.perf_counter()
    executor = RayExecutor(factory, address=args.address, workers=workers, cpus_per_worker=args.cpus_per_worker,
                           gpus_per_worker=args.gpus_per_worker)
    try:
        executor.ready()
        worker_start.setdefault(workers, []).append(time.perf_counter() - start)
        return per_minute(executor, xs)
    finally:
        executor.close()  # its CPUs and GPUs go back to Ray for the next setting


def per_minute(executor, xs: np.ndarray) -> float:
    """Evaluations per minute over xs, after one warm-up evaluation per worker (tokenizing the tasks)."""
    executor.map(xs[: getattr(executor, "workers", 1)])
    start = time.perf_counter()
    results = executor.map(xs)
    seconds = time.perf_counter() - start
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"{len(failed)} evaluations failed: {failed[0]}")
    return 60 * len(xs) / seconds


class Nothing:
    """An objective that does nothing: what remains is Ray's round trip."""

    def __call__(self, x: np.ndarray) -> Result:
        return Result(tuple(x), 0.0)


def round_trip_ms(args, n: int = 300) -> float:
    executor = RayExecutor(Nothing, address=args.address, workers=1, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=0)
    try:
        executor.ready()
        xs = np.zeros((n, 8))
        executor.map(xs[:10])
        start = time.perf_counter()
        executor.map(xs)
        return 1000 * (time.perf_counter() - start) / n
    finally:
        executor.close()


def print_table(settings, rates, args) -> None:
    median = {s: statistics.median(r) for s, r in rates.items()}
    base_ray = next((median[s] for s in settings if s[0] == "ray" and s[1] == 1), None)
    base_local = median[settings[0]]
    print(f"\n| executor | workers | threads per worker | evaluations/min | × Ray 1 worker | × local ({args.local_threads} threads) |")
    print("|---|---:|---:|---:|---:|---:|")
    for s in settings:
        kind, workers, threads = s
        vs_ray = f"{median[s] / base_ray:.2f}" if base_ray else "-"
        print(f"| {kind} | {workers} | {threads} | {median[s]:.1f} | {vs_ray} | {median[s] / base_local:.2f} |")


if __name__ == "__main__":
    main()
