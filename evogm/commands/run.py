"""`evogm run CONFIG [key=value ...]` and `evogm run --resume RUN_DIR`: search, test once, export, report.

    $ evogm run configs/zoo.yaml search.budget=40 output=runs/zoo40
    $ evogm run --resume runs/zoo40
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from evogm import run as runner
from evogm.config import load_config
from evogm.errors import EvogmError
from evogm.rundir import RunDir
from evogm.runlog import Result


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="search merge coefficients from a YAML config; write a run directory",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", nargs="?", help="YAML run config (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config keys, e.g. search.budget=40")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its evaluations.jsonl")
    p.add_argument("--force", action="store_true", help="overwrite a run directory that already holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=main)


def main(args) -> int:
    if args.resume and (args.config or args.overrides):
        raise EvogmError("--resume takes no config and no overrides", "a run resumes with the config it started with",
                         f"run `evogm run --resume {args.resume}` alone")
    if not args.resume and not args.config:
        raise EvogmError("no config given", "", "run `evogm run CONFIG.yaml` or `evogm run --resume RUN_DIR`")
    display = RichProgress(quiet=args.quiet)
    if args.resume:
        cfg = RunDir(args.resume).read_config()
        already = RunDir(Path(args.resume).resolve()).finished()
        report = runner.run(cfg, run_dir=args.resume, resume=True, progress=display)
        display.console.print(f"{'already finished' if already else 'finished'}: {report}")
    else:
        report = runner.run(load_config(args.config, args.overrides), force=args.force, progress=display)
        display.console.print(f"report: {report}")
    return 0


class RichProgress(runner.Progress):
    """Evaluations done, best dev score so far, per-round best, time per evaluation and ETA."""

    def __init__(self, quiet: bool = False):
        self.console = Console(stderr=True, quiet=quiet, log_path=False)
        self._bar = None

    def start(self, title: str, total: int, done: int) -> None:
        self.finish()
        self.total, self.done, self.best, self.round_best, self.round = total, done, None, None, None
        self.started, self.fresh = time.perf_counter(), 0
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
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
