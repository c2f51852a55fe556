"""The final stage of a search: the test split, once; the static baselines; the export; final.json.

Dev picks, test reports: the best candidate of the search and the initial best (the best of the
first population) keep their logged dev scores and are scored on test once; the static baselines
(`baselines`) pick on dev, then each is scored on test once. The scorings that do not wait for each
other go together (on a local executor's worker processes, side by side: the search's own, whose
resident models are loaded already): the searched candidates' test and the baselines' dev sweeps,
then the baselines' test. Then the best merge is exported (on one of those workers too) and
final.json and the report are written.

>>> run_dir = RunDir("runs/zoo")                                                 # doctest: +SKIP
>>> finalize(cfg, run_dir, MULTI_TASK, run_dir.records(), Progress())           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path

import numpy as np

from evogm import baselines, report
from evogm.config import RunConfig, from_dict, search_space, to_dict
from evogm.errors import EvogmError, EvogmWarning
from evogm.rundir import RunDir, best_entry
from evogm.runlog import read_json
from evogm.scoring import Request, Scoring, failure, merge_request
from evogm.worker import WorkerDied, WorkerPool, WorkerTimeout
from evogm.workspace import Workspace, on_workspace, workspace, workspace_of


def finalize(cfg: RunConfig, run_dir: RunDir, target: str, records: list[dict], progress,
             pool: WorkerPool | None = None) -> None:
    """The final stage of a finished search; `pool`: the search's worker processes, if it had any."""
    experts = list(cfg.models.experts)
    best = run_dir.write_best(experts, records)
    initial = best_entry([r for r in records if r["gen"] == 0], experts)
    methods = list(cfg.baselines.methods)
    with final_workers(cfg, pool) as run:
        scoring = Scoring(run.tasks, target, run.scored, timeout=cfg.search.timeout, plain=search_space(cfg).plain)
        scoring.remember(records)
        progress.stage(f"test: best and initial best; dev: {len(methods)} baselines")
        scoring.ahead([on_test(best), on_test(initial)]
                      + [request for method in methods for request in baselines.dev_sweep(method, cfg)[1]])
        progress.stage(f"test: {len(methods)} baselines")
        scoring.ahead([baselines.pick_on_test(method, cfg, scoring) for method in methods])
        candidates = {"best": searched(best, scoring), "initial_best": searched(initial, scoring),
                      **{method: baselines.evaluate(method, cfg, scoring) for method in methods}}
        progress.stage("export")
        [exported] = run([(export_job, (to_dict(cfg), best["coefficients"], str(run_dir.model)), None)])
    if isinstance(exported, WorkerDied):
        raise EvogmError(f"cannot export the best merge to {run_dir.model}", str(exported),
                         f"`evogm run --resume {cfg.output}` exports it (the search is kept)")
    space = search_space(cfg)
    run_dir.write_final({
        "target": target, "tasks": scoring.primary, "experts": list(cfg.models.experts),
        "groups": cfg.models.groups, "evaluations": len(records), "dev_items": scoring.dev_items(),
        "candidates": candidates, **({} if space.plain else {"space": space.describe()})})
    report.write_report(run_dir.path)
    failures = report.final_failures(candidates)
    if failures:
        warnings.warn(f"the final stage could not score {len(failures)} candidate(s) ({failures[0]}); "
                      f"{run_dir.report} lists them", EvogmWarning, stacklevel=2)


