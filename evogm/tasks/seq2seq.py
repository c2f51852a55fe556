"""Encoder-decoder models (T5, BART): the prompt goes to the encoder, the answer comes out of the decoder.

A task builds its batches once, as for a causal LM (left-padded, the shared prefix split off). For an
encoder-decoder each row becomes its whole prompt again, padded on the right (BART's positions count
from the left edge), and the decoder starts from the model's decoder start token (and the token its
generation config forces first, as BART's `forced_bos_token_id`). For log-likelihood scoring, the tail
of each row that is the options' common prefix (`tails`) moves to the decoder, after that start, and
the options are told apart by the decoder's next token, as for a causal LM.

>>> from evogm.tasks.batching import left_pad
>>> rows = whole_rows(left_pad([[5, 6, 7], [8, 9]], batch_size=2, pad_id=0))[0]  # shortest first
>>> b = encoder_decoder_batch(rows, tails=[0, 1], start=[0], pad_id=3)
>>> b.input_ids.tolist(), b.decoder_input_ids.tolist(), b.last.tolist()
([[8, 9], [5, 6]], [[0, 3], [0, 7]], [0, 1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from evogm.tasks.batching import Batches


def is_seq2seq(model) -> bool:
    """Whether a model is an encoder-decoder (its config's `is_encoder_decoder`)."""
    return bool(getattr(model.config, "is_encoder_decoder", False))


def decoder_start(model) -> list[int]:
    """What every decoder input starts with: the decoder start token, then a forced first token if any."""
    config = getattr(model, "generation_config", None)
    start = getattr(config, "decoder_start_token_id", None)
    forced = getattr(config, "forced_bos_token_id", None)
    start = int(start if start is not None else model.config.decoder_start_token_id)
    return [start] if forced is None else [start, int(forced)]


@dataclass(frozen=True)
class EncoderDecoderBatch:
    """Right-padded encoder inputs and decoder inputs; `last` is each row's last decoder position."""

    input_ids: torch.Tensor  # (b, L)
    attention_mask: torch.Tensor  # (b, L)
    decoder_input_ids: torch.Tensor  # (b, T), the decoder start first
    last: torch.Tensor  # (b,)

    def to(self, device: torch.device) -> "EncoderDecoderBatch":
        return EncoderDecoderBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask,
                                                            self.decoder_input_ids, self.last)))


def whole_rows(batches: Batches) -> list[list[list[int]]]:
    """Per batch, per row: the prompt's token ids, shared prefix included, padding removed."""
    prefix = batches.prefix.tolist()
    return [[prefix + ids[mask.bool()].tolist() for ids, mask in zip(b.input_ids, b.attention_mask)]
            for b in batches]


def right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (b, longest row), padding on the right."""
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, : len(row)] = 1
    return ids, mask


def encoder_decoder_batch(rows: list[list[int]], tails: list[int], start: list[int], pad_id: int) -> EncoderDecoderBatch:
    """Each row's last `tails[i]` tokens go to the decoder after `start`, the rest to the encoder."""
    cut = [len(row) - tail for row, tail in zip(rows, tails)]
    ids, mask = right_pad([row[:c] for row, c in zip(rows, cut)], pad_id)
    decoder, _ = right_pad([start + row[c:] for row, c in zip(rows, cut)], pad_id)
    return EncoderDecoderBatch(ids, mask, decoder, torch.tensor(tails, dtype=torch.long) + len(start) - 1)


def batches_for(model, batches: Batches, tails: list[int] | None, pad_id: int) -> list[EncoderDecoderBatch]:
    """A task's batches as encoder-decoder batches (tails: per item, in item order; None for none).

    Built once per `batches` (and decoder start): the result is kept in the object's own
    `__dict__`, so it lives exactly as long as the task's cached batches.
    """
    start = decoder_start(model)
    memo = batches.__dict__.setdefault("_encoder_decoder", {})  # a frozen dataclass: no setattr, a plain dict
    key = (tuple(start), pad_id, tails is None)
    if key not in memo:
        memo[key] = []
        for batch, rows in zip(batches, whole_rows(batches)):
            row_tails = [tails[i] for i in batch.rows] if tails is not None else [0] * len(rows)
            memo[key].append(encoder_decoder_batch(rows, row_tails, start, pad_id))
    return memo[key]


@torch.inference_mode()
def decoder_logits(model, batch: EncoderDecoderBatch, where: str = "forward pass") -> torch.Tensor:
    """The decoder's next-token logits after each row's decoder inputs: (b, V) float32."""
    from evogm.tasks.inference import check_finite, model_device

    batch = batch.to(model_device(model))
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                decoder_input_ids=batch.decoder_input_ids, use_cache=False)
    logits = out.logits[torch.arange(len(batch.last), device=batch.last.device), batch.last].float()
    check_finite(logits, where)
    return logits


@torch.inference_mode()
def greedy_generate(model, batch: EncoderDecoderBatch, *, max_new_tokens: int, stop_ids: set[int], pad_id: int,
                    text_done: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    where: str = "generation") -> torch.Tensor:
    """Greedy decoder output of each prompt: (b, T ≤ max_new_tokens) ids, as `inference.greedy_generate`.

    The encoder runs once; the decoder reads the decoder start, then runs one token per step with its
    cache (a batch without option tails: every row's decoder input is that start alone).
    """
    from evogm.tasks.inference import _with_cache, greedy_loop, model_device

    batch = batch.to(model_device(model))
    encoded = model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def step(token: torch.Tensor, past):
        return model(encoder_outputs=encoded, attention_mask=batch.attention_mask, decoder_input_ids=token[:, None],
                     use_cache=True, **_with_cache(model, past))

    first = model(encoder_outputs=encoded, attention_mask=batch.attention_mask,
                  decoder_input_ids=batch.decoder_input_ids, use_cache=True)
    return greedy_loop(first, step, max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id,
                       text_done=text_done, where=where)
