"""`evogm compare CONFIG`: every optimizer × seed at one budget; comparison.md, .json and plots.

    $ evogm compare configs/zoo.yaml --optimizers evogm,cmaes,pso,random,de --seeds 5 --workers 2
    $ evogm compare configs/zoo.yaml --optimizers evogm-plus,evogm-plus:batch=5,pycma=cmaes:pycma_popsize=true

A method is an optimizer with inline options, NAME[:KEY=VALUE,...], optionally labelled
LABEL=NAME[:...]. The paper's ablations of EvoGM, at its budget:
    --optimizers evogm,evogm:generator=single,evogm:cycle_scale=0,evogm:rounds=1,iterations=7,evogm:reset=iteration
"""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("compare", help="equal-budget comparison of optimizers over seeds",
                              description=__doc__.splitlines()[0])
    p.add_argument("config", help="YAML run config")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="override config keys for every run")
    p.add_argument("--optimizers", default="evogm,cmaes,pso,random,de", metavar="METHODS",
                   help="comma-separated optimizers with inline options: NAME[:KEY=VALUE,...] or LABEL=NAME[:...]")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, …)")
    p.add_argument("--budget", type=int, default=None, help="evaluations per run (default: EvoGM's schedule)")
    p.add_argument("--workers", type=int, default=1, help="runs at once, each in its own process")
    p.add_argument("--out", default=None, help="output folder (default: runs/compare-CONFIG)")
    p.set_defaults(func=main)


def main(args) -> int:
    from rich.console import Console

    from evogm.compare import compare

    console = Console(stderr=True)
    out = Path(args.out or f"runs/compare-{Path(args.config).stem}")
    done = lambda job, how: console.log(f"{job.method} seed {job.seed}: {how} ({job.run_dir})")
    summary = compare(args.config, methods=args.optimizers, seeds=list(range(args.seeds)), out=out,
                      budget=args.budget, overrides=args.overrides, workers=args.workers, on_done=done)
    for name, m in summary["methods"].items():
        console.print(f"{name:24} dev {m['dev_mean']:.4f} ± {m['dev_std']:.4f}   test {m['test_mean']:.4f} ± {m['test_std']:.4f}")
    console.print(f"report: {out / 'comparison.md'}")
    return 0
