"""The run config: frozen dataclasses, checked before anything loads, and resolved for a run.

`load_config` reads a YAML file with its overrides (`config_files`), builds the dataclasses and
checks everything that can be checked without loading a model: unknown keys name the closest valid
key, missing files name the path, optimizer options are checked against the optimizer's options
dataclass. `resolve` makes every default explicit, as a run's config.yaml saves it.

>>> from evogm.zoo.packaged import zoo_config
>>> cfg = load_config(zoo_config(), ["search.budget=40", "seed=1"])   # the packaged zoo's run.yaml
>>> cfg.search.budget, cfg.seed, cfg.mode
(40, 1, 'multi_task')
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evogm.base_copy import PLACES
from evogm.config_files import apply_override, read_raw, resolve_paths
from evogm.errors import EvogmError
from evogm.executors import EXECUTORS
from evogm.registry import did_you_mean
from evogm.schema import build, plain
from evogm.scoring import MULTI_TASK, scored_tasks
from evogm.search import POPSIZE, check_options, default_options, make_optimizer
from evogm.space import Space, SpaceConfig, check_space

DTYPES = ("float32", "bfloat16", "float16", "auto")
MODES = (MULTI_TASK, "single_task")
BOUNDS = ("paired", "hoeffding")  # search.bound: adaptive evaluation's stopping bound (evogm.adaptive)
EVALUATIONS = ("full", "adaptive")  # search.evaluation: every dev item, or stop once a candidate cannot matter
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED = ("model", "plots")
# the static merges a run's final stage scores (evogm.baselines), each picking its scale on dev
BASELINES = ("best_expert", "uniform", "task_arithmetic", "ties", "dare")


@dataclass(frozen=True)
class ModelsConfig:
    base: str  # HF model folder
    experts: dict[str, str]  # name → full fine-tune folder or PEFT LoRA adapter folder
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto (bfloat16 on a GPU, float32 on a CPU)
    device: str = "auto"  # auto (cuda when there is one) | cpu | cuda | cuda:1 …
    groups: int = 1  # coefficients per expert: 1, or a number of layer groups
    base_copy: str = "device"  # where the merger keeps θ₀ of the touched parameters: device | host | disk
    allow_pickle: bool = False  # load pickled (.bin) checkpoints; off: safetensors only
    trust_remote_code: bool = False  # run a model folder's own Python code (auto_map); off by default


@dataclass(frozen=True)
class SearchConfig:
    optimizer: str = "evogm"  # a name in evogm.search.OPTIMIZERS
    budget: int | None = None  # evaluations; None: the optimizer's own schedule decides
    popsize: int | None = None  # None: 20, the paper's P
    options: dict[str, Any] = field(default_factory=dict)  # the optimizer constructor's keywords
    timeout: float | None = None  # seconds per evaluation; a longer one fails (loss inf) and the search goes on
    evaluation: str = "full"  # full | adaptive (stop scoring a candidate once it cannot enter the kept set)
    asynchronous: bool = True  # several workers: EvoGM+ and random search ask a row whenever one frees up (false: by generation)
    confidence: float = 0.95  # adaptive: the chance that no candidate which would have been kept is stopped
    chunks: int = 8  # adaptive: looks per candidate, each scoring 1/chunks of every task's dev items
    keep: int | None = 1  # adaptive: the kept set's size (cut-off: the keep-th best full evaluation); None: popsize
    bound: str = "paired"  # adaptive: paired (item by item against the cut-off) | hoeffding (exact, wider)


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str = "local"  # a name in evogm.executors.EXECUTORS (local; ray: distributed)
    options: dict[str, Any] = field(default_factory=dict)  # the executor constructor's keywords


@dataclass(frozen=True)
class BaselinesConfig:
    methods: tuple[str, ...] = BASELINES  # static merges evaluated on dev and test at the end
    scales: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # task arithmetic's grid
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → merger.static keywords


@dataclass(frozen=True)
class RunConfig:
    models: ModelsConfig
    tasks: tuple[dict[str, Any], ...]  # each: name, path, type, and the task type's own keys (evogm.tasks)
    output: str = ""  # the run directory (a run needs one; `evogm eval CONFIG` does not)
    seed: int = 42
    mode: str = MULTI_TASK  # multi_task | single_task (one full search per task)
    search: SearchConfig = field(default_factory=SearchConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)  # what the searched vector means (evogm.space)

    @property
    def task_names(self) -> list[str]:
        return [t["name"] for t in self.tasks]


# --- loading ------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike, overrides: list[str] = (), *, run: bool = True) -> RunConfig:
    """Read a YAML run config, apply `key.sub=value` overrides, check it, return it resolved.
    `run=False` reads it for scoring only (`evogm eval`): no output, no test split needed."""
    raw = read_raw(Path(path))
    for item in overrides:
        apply_override(raw, item)
    resolve_paths(raw, Path.cwd())
    return from_dict(raw, run=run)


def from_dict(raw: dict, *, run: bool = True) -> RunConfig:
    """Build and check a RunConfig from a plain dict (paths already absolute)."""
    cfg = build(RunConfig, executor_options(name_tasks(no_search_split(raw))), "")
    check(cfg, run=run)
    return cfg


def no_search_split(raw: dict) -> dict:
    """`search.split` is refused with the reason (unknown keys get a plainer message): the search
    scores dev, always."""
    if isinstance(raw.get("search"), dict) and "split" in raw["search"]:
        raise EvogmError(f"search.split is {raw['search']['split']!r}", "the search scores the dev split, always; "
                         "the test split is scored once, at the end, never in the search", "remove search.split")
    return raw


def name_tasks(raw: dict) -> dict:
    """A task without a name takes its file's (tasks/gsm8k.json → gsm8k), or its lm-eval task's, as
    evogm.tasks does."""
    tasks = raw.get("tasks")
    if isinstance(tasks, list):
        raw = {**raw, "tasks": [{"name": _task_name(t), **t} if _task_name(t) else t for t in tasks]}
    return raw


def _task_name(task) -> str | None:
    """The name a task without one takes (None: it has one, or nothing to take it from)."""
    if not isinstance(task, dict) or "name" in task:
        return None
    if isinstance(task.get("path"), str):
        return Path(task["path"]).name.split(".")[0]
    return task["task"] if task.get("type") == "lm_eval" and isinstance(task.get("task"), str) else None


def executor_options(raw: dict) -> dict:
    """`executor: {kind: ray, workers: 2}` reads as executor.options.workers = 2: an executor's own
    keys may sit next to its kind (the executor's constructor checks them)."""
    section = raw.get("executor")
    if not isinstance(section, dict) or not set(section) - {"kind", "options"}:
        return raw
    own = {k: v for k, v in section.items() if k not in ("kind", "options")}
    kind = {"kind": section["kind"]} if "kind" in section else {}
    return {**raw, "executor": {**kind, "options": {**(section.get("options") or {}), **own}}}


def to_dict(cfg: RunConfig) -> dict:
    """The plain-data form (tuples as lists), as saved in a run's config.yaml. The default space (today's
    task arithmetic) is left out, so that a run without a `space:` section saves the config it always did
    (and runs from before the section resume)."""
    data = plain(dataclasses.asdict(cfg))
    if cfg.space == SpaceConfig():
        del data["space"]
    return data


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


# --- checks -------------------------------------------------------------------------------------


def check(cfg: RunConfig, *, run: bool = True) -> None:
    """Everything that can be checked before loading a model: values, files, optimizer options; for
    a run also its output and the splits it scores (dev in the search, test at the end)."""
    if run:
        _check_output(cfg)
    if not 0 <= cfg.seed < 2**32:
        raise EvogmError(f"seed is {cfg.seed}", "a seed is an integer in [0, 2³²)", "write seed=42")
    _check_choice("models.dtype", cfg.models.dtype, DTYPES)
    _check_choice("mode", cfg.mode, MODES)
    _check_choice("models.base_copy", cfg.models.base_copy, PLACES)
    _check_choice("executor.kind", cfg.executor.kind, tuple(EXECUTORS))
    for method in cfg.baselines.methods:
        _check_choice("baselines.methods", method, BASELINES)
    if cfg.models.groups < 1:
        raise EvogmError("models.groups must be at least 1", f"got {cfg.models.groups}")
    if not cfg.models.experts:
        raise EvogmError("models.experts is empty", "a merge needs at least one expert", "add name: path entries")
    _check_number("search.budget", cfg.search.budget)
    _check_number("search.popsize", cfg.search.popsize)
    _check_number("search.timeout", cfg.search.timeout)
    _check_adaptive(cfg.search)
    check_space(cfg.space, cfg.models.groups)
    _check_path("models.base", cfg.models.base, folder=True)
    for name, path in cfg.models.experts.items():
        _check_path(f"models.experts.{name}", path, folder=True)
    _check_tasks(cfg.tasks, run, cfg.mode)
    for method, options in cfg.baselines.options.items():
        _check_baseline_options(method, options)
    check_options(cfg.search.optimizer, cfg.search.options)


def _check_adaptive(search: SearchConfig) -> None:
    _check_choice("search.evaluation", search.evaluation, EVALUATIONS)
    _check_choice("search.bound", search.bound, BOUNDS)
    if not isinstance(search.confidence, (int, float)) or not 0 < search.confidence < 1:
        raise EvogmError(f"search.confidence is {search.confidence!r}", "it is a probability, strictly between 0 and 1",
                         "write search.confidence=0.95")
    if isinstance(search.chunks, bool) or not isinstance(search.chunks, int) or search.chunks < 2:
        raise EvogmError(f"search.chunks is {search.chunks!r}", "adaptive evaluation needs at least two looks",
                         "write search.chunks=4")
    keep = search.keep
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise EvogmError(f"search.keep is {search.keep!r}", "it is the number of evaluations the search keeps",
                         "write a positive integer, or leave it out (the population size)")


def _check_choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise EvogmError(f"{key} is {value!r}", did_you_mean(value, choices, "no value like it"),
                         f"choose one of {', '.join(choices)}")


def _check_number(key: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise EvogmError(f"{key} must be a positive number", f"got {value}")


def _check_path(key: str, path: str, *, folder: bool) -> None:
    """The path exists and is a folder (`folder`) or a file."""
    p = Path(path)
    if not p.exists():
        raise EvogmError(f"{key}: {path} not found", "no such file or folder",
                         "fix the path (relative paths in a config file start at the file's folder)")
    if p.is_dir() != folder:
        want, got = ("a folder", "a file") if folder else ("a file", "a folder")
        raise EvogmError(f"{key}: {path} is {got}", f"{key} names {want}",
                         f"give the path of {want}" + (" (a model or adapter folder)" if folder else ""))


def _check_baseline_options(method: str, options: dict) -> None:
    """A static baseline's options: the merge's own for TIES and DARE (`evogm.merge`), a fixed
    `scale` for task arithmetic, none for the uniform merge and the best expert."""
    _check_choice("baselines.options", method, BASELINES)
    if method in ("ties", "dare"):
        from evogm.merge import check_static_options

        check_static_options(method, options, f"baselines.options.{method}.")
        return
    allowed = ("scale",) if method == "task_arithmetic" else ()
    for key, value in options.items():
        if key not in allowed:
            raise EvogmError(f"baselines.options.{method}.{key} is not an option of that baseline",
                             f"{method} takes {', '.join(allowed) or 'no options'}", "remove it")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EvogmError(f"baselines.options.{method}.scale is {value!r}", "it is the merge's global scale",
                             "give a finite number, or leave it out to pick the scale on dev")


def _check_output(cfg: RunConfig) -> None:
    """A run writes a directory of its own: not a file, and neither inside an input (the base, an
    expert, a task's folder of lm-eval YAML) nor holding one, which --force would clear."""
    if not cfg.output:
        raise EvogmError("config key output is missing", "a run writes its results into that directory",
                         "add output: runs/NAME (or the override output=runs/NAME)")
    out = Path(cfg.output).resolve()
    if out.exists() and not out.is_dir():
        raise EvogmError(f"output {cfg.output} is a file", "a run writes a directory",
                         "choose another output (a new or existing directory)")
    inputs = {"models.base": cfg.models.base, **{f"models.experts.{n}": p for n, p in cfg.models.experts.items()},
              **{f"tasks.{t['name']}": t[k] for t in cfg.tasks for k in ("path", "include_path") if t.get(k)}}
    for key, path in inputs.items():
        path = Path(path).resolve()
        if out == path or path in out.parents or out in path.parents:
            where = "holds" if out in path.parents else "is inside"
            raise EvogmError(f"output {cfg.output} {where} an input ({key}: {path})",
                             "a run directory is cleared by --force and must not mix with its inputs",
                             "choose an output outside every model folder and task file")


def _check_tasks(tasks: tuple[dict, ...], run: bool, mode: str = MULTI_TASK) -> None:
    """Names usable as metric keys and folders, no test split, files present; then the task type's
    own keys and, for a run, its dev and test items, checked by evogm.tasks.load_task (which reads
    the file, cheaply: no tokenizing)."""
    from evogm.tasks import SPLITS, load_task

    splits = SPLITS if run else ()
    if not tasks:
        raise EvogmError("tasks is empty", "the search needs at least one task to score", "add a task")
    seen, loaded = set(), []
    for i, task in enumerate(tasks):
        name = task.get("name")
        if not isinstance(name, str) or not TASK_NAME.match(name) or name in RESERVED:
            raise EvogmError(f"tasks.{i}: task name {name!r} cannot be used",
                             "it keys the metrics (task/metric) and names the task's folder in single-task mode",
                             "give it a name of letters, digits, '_', '-' or '.' (not 'model' or 'plots')")
        if name in seen:
            raise EvogmError(f"task name {name!r} appears twice", "names key the metrics", "rename one")
        seen.add(name)
        if task.get("split") == "test":
            raise EvogmError(f"tasks.{i}.split is 'test'", "the test split is never used in the search")
        for key in ("path", "include_path"):
            if task.get(key) is not None:
                _check_path(f"tasks.{i}.{key}", str(task[key]), folder=key == "include_path")
        loaded.append(load_task(task, splits))
    if mode == MULTI_TASK:
        scored_tasks(loaded)  # the weights, together: a positive sum


# --- resolving defaults -------------------------------------------------------------------------


def resolve(cfg: RunConfig, output) -> RunConfig:
    """Every default made explicit (popsize, the optimizer's options, the budget), as config.yaml saves it;
    `output` is the run directory."""
    defaults = default_options(cfg.search.optimizer)
    options = {**defaults, **cfg.search.options}
    if "budget" in defaults and "budget" not in cfg.search.options and cfg.search.budget:
        options["budget"] = cfg.search.budget  # an optimizer that plans by budget plans for this one
    if "groups" in defaults and "groups" not in cfg.search.options:
        options["groups"] = search_space(cfg).per_expert  # its start knows which coordinates belong to one expert
    search = dataclasses.replace(cfg.search, popsize=cfg.search.popsize or POPSIZE, options=options)
    budget = search.budget or build_optimizer(dataclasses.replace(cfg, search=search)).budget
    if not budget:
        raise EvogmError(f"optimizer {search.optimizer!r} plans no budget", "it has no schedule of its own",
                         "set search.budget (the number of evaluations)")
    return dataclasses.replace(cfg, output=str(output), search=dataclasses.replace(search, budget=int(budget)))


def search_space(cfg: RunConfig) -> Space:
    """The run's search space: the searched vector ↔ the merge it is (evogm.space)."""
    return Space(cfg.space, list(cfg.models.experts), cfg.models.groups, cfg.seed)


def build_optimizer(cfg: RunConfig):
    """The config's optimizer, on the search space's vector (by default one λ per expert and layer group)."""
    return make_optimizer(cfg.search.optimizer, search_space(cfg).dim, popsize=cfg.search.popsize, seed=cfg.seed,
                          options=cfg.search.options)
