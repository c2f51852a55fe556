"""`evogm run CONFIG [key=value ...]` and `evogm run --resume RUN_DIR`: search, test once, export, report.

    $ evogm run configs/zoo.yaml search.budget=40 output=runs/zoo40
    $ evogm run --resume runs/zoo40
"""

from __future__ import annotations

from pathlib import Path

from evogm.errors import EvogmError


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
    from evogm import run as runner
    from evogm.config import load_config
    from evogm.inputs import read_config
    from evogm.progress import RichProgress
    from evogm.rundir import RunDir

    display = RichProgress(quiet=args.quiet)
    if args.resume:
        cfg = read_config(RunDir(args.resume))
        run_dir = RunDir(Path(args.resume).resolve())
        already = run_dir.finished() and run_dir.exported()
        report = runner.run(cfg, run_dir=args.resume, resume=True, progress=display)
        display.console.print(f"{'already finished' if already else 'finished'}: {report}")
    else:
        report = runner.run(load_config(args.config, args.overrides), force=args.force, progress=display)
        display.console.print(f"report: {report}")
    return 0
