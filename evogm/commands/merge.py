"""`evogm merge`: one merge of the experts, exported as a model folder with its recipe.

    evogm merge --base zoo/base --expert add=zoo/experts/add --expert sort=zoo/experts/sort \
        --weights add=0.8 --weights sort=1.2 --out merged/
"""

from __future__ import annotations



def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="merge experts with given weights and export the model",
                       description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="base model folder (Hugging Face format)")
    p.add_argument("--expert", action="append", default=[], metavar="NAME=PATH", required=True,
                   help="an expert: PEFT LoRA adapter folder or full fine-tune folder (repeat)")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=VALUE[,VALUE...]",
                   help="λ of an expert (default 1); several comma-separated values = one per layer group")
    p.add_argument("--method", default="task_arithmetic",
                   help="task_arithmetic (default), ties or dare (evogm.merge.STATIC_METHODS)")
    p.add_argument("--scale", type=float, default=1.0, help="global scale of the merged update")
    p.add_argument("--density", type=float, default=None, help="in (0, 1]; ties: fraction kept; dare: keep probability")
    p.add_argument("--consensus", action="store_true", help="dare: TIES sign consensus (DARE-TIES)")
    p.add_argument("--seed", type=int, default=0, help="dare: seed of the random drops")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled (.bin/.pt) weights")
    p.add_argument("--trust-remote-code", action="store_true", help="run a model's own Python code")
    p.set_defaults(func=run)


def run(args) -> int:
    from evogm.export import merge_and_export
    from evogm.merge import check_static_options
    from evogm.weights import parse_pairs, parse_weights

    experts = parse_pairs(args.expert, "--expert")
    lam = parse_weights(args.weights, list(experts))
    options = {"scale": args.scale}
    if args.density is not None:
        options["density"] = args.density
    if args.method == "dare":
        options["consensus"] = args.consensus
    check_static_options(args.method, options, "--")  # before loading anything, in the flags' names
    load = dict(dtype=args.dtype, device=args.device, allow_pickle=args.allow_pickle,
                trust_remote_code=args.trust_remote_code)
    out = merge_and_export(args.base, experts, lam, args.out, method=args.method, force=args.force, load=load,
                           seed=args.seed, **options)
    print(f"merged {len(experts)} experts ({args.method}) into {out}")
    return 0
