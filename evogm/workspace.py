"""What one process holds for a run: the resident model with its experts, the merger, the tasks.

Built once per process and reused by every search of the run (single-task mode runs one search per
task on the same resident model). Objectives are made by a picklable factory (the config as plain
data and the target), so that a distributed executor can build one next to each worker's
own resident model.

>>> ws = workspace(cfg)                                       # doctest: +SKIP
>>> objective = objective_factory(cfg, MULTI_TASK)()             # doctest: +SKIP
>>> objective(np.full(search_space(cfg).dim, 0.5)).fitness        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
from dataclasses import dataclass

from evogm.config import RunConfig, from_dict, search_space, to_dict

@dataclass
class Workspace:
    models: object  # evogm.models.Models: .model, .tokenizer, .experts, .names
    merger: object  # evogm.merge.Merger
    tasks: dict  # name → evogm.tasks.Task, in config order


_CACHE: dict[str, Workspace] = {}


def workspace(cfg: RunConfig) -> Workspace:
    """The process's workspace for these models and tasks (loaded on first use, then reused while
    their files are unchanged)."""
    from evogm.inputs import stamps

    key = json.dumps({"models": dataclasses.asdict(cfg.models), "tasks": cfg.tasks, "files": stamps(cfg)},
                     sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE.clear()  # one resident model per process: free the old one first
        _CACHE[key] = build_workspace(cfg)
    ws = _CACHE[key]
    ws.merger.use_space(search_space(cfg))  # this config's space and seed, on the same resident model
    return ws


def build_workspace(cfg: RunConfig) -> Workspace:
    """Load the models and tasks, and bind the search space to the model (a filter that matches no
    module the experts change is refused here, before any evaluation)."""
    from evogm.merge import Merger
    from evogm.models import load_models
    from evogm.tasks import load_task

    m = cfg.models
    models = load_models(m.base, m.experts, dtype=m.dtype, device=m.device, allow_pickle=m.allow_pickle,
                         trust_remote_code=m.trust_remote_code)
    tasks = {spec["name"]: load_task(spec) for spec in cfg.tasks}
    merger = Merger(models.model, models.experts, groups=m.groups, base_copy=m.base_copy, space=search_space(cfg))
    return Workspace(models, merger, tasks)


def workspace_of(cfg_data: dict) -> Workspace:
    """The workspace of a config given as plain data (what a worker process builds). The config is
    checked once per process, not at every call: checking it loads every task's items."""
    return workspace(_config_of(pickle.dumps(cfg_data)))


@functools.lru_cache(maxsize=1)
def _config_of(cfg_data: bytes) -> RunConfig:
    return from_dict(pickle.loads(cfg_data))


def on_workspace(_context, cfg_data: dict, fn, *args):
    """`fn(workspace, *args)` on this process's workspace for the config (given as plain data), whatever
    the worker's own context: a search worker built that workspace with its objective, so the final
    stage scores and exports on the resident model the search left there."""
    return fn(workspace_of(cfg_data), *args)


def objective_factory(cfg: RunConfig, target: str):
    """A zero-argument, picklable maker of the objective an executor calls on its worker."""
    return functools.partial(make_objective, to_dict(cfg), target)


def make_objective(cfg_data: dict, target: str):
    from evogm.objective import Objective

    cfg = from_dict(cfg_data)
    ws = workspace(cfg)
    adaptive = None
    if cfg.search.evaluation == "adaptive":
        adaptive = {"chunks": cfg.search.chunks, "confidence": cfg.search.confidence, "seed": cfg.seed,
                    "bound": cfg.search.bound}
    return Objective(ws.merger.candidate, ws.models.tokenizer, list(ws.tasks.values()), target=target,
                     adaptive=adaptive)
