"""lm-eval's greedy generate_until requests on evogm's own decoding loop.

lm-eval's HFLM keeps its batching, tokenization, decoding of the output, stop-sequence cutting,
filters and metrics; only its `_model_generate` (a call to transformers' `generate` with a
stop-string criterion that decodes every row at every step) is replaced, where the request is plain
greedy decoding, by a KV-cached argmax loop on the model's forward (`evogm.tasks.inference`). The
tokens are transformers' own greedy tokens: the same forward on the same inputs, argmax of the last
logits, the same EOS ids and padding after EOS. A row's stop strings are looked for only when it
emits a token whose text holds a stop string's last character (a table over the vocabulary, made
once per stop list); decoding ends when every row has a stop string or an EOS, or at the length
transformers would stop at. Text past a row's first stop string is cut by lm-eval, so where the
loop ends changes no output.

Anything else (sampling, beams, a penalty or other logits processor in the model's generation
config, a non-special pad token, an empty stop string, thinking tokens, mixed precision, a stop
string that a special token's text holds) goes to transformers' `generate`, as lm-eval would do it.

>>> # route_greedy(lm)           # lm: lm-eval's HFLM over the resident model
>>> # lm.generate_until(requests)  # the same strings as before, without transformers' generate
"""

from __future__ import annotations

import torch

from evogm.tasks.batching import Batch
from evogm.tasks.inference import _cache_of, prefill

# generation-config fields that leave greedy decoding plain (sampling knobs are ignored when not sampling)
PLAIN = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "do_sample", "temperature",
         "top_p", "top_k", "min_p", "typical_p", "max_length", "max_new_tokens", "use_cache",
         "transformers_version", "_from_model_config", "output_attentions", "output_hidden_states"}
REQUEST = {"attention_mask", "do_sample", "temperature", "top_p", "top_k"}  # what a greedy lm-eval request passes


def route_greedy(lm) -> None:
    """Send `lm`'s greedy `_model_generate` calls through `greedy_until`; all others to transformers."""
    generate, tables, counts = lm._model_generate, {}, {"greedy": 0, "transformers": 0}
    lm.evogm_generate_calls = counts  # how many batches took which road
    plain = plain_config(lm.model.generation_config)  # the resident model's: read once (a deep copy per read)

    def model_generate(context, max_length: int, stop: list[str], **kwargs):
        if not plain_greedy(lm, stop, kwargs, plain):
            counts["transformers"] += 1
            return generate(context, max_length, stop, **kwargs)
        try:
            tokens = greedy_until(lm, context, kwargs["attention_mask"], stop, tables,
                                  max_new_tokens(lm.model, context.shape[1], max_length))
        except SpecialStop:
            counts["transformers"] += 1
            return generate(context, max_length, stop, **kwargs)
        counts["greedy"] += 1
        return torch.cat([context, tokens.to(context.device)], dim=1)

    lm._model_generate = model_generate


def plain_greedy(lm, stop: list[str], kwargs: dict, plain: bool) -> bool:
    """Whether transformers' generate would run plain greedy decoding for this request (`plain`: the
    model's generation config is plain, see `plain_config`)."""
    sampled = kwargs.get("do_sample")
    if sampled or (sampled is None and kwargs.get("temperature", 0.0) != 0.0) or not set(kwargs) <= REQUEST:
        return False
    autocast = getattr(lm, "mixed_precision_dtype", None) is not None
    if "attention_mask" not in kwargs or lm.backend != "causal" or autocast:
        return False  # an lm-eval that passes no mask, a seq2seq model, autocast: transformers' road
    tokenizer = lm.tokenizer
    special = tokenizer.pad_token_id is not None and tokenizer.pad_token_id in tokenizer.all_special_ids
    return plain and special and all(stop) and getattr(lm, "think_end_token", None) is None


def plain_config(config) -> bool:
    """No logits processor or beams in a generation config (its sampling knobs act only when a request
    samples, and a greedy request says it does not)."""
    return set(config.to_diff_dict()) <= PLAIN


def max_new_tokens(model, context_length: int, max_length: int) -> int:
    """transformers' length rule: the generation config's `max_new_tokens` wins over `max_length`."""
    configured = model.generation_config.max_new_tokens
    return int(configured) if configured is not None else max_length - context_length


