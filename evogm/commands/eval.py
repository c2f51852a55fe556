"""`evogm eval`: score one model on task files and print a per-task table (or JSON).

    evogm eval zoo/experts/add --tasks zoo/tasks/add.json zoo/tasks/sort.json
    evogm eval --base zoo/base --expert add=zoo/experts/add --expert sort=zoo/experts/sort \\
        --weights add=0.8 --weights sort=1.2 --tasks zoo/tasks/*.json --split test --json
    evogm eval zoo/run.yaml --weights add=0.5 --weights sort=0.5      # the config's models and tasks
    evogm eval runs/zoo/config.yaml --candidate=0.5,-0.2,…           # a logged vector of the run's search space

MODEL is a Hugging Face model folder (a base or a full fine-tune), a PEFT adapter folder (its base
from adapter_config.json, or --base), or a run config YAML (its base, experts and tasks; the base
alone unless --weights is given). With --base and --expert, the experts are merged by task
arithmetic (weight 1 each unless --weights says otherwise), as `evogm merge` does. This command
and the runner's final report are the only ways to score the test split.
"""

from __future__ import annotations

import json

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evogm.evaluate import Evaluation


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a model (or a merge of experts) on task files",
                       description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", metavar="MODEL_OR_CONFIG",
                   help="model folder, PEFT adapter folder or run config YAML")
    p.add_argument("--tasks", nargs="+", default=[], metavar="FILE",
                   help="task files (JSON / JSON Lines); a config's tasks by default")
    p.add_argument("--split", default="dev", choices=["dev", "test"], help="which split to score (default dev)")
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    p.add_argument("--base", help="base model folder (for --expert, or a PEFT adapter's base)")
    p.add_argument("--expert", action="append", default=[], metavar="NAME=PATH", help="an expert to merge (repeat)")
    p.add_argument("--weights", action="append", default=[], metavar="NAME=VALUE[,VALUE...]",
                   help="λ of an expert; several comma-separated values = one per layer group")
    p.add_argument("--candidate", metavar="X1,X2,...",
                   help="with a run config: a vector of its search space, as evaluations.jsonl logs it "
                        "(--candidate=-0.5,… when the first value is negative)")
    p.add_argument("--limit", type=int, help="score the first N items of each task")
    p.add_argument("--scoring", choices=["loglik", "generate"],
                   help="scorer (log-likelihood or generation) of every multiple-choice and label task")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled (.bin/.pt) weights")
    p.add_argument("--trust-remote-code", action="store_true", help="run a model's own Python code")
    p.set_defaults(func=run)


def run(args) -> int:
    from evogm.evaluate import evaluate
    from evogm.weights import parse_pairs

    load = dict(dtype=args.dtype, device=args.device, allow_pickle=args.allow_pickle,
                trust_remote_code=args.trust_remote_code)
    result = evaluate(args.model, tasks=args.tasks, split=args.split, base=args.base,
                      experts=parse_pairs(args.expert, "--expert"), weights=args.weights, limit=args.limit,
                      scoring=args.scoring, load=load, candidate=parse_vector(args.candidate))
    print(json.dumps(as_json(result), indent=2, allow_nan=False) if args.json else table(result))
    return 0


def parse_vector(text: str | None) -> list[float] | None:
    """--candidate's comma-separated numbers (None when not given)."""
    from evogm.errors import EvogmError

    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise EvogmError(f"--candidate {text!r} is not a list of numbers", "it is a vector of the search space",
                         "write --candidate 0.5,-0.2,1.0") from None


def as_json(result: Evaluation) -> dict:
    """The result as strict JSON: a value that is not finite (a perplexity that overflowed) is null,
    as the run's files store it."""
    from evogm.runlog import stored_metrics, stored_value

    rows, seconds = result.rows, result.seconds
    return {"model": result.label, "split": result.split, "score": stored_value(result.score),
            "tasks": {t.name: {"type": type(t).__name__, "primary": t.primary, "weight": t.weight,
                               "metrics": stored_metrics(rows[t.name]), "seconds": round(seconds[t.name], 4)}
                      for t in result.tasks}}


def table(result: Evaluation) -> str:
    rows = result.rows
    lines = [f"{result.label} on {result.split}", f"{'task':<20} {'metric':<22} {'score':>7}  other metrics"]
    for t in result.tasks:
        others = ", ".join(f"{k}={v:.3f}" for k, v in rows[t.name].items() if k != t.primary)
        lines.append(f"{t.name:<20} {t.primary:<22} {rows[t.name][t.primary]:>7.3f}  {others}")
    lines.append(f"{'weighted mean':<43} {result.score:>7.3f}")
    return "\n".join(lines)
