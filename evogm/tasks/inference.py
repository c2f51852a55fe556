"""Forward passes over left-padded batches: next-token logits and KV-cached greedy generation.

Written on the model's own forward (no `generate`): one prefill, then one token per step with the
cache, stopping as soon as every row has produced a stop token. A prefix that every prompt shares
is run once per evaluation (`SharedPrefix`) and its keys and values are reused by every batch. On a
CPU a long batch is read and generated a few rows at a time, to bound memory (same tokens).
Non-finite logits raise FloatingPointError, which the objective records as a failed evaluation.

>>> # prefix = SharedPrefix.read(model, batches.prefix)
>>> # ids = greedy_generate(model, batches[0], prefix=prefix, max_new_tokens=8, stop_ids={eos}, pad_id=0)  # (b, ≤8)
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Callable

import torch

from evogm.tasks.batching import Batch


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@lru_cache(maxsize=None)
def _keeps_last_logits(model_type: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_type.forward).parameters


@lru_cache(maxsize=None)
def _cache_keyword(model_type: type) -> str:
    """The forward's keyword for the KV cache: `cache` in current transformers, `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


def _with_cache(model, cache) -> dict:
    return {_cache_keyword(type(model)): cache}


def _cache_of(out):
    """The KV cache a forward returned (`cache`, or `past_key_values` in older transformers)."""
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def _prefill_kwargs(model) -> dict:
    # Only the last position's logits are needed: (b, 1, V) instead of (b, L, V), which for a 150k
    # vocabulary is most of the prefill's memory.
    return {"logits_to_keep": 1} if _keeps_last_logits(type(model)) else {}


class SharedPrefix:
    """The keys and values of the token prefix all prompts share, read once for the current weights.

    Batches then run only their own tokens on top of it: the attention mask is the prefix's ones
    followed by the batch's own (left-padded) mask. Models whose cache is not a plain DynamicCache
    get the prefix prepended to every row instead (same result, no saving).
    """

    def __init__(self, ids: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]] | None, config):
        self.ids, self.config = ids, config
        self.layers = layers  # per layer: keys and values, (1, heads, P, head_dim) each

    @classmethod
    @torch.inference_mode()
    def read(cls, model, ids: torch.Tensor) -> "SharedPrefix | None":
        if ids.numel() == 0:
            return None
        ids = ids.to(model_device(model))
        out = model(input_ids=ids[None], use_cache=True, **_prefill_kwargs(model))
        return cls(ids, _plain_layers(_cache_of(out)), model.config)

    def __len__(self) -> int:
        return self.ids.numel()

    def inputs(self, batch: Batch, model) -> dict:
        """Keyword arguments of the batch's forward on top of the prefix."""
        b = batch.input_ids.shape[0]
        mask = torch.cat([batch.attention_mask.new_ones(b, len(self)), batch.attention_mask], dim=1)
        if self.layers is None:
            ids = torch.cat([self.ids.expand(b, -1), batch.input_ids], dim=1)
            positions = torch.cat([torch.arange(len(self), device=ids.device).expand(b, -1), batch.position_ids], dim=1)
            return {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        from transformers import DynamicCache

        # expand() is a view: the cache's first update concatenates, so the prefix is copied once per batch
        cache = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in self.layers],
                             config=self.config)
        return {"input_ids": batch.input_ids, "attention_mask": mask, "position_ids": batch.position_ids,
                **_with_cache(model, cache)}


def _plain_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per-layer (keys, values) of a plain DynamicCache; None for any other cache (sliding, hybrid…)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _batch_inputs(model, batch: Batch, prefix: SharedPrefix | None) -> dict:
    if prefix is None:
        return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                "position_ids": batch.position_ids}
    return prefix.inputs(batch, model)


def check_finite(logits: torch.Tensor, where: str) -> None:
    if not torch.isfinite(logits).all():
        raise FloatingPointError(f"non-finite logits in {where}")


@torch.inference_mode()
def last_logits(model, batch: Batch, prefix: SharedPrefix | None = None, where: str = "forward pass") -> torch.Tensor:
    """Next-token logits after each prompt: (b, V) float32."""
    batch = batch.to(model_device(model))
    out = model(**_batch_inputs(model, batch, prefix), use_cache=prefix is not None and prefix.layers is not None,
                **_prefill_kwargs(model))
    logits = out.logits[:, -1].float()
    check_finite(logits, where)
    return logits


