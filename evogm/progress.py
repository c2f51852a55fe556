"""Progress of a run: the silent default the library uses, and the terminal display the CLI shows.

>>> Progress().stage("export")            # silent: a library call prints nothing
>>> RichProgress(quiet=True).stage("export")
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
from rich.progress import Progress as Bar

from evogm.runlog import Result


class Progress:
    """What a run reports as it goes: nothing (the library stays silent); `RichProgress` draws."""

    def start(self, title: str, total: int, done: int) -> None: ...

    def evaluated(self, result: Result) -> None: ...

    def generation(self, gen: int, results: list[Result], round: int | None) -> None: ...

    def stage(self, text: str) -> None: ...

    def finish(self) -> None: ...


class RichProgress(Progress):
    """Evaluations done, best dev score so far, per-round best, time per evaluation and ETA."""

    def __init__(self, quiet: bool = False):
        self.console = Console(stderr=True, quiet=quiet, log_path=False)
        self._bar = None

    def start(self, title: str, total: int, done: int) -> None:
        self.finish()
        self.total, self.done, self.best, self.round_best, self.round = total, done, None, None, None
        self.started, self.fresh = time.perf_counter(), 0
        self._bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), console=self.console, transient=False)
        self._task = self._bar.add_task(title, total=total, completed=done, info="")
        self._bar.start()
        if done:
            self.console.log(f"{title}: resuming after {done} logged evaluations (replayed, not re-run)")

    def evaluated(self, result: Result) -> None:
        self.done, self.fresh = self.done + 1, self.fresh + 1
        if result.ok and (self.best is None or result.fitness > self.best):
            self.best = result.fitness
        per_eval = (time.perf_counter() - self.started) / self.fresh
        eta = per_eval * (self.total - self.done)
        info = f"best {_fmt(self.best)} · {per_eval:.2f} s/eval · ETA {eta:.0f} s"
        self._bar.update(self._task, completed=self.done, info=info)

    def generation(self, gen: int, results: list[Result], round: int | None) -> None:
        scores = [r.fitness for r in results if r.ok]
        gen_best = max(scores) if scores else None
        if round != self.round:
            self.round, self.round_best = round, None
        if gen_best is not None and (self.round_best is None or gen_best > self.round_best):
            self.round_best = gen_best
        if self.best is None or (gen_best is not None and gen_best > self.best):
            self.best = gen_best  # replayed generations count too
        where = f"gen {gen}" + (f" (round {round + 1})" if round is not None else "")
        self.console.log(f"{where}: gen best {_fmt(gen_best)} · round best {_fmt(self.round_best)} · "
                         f"best {_fmt(self.best)} · {self.done}/{self.total}")

    def stage(self, text: str) -> None:
        self.finish()
        self.console.log(text)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.4f}"
