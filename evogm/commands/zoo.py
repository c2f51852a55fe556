"""`evogm zoo build DIR [--seed N] [--preset full|tiny|t5|t5-demo]`: build the tiny model zoo (base, experts, tasks).

    $ evogm zoo build zoo --seed 0        # about 10 minutes on 2 CPU cores; prints the landscape
    $ evogm run zoo/run.yaml
"""

from __future__ import annotations



def add_parser(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="build the tiny model zoo (base, LoRA and full experts, task files)",
                              description=__doc__.splitlines()[0])
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="build a zoo in DIR (returns at once if the same zoo is there)")
    b.add_argument("dir", metavar="DIR")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--preset", default="full",
                   help="full (default) / tiny: the causal zoo; t5 / t5-demo: the encoder-decoder zoo on GLUE-shaped tasks")
    b.add_argument("--threads", type=int, default=2,
                   help="torch threads (default 2; the weights depend on it; 1 is faster on a busy CPU)")
    b.set_defaults(func=main)


def main(args) -> int:
    from evogm.zoo.build import build

    manifest = build(args.dir, seed=args.seed, preset=args.preset, threads=args.threads)
    print(f"zoo: {args.dir} ({manifest['bytes'] / 1e6:.1f} MB, {len(manifest['experts'])} experts); "
          f"run it with: evogm run {args.dir}/run.yaml")
    return 0