def choice_logprobs(logits: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Log-probability of each candidate token: (b, V) logits, (b, K) ids with −1 for none → (b, K)."""
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(1, candidates.clamp(min=0).to(logits.device))
    return picked.masked_fill(candidates.to(logits.device) < 0, float("-inf"))


def stop_token_ids(model, tokenizer) -> set[int]:
    """EOS ids from the generation config and the tokenizer."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if source is not None:
            ids.update([source] if isinstance(source, int) else source)
    return ids


@torch.inference_mode()
def greedy_generate(
    model,
    batch: Batch,
    *,
    prefix: SharedPrefix | None = None,
    max_new_tokens: int,
    stop_ids: set[int],
    pad_id: int,
    text_done: Callable[[torch.Tensor], torch.Tensor] | None = None,
    where: str = "generation",
) -> torch.Tensor:
    """Greedy continuation of each prompt: (b, T ≤ max_new_tokens) ids, `pad_id` after a row stops.

    A row stops at a token in `stop_ids` (kept in the output) or when `text_done(tokens_so_far)`
    says so; the loop ends when every row has stopped. On a CPU, a batch whose cache would pass
    GENERATION_TOKENS is generated a few rows at a time (same tokens).
    """
    outs = []
    for rows in _row_groups(batch, (len(prefix) if prefix is not None else 0) + max_new_tokens, model):
        out, step = prefill(model, rows, prefix, steps=max_new_tokens)
        outs.append(greedy_loop(out, step, max_new_tokens=max_new_tokens, stop_ids=stop_ids, pad_id=pad_id,
                                text_done=text_done, where=where))
        del out, step  # this group's cache, before the next group's
    if len(outs) == 1:  # the usual case (every GPU batch): no copy
        return outs[0]
    width = max(ids.shape[1] for ids in outs)  # a group whose rows all stopped early is padded after them
    return torch.cat([torch.nn.functional.pad(ids, (0, width - ids.shape[1]), value=pad_id) for ids in outs])


# Most cached tokens (rows × (prefix + prompt + new tokens)) one generation holds on a CPU (more are
# generated in groups of rows). Each step copies the cache, so its peak is twice its size: 10 prompts
# behind a 1,900-token few-shot prefix at Qwen2.5-0.5B shape hold 0.66 GB, 1.3 GB at a step's peak.
GENERATION_TOKENS = {"cpu": 8192}


def _row_groups(batch: Batch, extra: int, model) -> list[Batch]:
    """The batch in groups of rows whose cache (width + extra tokens a row) stays in the budget."""
    budget = GENERATION_TOKENS.get(model_device(model).type)
    rows, per_row = batch.input_ids.shape[0], batch.input_ids.shape[1] + extra
    if budget is None or rows * per_row <= budget:
        return [batch]
    n = max(1, budget // per_row)
    return [_rows(batch, start, start + n) for start in range(0, rows, n)]


@torch.inference_mode()
def prefill(model, batch: Batch, prefix: SharedPrefix | None = None, steps: int = 0) -> tuple:
    """(the prompts' forward output, `step(token, cache)`: the forward of one more token per row, at
    most `steps` times; their attention masks and positions are made here, once)."""
    batch = batch.to(model_device(model))
    inputs = _batch_inputs(model, batch, prefix)
    mask, positions = inputs["attention_mask"], inputs["position_ids"]
    width, taken = mask.shape[1], 0
    masks = torch.cat([mask, mask.new_ones(mask.shape[0], steps)], dim=1)
    ahead = positions[:, -1:] + torch.arange(1, steps + 1, device=positions.device)

    def step(token: torch.Tensor, past):  # called inside inference mode, as greedy_generate and greedy_until run
        nonlocal taken
        if taken == steps:
            raise IndexError(f"prefill made room for {steps} steps")
        taken += 1
        return model(input_ids=token[:, None], attention_mask=masks[:, :width + taken],
                     position_ids=ahead[:, taken - 1:taken], **_with_cache(model, past), use_cache=True)

    return _prompts_forward(model, batch, prefix, inputs), step


# Most prompt tokens one prefill forward takes on a CPU (more are read a few rows at a time, caches
# joined): 10 prompts of 636 tokens through a Qwen2.5-0.5B take 0.8 GB of activations at once.
PREFILL_TOKENS = {"cpu": 2048}


def _prompts_forward(model, batch: Batch, prefix: SharedPrefix | None, inputs: dict):
    """The prompts' forward with a cache: in one pass, or in row chunks of at most PREFILL_TOKENS
    tokens whose caches are joined (a plain DynamicCache only; others in one pass)."""
    kwargs = dict(use_cache=True, **_prefill_kwargs(model))
    budget = PREFILL_TOKENS.get(batch.input_ids.device.type)
    rows, width = batch.input_ids.shape
    if budget is None or rows * width <= budget or rows == 1:
        return model(**inputs, **kwargs)
    logits, chunks, n = [], [], max(1, budget // width)
    for start in range(0, rows, n):
        out = model(**_batch_inputs(model, _rows(batch, start, start + n), prefix), **kwargs)
        layers = _plain_layers(_cache_of(out))
        if layers is None:  # a cache that cannot be joined row-wise: the whole batch at once
            return model(**inputs, **kwargs)
        logits.append(out.logits)
        chunks.append(layers)
    del out  # the chunks' tensors are now held by `chunks` alone, and freed layer by layer as joined
    return _Joined(torch.cat(logits), _join(chunks, model.config))


def _rows(batch: Batch, start: int, end: int) -> Batch:
    return Batch(batch.rows[start:end], batch.input_ids[start:end], batch.attention_mask[start:end],
                 batch.position_ids[start:end])


def _join(chunks: list[list[tuple[torch.Tensor, torch.Tensor]]], config):
    """One DynamicCache of the chunks' rows; each layer's chunk tensors are freed once joined."""
    from transformers import DynamicCache

    joined = []
    for layer in range(len(chunks[0])):
        parts = [chunk[layer] for chunk in chunks]
        for chunk in chunks:
            chunk[layer] = None
        joined.append((torch.cat([k for k, _ in parts]), torch.cat([v for _, v in parts])))
    return DynamicCache(joined, config=config)


class _Joined:
    """A forward output made of row chunks: the logits and the cache, as greedy_loop reads them."""

    def __init__(self, logits: torch.Tensor, cache):
        self.logits, self.cache, self.past_key_values = logits, cache, cache


def _finite_rows(logits: torch.Tensor) -> torch.Tensor:
    """Whether each row is finite: its largest and smallest values are (nan propagates through both).
    Two reductions instead of `isfinite(logits).all(-1)`, whose (b × vocabulary) temporaries cost a
    150k-token vocabulary's decoding step more than its argmax.

    >>> _finite_rows(torch.tensor([[0.0, 1.0], [float("nan"), 1.0], [0.0, -float("inf")]])).tolist()
    [True, False, False]
    """
    return logits.amax(-1).isfinite() & logits.amin(-1).isfinite()


def greedy_loop(out, step: Callable, *, max_new_tokens: int, stop_ids: set[int], pad_id: int,
                text_done: Callable[[torch.Tensor], torch.Tensor] | None = None,
                where: str = "generation") -> torch.Tensor:
    """Greedy decoding from a first forward's output `out`; `step(token, cache)` runs the next.

    Returns (b, T ≤ max_new_tokens) ids, `pad_id` after a row stops (see `greedy_generate`).
    """
    rows, device = out.logits.shape[0], out.logits.device
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    bad = torch.zeros_like(done)
    tokens: list[torch.Tensor] = []
    for index in range(max_new_tokens):
        logits = out.logits[:, -1]
        bad |= ~_finite_rows(logits) & ~done
        token = logits.argmax(-1).masked_fill(done, pad_id)  # (b,)
        tokens.append(token)
        done |= torch.isin(token, stops)
        if text_done is not None:
            done |= text_done(torch.stack(tokens, 1))
        if bool(done.all()) or index + 1 == max_new_tokens:
            break
        out = step(token, _cache_of(out))
    if bool(bad.any()):
        raise FloatingPointError(f"non-finite logits in {where}")
    return torch.stack(tokens, 1) if tokens else torch.zeros((rows, 0), dtype=torch.long, device=device)
