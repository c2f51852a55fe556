"""Equal-budget comparisons: every method × every seed as a normal run, then one table and two plots.

A method is an optimizer with its options written inline, `NAME[:KEY=VALUE,...]`, optionally under
a label, `LABEL=NAME[:...]`; values are read as YAML. A variant needs no code:

>>> [m.label for m in parse_methods("evogm,pso,evogm-plus:batch=5,screen=false,one=evogm:rounds=1,iterations=7")]
['evogm', 'pso', 'evogm-plus:batch=5,screen=false', 'one']
>>> [m.label for m in parse_methods("evogm-plus,pycma=cmaes,evogm:rounds=1,seq=bo")]
['evogm-plus', 'pycma', 'evogm:rounds=1', 'seq']
>>> parse_methods("evogm:generator=single, cmaes:sigma0=0.3")[1]
Method(label='cmaes:sigma0=0.3', optimizer='cmaes', options={'sigma0': 0.3})

Each run is an ordinary run directory (OUT/runs/LABEL/seedS), so it can be inspected and resumed
on its own; a finished run is reused, an unfinished one resumed. The static baselines are scored
once, in the first run, since they do not depend on the search.

>>> compare("configs/zoo.yaml", methods=["evogm", "cmaes"], seeds=[0, 1], out="runs/cmp")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

from evogm.adaptive import items_scored
from evogm.config import BASELINES
from evogm.config_files import parse_value
from evogm.errors import EvogmError
from evogm.rundir import RunDir
from evogm.runlog import best_so_far
from evogm.worker import die_with_parent


@dataclass(frozen=True)
class Method:
    """One compared method: an optimizer with its options, under a label (its runs' folder name)."""

    label: str
    optimizer: str
    options: dict = field(default_factory=dict)


def parse_methods(text: str | list[str]) -> list[Method]:
    """`NAME[:K=V,...]` items separated by commas (or given as a list); an item `K=V` without a colon
    continues the previous method's options when K is one of its optimizer's options (else it is a
    labelled method, LABEL=NAME). Every optimizer and option is checked here."""
    from evogm.search import check_options, options_class

    items = [part.strip() for chunk in ([text] if isinstance(text, str) else text)
             for part in _split(chunk) if part.strip()]
    specs: list[list[str]] = []
    for item in items:
        if specs and _continues(specs[-1][0], item):
            specs[-1].append(item)  # one more option of the method before
        else:
            specs.append([item])
    methods = [_method(",".join(spec)) for spec in specs]
    for m in methods:
        options_class(m.optimizer, key=f"{m.label}: optimizer")  # an unknown name suggests the closest
        check_options(m.optimizer, m.options, where=f"{m.label}: ")
    labels = [m.label for m in methods]
    if len(set(labels)) < len(labels):
        raise EvogmError(f"methods repeat: {sorted({x for x in labels if labels.count(x) > 1})}",
                         "each method's runs live in a folder named by its label", "give each its own label")
    return methods


def _continues(spec: str, item: str) -> bool:
    """Whether `item` (KEY=VALUE, no colon) is one more option of the method `spec` began, rather than
    a labelled method (LABEL=NAME): it is when `spec` has options and KEY is one of its optimizer's."""
    from evogm.search import OPTIMIZERS

    if ":" in item or "=" not in item or ":" not in spec:
        return False
    optimizer = spec.partition(":")[0].rpartition("=")[2].strip()
    return optimizer in OPTIMIZERS and item.partition("=")[0].strip() in {
        f.name for f in dataclasses.fields(OPTIMIZERS[optimizer].Options)}


def _method(spec: str) -> Method:
    head, _, options = spec.partition(":")
    label, _, optimizer = head.rpartition("=") if "=" in head else (spec, "", head)
    parsed = {}
    for pair in _split(options):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EvogmError(f"method {spec!r}: {pair!r} is not KEY=VALUE", "options follow the optimizer's name",
                             "write it like evogm-plus:batch=5,screen=false")
        parsed[key.strip()] = parse_value(value.strip())
    return Method(label.strip() or spec, optimizer.strip(), parsed)


def _split(text: str) -> list[str]:
    """Split at commas outside brackets (a list value like hidden_sizes=[16,16] keeps its own)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


@dataclass(frozen=True)
class Job:
    """One run of the comparison: a config, its overrides, and where it lives."""

    method: str
    seed: int
    config: str
    overrides: tuple[str, ...]
    run_dir: Path
    threads: int


def compare(config: str, *, methods, seeds: list[int], out, budget: int | None = None,
            overrides: list[str] = (), workers: int = 1, on_done=None) -> dict:
    """Run (or reuse) every method × seed, then write comparison.json, comparison.md and plots.
    `methods`: a spec string or list as `parse_methods` reads them, or Method objects."""
    from evogm import report_compare

    _check_counts(seeds=len(seeds), workers=workers, budget=budget)
    out = Path(out).resolve()
    methods = methods if all(isinstance(m, Method) for m in methods) else parse_methods(methods)
    budget = budget or planned_budget(config, list(overrides), out)
    jobs = make_jobs(config, list(overrides), methods, seeds, budget, out, workers)
    run_jobs(jobs, workers, on_done or (lambda job, how: None))
    summary = summarize(jobs, methods, budget)
    report_compare.write(out, summary)
    return summary


def _check_counts(**counts) -> None:
    """A comparison needs at least one seed, one worker and (if given) one evaluation per run."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EvogmError(f"--{name} is {value}", f"a comparison needs at least one ({name})",
                             f"give --{name} 1 or more")


