"""Tokenize once, pad left, batch by length; cache the result per (tokenizer, split).

Every candidate of a search is scored on the same prompts, so a task tokenizes its split once and
keeps the padded tensors: an evaluation then only runs forward passes.

>>> batches = left_pad([[5, 6, 7], [8], [9, 10]], batch_size=2, pad_id=0)
>>> [b.rows for b in batches], batches[0].input_ids.tolist(), batches[0].position_ids.tolist()
([(1, 2), (0,)], [[0, 8], [9, 10]], [[0, 0], [0, 1]])
>>> scatter(batches, [["b", "c"], ["a"]])
['a', 'b', 'c']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class Batch:
    """Left-padded prompts; `rows` are the items' indices in the task's list."""

    rows: tuple[int, ...]
    input_ids: torch.Tensor  # (b, L) long, padding on the left
    attention_mask: torch.Tensor  # (b, L) long, 0 on padding
    position_ids: torch.Tensor  # (b, L) long, 0 at each row's first real token

    def to(self, device: torch.device) -> "Batch":
        if self.input_ids.device == device:
            return self
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(self.rows, move(self.input_ids), move(self.attention_mask), move(self.position_ids))


def encode(tokenizer, texts: list[str], *, special_tokens: bool = True) -> list[list[int]]:
    """Token ids of each text (with the tokenizer's BOS etc. when `special_tokens`)."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special_tokens)["input_ids"]]


def pad_id(tokenizer) -> int:
    """Any id works under a zero attention mask; prefer the tokenizer's own pad."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def left_pad(sequences: list[list[int]], batch_size: int, pad_id: int) -> list[Batch]:
    """Sort by length (less padding), cut into batches, pad each on the left."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    return [_pad(order[start : start + batch_size], sequences, pad_id) for start in range(0, len(order), batch_size)]


def _pad(rows: list[int], sequences: list[list[int]], pad_id: int) -> Batch:
    width = max(len(sequences[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(sequences[i])
        if n:
            ids[r, width - n :] = torch.tensor(sequences[i], dtype=torch.long)
            mask[r, width - n :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(tuple(rows), ids, mask, positions)


def scatter(batches: list[Batch], values: list[list[Any]]) -> list[Any]:
    """Per-batch results back in item order."""
    out: list[Any] = [None] * sum(len(b.rows) for b in batches)
    for batch, batch_values in zip(batches, values):
        for row, value in zip(batch.rows, batch_values):
            out[row] = value
    return out


class EncodingCache:
    """Memo of `build(tokenizer, split)` per (tokenizer, split); holds the tokenizer so its id stays unique."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[object, Any]] = {}

    def get(self, tokenizer, split: str, build: Callable[[Any, str], Any]) -> Any:
        key = (id(tokenizer), split)
        if key not in self._entries:
            self._entries[key] = (tokenizer, build(tokenizer, split))
        return self._entries[key][1]
