"""The run: a config becomes a search, its log, a final test evaluation, an exported model and a report.

The search loop is ask, map, tell, log, until the budget is spent. A run killed at any point resumes
by replay: the optimizer is rebuilt with the same seed and asked again; every asked row already in
the log is told its logged loss instead of being evaluated, so the resumed run ends exactly where an
uninterrupted one would have.

>>> from evogm.config import load_config
>>> report = run(load_config("configs/zoo.yaml", ["output=runs/zoo"]))   # doctest: +SKIP
>>> report = run(RunDir("runs/zoo").read_config(), run_dir="runs/zoo", resume=True)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from evogm import final
from evogm.config import RunConfig, optimizer_defaults
from evogm.errors import EvogmError
from evogm.executors import make_executor
from evogm.rundir import RunDir
from evogm.runlog import Result, RunLog, record, to_result
from evogm.scoring import MULTI_TASK
from evogm.workspace import objective_factory

class Progress:
    """What a run reports as it goes. The library stays silent; the CLI draws (commands/run.py)."""

    def start(self, title: str, total: int, done: int) -> None: ...

    def evaluated(self, result: Result) -> None: ...

    def generation(self, gen: int, results: list[Result], round: int | None) -> None: ...

    def stage(self, text: str) -> None: ...

    def finish(self) -> None: ...


def run(cfg: RunConfig, *, run_dir=None, resume: bool = False, force: bool = False,
        progress: Progress | None = None) -> Path:
    """Search, evaluate once on test, export, report. Returns the path of report.md."""
    run_dir = RunDir(Path(run_dir or cfg.output).resolve())
    progress = progress or Progress()
    cfg = resolve(cfg, run_dir.path)
    run_dir.prepare(cfg, resume=resume, force=force)
    if cfg.mode == MULTI_TASK:
        run_one(cfg, run_dir, MULTI_TASK, progress)
    else:
        for name in cfg.task_names:
            run_one(cfg, run_dir.sub(name), name, progress)
        final.write_summary(cfg, run_dir)
    return run_dir.report


def resolve(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """Every default made explicit (popsize, the optimizer's options, the budget) for config.yaml."""
    defaults = optimizer_defaults(cfg.search.optimizer)
    popsize = cfg.search.popsize or defaults.pop("popsize", None) or 2 * len(cfg.models.experts) * cfg.models.groups
    defaults.pop("popsize", None)
    options = {**defaults, **cfg.search.options}
    if "budget" in defaults and "budget" not in cfg.search.options and cfg.search.budget:
        options["budget"] = cfg.search.budget  # an optimizer that plans by budget plans for this one
    search = dataclasses.replace(cfg.search, popsize=popsize, options=options)
    budget = search.budget or make_optimizer(dataclasses.replace(cfg, search=search)).budget
    if not budget:
        raise EvogmError(f"optimizer {search.optimizer!r} plans no budget", "it has no schedule of its own",
                         "set search.budget (the number of evaluations)")
    return dataclasses.replace(cfg, output=str(run_dir), search=dataclasses.replace(search, budget=int(budget)))


def make_optimizer(cfg: RunConfig):
    from evogm.search import OPTIMIZERS

    dim = len(cfg.models.experts) * cfg.models.groups
    return OPTIMIZERS[cfg.search.optimizer](dim, popsize=cfg.search.popsize, seed=cfg.seed, **cfg.search.options)


# --- one search ---------------------------------------------------------------------------------


def run_one(cfg: RunConfig, run_dir: RunDir, target: str, progress: Progress) -> None:
    """One full search for `target` (MULTI_TASK or a task name) in run_dir, then its final stage."""
    if run_dir.finished():
        return  # a single-task sub-run finished before a kill
    log = run_dir.runlog()
    if len(log.records()) < cfg.search.budget:  # else only the final stage was cut short: no replay needed
        run_search(cfg, run_dir, target, log, progress)
    final.finalize(cfg, run_dir, target, log.records(), progress)
    progress.finish()


def run_search(cfg: RunConfig, run_dir: RunDir, target: str, log: RunLog, progress: Progress) -> None:
    executor = make_executor(cfg.executor.kind, objective_factory(cfg, target),
                             **cfg.executor.options)
    experts = list(cfg.models.experts)
    try:
        search(make_optimizer(cfg), executor, log, cfg.search.budget, progress=progress,
               title="search" if target == MULTI_TASK else f"search {target}",
               on_generation=lambda: run_dir.write_best(experts, log.records()))
    finally:
        log.close()
        executor.close()


def search(optimizer, executor, log: RunLog, budget: int, *, progress: Progress | None = None,
           title: str = "search", on_generation=None) -> None:
    """Ask, map, tell, log until the budget is spent; logged rows are replayed, never re-evaluated."""
    logged = by_generation(log.records())
    done = gen = 0
    progress = progress or Progress()
    progress.start(title, budget, sum(len(rows) for rows in logged.values()))
    while done < budget:
        xs = np.asarray(optimizer.ask(), dtype=np.float64)[: budget - done]  # the budget cuts the last ask
        if len(xs) == 0:
            break
        results = evaluate_generation(executor, log, gen, xs, logged.pop(gen, {}), progress)
        stop_if_all_failed(gen, results)
        round_ = getattr(optimizer, "round", None)  # before tell: tell may start the next round
        optimizer.tell(xs, np.array([r.loss for r in results]))
        progress.generation(gen, results, round_)
        if on_generation is not None:
            on_generation()
        done, gen = done + len(xs), gen + 1
    if logged:
        raise EvogmError(f"{log.path} holds evaluations past the budget of {budget}",
                         "the log belongs to another config", "start over with --force")


def evaluate_generation(executor, log: RunLog, gen: int, xs: np.ndarray, logged: dict[int, dict],
                        progress: Progress) -> list[Result]:
    """The generation's Results in row order: logged rows replayed, the others evaluated and logged."""
    results = {row: replayed(rec, xs, gen, log) for row, rec in logged.items()}
    missing = [row for row in range(len(xs)) if row not in results]

    def on_result(j: int, result: Result) -> None:  # j indexes `missing`; logged the moment it exists
        log.append(record(gen, missing[j], result))
        progress.evaluated(result)

    if missing:
        results.update(zip(missing, executor.map(xs[missing], on_result)))
    return [results[row] for row in range(len(xs))]


def replayed(rec: dict, xs: np.ndarray, gen: int, log: RunLog) -> Result:
    """A logged evaluation, after checking the optimizer asked for the same row this time."""
    row = rec["row"]
    if row >= len(xs) or not np.allclose(rec["x"], xs[row], rtol=1e-7, atol=1e-9):
        raise EvogmError(f"{log.path}: generation {gen} row {row} differs from what the optimizer asks now",
                         "the config, the seed or the code changed since the run started",
                         "resume with the same evogm version, or start over with --force")
    return to_result(rec)


def by_generation(records: list[dict]) -> dict[int, dict[int, dict]]:
    """gen → row → record (the first record of a row wins: a row is evaluated once)."""
    out: dict[int, dict[int, dict]] = {}
    for rec in records:
        out.setdefault(rec["gen"], {}).setdefault(rec["row"], rec)
    return out


def stop_if_all_failed(gen: int, results: list[Result]) -> None:
    if results and not any(r.ok for r in results):
        raise EvogmError(f"every candidate of generation {gen} failed", results[0].error or "no finite loss",
                         "see the error column of evaluations.jsonl")