def planned_budget(config: str, overrides: list[str], out: Path) -> int:
    """The config's budget, or EvoGM's own schedule on this config (the paper's R·(P + T·P))."""
    from evogm.config import load_config, resolve

    cfg = load_config(config, [*overrides, "search.optimizer=evogm", "search.options={}"])
    return cfg.search.budget or resolve(cfg, out / "runs").search.budget


def make_jobs(config, overrides, methods: list[Method], seeds, budget, out: Path, workers: int) -> list[Job]:
    # torch threads per run: the cores shared among the workers, unless OMP_NUM_THREADS sets a limit
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // max(1, workers))
    jobs = []
    for m, method in enumerate(methods):
        for s, seed in enumerate(seeds):
            run_dir = out / "runs" / method.label / f"seed{seed}"
            options = yaml.safe_dump(method.options, default_flow_style=True, width=1 << 16).strip()
            extra = [f"search.optimizer={method.optimizer}", f"search.options={options}",
                     f"search.budget={budget}", f"seed={seed}", f"output={run_dir}"]
            if (m, s) != (0, 0):
                extra.append("baselines.methods=[]")  # static baselines: once, in the first run
            jobs.append(Job(method.label, seed, str(config), (*overrides, *extra), run_dir, threads))
    return jobs


def run_jobs(jobs: list[Job], workers: int, on_done) -> None:
    """Every job, `workers` at a time in their own processes (or here, with one worker)."""
    if workers <= 1:
        for job in jobs:
            on_done(job, run_job(job))
        return
    pool = get_context("spawn").Pool(workers, initializer=die_with_parent, maxtasksperchild=1)
    try:
        for job, how in pool.imap_unordered(_run_one, jobs):
            on_done(job, how)
        pool.close()
    except BaseException:  # ctrl-C or a failed run: nothing queued starts, the running ones stop
        pool.terminate()
        raise
    finally:
        pool.join()


def _run_one(job: Job) -> tuple[Job, str]:
    return job, run_job(job)


def run_job(job: Job) -> str:
    """Run one job; reuse it if finished, resume it if started, run it again if its inputs changed
    (models, task files or config). Returns what happened."""
    import torch

    from evogm import run as runner
    from evogm.config import load_config, resolve
    from evogm.inputs import changed_inputs, read_config

    torch.set_num_threads(job.threads)
    cfg, run_dir = load_config(job.config, list(job.overrides)), RunDir(job.run_dir)
    if run_dir.config.exists():
        _check_same(run_dir, cfg)
        changed = changed_inputs(run_dir, resolve(cfg, run_dir.path))
        if not cfg.baselines.methods:  # this job scores no static merge: which ones the run scored matters not
            changed = [key for key in changed if not key.startswith("baselines.")]
        if changed:
            runner.run(cfg, run_dir=job.run_dir, force=True)
            return f"ran again ({', '.join(changed)} changed)"
        if run_dir.finished() and run_dir.exported():
            return "reused"
        runner.run(read_config(run_dir), run_dir=job.run_dir, resume=True)
        return "resumed"
    runner.run(cfg, run_dir=job.run_dir)
    return "ran"


def _check_same(run_dir: RunDir, cfg) -> None:
    saved = yaml.safe_load(run_dir.config.read_text()) or {}
    search = saved.get("search") or {}
    if (search.get("optimizer"), search.get("budget"), saved.get("seed")) != (
            cfg.search.optimizer, cfg.search.budget, cfg.seed):
        raise EvogmError(f"{run_dir.path} holds a run of another optimizer, budget or seed",
                         "a comparison reuses only runs of the same settings",
                         "pick another --out, or delete that run directory")


# --- reading the runs back ----------------------------------------------------------------------


def summarize(jobs: list[Job], methods: list[Method], budget: int) -> dict:
    """Per method: best dev and its test score over seeds, curves, evaluations to reach the static best."""
    static = RunDir(jobs[0].run_dir).read_final()["candidates"]
    static = {k: {"dev": v["dev"]["score"], "test": v["test"]["score"]} for k, v in static.items() if k in BASELINES}
    target = max((v["dev"] for v in static.values() if v["dev"] is not None), default=None)
    summary = {}
    for method in methods:
        runs = []
        for job in (j for j in jobs if j.method == method.label):
            run_dir = RunDir(job.run_dir)
            best = run_dir.read_final()["candidates"]["best"]
            curve = best_so_far(run_dir.records()[:budget])
            runs.append({"seed": job.seed, "run_dir": str(job.run_dir), "dev": best["dev"]["score"],
                         "test": best["test"]["score"], "evals_to_static": evals_to_reach(curve, target),
                         "curve": curve, **run_items(run_dir)})
        summary[method.label] = {
            "optimizer": method.optimizer, "options": method.options, "runs": runs,
            **{f"{k}_{s}": v for k in ("dev", "test") for s, v in mean_std([r[k] for r in runs]).items()},
            "evals_to_static": _reach_summary([r["evals_to_static"] for r in runs]),
            "items": mean_std([r["items"] for r in runs])["mean"],
            "items_full": mean_std([r["items_full"] for r in runs])["mean"]}
    return {"budget": budget, "seeds": [j.seed for j in jobs if j.method == jobs[0].method],
            "static": static, "static_best_dev": target, "methods": summary}


def run_items(run_dir: RunDir) -> dict:
    """Dev items a run's search scored, and what scoring every evaluation in full would have."""
    scored, whole = items_scored(run_dir.records(), run_dir.read_final().get("dev_items") or {})
    return {"items": scored, "items_full": whole}


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
