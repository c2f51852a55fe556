"""A user's own fitness: `function: package.module:fn`, called with the merged model and tokenizer.

The function returns a dict of higher-is-better metrics; `primary` names the one the search
optimizes (default "score"). A primary that is not a finite number fails the evaluation; any other
metric that is not finite (NaN, inf, None) is kept, stored as null in the run's files. It is called with `split=` when its signature takes one, so it can
keep its own dev and test data apart. `args` are passed on as keyword arguments.

>>> # mypkg/fitness.py:  def judge(model, tokenizer, split="dev"): return {"reward": 0.8, "length": 0.3}
>>> # task = load_task({"name": "judge", "type": "python", "function": "mypkg.fitness:judge", "primary": "reward"})
>>> # task.evaluate(model, tokenizer, "dev")     # {'reward': 0.8, 'length': 0.3}
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Callable

from evogm.errors import EvogmError


def import_function(reference: str) -> Callable:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise EvogmError(f"bad function reference {reference!r}", "expected package.module:function",
                         "write e.g. mypkg.fitness:score")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise EvogmError(f"cannot import {reference}", f"{type(exc).__name__}: {exc}",
                         "check the module is importable (on PYTHONPATH)") from exc
    if not callable(function):
        raise EvogmError(f"{reference} is not callable", f"it is a {type(function).__name__}", "point at a function")
    return function


def _takes_split(function: Callable) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "split" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class PythonTask:
    """Metrics computed by a user function of (model, tokenizer)."""

    def __init__(self, name: str, *, function: str, weight: float = 1.0, primary: str = "score",
                 args: dict | None = None):
        self.name, self.weight, self.reference, self.primary = name, float(weight), function, str(primary)
        self.function, self.args = import_function(function), dict(args or {})
        self._passes_split = _takes_split(self.function)

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]:
        extra = {"split": split} if self._passes_split else {}
        metrics = self.function(model, tokenizer, **extra, **self.args)
        return self._checked(metrics)

    def _checked(self, metrics: object) -> dict[str, float]:
        if not isinstance(metrics, dict) or not metrics:
            raise TypeError(f"{self.reference} returned {type(metrics).__name__}, not a non-empty dict of metrics")
        given = {str(key): value for key, value in metrics.items()}
        out = {key: self._number(key, value) for key, value in given.items()}
        if self.primary not in out:
            raise KeyError(f"{self.reference} returned {sorted(out)} without the primary metric {self.primary!r} "
                           f"(set the task's `primary` to one of them)")
        if not math.isfinite(out[self.primary]):
            raise FloatingPointError(f"{self.reference} returned {self.primary}={given[self.primary]!r}")
        return out

    def _number(self, key: str, value: object) -> float:
        """A metric's value as a float; None (no value) is NaN, stored as null like any non-finite one."""
        if value is None:
            return math.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{self.reference} returned {key}={value!r:.60}, not a number") from None
