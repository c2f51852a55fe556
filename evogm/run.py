"""The run: a config becomes a search, its log, a final test evaluation, an exported model and a report.

The config's defaults are made explicit (`config.resolve`) and saved in the run directory
(`rundir`); the search is the ask-map-tell loop (`search.loop`), resumed by replay after a kill;
the final stage (`final`) scores test once, the static baselines, exports and reports.

>>> from evogm.config import load_config
>>> report = run(load_config("configs/zoo.yaml", ["output=runs/zoo"]))   # doctest: +SKIP
>>> report = run(read_config(RunDir("runs/zoo")), run_dir="runs/zoo", resume=True)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from evogm import final, inputs
from evogm.config import RunConfig, build_optimizer, resolve
from evogm.executors import make_executor
from evogm.progress import Progress
from evogm.rundir import RunDir
from evogm.runlog import RunLog
from evogm.scoring import MULTI_TASK
from evogm.search.base import POPSIZE
from evogm.search.loop import search
from evogm.workspace import objective_factory


def run(cfg: RunConfig, *, run_dir=None, resume: bool = False, force: bool = False,
        progress: Progress | None = None) -> Path:
    """Search, evaluate once on test, export, report. Returns the path of report.md.

    The run directory is locked while this runs; a fresh run that fails before its first evaluation
    (a bad expert path, say) removes what it wrote, so that the corrected run starts without --force."""
    run_dir = RunDir(Path(run_dir or cfg.output).resolve())
    progress = progress or Progress()
    cfg = resolve(cfg, run_dir.path)
    with run_dir.lock():
        inputs.start(run_dir, cfg, resume=resume, force=force)
        try:
            run_all(cfg, run_dir, progress)
        except BaseException:
            if not resume and not run_dir.started(cfg.task_names):
                run_dir.clear(cfg.task_names)
            raise
    return run_dir.report


def run_all(cfg: RunConfig, run_dir: RunDir, progress: Progress) -> None:
    """The one search of multi-task mode, or one per task (and the summary) in single-task mode."""
    if cfg.mode == MULTI_TASK:
        run_one(cfg, run_dir, MULTI_TASK, progress)
    else:
        for name in cfg.task_names:
            run_one(cfg, run_dir.sub(name), name, progress)
        final.write_summary(cfg, run_dir)


# --- one search ---------------------------------------------------------------------------------


def run_one(cfg: RunConfig, run_dir: RunDir, target: str, progress: Progress) -> None:
    """One full search for `target` (MULTI_TASK or a task name) in run_dir, then its final stage."""
    if run_dir.finished():  # a single-task sub-run finished before a kill, or a run resumed once done
        if not run_dir.exported():
            final.export_again(cfg, run_dir, progress)  # its model/ was removed: made again, nothing re-scored
        return
    log = run_dir.runlog()
    if len(log.records()) >= cfg.search.budget:  # only the final stage was cut short: no replay needed
        final.finalize(cfg, run_dir, target, log.records(), progress)
    else:
        executor = make_executor(cfg.executor.kind, objective_factory(cfg, target), timeout=cfg.search.timeout,
                                 **cfg.executor.options)
        try:
            run_search(cfg, run_dir, target, log, executor, progress)
            # on the search's worker processes, if it had any: their models are loaded
            final.finalize(cfg, run_dir, target, log.records(), progress, pool=getattr(executor, "pool", None))
        finally:
            executor.close()
    progress.finish()


def run_search(cfg: RunConfig, run_dir: RunDir, target: str, log: RunLog, executor, progress: Progress) -> None:
    experts = list(cfg.models.experts)
    try:
        search(build_optimizer(cfg), executor, log, cfg.search.budget, progress=progress,
               title="search" if target == MULTI_TASK else f"search {target}",
               on_generation=lambda: run_dir.write_best(experts, log.records()),
               keep=(cfg.search.keep or cfg.search.popsize) if cfg.search.evaluation == "adaptive" else None,
               generation=cfg.search.popsize or POPSIZE, asynchronous_ok=cfg.search.asynchronous)
    finally:
        log.close()
