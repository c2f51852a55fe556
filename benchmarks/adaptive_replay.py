"""Replay adaptive evaluation's stopping rules on logs whose every candidate was scored in full.

    python -m benchmarks.adaptive_replay runs/replay/*/              # the settings grid, per log
    python -m benchmarks.adaptive_replay DIR --keep 10 --chunks 8 --bound paired

A log to replay comes from an adaptive run that never stops (`search.evaluation=adaptive
search.keep=1000000`: no cut-off ever exists): every evaluation then holds its per-item outcomes on the whole
dev split, in the order adaptive evaluation scores them. For each setting (kept-set size, looks,
confidence, bound) the replay walks the log in order as the search loop would: each generation's
cut-off is the keep-th best evaluation not stopped by the replay before it; each candidate is
compared look by look, with the same bound functions the product uses (`evogm.adaptive`), on the
items its outcomes say it would have seen. Prints, per setting: the saving in dev items (scored in
full / scored by the rule), the share of candidates stopped, and the stopping errors: stopped
candidates whose full fitness was above the cut-off they were stopped against.

What it does not replay: the search's own reaction to partial losses (an optimizer told estimates may
ask for other candidates). `benchmarks/adaptive_eval.py` measures the real runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evogm.adaptive import decode, stops
from evogm.config import load_config
from evogm.runlog import flip

GRID = [(keep, chunks, bound) for bound in ("hoeffding", "paired") for keep in (20, 10, 5, 3, 1) for chunks in (4, 8)]


def load(run_dir: Path) -> tuple[list[dict], list[float]]:
    """(the log's successful records, each with outcomes on every item; the tasks' weights)."""
    cfg = load_config(run_dir / "config.yaml")
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    records = [r for r in records if r.get("loss") is not None]
    if not records or any(r.get("partial") or not r.get("outcomes") for r in records):
        sys.exit(f"{run_dir}: every evaluation needs outcomes on its whole split; run adaptive with "
                 "search.keep=1000000")
    names = list(records[0]["outcomes"])
    weights = {t["name"]: float(t.get("weight", 1.0)) for t in cfg.tasks} if cfg.mode == "multi_task" else {n: 1.0 for n in names}
    return records, [weights[n] for n in names]


def replay(records: list[dict], weights: list[float], keep: int, chunks: int, confidence: float,
           bound: str) -> dict:
    """Items scored, stops and errors of one setting over one log."""
    names = list(records[0]["outcomes"])
    outcomes = [[decode(r["outcomes"][n]) for n in names] for r in records]
    totals = [len(o) for o in outcomes[0]]
    ends = [[int(sum(len(p) for p in np.array_split(np.arange(n), chunks)[: k + 1])) for n in totals]
            for k in range(chunks - 1)]
    delta = (1 - confidence) / (chunks - 1)
    kept, scored, stopped, errors = [], 0, 0, 0
    for gen in sorted({r["gen"] for r in records}):
        cut = sorted(kept, key=lambda i: records[i]["loss"])[keep - 1] if len(kept) >= keep else None
        for i in (j for j, r in enumerate(records) if r["gen"] == gen):
            look = first_stop(outcomes[i], outcomes[cut], records[cut], weights, ends, totals, delta, bound) \
                if cut is not None else None
            if look is None:
                kept.append(i)
                scored += sum(totals)
                continue
            stopped += 1
            scored += sum(ends[look])
            errors += flip(records[i]["loss"]) > flip(records[cut]["loss"])
    return {"saving": len(records) * sum(totals) / scored, "stopped": stopped / len(records), "errors": errors}


def first_stop(mine, theirs, cut_record, weights, ends, totals, delta, bound) -> int | None:
    """The look after which the rule stops this candidate (None: scored in full)."""
    cut = flip(cut_record["loss"])
    return next((look for look, end in enumerate(ends)
                 if stops(bound, weights, [m[:e] for m, e in zip(mine, end)], theirs, totals=totals, delta=delta,
                          cut_fitness=cut)), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--keep", type=int)
    parser.add_argument("--chunks", type=int)
    parser.add_argument("--bound", choices=("paired", "hoeffding"))
    args = parser.parse_args()
    grid = [(k, c, b) for k, c, b in GRID if args.keep in (None, k) and args.chunks in (None, c)
            and args.bound in (None, b)] or [(args.keep, args.chunks, args.bound)]
    logs = {d.name or str(d): load(d) for d in args.runs}
    print(f"confidence {args.confidence}; per log: saving (items in full / items scored), stopped share, errors")
    print("| bound | keep | chunks | " + " | ".join(logs) + " |")
    print("|---|---|---|" + "---|" * len(logs))
    for keep, chunks, bound in grid:
        cells = [replay(*logs[name], keep, chunks, args.confidence, bound) for name in logs]
        print(f"| {bound} | {keep} | {chunks} | " + " | ".join(
            f"{c['saving']:.2f}× ({c['stopped']:.0%}, {c['errors']} err)" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
