"""Score one model on task files: a model folder, a PEFT adapter, a run config's models, or a merge.

The library side of `evogm eval`: work out the base, the experts and the tasks, load them, merge
the experts with their weights (task arithmetic, as `evogm merge` does), score every task with
the search's own scorer (`evogm.scoring`), and the weighted mean as the search's fitness. With
the runner's final report, this is the only way to score the test split.

>>> result = evaluate("zoo/run.yaml", weights=["add=0.5"], split="test")       # doctest: +SKIP
>>> result.label, result.score, result.rows["add"]["accuracy"]                  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from evogm.config import load_config, search_space
from evogm.errors import EvogmError
from evogm.scoring import fitness, metric_key, score_task, scored_tasks
from evogm.tasks import load_tasks
from evogm.tasks.data import infer_type, read_task_file
from evogm.weights import parse_weights


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured: per task its metrics and seconds, and the weighted mean."""

    label: str  # the model, or "BASE + 0.5·add + …" for a merge
    split: str
    tasks: list  # evogm.tasks.Task, in the order given
    rows: dict[str, dict[str, float]]  # task name → metric → value
    seconds: dict[str, float]  # task name → seconds it took
    score: float  # the search's fitness of these scores (weighted mean of the primary metrics)


def evaluate(model: str | None = None, *, tasks=(), split: str = "dev", base: str | None = None,
             experts: dict[str, str] | None = None, weights=(), limit: int | None = None,
             scoring: str | None = None, load: dict | None = None, candidate=None) -> Evaluation:
    """Score MODEL_OR_CONFIG (or `base` with `experts` merged by `weights`, NAME=V[,V…]) on `tasks`.
    `load`: load_models' keywords (dtype, device, allow_pickle, trust_remote_code). `candidate`: a vector
    of a run config's search space (as its evaluations.jsonl logs it), merged as the search merged it."""
    if candidate is not None:
        return evaluate_candidate(model, candidate, tasks=tasks, split=split, limit=limit, scoring=scoring,
                                  load=load, extra=bool(experts or weights or base))
    base, experts, specs, weights = plan(model, base, dict(experts or {}), list(tasks), list(weights))
    task_list = build_tasks(specs, limit, scoring, split)
    loaded, tokenizer, label = load_merged(base, experts, weights, load or {})
    rows, seconds = score_each(loaded, tokenizer, task_list, split)
    return Evaluation(label, split, task_list, rows, seconds, weighted_mean(task_list, rows))


def evaluate_candidate(config: str | None, candidate, *, tasks, split: str, limit: int | None, scoring: str | None,
                       load: dict | None, extra: bool = False) -> Evaluation:
    """Score a candidate of a run config's search space on its tasks (or `tasks`)."""
    from evogm.merge import Merger
    from evogm.models import load_models

    if not config or Path(config).suffix not in (".yaml", ".yml"):
        raise EvogmError("--candidate without a run config", "a candidate is a vector of a config's search space",
                         "give the run's config.yaml as MODEL_OR_CONFIG")
    if extra:
        raise EvogmError("--candidate with --base, --expert or --weights", "a candidate merges the config's experts "
                         "as its search space says", "give either --candidate or --weights")
    cfg = load_config(config, run=False)
    space = search_space(cfg)
    x = [float(v) for v in candidate]
    if len(x) != space.dim or not all(map(math.isfinite, x)):
        raise EvogmError(f"--candidate has {len(x)} values", f"the search space of {config} has {space.dim} "
                         "finite coordinates", "give a vector as evaluations.jsonl logs it (comma-separated)")
    task_list = build_tasks(list(tasks) or list(cfg.tasks), limit, scoring, split)
    models = load_models(cfg.models.base, cfg.models.experts, **(load or {}))
    merger = Merger(models.model, models.experts, groups=cfg.models.groups, space=space)
    rows, seconds = score_each(merger.candidate(x), models.tokenizer, task_list, split)
    label = f"{cfg.models.base} + a {cfg.space.method} candidate of {config}"
    return Evaluation(label, split, task_list, rows, seconds, weighted_mean(task_list, rows))


