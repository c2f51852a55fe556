"""Tasks: what a merged model is scored on. A spec (a dict from the config) becomes a Task.

A Task has `.name`, `.weight`, `.primary` (the metric the search optimizes) and
`evaluate(model, tokenizer, split) -> {metric: value}`, every metric higher-is-better. A task
tokenizes a split once per tokenizer, so scoring many candidates only runs forward passes.

>>> import json, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "capitals.json"
>>> item = {"question": "Capital of France?", "choices": {"A": "Rome", "B": "Paris"}, "answer": "B"}
>>> _ = path.write_text(json.dumps({"dev": [item], "test": [item]}))
>>> task = load_task({"path": str(path), "limit": 100})
>>> task.name, type(task).__name__, task.primary
('capitals', 'MultipleChoiceTask', 'accuracy')
>>> load_task({"path": str(path), "max_tokens": 5})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
evogm.errors.EvogmError: task capitals: unknown key 'max_tokens': did you mean 'max_new_tokens'?; fix: ...
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from evogm.errors import EvogmError
from evogm.registry import did_you_mean
from evogm.scoring import check_weight
from evogm.tasks.abstain import AbstainTask
from evogm.tasks.data import SPLITS, infer_type, read_task_file
from evogm.tasks.exact_match import ExactMatchTask
from evogm.tasks.harness import LmEvalTask
from evogm.tasks.label import LabelTask
from evogm.tasks.multiple_choice import MultipleChoiceTask
from evogm.tasks.python_fn import PythonTask

__all__ = ["Task", "TASK_TYPES", "SPLITS", "load_task", "load_tasks"]


class Task(Protocol):
    name: str
    weight: float
    primary: str

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]: ...


TASK_TYPES: dict[str, type] = {
    "multiple_choice": MultipleChoiceTask,
    "exact_match": ExactMatchTask,
    "abstain": AbstainTask,
    "label": LabelTask,
    "python": PythonTask,
    "lm_eval": LmEvalTask,  # lm-evaluation-harness tasks (optional extra, imported when one is loaded)
}
_SELECTION_KEYS = ("name", "path", "type", "limit", "seed")  # read here, not by the task classes
_OPTIONS_OF = {AbstainTask: MultipleChoiceTask}  # abstain takes multiple choice's options


def load_task(spec: dict | str | Path, splits: tuple[str, ...] = ()) -> Task:
    """A Task from a spec dict (or a bare path: name from the file, type from the items); each of
    `splits` (those it will be scored on) must be in its file and hold items."""
    spec = {"path": str(spec)} if isinstance(spec, (str, Path)) else dict(spec)
    kind = spec.get("type")
    if kind is not None and kind not in TASK_TYPES:
        raise EvogmError(f"unknown task type {kind!r}",
                         did_you_mean(kind, TASK_TYPES, f"known: {sorted(TASK_TYPES)}", 0.6))
    if kind == "python":
        return _build(PythonTask, _name(spec), spec, ())
    if kind == "lm_eval":  # lm-eval reads its own data: limit and seed are the task's options
        return _build(LmEvalTask, _name(spec), spec, (), selection=("name", "type"))
    if not spec.get("path"):
        raise EvogmError(f"task {spec.get('name', '?')} has no path", "every task but type: python reads a data file",
                         "add path: FILE.json")
    data = read_task_file(spec["path"])
    data = replace(data, limit=_positive(spec, "limit"), seed=spec.get("seed"))
    for split in splits:
        data.check(split)
    cls = TASK_TYPES[kind or infer_type(next(iter(data.splits.values()), []))]
    return _build(cls, _name(spec), spec, (data,))


def load_tasks(specs: list, splits: tuple[str, ...] = ()) -> list[Task]:
    tasks = [load_task(spec, splits) for spec in specs]
    names = [task.name for task in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise EvogmError(f"task names repeat: {duplicates}", "metrics are keyed by task name",
                         "give each task its own name")
    return tasks


def _build(cls: type, name: str, spec: dict, positional: tuple, selection: tuple = _SELECTION_KEYS) -> Task:
    options = {k: v for k, v in spec.items() if k not in selection}
    if "weight" in options:
        options["weight"] = check_weight(name, options["weight"])
    valid = _option_names(cls)
    for key in options:
        if key not in valid:
            raise EvogmError(f"task {name}: unknown key {key!r}",
                             did_you_mean(key, (*valid, *selection), cutoff=0.6),
                             f"valid keys: {sorted((*valid, *selection))}")
    missing = [key for key in _option_names(cls, required=True) if key not in options]
    if missing:
        raise EvogmError(f"task {name}: {', '.join(missing)} missing",
                         f"a task of type {_type_name(cls)} needs {', '.join(missing)}",
                         f"add {missing[0]}: ... to the task")
    try:
        task = cls(name, *positional, **options)
    except (TypeError, ValueError) as exc:
        raise EvogmError(f"task {name}: bad option value", f"{type(exc).__name__}: {exc}",
                         "check the values' types") from exc
    task.options = options  # what it was built with: `evogm.tasks.chunks` builds a task on a slice of dev
    return task


def _option_names(cls: type, required: bool = False) -> tuple[str, ...]:
    """A task type's keyword options (`required`: those without a default)."""
    parameters = inspect.signature(_OPTIONS_OF.get(cls, cls).__init__).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
                 and (not required or p.default is inspect.Parameter.empty))


def _type_name(cls: type) -> str:
    return next(name for name, known in TASK_TYPES.items() if known is cls)


def _name(spec: dict) -> str:
    if spec.get("name"):
        return str(spec["name"])
    if spec.get("path"):
        return Path(spec["path"]).name.split(".")[0]
    if spec.get("type") == "lm_eval" and isinstance(spec.get("task"), str):
        return spec["task"]
    raise EvogmError("a task needs a name", "a python task has no file to take it from", "add name: ...")


def _positive(spec: dict, key: str) -> int | None:
    value = spec.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise EvogmError(f"task {spec.get('name', spec.get('path'))}: {key} must be a positive integer",
                         f"got {value!r}", f"write {key}: 200")
    return value
