"""The search loop: ask, map, tell, log, until the budget is spent.

A run killed at any point resumes by replay: the optimizer is rebuilt with the same seed and asked
again; every asked row already in the log is told its logged loss instead of being evaluated, so
the resumed run ends exactly where an uninterrupted one would have.

With an executor of several workers and an optimizer that can be asked one row at a time
(`asynchronous`: EvoGM+, random search), the search is asynchronous (`search_async`): every worker
is kept busy, and a worker that frees up gets a new row at once, asked knowing the rows still being
evaluated, instead of waiting for its generation's slowest candidate. Its log is in completion
order, and a resume replays it in that order. The other optimizers are asked whole generations
(their populations are updated a generation at a time), whatever the executor.

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

from evogm.adaptive import Cutoff, cutoff
from evogm.errors import EvogmError
from evogm.progress import Progress
from evogm.runlog import Result, RunLog, record, to_result
from evogm.search.base import POPSIZE


def search(optimizer, executor, log: RunLog, budget: int, *, progress: Progress | None = None,
           title: str = "search", on_generation=None, keep: int | None = None, generation: int = POPSIZE,
           asynchronous_ok: bool = True) -> None:
    """Ask, map, tell, log until the budget is spent; logged rows are replayed, never re-evaluated.
    `keep` (adaptive evaluation): each generation's candidates may stop early once they cannot beat
    the keep-th best full evaluation before it (`evogm.adaptive.cutoff`). Asynchronous where it can
    be (`asynchronous`) and `asynchronous_ok`; `generation` then numbers its records (gen, row) in
    blocks of that many asks."""
    records = log.records()
    if asynchronous(optimizer, executor, records, asynchronous_ok):
        return search_async(optimizer, executor, log, budget, progress=progress, title=title,
                            on_generation=on_generation, keep=keep, generation=generation)
    logged = by_generation(records)
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


def asynchronous(optimizer, executor, records: list[dict], wanted: bool = True) -> bool:
    """Whether a search runs asynchronously: its log says so once it holds records (a run goes on as
    it started, on whatever executor it resumes), else whether it is `wanted` (search.asynchronous)
    with an executor of several workers and an optimizer that can be asked one row at a time."""
    if records:
        return "done" in records[0]
    return wanted and getattr(executor, "workers", 1) > 1 and getattr(optimizer, "asynchronous", False)


def search_async(optimizer, executor, log: RunLog, budget: int, *, progress: Progress | None = None,
                 title: str = "search", on_generation=None, keep: int | None = None, generation: int = POPSIZE) -> None:
    """Keep every worker busy: ask one row whenever a worker frees up, aware of the rows in flight.

    Each record holds its ask's number (`asked`; `gen`, `row` = divmod(asked, generation)), its place
    in completion order (`done`), the rows in flight when it finished (`inflight`) and once the asks
    its result led to were made (`refill`): replaying the log in completion order, asking until
    `inflight` rows are pending before each tell and until `refill` after it, repeats the optimizer's
    asks and tells exactly, wherever the run stopped. Adaptive evaluation's cut-off is taken from the
    results known when a row is asked."""
    records = sorted(log.records(), key=lambda rec: rec["done"])
    progress = progress or Progress()
    progress.start(title, budget, len(records))
    pending: dict[int, np.ndarray] = {}  # ask number → row, in ask order
    cutoffs: dict[int, object] = {}  # ask number → the cut-off it is scored against
    history: list[dict] = []

    def asked() -> int:
        return len(pending) + len(history)

    def ask() -> int:
        rows = np.array(list(pending.values())) if pending else np.empty((0, 0))
        number, x = asked(), np.asarray(optimizer.ask_one(rows), dtype=np.float64)
        pending[number], cutoffs[number] = x, cutoff(history, keep) if keep else None
        return number

    def fill(count: int, submit: bool = False) -> None:
        while len(pending) < count and asked() < budget:
            number = ask()
            if submit:
                executor.submit(number, pending[number], cutoffs[number])

    def tell(number: int, result: Result, rec: dict) -> None:
        history.append(rec)
        optimizer.tell_one(pending.pop(number), result.loss)
        cutoffs.pop(number)
        if len(history) >= generation:  # a generation's worth of failures in a row stops the search
            stop_if_all_failed(history[-generation]["gen"], [to_result(r) for r in history[-generation:]])

    for rec in records:  # replay
        fill(rec["inflight"])
        number = rec["asked"]
        if number not in pending or not np.allclose(rec["coefficients"], pending[number], rtol=1e-7, atol=1e-9):
            raise EvogmError(f"{log.path}: evaluation {number} (finished {rec['done'] + 1}th) differs from what the "
                             "optimizer asks now", "the config, the seed or the code changed since the run started",
                             "resume with the same evogm version, or start over with --force")
        tell(number, to_result(rec), rec)
        fill(rec["refill"])
    for number, x in pending.items():  # in flight when the run stopped: evaluated again
        executor.submit(number, x, cutoffs[number])
    fill(executor.workers, submit=True)
    while pending:
        number, result = executor.next()
        refill = min(executor.workers, len(pending) - 1 + budget - asked())
        rec = {**record(*divmod(number, generation), result), "asked": number, "done": len(history),
               "inflight": len(pending), "refill": refill}
        log.append(rec)
        progress.evaluated(result)
        tell(number, result, rec)
        fill(refill, submit=True)
        if on_generation is not None and len(history) % generation == 0:
            on_generation()
    if on_generation is not None:
        on_generation()


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
