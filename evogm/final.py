"""The final stage of a search: the test split, once; the static baselines; the export; final.json.

Dev picks, test reports: the best candidate of the search and the initial best (the best of the
first population) keep their logged dev scores and are scored on test once; the static baselines
(`baselines`) pick on dev, then each is scored on test once. Then the best merge is exported and
final.json and the report are written.

>>> run_dir = RunDir("runs/zoo")                                                 # doctest: +SKIP
>>> finalize(cfg, run_dir, MULTI_TASK, run_dir.records(), Progress())           # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from evogm import baselines, report
from evogm.config import RunConfig
from evogm.errors import EvogmError
from evogm.lora import EvogmWarning
from evogm.rundir import RunDir, best_entry
from evogm.scoring import fitness, score, scored_tasks
from evogm.workspace import Workspace, workspace


def finalize(cfg: RunConfig, run_dir: RunDir, target: str, records: list[dict], progress) -> None:
    ws = workspace(cfg)
    scoring = Scoring(ws, target)
    experts = list(cfg.models.experts)
    best = run_dir.write_best(experts, records)
    progress.stage("test: best and initial best")
    candidates = {"best": searched(best, scoring),
                  "initial_best": searched(best_entry([r for r in records if r["gen"] == 0], experts), scoring)}
    for method in cfg.baselines.methods:
        progress.stage(f"baseline: {method}")
        candidates[method] = baselines.evaluate(method, cfg, ws, scoring)
    progress.stage("export")
    export(cfg, ws, best["coefficients"], run_dir.model)
    run_dir.write_final({
        "target": target, "tasks": scoring.primary, "experts": list(cfg.models.experts),
        "groups": cfg.models.groups, "evaluations": len(records), "dev_items": scoring.dev_items(),
        "candidates": candidates})
    report.write_report(run_dir.path)
    failures = report.final_failures(candidates)
    if failures:
        warnings.warn(f"the final stage could not score {len(failures)} candidate(s) ({failures[0]}); "
                      f"{run_dir.report} lists them", EvogmWarning, stacklevel=2)


def searched(entry: dict, scoring: "Scoring") -> dict:
    """A searched candidate: its logged dev score, and its test score."""
    return {"evaluation": entry["evaluation"], "coefficients": entry["coefficients"],
            "dev": {"score": entry["fitness"], "metrics": entry["metrics"]},
            "test": scoring.merged(entry["coefficients"], "test")}


def export(cfg: RunConfig, ws: Workspace, coefficients, out_dir: Path) -> None:
    from evogm.export import export_merged

    export_merged(ws.merger, ws.models.tokenizer, np.asarray(coefficients), out_dir,
                  base=cfg.models.base, experts=dict(cfg.models.experts), groups=cfg.models.groups)


def write_summary(cfg: RunConfig, run_dir: RunDir) -> None:
    """Single-task mode: summary.json and the summary report across the per-task searches."""
    finals = {name: run_dir.sub(name).read_final() for name in cfg.task_names}
    run_dir.write_summary({name: {k: {s: f["candidates"][k][s]["score"] for s in ("dev", "test")}
                                  for k in f["candidates"]} for name, f in finals.items()})
    report.write_summary_report(run_dir.path, finals)


class Scoring:
    """Scores the resident model as it stands (after a merge or a static merge) on dev or test."""

    def __init__(self, ws: Workspace, target: str):
        self.tasks, self.target = scored_tasks(ws.tasks.values(), target), target
        self.model, self.tokenizer = ws.merger.model, ws.models.tokenizer
        self.primary = {t.name: f"{t.name}/{t.primary}" for t in self.tasks}
        self._merger, self._memo = ws.merger, {}

    def dev_items(self) -> dict[str, int]:
        """Items each scored task has on dev (tasks from a data file; a Python fitness has none)."""
        return {t.name: len(t.data.items("dev")) for t in self.tasks if hasattr(t, "data")}

    def merged(self, coefficients, split: str) -> dict:
        """The score of a task-arithmetic merge; a merge scored before (the best may be the initial
        best, the uniform vector is in the first population) is not scored again."""
        key = (tuple(float(c) for c in coefficients), split)
        if key not in self._memo:
            self._merger(np.asarray(coefficients, dtype=np.float64))
            self._memo[key] = self.resident(split)
        return self._memo[key]

    def resident(self, split: str) -> dict:
        """{"score": the search's fitness (weighted mean), "metrics": {"task/metric": value}}; a failure
        (a user fitness that raises, say) is {"score": None, "metrics": {}, "error": its text}, so that
        the final stage goes on and the report says what could not be scored."""
        try:
            metrics = score(self.model, self.tokenizer, self.tasks, split)
            return {"score": fitness(metrics, self.tasks, self.target), "metrics": metrics}
        except EvogmError:
            raise
        except Exception as exc:  # noqa: BLE001 — one candidate's failure must not lose the others' scores
            return {"score": None, "metrics": {}, "error": f"{type(exc).__name__}: {exc}"}
