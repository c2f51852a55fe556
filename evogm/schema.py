"""Plain data (YAML) → frozen dataclasses, checked against the annotations, with clear errors.

An unknown key names the closest valid one; a missing required key is named; a value of the wrong
type says what was expected. Nested dataclasses, `X | None`, `dict[str, X]` and `tuple[X, ...]`
are understood — enough for a config, no more.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Search:
...     budget: int = 160
>>> build(Search, {"budget": 40}, "search.")
Search(budget=40)
>>> build(Search, {"budjet": 40}, "search.")
Traceback (most recent call last):
...
evogm.errors.EvogmError: unknown config key search.budjet: did you mean 'budget'?; fix: valid keys here: budget
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from evogm.errors import EvogmError
from evogm.registry import did_you_mean


def build(cls, data, where: str):
    """A dataclass from a dict: unknown keys suggest the closest one, missing required keys name it."""
    if not isinstance(data, dict):
        raise EvogmError(f"{where.rstrip('.') or 'the config'} must be a mapping", f"got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise EvogmError(f"unknown config key {where}{key}", did_you_mean(str(key), names, "no key like it"),
                             f"valid keys here: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = convert(hints[f.name], data[f.name], where + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise EvogmError(f"config key {where}{f.name} is missing", "it has no default", "add it to the config")
    return cls(**kwargs)


def convert(kind, value, where: str):
    """Check one value against its annotation; nested dataclasses are built."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if dataclasses.is_dataclass(kind):
        return build(kind, {} if value is None else value, where + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return convert(next(a for a in args if a is not type(None)), value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, "a mapping", value)
        return {str(k): convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(where, "a list", value)
        return tuple(convert(args[0], v, f"{where}.{i}") for i, v in enumerate(value))
    return _scalar(kind, value, where)


def _scalar(kind, value, where: str):
    if kind is Any:
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _type_error(where, _KIND_NAMES.get(kind, kind.__name__), value)
    return value


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def plain(value):
    """Plain data for YAML and JSON: tuples become lists, at any depth.

    >>> plain({"sizes": (32, 32), "bounds": [(-1.0, 1.0)]})
    {'sizes': [32, 32], 'bounds': [[-1.0, 1.0]]}
    """
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _type_error(where: str, expected: str, value) -> EvogmError:
    return EvogmError(f"config key {where} must be {expected}", f"got {value!r}", "fix its value")