def plan(model: str | None, base: str | None, experts: dict[str, str], specs: list, weights: list[str]):
    """(base folder, {expert: folder}, task specs, weights) from MODEL_OR_CONFIG and the other inputs."""
    if model and Path(model).suffix in (".yaml", ".yml"):
        cfg = load_config(model, run=False)
        both = sorted(set(cfg.models.experts) & set(experts))
        if both:
            raise EvogmError(f"--expert {both[0]} is also an expert of {model}", "one name stands for one expert",
                             "give the added expert another name")
        base, experts = cfg.models.base, {**cfg.models.experts, **experts}
        specs = specs or list(cfg.tasks)
        weighted = {pair.partition("=")[0] for pair in weights}
        weights = [f"{name}=0" for name in experts if name not in weighted] + weights  # a config's experts: 0 unless weighted
    elif model:
        base, adapter = _model_folder(Path(model), base)
        experts = {**({Path(model).name: str(adapter)} if adapter else {}), **experts}
    elif not base:
        raise EvogmError("no model to score", "give a model folder, a run config, or --base",
                         "e.g. evogm eval zoo/base --tasks t.json")
    if not specs:
        raise EvogmError("no tasks to score", "--tasks is empty", "add --tasks FILE.json ...")
    if weights and not experts:
        raise EvogmError("--weights without experts", "there is nothing to weight", "add --expert NAME=PATH")
    return str(base), experts, specs, weights


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


def build_tasks(specs: list, limit: int | None, scoring: str | None, split: str) -> list:
    """The tasks of the specs (or bare paths), each cut to `limit` items and scored by `scoring` where it
    applies; each must hold items in `split`."""
    full = []
    for spec in specs:
        spec = {"path": str(spec)} if isinstance(spec, (str, Path)) else dict(spec)
        if limit is not None:
            spec["limit"] = limit
        kind = spec.get("type") or _file_type(spec.get("path"))
        if scoring and kind in ("multiple_choice", "abstain", "label"):
            spec["scoring"] = scoring
        full.append(spec)
    return load_tasks(full, (split,))


def _file_type(path: str | None) -> str:
    return infer_type(next(iter(read_task_file(path).splits.values()), [])) if path else "python"


def load_merged(base: str, experts: dict[str, str], weights: list[str], load: dict):
    """(model, tokenizer, label): the base, or the experts merged into it with the given weights."""
    from evogm.merge import Merger
    from evogm.models import load_models

    models = load_models(base, experts, **load)
    if not experts:
        return models.model, models.tokenizer, base
    lam = parse_weights(weights, models.names)
    model = Merger(models.model, models.experts, groups=lam.shape[1])(lam)
    return model, models.tokenizer, f"{base} + " + " + ".join(f"{v:g}·{n}" for n, v in zip(models.names, lam[:, 0]))


def score_each(model, tokenizer, tasks: list, split: str) -> tuple[dict[str, dict], dict[str, float]]:
    """Per task: its metrics and its seconds. A failure here is the user's to see: one line, exit 2."""
    rows, seconds = {}, {}
    for task in tasks:
        start = time.perf_counter()
        try:
            rows[task.name] = score_task(model, tokenizer, task, split)
        except EvogmError:
            raise
        except Exception as exc:  # noqa: BLE001 — a user gets one line, not a traceback
            raise EvogmError(f"scoring task {task.name} failed", f"{type(exc).__name__}: {exc}", "") from exc
        seconds[task.name] = time.perf_counter() - start
    return rows, seconds


def weighted_mean(tasks: list, rows: dict[str, dict]) -> float:
    """The search's fitness of these scores: the objective's own rule (weighted mean of primaries)."""
    metrics = {metric_key(name, k): v for name, values in rows.items() for k, v in values.items()}
    return fitness(metrics, scored_tasks(tasks))
