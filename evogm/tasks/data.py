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
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evogm.errors import EvogmError
from evogm.tasks.text import last_number, normalize

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
        positions = self.positions(split)  # refuses a missing or empty split
        return [self.splits[split][i] for i in positions]

    def positions(self, split: str) -> list[int]:
        """Where the items a task uses (`items`) sit in the file's split: 0-based, as errors name them."""
        self.check(split)
        return subset(list(range(len(self.splits[split]))), self.limit, self.seed)

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


# --- the items' fields, checked at load ----------------------------------------------------------
#
# A task type names the fields its items need and a rule for each (`check_items`); a rule takes the
# field's value and its item and says what is wrong, or None. Every rule is here, so a field means
# the same in every task type.


def check_items(task: str, data: TaskData, rules: dict[str, Callable[[object, dict], str | None]]) -> None:
    """Refuse at load the first item a task uses (every filled split, within `limit`) that lacks a
    field or breaks its rule (rules run in order: a later rule may rely on an earlier field), naming
    the task, file, split, item (its 0-based place in the file's split) and field."""
    for split in data.filled:
        for index in data.positions(split):
            item = data.splits[split][index]
            where = f"task {task}: {data.path} [{split}] item {index}"
            missing = [name for name in rules if name not in item]
            if missing:
                raise EvogmError(f"{where} lacks {', '.join(missing)}", f"it has {sorted(item)}",
                                 f"give every item {', '.join(rules)}")
            for name, rule in rules.items():
                why = rule(item[name], item)
                if why:
                    raise EvogmError(f"{where}: {name} {why}", f"got {_shown(item[name])}",
                                     "correct the item, or remove it")


def prompt_text(value: object, item: dict | None = None) -> str | None:
    """A prompt's text (question, input): a string with more than whitespace."""
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string"


def answer_text(value: object, item: dict | None = None) -> str | None:
    """An answer, target or option: non-empty text, or a number (JSON files write some answers as
    numbers; they are compared as their text)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if isinstance(value, int) or math.isfinite(value) else "must be a non-empty string or a finite number"
    return None if isinstance(value, str) and value.strip() else "must be a non-empty string or a number"


LETTERS = string.ascii_uppercase  # the letters a list of choices is named by


def choice_options(value: object, item: dict | None = None) -> str | None:
    """A multiple-choice item's options: {letter: option} or a list of options (lettered A, B, …), at
    least two (with one, every answer is right)."""
    if isinstance(value, list):
        if len(value) > len(LETTERS):
            return f"lists {len(value)} options, more than the letters A-Z name; write a mapping {{letter: option}}"
        value = dict(zip(LETTERS, value))
    if not isinstance(value, dict):
        return 'must be a mapping of letters to options ({"A": "...", "B": "..."}) or a list of options'
    if len(value) < 2:
        return f"holds {len(value)} option(s): a multiple-choice item needs at least two choices"
    for letter, option in value.items():
        if not letter.strip() or any(c.isspace() for c in letter):
            return f"has the letter {letter!r}: a letter is a non-empty word without spaces"
        if answer_text(option):
            return f"option {letter} {answer_text(option)}"
    return None


def choice_answer(value: object, item: dict) -> str | None:
    """A multiple-choice answer: one of the item's letters, or an option's 0-based index (`choice_options`
    checked first)."""
    letters = list(item["choices"]) if isinstance(item["choices"], dict) else list(LETTERS[:len(item["choices"])])
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(letters):
        return None
    return None if isinstance(value, str) and value in letters else \
        f"must be one of the choices {letters} (or an index from 0 to {len(letters) - 1})"


def matched_answer(extract: str, normalized: bool) -> Callable[[object, dict], str | None]:
    """An exact-match answer that an output can match under the task's `extract` and `normalize`."""
    def rule(value: object, item: dict) -> str | None:
        if answer_text(value):
            return answer_text(value)
        if extract == "last_number" and last_number(str(value)) is None:
            return "holds no number, and extract: last_number compares numbers"
        if normalized and extract != "last_number" and not normalize(str(value)):
            return "is empty once normalized (punctuation only): an empty output would match it"
        return None
    return rule


def label_target(labels: list[str] | None, metric: str) -> Callable[[object, dict], str | None]:
    """A label task's target: a number under `metric: spearman`, else one of `labels` (compared as
    the scorer compares them, normalized; None: any text)."""
    known = None if labels is None else {normalize(label) for label in labels}

    def rule(value: object, item: dict) -> str | None:
        if answer_text(value):
            return answer_text(value)
        if metric == "spearman":
            number = _float(value)
            return None if number is not None and math.isfinite(number) else "must be a number (metric: spearman)"
        if known is not None and normalize(str(value)) not in known:
            return f"is not one of the labels {labels}"
        return None
    return rule


def _float(value: object) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _shown(value: object, width: int = 60) -> str:
    shown = repr(value)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


class EncodingCache:
    """Memo of `build(tokenizer, split)` per (tokenizer, split); holds the tokenizer so its id stays unique."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[object, Any]] = {}

    def get(self, tokenizer, split: str, build: Callable[[Any, str], Any]) -> Any:
        key = (id(tokenizer), split)
        if key not in self._entries:
            self._entries[key] = (tokenizer, build(tokenizer, split))
        return self._entries[key][1]