def eos_ids(config) -> set[int]:
    """The ids transformers' generate stops a row at: the generation config's, and no others."""
    ids = config.eos_token_id
    return set() if ids is None else {int(ids)} if isinstance(ids, int) else {int(i) for i in ids}


def last_char_tokens(tokenizer, stop: list[str]) -> tuple[frozenset[int], int]:
    """(tokens whose text may end a stop string, the vocabulary's size): a token that holds a stop
    string's last character, or is part of a character split over several tokens. (Ids past the
    tokenizer's vocabulary may be anything: `Ended` looks at them too.)"""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
    ends = {s[-1] for s in stop}
    return frozenset(i for i, text in enumerate(texts) if "\ufffd" in text or any(c in text for c in ends)), len(texts)


@torch.inference_mode()
def greedy_until(lm, context: torch.Tensor, mask: torch.Tensor, stop: list[str], tables: dict,
                 max_new_tokens: int) -> torch.Tensor:
    """(b, ≤ max_new_tokens) greedy tokens after each left-padded context; rows that hit an EOS are
    padded, rows whose text has a stop string go on until every row is one or the other. `tables`
    keeps each stop list's `last_char_tokens`."""
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out, step = prefill(lm.model, Batch((), context, mask, positions), steps=max_new_tokens)
    if tuple(stop) not in tables:
        tables[tuple(stop)] = last_char_tokens(lm.tokenizer, stop)
    ended, best = Ended(lm, stop, tables[tuple(stop)], context.shape[0]), []
    for index in range(max_new_tokens):
        value, token = ended.padded(*out.logits[:, -1].max(-1))  # max's index: argmax's, the first of ties
        best.append(value)
        if ended.update(token.tolist()) or index + 1 == max_new_tokens:
            break
        out = step(token, _cache_of(out))
    if not bool(torch.isfinite(torch.stack(best)).all()):  # a NaN or inf anywhere in a row is its max
        raise FloatingPointError("non-finite logits in lm-eval generation")
    return torch.tensor(ended.tokens, dtype=torch.long)


class SpecialStop(Exception):
    """A special token's text holds a stop string: lm-eval's output drops the token, so where
    transformers' stopping rule ends the batch decides the text. That batch goes to transformers."""


class Ended:
    """Each row's tokens so far, and which rows have emitted an EOS or have a stop string in their text.

    A row's text is decoded (as lm-eval decodes it) only when its newest token may end a stop string.
    """

    def __init__(self, lm, stop: list[str], look: tuple[frozenset[int], int], rows: int):
        self.eos_ids = eos_ids(lm.model.generation_config)
        self.lm, self.stop, (self.look, self.known), self.pad = lm, stop, look, lm.tokenizer.pad_token_id
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.eos, self.text, self.mask, self.changed = [False] * rows, [False] * rows, None, False

    def padded(self, value: torch.Tensor, token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's (max logit, token) per row, with rows past their EOS set to (0, pad) as transformers does."""
        if self.changed:  # a row emitted an EOS at the last step
            self.mask, self.changed = torch.tensor(self.eos, device=value.device), False
        if self.mask is None:
            return value, token
        return value.masked_fill(self.mask, 0.0), token.masked_fill(self.mask, self.pad)

    def update(self, ids: list[int]) -> bool:
        """Take the newest token of every row in; True when every row has ended."""
        for row, token in enumerate(ids):
            self.tokens[row].append(token)
            if self.eos[row]:
                continue
            if token in self.eos_ids:
                self.eos[row] = self.changed = True
            elif not self.text[row] and (token in self.look or token >= self.known):
                self.text[row] = self.has_stop(self.tokens[row])
        return all(e or t for e, t in zip(self.eos, self.text))

    def has_stop(self, tokens: list[int]) -> bool:
        """Whether the row's text, as lm-eval decodes it, holds a stop string (SpecialStop where only
        its text with special tokens does)."""
        if any(s in self.lm.tok_decode(tokens) for s in self.stop):
            return True
        if any(s in self.lm.tok_decode(tokens, skip_special_tokens=False) for s in self.stop):
            raise SpecialStop(self.stop)
        return False
