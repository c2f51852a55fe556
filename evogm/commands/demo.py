"""`evogm demo`: EvoGM+ with the paper's budget on the packaged tiny model zoo, on a CPU, in minutes.

It evaluates candidates on two local worker processes (`executor.workers: 2`, by generation), and
scores them adaptively (`search.evaluation: adaptive`: a candidate stops being scored once it
cannot become the best), as configs/zoo.yaml does, except for the paper's EvoGM
(`search.optimizer=evogm`), which is reproduced as published, every candidate scored in full.
`search.evaluation=full` scores every candidate of any optimizer in full.

    $ evogm demo                 # writes runs/demo (or runs/demo-2, … if taken) and prints the report's path
    $ evogm demo --output /tmp/d search.budget=80
    $ evogm demo --zoo my-zoo     # a zoo built with `evogm zoo build my-zoo`
"""

from __future__ import annotations

import dataclasses
from pathlib import Path



def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run EvoGM+ on the packaged tiny zoo and print where the report is",
                              description=__doc__.splitlines()[0])
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config keys, e.g. seed=1")
    p.add_argument("--output", metavar="DIR", help="run directory (default: a fresh runs/demo*)")
    p.add_argument("--zoo", metavar="DIR", help="a zoo built with `evogm zoo build DIR` (default: the packaged one)")
    p.add_argument("--force", action="store_true", help="overwrite --output if it holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=main)


def main(args) -> int:
    from evogm import run as runner
    from evogm.config import load_config
    from evogm.progress import RichProgress
    from evogm.rundir import fresh_dir
    from evogm.zoo.packaged import zoo_config

    output = Path(args.output) if args.output else fresh_dir(Path("runs") / "demo")
    cfg = load_config(zoo_config(args.zoo), [*two_workers(args.overrides), *args.overrides, f"output={output}"])
    if cfg.search.optimizer != "evogm" and not any(o.startswith("search.evaluation=") for o in args.overrides):
        cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, evaluation="adaptive"))
    display = RichProgress(quiet=args.quiet)
    display.console.print(f"evogm demo: {cfg.search.optimizer} on the tiny zoo "
                          f"({len(cfg.models.experts)} experts, {len(cfg.tasks)} tasks) → {output}")
    report = runner.run(cfg, force=args.force, progress=display)
    print(f"report: {report}")
    return 0


def two_workers(overrides: list[str]) -> list[str]:
    """Two local worker processes, the CPU threads split between them, unless the overrides say how to
    execute: on a CPU the tiny zoo scores more candidates a second so than as one process on every
    thread. By generation (search.asynchronous=false), so that a seed gives the same run wherever it runs."""
    import torch

    if torch.get_num_threads() < 2 or any(o.startswith(("executor.", "executor=")) for o in overrides):
        return []
    return ["executor.workers=2", *([] if any(o.startswith("search.asynchronous=") for o in overrides)
                                    else ["search.asynchronous=false"])]
