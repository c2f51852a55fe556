"""Equal-budget comparisons: every method × every seed as a normal run, then one table and two plots.

Each run is an ordinary run directory (OUT/runs/METHOD/seedS), so it can be inspected and resumed
on its own; a finished run is reused, an unfinished one resumed. The static baselines are scored
once, in the first run, since they do not depend on the search.

>>> compare("configs/zoo.yaml", methods=["evogm", "cmaes"], seeds=[0, 1], out="runs/cmp")   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from evogm.adaptive import items_scored
from evogm.baselines import BASELINES
from evogm.errors import EvogmError
from evogm.rundir import RunDir
from evogm.runlog import flip
from evogm.search.evogm_plus import EvoGMPlus

# name → (optimizer, options): the paper's ablations, each one option away from EvoGM
ABLATIONS = {
    "evogm-single": ("evogm", {"generator": "single"}),
    "evogm-nocycle": ("evogm", {"cycle_scale": 0.0}),
    "evogm-norounds": ("evogm", {"rounds": 1}),  # iterations set so the budget stays the same
    "evogm-reset-iteration": ("evogm", {"reset": "iteration"}),
}
FIRST = EvoGMPlus.FORMER_DEFAULTS  # EvoGM+'s first defaults: the values its changed defaults had
# name → (optimizer, options): variants beyond the paper, compared by name, never by --ablations
VARIANTS = {
    "evogm-local": ("evogm", {"local_share": 0.25}),
    # EvoGM+'s first defaults (the dimension-scaled length-scale prior, screened batches of P, every
    # round started from the hybrid population): the variants measured against them keep them, so their
    # names mean what docs/results.md measured
    "evogm-plus-first": ("evogm-plus", FIRST),
    "evogm-plus-1round": ("evogm-plus", {**FIRST, "rounds": 1, "iterations": 7}),
    "evogm-plus-ei": ("evogm-plus", {**FIRST, "acquisition": "ei"}),
    "evogm-plus-sparse": ("evogm-plus", {**FIRST, "dense_share": 0.0}),
    "evogm-plus-norecomb": ("evogm-plus", {**FIRST, "recombine": 0.0}),
    # no local steps along λ's scale and the 1 vector
    "evogm-plus-noshift": ("evogm-plus", {**FIRST, "scale_shift": 0.0}),
    "evogm-plus-nosum": ("evogm-plus", {**FIRST, "sum_input": False}),  # the GP without Σλ as an input
    "evogm-plus-nowarp": ("evogm-plus", {**FIRST, "warp": False}),  # the GP on the standardized losses, not their ranks
    "evogm-plus-autowarp": ("evogm-plus", {**FIRST, "warp": "auto"}),  # both GPs; the one whose held-out ranks are best
    "evogm-plus-short": ("evogm-plus", {**FIRST, "lengthscale": 1.0}),  # length-scale prior at half the box, any d
    "evogm-plus-autoscale": ("evogm-plus", {**FIRST, "lengthscale": "auto"}),  # both priors; the better held-out ranks
    "evogm-plus-b10": ("evogm-plus", {**FIRST, "lengthscale": "auto", "batch": 10}),  # autoscale, batches of 10
    # autoscale, no random restart rows
    "evogm-plus-rs": ("evogm-plus", {**FIRST, "lengthscale": "auto", "round_start": "screened"}),
    # both: the defaults
    "evogm-plus-b10rs": ("evogm-plus", {"lengthscale": "auto", "batch": 10, "round_start": "screened",
                                        "gp_restarts": True}),
    "evogm-plus-b5rs": ("evogm-plus", {"lengthscale": "auto", "batch": 5, "round_start": "screened",
                                       "gp_restarts": True}),  # b10rs, 5 rows
    "evogm-plus-screened": ("evogm-plus", {"lengthscale": "auto", "batch": 10, "round_start": "screened",
                                           "start": "experts", "gp_restarts": True}),  # b10rs, and no random rows in round 1
    "evogm-plus-warm": ("evogm-plus", {"gp_restarts": False}),  # the default: refits from the last fit and the prior
    "evogm-plus-restarts": ("evogm-plus", {"gp_restarts": True}),  # the default, refitted from short length scales too
    "cmaes-pycma": ("cmaes", {"pycma_popsize": True}),  # the library's population size, not P
    "bo-seq": ("bo", {"batch": 1}),  # sequential BO: one candidate per model update
}
NAMED = {**ABLATIONS, **VARIANTS}  # every method name that is an optimizer with options


@dataclass(frozen=True)
class Job:
    """One run of the comparison: a config, its overrides, and where it lives."""

    method: str
    seed: int
    config: str
    overrides: tuple[str, ...]
    run_dir: Path
    threads: int


def compare(config: str, *, methods: list[str], seeds: list[int], out, budget: int | None = None,
            overrides: list[str] = (), ablations: bool = False, workers: int = 1, on_done=None) -> dict:
    """Run (or reuse) every method × seed, then write comparison.json, comparison.md and plots."""
    from evogm import report_compare

    out = Path(out).resolve()
    specs = method_specs(methods, ablations)
    budget = budget or planned_budget(config, list(overrides), out)
    jobs = make_jobs(config, list(overrides), specs, seeds, budget, out, workers)
    run_jobs(jobs, workers, on_done or (lambda job, how: None))
    summary = summarize(jobs, specs, budget)
    report_compare.write(out, summary)
    return summary


def method_specs(methods: list[str], ablations: bool) -> dict[str, tuple[str, dict]]:
    """name → (optimizer, options); plain names are optimizers with their defaults."""
    from evogm.registry import unknown_name
    from evogm.search import OPTIMIZERS

    specs = {}
    for name in methods:
        if name in NAMED:
            specs[name] = NAMED[name]
        elif name in OPTIMIZERS:
            specs[name] = (name, {})
        else:
            raise unknown_name("optimizer", name, [*OPTIMIZERS, *NAMED])
    if ablations:
        specs.update({k: v for k, v in ABLATIONS.items() if k not in specs})
    return specs


def planned_budget(config: str, overrides: list[str], out: Path) -> int:
    """The config's budget, or EvoGM's own schedule on this config (the paper's R·(P + T·P))."""
    from evogm.config import load_config, resolve

    cfg = load_config(config, [*overrides, "search.optimizer=evogm"])
    if cfg.search.budget:
        return cfg.search.budget
    return resolve(load_config(config, [*overrides, "search.optimizer=evogm", "search.options={}"]),
                          out / "runs").search.budget


def make_jobs(config, overrides, specs, seeds, budget, out: Path, workers: int) -> list[Job]:
    # torch threads per run: the cores shared among the workers, unless OMP_NUM_THREADS sets a limit
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // max(1, workers))
    jobs = []
    for m, (name, (optimizer, options)) in enumerate(specs.items()):
        for s, seed in enumerate(seeds):
            run_dir = out / "runs" / name / f"seed{seed}"
            extra = [f"search.optimizer={optimizer}", "search.options={}", f"search.budget={budget}",
                     f"seed={seed}", f"output={run_dir}"]
            extra += [f"search.options.{k}={'null' if v is None else v}" for k, v in options.items()]
            if name == "evogm-norounds":
                extra.append(f"search.options.iterations={_norounds_iterations(config, overrides)}")
            if (m, s) != (0, 0):
                extra.append("baselines.methods=[]")  # static baselines: once, in the first run
            jobs.append(Job(name, seed, str(config), (*overrides, *extra), run_dir, threads))
    return jobs


def _norounds_iterations(config: str, overrides: list[str]) -> int:
    """One round of R·(T+1) − 1 iterations spends what R rounds of T iterations spend."""
    from evogm.config import load_config, optimizer_defaults

    options = {**optimizer_defaults("evogm"), **load_config(config, overrides).search.options}
    return options["rounds"] * (options["iterations"] + 1) - 1


def run_jobs(jobs: list[Job], workers: int, on_done) -> None:
    """Every job, `workers` at a time in their own processes (or here, with one worker)."""
    if workers <= 1:
        for job in jobs:
            on_done(job, run_job(job))
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            on_done(futures[future], future.result())


def run_job(job: Job) -> str:
    """Run one job; reuse it if finished, resume it if started, run it again if its inputs changed
    (models, task files or config). Returns what happened."""
    import torch

    from evogm import run as runner
    from evogm.config import load_config, resolve

    torch.set_num_threads(job.threads)
    cfg, run_dir = load_config(job.config, list(job.overrides)), RunDir(job.run_dir)
    if run_dir.config.exists():
        _check_same(run_dir, cfg)
        changed = run_dir.changed_inputs(resolve(cfg, run_dir.path))
        if changed:
            runner.run(cfg, run_dir=job.run_dir, force=True)
            return f"ran again ({', '.join(changed)} changed)"
        if run_dir.finished():
            return "reused"
        runner.run(run_dir.read_config(), run_dir=job.run_dir, resume=True)
        return "resumed"
    runner.run(cfg, run_dir=job.run_dir)
    return "ran"


def _check_same(run_dir: RunDir, cfg) -> None:
    saved = run_dir.read_config()
    if (saved.search.optimizer, saved.search.budget, saved.seed) != (cfg.search.optimizer, cfg.search.budget, cfg.seed):
        raise EvogmError(f"{run_dir.path} holds a run of another optimizer, budget or seed",
                         "a comparison reuses only runs of the same settings",
                         "pick another --out, or delete that run directory")


# --- reading the runs back ----------------------------------------------------------------------


def summarize(jobs: list[Job], specs: dict, budget: int) -> dict:
    """Per method: best dev and its test score over seeds, curves, evaluations to reach the static best."""
    static = RunDir(jobs[0].run_dir).read_final()["candidates"]
    static = {k: {"dev": v["dev"]["score"], "test": v["test"]["score"]} for k, v in static.items() if k in BASELINES}
    target = max((v["dev"] for v in static.values() if v["dev"] is not None), default=None)
    methods = {}
    for name in specs:
        runs = []
        for job in (j for j in jobs if j.method == name):
            run_dir = RunDir(job.run_dir)
            best = run_dir.read_final()["candidates"]["best"]
            curve = best_so_far(run_dir.records(), budget)
            runs.append({"seed": job.seed, "run_dir": str(job.run_dir), "dev": best["dev"]["score"],
                         "test": best["test"]["score"], "evals_to_static": evals_to_reach(curve, target),
                         "curve": curve, **run_items(run_dir)})
        methods[name] = {"optimizer": specs[name][0], "options": specs[name][1], "runs": runs,
                         **{f"{k}_{s}": v for k in ("dev", "test") for s, v in mean_std([r[k] for r in runs]).items()},
                         "evals_to_static": _reach_summary([r["evals_to_static"] for r in runs]),
                         "items": mean_std([r["items"] for r in runs])["mean"],
                         "items_full": mean_std([r["items_full"] for r in runs])["mean"]}
    return {"budget": budget, "seeds": [j.seed for j in jobs if j.method == jobs[0].method],
            "static": static, "static_best_dev": target, "methods": methods}


def run_items(run_dir: RunDir) -> dict:
    """Dev items a run's search scored, and what scoring every evaluation in full would have."""
    scored, whole = items_scored(run_dir.records(), run_dir.read_final().get("dev_items") or {})
    return {"items": scored, "items_full": whole}


def best_so_far(records: list[dict], budget: int) -> list[float | None]:
    """The best full dev fitness after each evaluation (None until one succeeds; partial ones never count)."""
    curve, best = [], -math.inf
    for rec in records[:budget]:
        if rec["loss"] is not None and not rec.get("error") and not rec.get("partial"):
            best = max(best, flip(rec["loss"]))
        curve.append(None if best == -math.inf else best)
    return curve


def evals_to_reach(curve: list[float | None], target: float | None) -> int | None:
    """1-based number of evaluations after which the best so far reaches `target` (None: never)."""
    if target is None:
        return None
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= target - 1e-12), None)


def mean_std(values: list[float]) -> dict:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return {"mean": None, "std": None}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0}


def _reach_summary(values: list[int | None]) -> dict:
    reached = [v for v in values if v is not None]
    return {"reached": len(reached), "of": len(values), "mean": float(np.mean(reached)) if reached else None}
