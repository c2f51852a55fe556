"""Config files: a YAML file (with `include:`) and `a.b=c` overrides → one plain dict, paths absolute.

Paths in a file are relative to that file's folder, paths given as overrides relative to the working
directory. A repeated key in one mapping is refused (YAML would silently keep the last).

>>> raw = {"search": {"budget": 160}}
>>> apply_override(raw, "search.budget=40"); raw
{'search': {'budget': 40}}
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from evogm.errors import EvogmError

NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # 1e-3, 2.5E4: numbers YAML 1.1 reads as text


def read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file as a dict with absolute input paths. `include: OTHER.yaml` reads OTHER first
    (its paths relative to its own folder) and lays this file's keys over it (mappings merge)."""
    if path.is_dir():
        raise EvogmError(f"config {path} is a folder", "a run config is a YAML file",
                         "give the path of a YAML run config (a zoo folder holds one: DIR/run.yaml)")
    if not path.is_file():
        raise EvogmError(f"config file {path} not found", "no such file", "give the path of a YAML run config")
    if path.resolve() in seen:
        raise EvogmError(f"config {path} includes itself", " → ".join(map(str, seen)), "remove the cycle")
    raw = read_yaml(path)
    resolve_paths(raw, path.resolve().parent)
    include = raw.pop("include", None)
    if include is None:
        return raw
    if not isinstance(include, str):
        raise EvogmError(f"include in {path} must be a path", f"got {include!r}")
    target = Path(_absolute(include, path.resolve().parent))
    if not target.is_file():
        raise EvogmError(f"config {path} includes {target}, which is not found", "no such file",
                         "fix the include: path (relative to the including file), or build the zoo it names")
    return deep_merge(read_raw(target, (*seen, path.resolve())), raw)


def deep_merge(under: dict, over: dict) -> dict:
    out = dict(under)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = deep_merge(out[key], value) if both else value
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error (not: the last wins)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict:
    """A YAML mapping; a repeated key is refused (it would silently replace the first)."""
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 — a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise EvogmError(f"config {path} is not valid YAML", str(exc).replace("\n", " "), "fix the syntax") from None
    if not isinstance(data, dict):
        raise EvogmError(f"config {path} must be a mapping of keys", f"it holds a {type(data).__name__}")
    return data


def apply_override(raw: dict, item: str) -> None:
    """`search.budget=40` sets raw["search"]["budget"] = 40; the value is parsed as YAML;
    a number indexes a list (`tasks.0.limit=50`)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise EvogmError(f"override {item!r} is not key=value", "", "write it like search.budget=40")
    value = parse_value(text)
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = _child(node, part, key)
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    else:
        node[last] = value


def parse_value(text: str):
    """A value written on the command line, read as YAML (`5`, `false`, `null`, `[16, 16]`), with
    exponent numbers as numbers (YAML 1.1 reads `1e-3` as a string); text that is not YAML stays text.

    >>> [parse_value(t) for t in ("5", "false", "null", "[16, 16]", "1e-3", "hybrid", "")]
    [5, False, None, [16, 16], 0.001, 'hybrid', None]
    """
    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return float(value) if isinstance(value, str) and NUMBER.match(value) else value


def _child(node, part: str, key: str):
    if isinstance(node, list):
        return node[_index(node, part, key)]
    if not isinstance(node, dict):
        raise EvogmError(f"override {key}: {part!r} is inside a value, not a section", "", "check the key path")
    return node.setdefault(part, {})


def _index(node: list, part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise EvogmError(f"override {key}: {part!r} is not an index of a list of {len(node)}", "",
                         f"use 0…{len(node) - 1}")
    return int(part)


def resolve_paths(raw: dict, root: Path) -> None:
    """Make the input paths (models.base, models.experts.*, tasks[*].path and include_path) absolute against root."""
    models = raw.get("models")
    if isinstance(models, dict):
        if isinstance(models.get("base"), str):
            models["base"] = _absolute(models["base"], root)
        if isinstance(models.get("experts"), dict):
            models["experts"] = {k: _absolute(v, root) if isinstance(v, str) else v
                                 for k, v in models["experts"].items()}
    for task in raw.get("tasks") or []:
        for key in ("path", "include_path"):  # include_path: an lm-eval task's YAML folder
            if isinstance(task, dict) and isinstance(task.get(key), str):
                task[key] = _absolute(task[key], root)


def _absolute(path: str, root: Path) -> str:
    p = Path(os.path.expandvars(path)).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())
