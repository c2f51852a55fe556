"""A task's dev split in chunks: the same task, built again on a slice of its dev items.

Adaptive evaluation (`evogm.adaptive`) scores a candidate chunk by chunk and stops once the items
seen show it cannot matter. A task can be cut when its metric is a mean over items
(`task.per_item`: multiple-choice, exact-match and label accuracy); its chunks are then plain
tasks of the same class and options whose dev split is one slice of a seeded permutation of the
task's dev items, fixed once, so every candidate sees the same items in the same order. The mean
of the chunks' scores, weighted by their sizes, is the whole split's score. Tasks whose metric
does not decompose (Spearman's ρ, abstention's two-pass metrics, lm-eval tasks, Python fitness
functions) are not cut: `split_dev` returns None for them.

>>> import json, tempfile, pathlib
>>> from evogm.tasks import load_task
>>> path = pathlib.Path(tempfile.mkdtemp()) / "add.json"
>>> items = [{"question": f"{i}+1=", "answer": str(i + 1)} for i in range(10)]
>>> _ = path.write_text(json.dumps({"dev": items, "test": items[:2]}))
>>> parts = split_dev(load_task({"path": str(path)}), chunks=3, seed=0)
>>> [len(p.data.items("dev")) for p in parts], dev_size(parts[0])
([4, 3, 3], 4)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np


def splittable(task) -> bool:
    """Whether `task` scores a mean over items and can be rebuilt on a slice (it came from `load_task`)."""
    return bool(getattr(task, "per_item", False)) and hasattr(task, "options") and hasattr(task, "data")


def split_dev(task, chunks: int, seed: int) -> list | None:
    """`chunks` tasks over disjoint slices of `task`'s dev items (a seeded permutation, cut in near-equal
    parts, the empty ones dropped), or None when the task cannot be cut. `chunks=1`: the whole split
    in the permutation's order (what a chunked candidate scored in full sees, in one batch)."""
    if not splittable(task):
        return None
    items = task.data.items("dev")
    order = np.random.default_rng(seed).permutation(len(items))
    return [chunk_task(task, [items[i] for i in part]) for part in np.array_split(order, chunks) if len(part)]


def chunk_task(task, items: list[dict]):
    """A task of `task`'s class and options whose dev split is `items` (its label set kept whole)."""
    data = replace(task.data, splits={"dev": items}, limit=None, seed=None)
    options = dict(task.options)
    if hasattr(task, "labels"):
        options["labels"] = list(task.labels)  # else read from the slice's targets, which may lack some
    return type(task)(task.name, data, **options)


def dev_size(task) -> int | None:
    """How many dev items a task scores (None: a task without a data file)."""
    return len(task.data.items("dev")) if hasattr(task, "data") else None