class WorkspaceJobs:
    """Runs jobs `(fn, args, limit)` as `fn(workspace, *args)` and answers in order: in this process on
    its workspace, or on worker processes side by side (`pool`), a worker stopped and replaced when a
    job runs past its limit (its answer: WorkerTimeout) or dies (WorkerDied). `tasks`: the run's tasks."""

    def __init__(self, cfg: RunConfig, pool: WorkerPool | None):
        from evogm.tasks import load_tasks

        self.cfg_data, self.pool = to_dict(cfg), pool
        self.here = workspace(cfg) if pool is None else None
        self.tasks = load_tasks(list(cfg.tasks)) if pool is not None else self.here.tasks.values()

    def __call__(self, jobs: list) -> list:
        if self.pool is None:
            return [fn(self.here, *args) for fn, args, _ in jobs]
        for number, (fn, args, limit) in enumerate(jobs):
            self.pool.submit(number, on_workspace, self.cfg_data, fn, *args, limit=limit)
        answers = dict(self.pool.next() for _ in jobs)
        return [answers[number] for number in range(len(jobs))]

    def scored(self, jobs: list) -> list:
        """Scoring jobs' answers, a stopped or dead worker's a failure (which the report lists)."""
        return [failure(f"{type(a).__name__}: {a}") if isinstance(a, (WorkerTimeout, WorkerDied)) else a
                for a in self(jobs)]


@contextlib.contextmanager
def final_workers(cfg: RunConfig, pool: WorkerPool | None = None):
    """Where the final stage runs its jobs: on the search's worker processes (`pool`), else, with a
    local executor's several workers or `search.timeout`, on as many fresh ones (closed after), else
    in this process."""
    if pool is not None or (cfg.search.timeout is None and local_workers(cfg) == 1):
        yield WorkspaceJobs(cfg, pool)
        return
    own = WorkerPool(functools.partial(workspace_of, to_dict(cfg)), local_workers(cfg))
    try:
        yield WorkspaceJobs(cfg, own)
    finally:
        own.close()


def local_workers(cfg: RunConfig) -> int:
    """The worker processes of a local executor (`executor.workers`), which the final stage scores on
    too; 1 on any other executor (the final stage runs on this machine)."""
    return cfg.executor.options.get("workers", 1) if cfg.executor.kind == "local" else 1


def export_again(cfg: RunConfig, run_dir: RunDir, progress) -> None:
    """A finished run's model folder, exported again from its best.json (nothing is scored again)."""
    progress.stage("export")
    export(cfg, workspace(cfg), read_json(run_dir.best)["coefficients"], run_dir.model)


def searched(entry: dict, scoring: Scoring) -> dict:
    """A searched candidate: its logged dev score, and its test score."""
    return {"evaluation": entry["evaluation"], "coefficients": entry["coefficients"],
            "dev": {"score": entry["fitness"], "metrics": entry["metrics"]},
            "test": scoring.score(on_test(entry))}


def on_test(entry: dict) -> Request:
    """A searched candidate (a best.json-shaped entry) scored on test."""
    return merge_request(entry["coefficients"], "test", candidate=True)


def export_job(ws: Workspace, cfg_data: dict, coefficients, out_dir: str) -> None:
    """`export` as a job of the final stage's workers."""
    export(from_dict(cfg_data), ws, coefficients, Path(out_dir))


def export(cfg: RunConfig, ws: Workspace, coefficients, out_dir: Path) -> None:
    """Export the best merge; one that cannot be written (a full disk) is one line saying that a resume
    exports it again: the log and best.json are kept, and final.json is written only after the export."""
    from evogm.export import ExportFailed, export_merged

    try:
        export_merged(ws.merger, ws.models.tokenizer, np.asarray(coefficients), out_dir,
                      base=cfg.models.base, experts=dict(cfg.models.experts), groups=cfg.models.groups)
    except ExportFailed as exc:
        raise EvogmError(f"cannot write {exc.out}", exc.why, f"free disk space, then `evogm run --resume {cfg.output}` "
                         "exports it (the search is kept: evaluations.jsonl and best.json)") from None


def write_summary(cfg: RunConfig, run_dir: RunDir) -> None:
    """Single-task mode: summary.json and the summary report across the per-task searches."""
    finals = {name: run_dir.sub(name).read_final() for name in cfg.task_names}
    run_dir.write_summary({name: {k: {s: f["candidates"][k][s]["score"] for s in ("dev", "test")}
                                  for k in f["candidates"]} for name, f in finals.items()})
    report.write_summary_report(run_dir.path, finals)
