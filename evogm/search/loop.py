"""The search loop: ask, map, tell, log, until the budget is spent.

A run killed at any point resumes by replay: the optimizer is rebuilt with the same seed and asked
again; every asked row already in the log is told its logged loss instead of being evaluated, so
the resumed run ends exactly where an uninterrupted one would have.

>>> import numpy as np, tempfile
>>> from evogm.executors import LocalExecutor
>>> from evogm.runlog import Result, RunLog
>>> from evogm.search import OPTIMIZERS
>>> square = lambda x: Result(tuple(x), float(np.sum(x ** 2)))
>>> log = RunLog(tempfile.mkdtemp() + "/evaluations.jsonl")
>>> search(OPTIMIZERS["random"](2, popsize=4, seed=0), LocalExecutor(lambda: square), log, budget=10)
>>> [r["gen"] for r in log.records()]
[0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
"""

from __future__ import annotations

import numpy as np

from evogm.adaptive import cutoff
from evogm.errors import EvogmError
from evogm.progress import Progress
from evogm.runlog import Result, RunLog, record, to_result


def search(optimizer, executor, log: RunLog, budget: int, *, progress: Progress | None = None,
           title: str = "search", on_generation=None, keep: int | None = None) -> None:
    """Ask, map, tell, log until the budget is spent; logged rows are replayed, never re-evaluated.
    `keep` (adaptive evaluation): each generation's candidates may stop early once they cannot beat
    the keep-th best full evaluation before it (`evogm.adaptive.cutoff`)."""
    logged = by_generation(log.records())
    history: list[dict] = []  # every record so far, replayed or new: the cut-off is computed from these
    done = gen = 0
    progress = progress or Progress()
    progress.start(title, budget, sum(len(rows) for rows in logged.values()))
    while done < budget:
        xs = np.asarray(optimizer.ask(), dtype=np.float64)[: budget - done]  # the budget cuts the last ask
        if len(xs) == 0:
            break
        threshold = cutoff(history, keep) if keep else None
        results = evaluate_generation(executor, log, gen, xs, logged.pop(gen, {}), progress, threshold)
        history += [record(gen, row, r) for row, r in enumerate(results)]
        stop_if_all_failed(gen, results)
        round_ = optimizer.round  # before tell: tell may start the next round
        optimizer.tell(xs, np.array([r.loss for r in results]))
        progress.generation(gen, results, round_)
        if on_generation is not None:
            on_generation()
        done, gen = done + len(xs), gen + 1
    if logged:
        raise EvogmError(f"{log.path} holds evaluations past the budget of {budget}",
                         "the log belongs to another config", "start over with --force")


def evaluate_generation(executor, log: RunLog, gen: int, xs: np.ndarray, logged: dict[int, dict],
                        progress: Progress, threshold: "Cutoff | None" = None) -> list[Result]:
    """The generation's Results in row order: logged rows replayed, the others evaluated and logged."""
    results = {row: replayed(rec, xs, gen, log) for row, rec in logged.items()}
    missing = [row for row in range(len(xs)) if row not in results]

    def on_result(j: int, result: Result) -> None:  # j indexes `missing`; logged the moment it exists
        log.append(record(gen, missing[j], result))
        progress.evaluated(result)

    if missing:
        results.update(zip(missing, executor.map(xs[missing], on_result, threshold=threshold)))
    return [results[row] for row in range(len(xs))]


def replayed(rec: dict, xs: np.ndarray, gen: int, log: RunLog) -> Result:
    """A logged evaluation, after checking the optimizer asked for the same row this time."""
    row = rec["row"]
    if row >= len(xs) or not np.allclose(rec["coefficients"], xs[row], rtol=1e-7, atol=1e-9):
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
