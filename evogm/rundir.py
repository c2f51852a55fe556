"""The run directory, in one place: its file names, its records, its best evaluation, its final files.

The runner, the final stage, the report and the comparison all go through `RunDir`, so a file
name is spelled once. A single-task run holds one sub-run directory per task (`sub(name)`). What a
run was started with, and whether it may go on, is `evogm.inputs`'s.

>>> import tempfile
>>> d = RunDir(tempfile.mkdtemp())
>>> d.log.name, d.final.name, d.finished()
('evaluations.jsonl', 'final.json', False)
>>> d.sub("add").path.name
'add'
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from evogm.errors import EvogmError
from evogm.runlog import RunLog, flip, is_full, read_json, write_json

CONFIG, LOG, BEST, FINAL = "config.yaml", "evaluations.jsonl", "best.json", "final.json"
REPORT, MODEL, PLOTS, SUMMARY, INPUTS = "report.md", "model", "plots", "summary.json", "inputs.json"
OUTPUTS = (CONFIG, LOG, BEST, FINAL, REPORT, MODEL, PLOTS, SUMMARY, INPUTS)  # what a run writes (and --force removes)
LOCK = ".lock"  # the pid of the process holding the run directory (the lock itself is on the folder)


class RunDir:
    """One run directory (or a single-task sub-run): paths, reading back, writing best and final."""

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config = property(lambda self: self.path / CONFIG)
    log = property(lambda self: self.path / LOG)
    best = property(lambda self: self.path / BEST)
    final = property(lambda self: self.path / FINAL)
    report = property(lambda self: self.path / REPORT)
    model = property(lambda self: self.path / MODEL)
    plots = property(lambda self: self.path / PLOTS)
    summary = property(lambda self: self.path / SUMMARY)
    inputs = property(lambda self: self.path / INPUTS)

    def sub(self, name: str) -> "RunDir":
        """A single-task mode's sub-run for task `name`."""
        return RunDir(self.path / name)

    def finished(self) -> bool:
        """Its final stage ran (report.md is written last)."""
        return self.report.is_file()

    def exported(self) -> bool:
        """Its best merge is exported (a single-task run's top folder holds the summary instead)."""
        return self.summary.is_file() or (self.model / "recipe.yaml").is_file()

    def runlog(self) -> RunLog:
        return RunLog(self.log)

    def records(self) -> list[dict]:
        return self.runlog().records()

    def saved_config(self) -> dict:
        """config.yaml as plain data; a single-task sub-run reads its parent's."""
        path = self.config if self.config.exists() else self.path.parent / CONFIG
        return yaml.safe_load(path.read_text())

    def read_final(self) -> dict:
        return read_json(self.final)

    def write_best(self, experts: list[str], records: list[dict] | None = None) -> dict:
        """best.json from the log (or the given records); returns what it wrote."""
        best = best_entry(self.records() if records is None else records, experts)
        write_json(self.best, best)
        return best

    def write_final(self, final: dict) -> None:
        write_json(self.final, final)

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary, summary)

    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory for this process: another run or resume on it is refused meanwhile.
        The lock is on the folder itself (flock), so no file a user deletes can free it; the kernel
        frees it when the process ends, however it ends. `.lock` only names the holder's pid."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = (self.path / LOCK).read_text().strip() if (self.path / LOCK).is_file() else ""
                raise EvogmError(f"{self.path} is in use by another evogm process (pid {holder or '?'})",
                                 "two processes in one run directory would mix their evaluations in one log",
                                 f"wait for it to end (or stop it), then `evogm run --resume {self.path}`") from None
            with contextlib.suppress(OSError):  # the pid only names the holder in that message
                (self.path / LOCK).write_text(str(os.getpid()))
            try:
                yield self
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def started(self, task_names: list[str]) -> bool:
        """Whether some evaluation was logged (here, or in a single-task sub-run)."""
        logs = [self.log, *(self.sub(name).log for name in task_names)]
        return any(log.is_file() and log.stat().st_size > 0 for log in logs)

    def clear(self, task_names: list[str]) -> None:
        """Remove what a run writes (and only that), including single-task sub-directories."""
        for name in (*OUTPUTS, *task_names):
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def best_entry(records: list[dict], experts: list[str]) -> dict:
    """The best full logged evaluation (first of equals), with its place in the log and λ per expert;
    a partial evaluation (adaptive evaluation stopped it) is never the best."""
    ok = [(i, r) for i, r in enumerate(records) if is_full(r)]
    if not ok:
        raise EvogmError("no evaluation succeeded", records[0].get("error") if records else "the log is empty",
                         "see the error column of evaluations.jsonl")
    i, rec = min(ok, key=lambda item: item[1]["loss"])
    lam = np.asarray(rec["coefficients"]).reshape(len(experts), -1)
    return {"evaluation": i + 1, "gen": rec["gen"], "row": rec["row"], "fitness": flip(rec["loss"]),
            "loss": rec["loss"], "metrics": rec["metrics"], "coefficients": rec["coefficients"],
            "experts": {name: lam[e].tolist() for e, name in enumerate(experts)},
            "evaluations": len(records)}


def fresh_dir(stem) -> Path:
    """runs/demo, or runs/demo-2, runs/demo-3, … : the first that does not exist yet."""
    stem = Path(stem)
    candidate, n = stem, 1
    while candidate.exists():
        n += 1
        candidate = stem.with_name(f"{stem.name}-{n}")
    return candidate
