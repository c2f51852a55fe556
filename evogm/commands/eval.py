"""`evogm eval`: score one model on task files and print a per-task table (or JSON).

    evogm eval zoo/experts/add --tasks zoo/tasks/add.json zoo/tasks/sort.json
    evogm eval --base zoo/base --expert add=zoo/experts/add --expert sort=zoo/experts/sort \\
        --weights add=0.8 --weights sort=1.2 --tasks zoo/tasks/*.json --split test --json
    evogm eval zoo/run.yaml --weights add=0.5 --weights sort=0.5      # the config's models and tasks

MODEL is a Hugging Face model folder (a base or a full fine-tune), a PEFT adapter folder (its base
from adapter_config.json, or --base), or a run config YAML (its base, experts and tasks; the base
alone unless --weights is given). With --base and --expert, the experts are merged by task
arithmetic (weight 1 each unless --weights says otherwise), as `evogm merge` does. This command
and the runner's final report are the only ways to score the test split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from evogm.errors import EvogmError


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
    p.add_argument("--limit", type=int, help="score the first N items of each task")
    p.add_argument("--scoring", choices=["loglik", "generate"],
                   help="multiple-choice scorer for every task that has one")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickled (.bin/.pt) weights")
    p.add_argument("--trust-remote-code", action="store_true", help="run a model's own Python code")
    p.set_defaults(func=run)


def run(args) -> int:
    base, experts, specs, weights = plan(args)
    tasks = build_tasks(specs, args.limit, args.scoring)
    model, tokenizer, label = load_merged(args, base, experts, weights)
    rows, seconds = score(model, tokenizer, tasks, args.split)
    mean = weighted_mean(model, tokenizer, tasks, args.split, rows)
    print(json.dumps(as_json(label, args.split, rows, tasks, seconds, mean), indent=2) if args.json
          else table(label, args.split, rows, tasks, mean))
    return 0


def plan(args) -> tuple[str, dict[str, str], list, list[str]]:
    """(base folder, {expert: folder}, task specs, --weights) from the positional and the flags."""
    from evogm.commands.merge import parse_pairs

    experts = parse_pairs(args.expert, "--expert")
    specs: list = list(args.tasks)
    weights = list(args.weights)
    if args.model and Path(args.model).suffix in (".yaml", ".yml"):
        cfg = _config(args.model)
        base, experts = cfg.models.base, {**cfg.models.experts, **experts}
        specs = specs or list(cfg.tasks)
        weights = [f"{name}=0" for name in experts] + weights  # a config's experts are optional: 0 unless weighted
    elif args.model:
        base, adapter = _model_folder(Path(args.model), args.base)
        experts = {**({Path(args.model).name: str(adapter)} if adapter else {}), **experts}
    elif args.base:
        base = args.base
    else:
        raise EvogmError("no model to score", "give a model folder, a run config, or --base",
                         "e.g. evogm eval zoo/base --tasks t.json")
    if not specs:
        raise EvogmError("no tasks to score", "--tasks is empty", "add --tasks FILE.json ...")
    if weights and not experts:
        raise EvogmError("--weights without experts", "there is nothing to weight", "add --expert NAME=PATH")
    return str(base), experts, specs, weights


def _config(path: str):
    from evogm.config import load_config

    return load_config(path)


def _model_folder(folder: Path, base: str | None) -> tuple[str, Path | None]:
    """(base folder, adapter folder or None) for a model folder given as MODEL."""
    config = folder / "adapter_config.json"
    if not config.is_file():
        return str(folder), None
    base = base or json.loads(config.read_text()).get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise EvogmError(f"{folder} is a PEFT adapter whose base {base!r} is not a local folder",
                         "evogm loads models from local folders only", "give the base with --base BASE_FOLDER")
    return base, folder


def build_tasks(specs: list, limit: int | None, scoring: str | None) -> list:
    from evogm.tasks import load_tasks

    full = []
    for spec in specs:
        spec = {"path": str(spec)} if isinstance(spec, (str, Path)) else dict(spec)
        if limit is not None:
            spec["limit"] = limit
        kind = spec.get("type") or _file_type(spec.get("path"))
        if scoring and kind in ("multiple_choice", "abstain"):
            spec["scoring"] = scoring
        full.append(spec)
    return load_tasks(full)


def _file_type(path: str | None) -> str:
    from evogm.tasks.data import infer_type, read_task_file

    return infer_type(next(iter(read_task_file(path).splits.values()), [])) if path else "python"


def load_merged(args, base: str, experts: dict[str, str], weights: list[str]):
    """(model, tokenizer, label): the base, or the experts merged into it with the given weights."""
    from evogm.commands.merge import parse_weights
    from evogm.merge import Merger
    from evogm.models import load_models

    models = load_models(base, experts, dtype=args.dtype, device=args.device,
                         allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)
    if not experts:
        return models.model, models.tokenizer, base
    lam = parse_weights(weights, models.names)
    model = Merger(models.model, models.experts, groups=lam.shape[1])(lam)
    return model, models.tokenizer, f"{base} + " + " + ".join(f"{v:g}·{n}" for n, v in zip(models.names, lam[:, 0]))


def score(model, tokenizer, tasks: list, split: str) -> tuple[dict[str, dict], dict[str, float]]:
    """Per task: its metrics and its seconds. A failure here is the user's to see: one line, exit 2."""
    from evogm import scoring

    rows, seconds = {}, {}
    for task in tasks:
        start = time.perf_counter()
        try:
            metrics = scoring.score(model, tokenizer, [task], split)
            rows[task.name] = {key.split("/", 1)[1]: value for key, value in metrics.items()}
        except EvogmError:
            raise
        except Exception as exc:  # noqa: BLE001 — a CLI user gets one line, not a traceback
            raise EvogmError(f"scoring task {task.name} failed", f"{type(exc).__name__}: {exc}", "") from exc
        seconds[task.name] = time.perf_counter() - start
    return rows, seconds


def weighted_mean(model, tokenizer, tasks: list, split: str, rows: dict[str, dict]) -> float:
    """The search's fitness of these scores: the objective's own rule (weighted mean of primaries)."""
    from evogm.scoring import fitness, scored_tasks

    return fitness({f"{name}/{k}": v for name, metrics in rows.items() for k, v in metrics.items()}, scored_tasks(tasks))


def as_json(label: str, split: str, rows: dict, tasks: list, seconds: dict, mean: float) -> dict:
    return {"model": label, "split": split, "score": mean,
            "tasks": {t.name: {"type": type(t).__name__, "primary": t.primary, "weight": t.weight,
                               "metrics": rows[t.name], "seconds": round(seconds[t.name], 4)} for t in tasks}}


def table(label: str, split: str, rows: dict, tasks: list, mean: float) -> str:
    lines = [f"{label} on {split}", f"{'task':<20} {'metric':<22} {'score':>7}  other metrics"]
    for t in tasks:
        others = ", ".join(f"{k}={v:.3f}" for k, v in rows[t.name].items() if k != t.primary)
        lines.append(f"{t.name:<20} {t.primary:<22} {rows[t.name][t.primary]:>7.3f}  {others}")
    lines.append(f"{'weighted mean':<43} {mean:>7.3f}")
    return "\n".join(lines)
