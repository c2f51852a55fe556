"""Results and their log: append-only JSONL, one record per evaluation, flushed and fsynced as it happens.

A killed run loses at most the evaluation in flight: reading back drops a truncated last line (and
cuts it from the file so that the next append starts on a clean line). Resume replays the records;
reports read them back. Other run-directory files are written atomically (`write_atomic`).

>>> log = RunLog("/tmp/evogm-doctest.jsonl", fresh=True)
>>> log.append(record(0, 1, Result(coefficients=(0.5,), loss=-0.7, metrics={"add/accuracy": 0.7})))
>>> [r["loss"] for r in log.records()], to_result(log.records()[0]).fitness, is_full(log.records()[0])
([-0.7], 0.7, True)
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evogm.errors import EvogmError


def flip(value: float) -> float:
    """Loss ↔ fitness, the one sign flip: the log stores losses (lower is better, what optimizers
    minimize); scores and reports read fitness (higher is better, the tasks' weighted score).

    >>> flip(-0.7), flip(flip(0.25))
    (0.7, 0.25)
    """
    return -value


@dataclass(frozen=True)
class Result:
    """One evaluation of one candidate.

    >>> r = Result(coefficients=(0.5, 0.5), loss=-0.7, metrics={"add/accuracy": 0.7}, seconds=0.4)
    >>> r.ok, r.fitness
    (True, 0.7)
    """

    coefficients: tuple[float, ...]  # λ as the optimizer asked and the merger merged (experts × groups, flat)
    loss: float  # −(weighted mean of task scores); inf if it failed
    metrics: dict[str, float] = field(default_factory=dict)  # "task/metric" → value, higher is better
    seconds: float = 0.0
    error: str | None = None
    items: dict[str, int] = field(default_factory=dict)  # task → dev items scored (adaptive evaluation)
    partial: bool = False  # stopped before every dev item was scored: an estimate, never the run's best
    outcomes: dict[str, str] = field(default_factory=dict)  # task → per-item 0/1 outcomes (adaptive evaluation)

    @classmethod
    def failed(cls, coefficients, error: str, seconds: float = 0.0) -> "Result":
        """A candidate that could not be evaluated (its worker timed out or died): data, not an error."""
        return cls(tuple(float(v) for v in np.asarray(coefficients, dtype=np.float64).ravel()), math.inf,
                   seconds=seconds, error=error)

    @property
    def ok(self) -> bool:
        return self.error is None and math.isfinite(self.loss)

    @property
    def fitness(self) -> float:
        return flip(self.loss)


class RunLog:
    """evaluations.jsonl of one run: `append(record)` is durable when it returns."""

    def __init__(self, path: str | os.PathLike, *, fresh: bool = False):
        self.path = Path(path)
        if fresh and self.path.exists():
            self.path.unlink()
        self._fd: int | None = None

    def records(self) -> list[dict]:
        """Every evaluation once, in the search's order (generation, then row): a record logged twice
        counts once (the first), and one evaluated again after a resume sits where the search asked
        it, whatever its place in the file. A partial last line (a kill mid-write) is dropped."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            self._truncate(len(complete))
        parsed = [(i, self._parse(line, i)) for i, line in enumerate(complete.splitlines(), 1) if line.strip()]
        once: dict[tuple[int, int], dict] = {}
        for i, rec in parsed:
            once.setdefault(self._place(rec, i), rec)
        return [once[key] for key in sorted(once)]

    def append(self, rec: dict) -> None:
        """Write one record whole, or not at all (a failed write, e.g. a full disk, is cut back)."""
        line = (json.dumps(rec, allow_nan=False) + "\n").encode()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):
                written += os.write(self._fd, line[written:])
            os.fsync(self._fd)
        except OSError as exc:
            os.ftruncate(self._fd, start)
            raise EvogmError(f"could not append to {self.path}", exc.strerror or str(exc),
                             "free space on that disk (or fix it), then resume: evogm run --resume RUN_DIR") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _truncate(self, size: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def _place(self, rec, number: int) -> tuple[int, int]:
        """(generation, row) of a record: where the search asked it."""
        if not isinstance(rec, dict) or not all(isinstance(rec.get(k), int) for k in ("gen", "row")):
            raise EvogmError(f"{self.path} line {number} is not an evaluation record", "it has no generation and row",
                             "the log was edited or corrupted; restore it or start over with --force")
        return rec["gen"], rec["row"]

    def _parse(self, line: bytes, number: int) -> dict:
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvogmError(f"{self.path} line {number} is not a JSON record", str(exc),
                             "the log was edited or corrupted; restore it or start over with --force") from None


def record(gen: int, row: int, result: Result) -> dict:
    """The log record of one evaluation: where it was asked (generation, row) and its Result."""
    return {
        "gen": gen,
        "row": row,
        "coefficients": [float(v) for v in result.coefficients],
        "metrics": stored_metrics(result.metrics),
        "loss": stored_value(result.loss),  # null: failed (inf); JSON has no infinity
        "seconds": round(float(result.seconds), 6),
        "error": result.error,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **({"items": dict(result.items)} if result.items else {}),
        **({"partial": True} if result.partial else {}),
        **({"outcomes": dict(result.outcomes)} if result.outcomes else {}),
    }


def to_result(rec: dict) -> Result:
    loss = rec["loss"]
    return Result(
        coefficients=tuple(rec["coefficients"]),
        loss=math.inf if loss is None else float(loss),
        metrics={k: (math.nan if v is None else v) for k, v in rec["metrics"].items()},
        seconds=rec.get("seconds", 0.0),
        error=rec.get("error"),
        items=rec.get("items", {}),
        partial=bool(rec.get("partial", False)),
        outcomes=rec.get("outcomes", {}),
    )


def is_full(rec: dict) -> bool:
    """Whether a log record is a full, successful evaluation: a finite loss, no error, every dev item
    scored (a partial one, stopped by adaptive evaluation, is an estimate: never a best, never data
    for a cut-off or a curve).

    >>> [is_full(r) for r in ({"loss": -0.5}, {"loss": None}, {"loss": -0.9, "partial": True})]
    [True, False, False]
    """
    return rec.get("loss") is not None and not rec.get("error") and not rec.get("partial")


def best_so_far(records: list[dict]) -> list[float | None]:
    """The best full dev fitness after each evaluation (None until one succeeds).

    >>> best_so_far([{"loss": None}, {"loss": -0.3}, {"loss": -0.9, "partial": True}, {"loss": -0.5}])
    [None, 0.3, 0.3, 0.5]
    """
    curve, best = [], None
    for rec in records:
        if is_full(rec):
            best = flip(rec["loss"]) if best is None else max(best, flip(rec["loss"]))
        curve.append(best)
    return curve


def stored_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics as the run's files store them (the log, best.json, final.json): a value that is not
    finite is null, JSON having no NaN or infinity (`to_result` reads null back as NaN).

    >>> stored_metrics({"judge/score": 0.5, "judge/aux": float("inf")})
    {'judge/score': 0.5, 'judge/aux': None}
    """
    return {key: stored_value(value) for key, value in metrics.items()}


def stored_value(value: float) -> float | None:
    """A number as the run's files store it: null when it is not finite (JSON has no NaN or infinity)."""
    value = float(value)
    return value if math.isfinite(value) else None


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a whole file so that readers (and a kill) see the old or the new content, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EvogmError(f"could not write {path}", exc.strerror or str(exc),
                         "free space on that disk (or fix its permissions), then run the command again "
                         "(a run goes on where it stopped with evogm run --resume RUN_DIR)") from None


def write_json(path: str | os.PathLike, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())
