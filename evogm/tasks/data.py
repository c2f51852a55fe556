"""Task files: the paper's JSON (`{"dev": [...], "test": [...]}`) or JSON Lines with a `split` field.

Top-level keys other than the splits (the paper's `icl_prompt`) travel with the data as extras.
A subset is either the first `limit` items or, with a `seed`, a seeded random draw kept in file order.

>>> import json, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "add.json"
>>> _ = path.write_text(json.dumps({"dev": [{"question": "1+1=", "answer": "2"}], "test": []}))
>>> data = read_task_file(path)
>>> data.items("dev"), infer_type(data.items("dev"))
([{'question': '1+1=', 'answer': '2'}], 'exact_match')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evogm.errors import EvogmError

SPLITS = ("dev", "test")


@dataclass(frozen=True)
class TaskData:
    """A task file's items by split, its file-level extras, and which items a task uses (`limit`, `seed`)."""

    path: Path
    splits: dict[str, list[dict]]
    extras: dict = field(default_factory=dict)
    limit: int | None = None
    seed: int | None = None

    @property
    def filled(self) -> list[str]:
        """The splits that hold items (a task validates these; scoring an empty one is refused)."""
        return [split for split, items in self.splits.items() if items]

    def items(self, split: str) -> list[dict]:
        self.check(split)
        return subset(self.splits[split], self.limit, self.seed)

    def check(self, split: str) -> None:
        """Refuse a split that is missing or empty (an empty one would score 0.0 and still count in the mean)."""
        if split not in self.splits:
            raise EvogmError(
                f"{self.path} has no {split!r} split",
                f"it holds {sorted(self.splits) or 'no splits'}",
                f"add a {split!r} list to the file (or lines with \"split\": \"{split}\")",
            )
        if not self.splits[split]:
            raise EvogmError(f"{self.path}: the {split!r} split is empty",
                             "a task with no items would score 0.0 and still count in the mean",
                             f"add items to its {split!r} list, or remove the task")


_PARSED: dict[tuple, TaskData] = {}  # (file, size, mtime) → its data: a file is parsed once per process


def read_task_file(path: str | Path) -> TaskData:
    """A task file's data, parsed once per process (the config check, the workspace and `evogm eval`
    read the same files); a file changed on disk since is parsed again. Treat the items as read-only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvogmError(f"task file not found: {path}", "",
                         "check the task's `path` (relative paths start at the current folder)")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _PARSED:
        _PARSED[key] = _parse(path)
    return _PARSED[key]


def _parse(path: Path) -> TaskData:
    try:
        return _read_jsonl(path) if path.suffix == ".jsonl" else _read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvogmError(f"cannot read task file {path}", str(exc),
                         "write JSON ({\"dev\": [...], \"test\": [...]}) or JSON Lines") from exc


def _read_json(path: Path) -> TaskData:
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or not any(isinstance(payload.get(s), list) for s in SPLITS):
        raise EvogmError(f"{path} holds no split lists", 'expected {"dev": [...], "test": [...]}',
                         "wrap the items in split lists")
    splits = {name: _checked_items(path, name, items) for name, items in payload.items() if name in SPLITS}
    extras = {key: value for key, value in payload.items() if key not in SPLITS}
    return TaskData(path, splits, extras)


def _read_jsonl(path: Path) -> TaskData:
    splits: dict[str, list[dict]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        split = item.pop("split", None) if isinstance(item, dict) else None
        if split not in SPLITS:
            raise EvogmError(f"{path}:{number} has split {split!r}", f"every line needs \"split\": one of {SPLITS}",
                             "add the field")
        splits.setdefault(split, []).append(item)
    return TaskData(path, splits)


def _checked_items(path: Path, split: str, items: object) -> list[dict]:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise EvogmError(f"{path}: split {split!r} is not a list of objects", "",
                         "write each item as {\"question\": ..., \"answer\": ...}")
    return items


def subset(items: list[dict], limit: int | None, seed: int | None) -> list[dict]:
    """The first `limit` items, or with a seed a random draw of `limit` items (kept in file order)."""
    if limit is None or limit >= len(items):
        return list(items)
    if seed is None:
        return items[:limit]
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in chosen]


def infer_type(items: list[dict]) -> str:
    """Items with `choices` are multiple choice, items with `input` and `target` text-to-label, the others exact match."""
    if items and all("choices" in item for item in items):
        return "multiple_choice"
    if items and all("input" in item and "target" in item for item in items):
        return "label"
    return "exact_match"


def require_fields(items: list[dict], fields: tuple[str, ...], where: str) -> None:
    """Fail at load time, naming the first item that lacks a field."""
    for index, item in enumerate(items):
        missing = [name for name in fields if name not in item]
        if missing:
            raise EvogmError(f"{where}: item {index} lacks {', '.join(missing)}", f"it has {sorted(item)}",
                             f"give every item {', '.join(fields)}")
