"""Tokenize once, pad left, batch by length; cache the result per (tokenizer, split).

Every candidate of a search is scored on the same prompts, so a task tokenizes its split once and
keeps the padded tensors: an evaluation then only runs forward passes. The token prefix that every
prompt shares (an instruction, few-shot examples) is kept apart, so that the model reads it once
per evaluation instead of once per item.

>>> batches = left_pad([[5, 6, 7], [8], [9, 10]], batch_size=2, pad_id=0)
>>> [b.rows for b in batches], batches[0].input_ids.tolist(), batches[0].position_ids.tolist()
([(1, 2), (0,)], [[0, 8], [9, 10]], [[0, 0], [0, 1]])
>>> scatter(batches, [["b", "c"], ["a"]])
['a', 'b', 'c']
>>> shared = left_pad([[1, 2, 3, 4], [1, 2, 3, 5, 6]], batch_size=8, pad_id=0, min_prefix=2)
>>> shared.prefix.tolist(), shared[0].input_ids.tolist(), shared[0].position_ids.tolist()
([1, 2, 3], [[0, 4], [5, 6]], [[3, 3], [3, 4]])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth a separate pass


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


@dataclass(frozen=True)
class Batches:
    """A task's prompts: the token prefix they all share, and the rest in left-padded batches."""

    batches: list[Batch]
    prefix: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (P,)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __getitem__(self, index: int) -> Batch:
        return self.batches[index]

    def __len__(self) -> int:
        return len(self.batches)


def left_pad(sequences: list[list[int]], batch_size: int, pad_id: int, min_prefix: int = MIN_SHARED_PREFIX) -> Batches:
    """Split off the shared prefix, sort by length (less padding), cut into batches, pad each on the left."""
    n = shared_length(sequences)
    n = n if n >= min_prefix else 0
    prefix = torch.tensor(sequences[0][:n] if n else [], dtype=torch.long)
    rest = [seq[n:] for seq in sequences]
    order = sorted(range(len(rest)), key=lambda i: len(rest[i]))
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return Batches([_pad(rows, rest, pad_id, n) for rows in chunks], prefix)


def shared_length(sequences: list[list[int]]) -> int:
    """Length of the common prefix, leaving every sequence at least one token of its own."""
    if len(sequences) < 2:
        return 0
    shortest = min(len(seq) for seq in sequences) - 1
    n = 0
    while n < shortest and all(seq[n] == sequences[0][n] for seq in sequences):
        n += 1
    return n


def _pad(rows: list[int], sequences: list[list[int]], pad_id: int, offset: int = 0) -> Batch:
    width = max(len(sequences[i]) for i in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(sequences[i])
        if n:
            ids[r, width - n :] = torch.tensor(sequences[i], dtype=torch.long)
            mask[r, width - n :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0) + offset  # after the shared prefix's `offset` tokens
    return Batch(tuple(rows), ids, mask, positions)


def scatter(batches: Batches | list[Batch], values: list[list[Any]]) -> list[Any]:
    """Per-batch results back in item order."""
    out: list[Any] = [None] * sum(len(b.rows) for b in batches)
    for batch, batch_values in zip(batches, values):
        for row, value in zip(batch.rows, batch_values):
            out[row] = value
    return out


