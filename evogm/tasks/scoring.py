"""The two ways a task reads a model: greedy text, or the log-likelihood of a few options.

Both split their work in two: a build step (tokenize, pad, batch) that a task caches per
(tokenizer, split), and a scoring step that only runs forward passes.

Options are scored in one forward pass per batch: the options' common token prefix is appended to
the prompt and the options are told apart by their first differing token (for " A" … " D" that is
the letter). This is the choice greedy decoding would make among them. An encoder-decoder (T5,
BART) reads the prompt with its encoder and the options' common prefix with its decoder
(`evogm.tasks.seq2seq`).

>>> # inputs = option_inputs(tok, ["2+2 is"], [[" 3", " 4"]], batch_size=64)
>>> # option_logprobs(model, inputs)          # (1, 2) log-probabilities
>>> # generate_texts(model, tok, encode_prompts(tok, ["2+2="], 64), max_new_tokens=4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from evogm.errors import EvogmError
from evogm.tasks import seq2seq
from evogm.tasks.batching import Batches, encode, left_pad, pad_id, scatter
from evogm.tasks.inference import SharedPrefix, choice_logprobs, greedy_generate, last_logits, stop_token_ids


def encode_prompts(tokenizer, prompts: list[str], batch_size: int) -> Batches:
    return left_pad(encode(tokenizer, prompts), batch_size, pad_id(tokenizer))


def generate_texts(model, tokenizer, batches: Batches, *, max_new_tokens: int,
                   stop: tuple[str, ...] = (), where: str = "generation") -> list[str]:
    """Greedy outputs in item order, cut at EOS and at the first stop string, stripped."""
    stop_ids = stop_token_ids(model, tokenizer)
    options = dict(max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id(tokenizer),
                   text_done=_stop_string_check(tokenizer, stop) if stop else None, where=where)
    if seq2seq.is_seq2seq(model):
        generated = [seq2seq.greedy_generate(model, b, **options)
                     for b in seq2seq.batches_for(model, batches, None, pad_id(tokenizer))]
    else:
        prefix = SharedPrefix.read(model, batches.prefix)
        generated = [greedy_generate(model, batch, prefix=prefix, **options) for batch in batches]
    outputs = [[_cut(text, stop) for text in _decode(tokenizer, ids, stop_ids)] for ids in generated]
    return scatter(batches, outputs)


def _decode(tokenizer, ids: torch.Tensor, stop_ids: set[int]) -> list[str]:
    rows = []
    for row in ids.tolist():
        end = next((k for k, token in enumerate(row) if token in stop_ids), len(row))
        rows.append(row[:end])
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


def _cut(text: str, stop: tuple[str, ...]) -> str:
    for s in stop:
        text = text.split(s, 1)[0]
    return text.strip()


def _stop_string_check(tokenizer, stop: tuple[str, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows whose latest tokens spell a stop string; only the tail is decoded (a stop is checked every step)."""
    width = max(len(s) for s in stop) + 1

    def check(tokens: torch.Tensor) -> torch.Tensor:  # (b, t) → (b,) bool
        tails = tokenizer.batch_decode(tokens[:, -width:].tolist(), skip_special_tokens=True)
        return torch.tensor([any(s in t for s in stop) for t in tails], device=tokens.device)

    return check


@dataclass(frozen=True)
class OptionInputs:
    """Prompts extended by their options' common prefix, and each option's distinguishing token."""

    batches: Batches
    candidates: list[torch.Tensor]  # per batch: (b, K) token ids, −1 where an item has fewer options
    width: int  # K
    tails: list[int] | None = None  # per item: how many of its last tokens are the options' common prefix
    pad_id: int = 0


def option_inputs(tokenizer, prompts: list[str], options: list[list[str]], batch_size: int) -> OptionInputs:
    """Per item: prompt ids + the options' common prefix, and the option tokens that follow it."""
    prompt_ids = encode(tokenizer, prompts)
    splits = _option_splits(tokenizer, options)
    width = max((len(opts) for opts in options), default=0)
    sequences, tails, candidates = [], [], torch.full((len(prompts), width), -1, dtype=torch.long)
    for i, opts in enumerate(options):
        common, firsts = splits[tuple(opts)]
        sequences.append(prompt_ids[i] + common)
        tails.append(len(common))
        candidates[i, : len(firsts)] = torch.tensor(firsts)
    batches = left_pad(sequences, batch_size, pad_id(tokenizer))
    return OptionInputs(batches, [candidates[list(b.rows)] for b in batches], width, tails, pad_id(tokenizer))


def _option_splits(tokenizer, options: list[list[str]]) -> dict[tuple[str, ...], tuple[list[int], list[int]]]:
    unique = sorted({o for opts in options for o in opts})
    ids = dict(zip(unique, encode(tokenizer, unique, special_tokens=False)))
    return {opts: split_options(opts, [ids[o] for o in opts]) for opts in {tuple(o) for o in options}}


def split_options(texts: tuple[str, ...], ids: list[list[int]]) -> tuple[list[int], list[int]]:
    """(common token prefix, first token after it for each option); the latter must all differ."""
    n = 0
    while all(len(x) > n for x in ids) and len({x[n] for x in ids}) == 1:
        n += 1
    firsts = [x[n] if len(x) > n else None for x in ids]
    if None in firsts or len(set(firsts)) < len(firsts):
        raise EvogmError(f"options {list(texts)} cannot be told apart by one token",
                         "one option is a prefix of another or two start with the same token",
                         "use scoring: generate for this task")
    return ids[0][:n], firsts


def option_logprobs(model, inputs: OptionInputs, where: str = "log-likelihood scoring") -> np.ndarray:
    """(n, K) log-probability of each option's distinguishing token, −inf where an item has no such option."""
    if seq2seq.is_seq2seq(model):  # generators: one batch's (b, V) logits alive at a time
        batches = seq2seq.batches_for(model, inputs.batches, inputs.tails, inputs.pad_id)
        logits = (seq2seq.decoder_logits(model, batch, where) for batch in batches)
    else:
        prefix = SharedPrefix.read(model, inputs.batches.prefix)
        logits = (last_logits(model, batch, prefix, where) for batch in inputs.batches)
    out = [list(choice_logprobs(values, candidates).cpu().numpy()) for values, candidates in zip(logits, inputs.candidates)]
    return np.stack(scatter(inputs.batches, out)) if out else np.zeros((0, inputs.width))
