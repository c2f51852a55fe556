"""A reference-style evaluator: how the paper's kind of code switches and scores a candidate.

Switch: every expert's dense task vector τᵢ = sᵢ Bᵢ Aᵢ kept on the host, θ = θ₀ + Σ λᵢ τᵢ summed
there per tensor, then `load_state_dict` of the merge into the resident model. Scoring: each task's
prompts (the same text evogm reads) in left-padded batches of the task's batch size through
Hugging Face `generate` (greedy), multiple choice by generating and parsing the letter, AbstainQA in
two passes (answer, then "true or false?").

Ten dense task vectors of every layer's linear modules do not fit in a small host's memory (at
Qwen2.5-0.5B shape: 10 × 1.43 GB in float32), so `layers` keeps those of the first few layers
only; the switch's time is then scaled by (all layers / kept layers), and what the whole switch
would hold is computed, not measured. The report says which.

>>> ref = ReferenceSwitch(model, experts, layers=2)          # doctest: +SKIP
>>> ref(np.full(10, 0.3)); ref.scale                          # doctest: +SKIP
12.0
"""

from __future__ import annotations

import re

import numpy as np
import torch

from evogm.tasks.abstain import AbstainTask
from evogm.tasks.multiple_choice import MultipleChoiceTask
from evogm.tasks.prompts import REFLECTION
from evogm.tasks.text import parse_choice, says_false

_LAYER = re.compile(r"\.layers\.(\d+)\.")


class ReferenceSwitch:
    """θ₀ + Σ λ τ with dense τ on the host, one weighted sum per tensor, then load_state_dict."""

    def __init__(self, model: torch.nn.Module, experts: list, layers: int | None = None):
        self.model, self.n_layers = model, model.config.num_hidden_layers
        self.layers = self.n_layers if layers is None else min(layers, self.n_layers)
        keys = sorted(set().union(*(e.params for e in experts)))
        self.keys = [k for k in keys if int(_LAYER.search(k)[1]) < self.layers]
        state = model.state_dict()
        self.base = {k: state[k].detach().cpu().clone() for k in self.keys}
        self.vectors = [{k: e.dense(k).to(state[k].dtype).cpu() for k in self.keys} for e in experts]  # model dtype
        self.all_keys = len(keys)

    @property
    def scale(self) -> float:
        """Whole-model switch time / measured switch time (1 when every layer is kept)."""
        return self.all_keys / len(self.keys)

    def bytes_whole(self) -> int:
        """Host bytes a whole-model reference switch holds: θ₀ and every expert's dense τ of the touched tensors."""
        per_copy = sum(t.numel() * t.element_size() for t in self.base.values()) * self.scale
        return int(per_copy * (1 + len(self.vectors)))

    @torch.no_grad()
    def __call__(self, lam) -> torch.nn.Module:
        merged = {k: self.base[k] + sum(float(l) * tv[k] for l, tv in zip(lam, self.vectors)) for k in self.keys}
        self.model.load_state_dict(merged, strict=False)
        return self.model


def reference_score(model, tokenizer, tasks: dict, split: str = "dev") -> dict[str, float]:
    """Every task scored with HF generate; returns {task: share of items whose output parsed/matched}."""
    out = {}
    for name, task in tasks.items():
        if isinstance(task, AbstainTask):
            out[name] = _abstain(model, tokenizer, task, split)
        elif isinstance(task, MultipleChoiceTask):
            out[name] = _choice(model, tokenizer, task, split)[0]
        else:
            texts = generate(model, tokenizer, task.prompts(split), task.batch_size, task.max_new_tokens)
            answers = [str(item["answer"]) for item in task.data.items(split)]
            out[name] = float(np.mean([a in t for a, t in zip(answers, texts)]))
    return out


def _choice(model, tokenizer, task: MultipleChoiceTask, split: str) -> tuple[float, list[str], list[str]]:
    prompts, items = task.prompts(split), task.items(split)
    texts = generate(model, tokenizer, prompts, task.batch_size, task.max_new_tokens)
    letters = [parse_choice(t, list(i["choices"]), i["choices"]) for t, i in zip(texts, items)]
    accuracy = float(np.mean([letter == i["answer"] for letter, i in zip(letters, items)]))
    return accuracy, prompts, texts


def _abstain(model, tokenizer, task: AbstainTask, split: str) -> float:
    accuracy, prompts, texts = _choice(model, tokenizer, task.answerer, split)
    second = [REFLECTION.format(prompt=p, proposal=t) for p, t in zip(prompts, texts)]
    verdicts = generate(model, tokenizer, second, task.answerer.batch_size, task.answerer.max_new_tokens)
    return float(np.mean([says_false(v) for v in verdicts]))


@torch.inference_mode()
def generate(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy continuations, batch by batch in the given order, left padding."""
    texts = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(device)
        ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        texts += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return texts
