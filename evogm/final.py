"""The final stage of a search: the test split, once; the static baselines; the export; final.json.

Dev picks, test reports: the best candidate of the search and the initial best (the best of the
first population) keep their logged dev scores and are scored on test once; the static baselines
(`baselines`) pick on dev, then each is scored on test once. The scorings that do not wait for each
other go together (on a local executor's worker processes, side by side): the searched candidates'
test and the baselines' dev sweeps, then the baselines' test. Then the best merge is exported and
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
from evogm.config import RunConfig, search_space, to_dict
from evogm.errors import EvogmWarning
from evogm.rundir import RunDir, best_entry
from evogm.runlog import read_json
from evogm.scoring import Request, Scoring, failure, merge_request
from evogm.worker import WorkerDied, WorkerPool, WorkerTimeout
from evogm.workspace import Workspace, workspace, workspace_of


def finalize(cfg: RunConfig, run_dir: RunDir, target: str, records: list[dict], progress) -> None:
    experts = list(cfg.models.experts)
    best = run_dir.write_best(experts, records)
    initial = best_entry([r for r in records if r["gen"] == 0], experts)
    methods = list(cfg.baselines.methods)
    with final_scoring(cfg, target) as scoring:
        scoring.remember(records)
        progress.stage(f"test: best and initial best; dev: {len(methods)} baselines")
        scoring.ahead([on_test(best), on_test(initial)]
                      + [request for method in methods for request in baselines.dev_sweep(method, cfg)[1]])
        progress.stage(f"test: {len(methods)} baselines")
        scoring.ahead([baselines.pick_on_test(method, cfg, scoring) for method in methods])
        candidates = {"best": searched(best, scoring), "initial_best": searched(initial, scoring),
                      **{method: baselines.evaluate(method, cfg, scoring) for method in methods}}
    progress.stage("export")
    export(cfg, workspace(cfg), best["coefficients"], run_dir.model)
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


@contextlib.contextmanager
def final_scoring(cfg: RunConfig, target: str):
    """The final stage's Scoring: on this process's workspace, or, with a local executor's several
    workers or `search.timeout`, in as many worker processes, side by side, a worker stopped and
    replaced when a candidate runs past its limit (which is then a failure the report lists, and the
    stage goes on)."""
    plain, workers = search_space(cfg).plain, local_workers(cfg)
    if cfg.search.timeout is None and workers == 1:
        ws = workspace(cfg)
        yield Scoring(ws.tasks.values(), target, lambda jobs: [fn(ws, *args) for fn, args, _ in jobs], plain=plain)
        return
    from evogm.tasks import load_tasks

    pool = WorkerPool(functools.partial(workspace_of, to_dict(cfg)), workers)

    def run(jobs):
        for number, (fn, args, limit) in enumerate(jobs):
            pool.submit(number, fn, *args, limit=limit)
        answers = dict(pool.next() for _ in jobs)
        return [failure(f"{type(a).__name__}: {a}") if isinstance(a, (WorkerTimeout, WorkerDied)) else a
                for a in (answers[number] for number in range(len(jobs)))]

    try:
        yield Scoring(load_tasks(list(cfg.tasks)), target, run, timeout=cfg.search.timeout, plain=plain)
    finally:
        pool.close()


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


def export(cfg: RunConfig, ws: Workspace, coefficients, out_dir: Path) -> None:
    """Export the best merge; one that cannot be written (a full disk) is one line saying that a resume
    exports it again: the log and best.json are kept, and final.json is written only after the export."""
    from evogm.errors import EvogmError
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
