"""The zoo's training loop: documents packed into fixed-length blocks, AdamW, next-token loss.

A document is (prompt, answer); it is tokenized as <bos> prompt answer <eos>. `answer_only`
puts the loss on the answer and <eos> alone (fine-tuning); otherwise on every token
(pretraining). Deterministic for a given seed and thread count.

>>> from evogm.zoo.tokenizer import build_tokenizer
>>> ids, mask = pack([("Repeat: ab\\nAnswer:", " ab")], build_tokenizer(), answer_only=True)
>>> int(mask.sum())  # " ", "a", "b", <eos>
4
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

Document = tuple[str, str]


def pack(docs: list[Document], tokenizer, answer_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate documents into one stream of token ids (L,) and a loss mask (L,)."""
    ids: list[int] = []
    mask: list[int] = []
    for prompt, answer in docs:
        p = tokenizer(prompt).input_ids  # <bos> + prompt
        a = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids += p + a
        mask += [0 if answer_only else 1] * len(p) + [1] * len(a)
    return torch.tensor(ids), torch.tensor(mask, dtype=torch.bool)


def blocks(ids: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the stream into (n, length) blocks; the tail that does not fill a block is dropped."""
    n = ids.numel() // length
    return ids[: n * length].view(n, length), mask[: n * length].view(n, length)


def train(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch: int,
    seed: int,
    log: Callable[[str], None] = lambda s: None,
    penalty: Callable[[torch.nn.Module, torch.Generator], torch.Tensor] | None = None,
) -> float:
    """Train `model` for `steps` batches drawn from the blocks (n, T); returns the last loss.
    `penalty(model, generator)`, if given, is added to every step's loss."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _warmup_cosine(s, steps))
    model.train()
    start, loss_value = time.perf_counter(), float("nan")
    for step in range(steps):
        rows = torch.randint(0, ids.shape[0], (batch,), generator=generator)
        loss = next_token_loss(model, ids[rows], mask[rows])
        if penalty is not None:
            loss = loss + penalty(model, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        loss_value = loss.item()
        if (step + 1) % max(1, steps // 4) == 0:
            log(f"step {step + 1}/{steps} loss {loss_value:.3f} ({time.perf_counter() - start:.0f}s)")
    model.eval()
    return loss_value


def next_token_loss(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting ids[:, 1:] where mask[:, 1:] is set. ids, mask: (B, T)."""
    logits = model(input_ids=ids[:, :-1]).logits  # (B, T-1, V)
    target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)


def _warmup_cosine(step: int, steps: int) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return (step + 1) / warm
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
