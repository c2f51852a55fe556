"""Exact match: greedy generation, answer extraction, normalization.

Items: `{"question": str, "answer": str}` (the answer may be a number: it is compared as text). The
prompt is the bare question (the paper's), or a template. `extract` picks the rule (see
`text.match`): `whole` (default), `contains` (the paper's exact match), `tail` (the paper's GSM8K
rule: the answer within the last `tail_words` words) or `last_number`. An answer the rule can never
match (no number under `last_number`, punctuation only once normalized) is refused at load.

>>> # task = load_task({"path": "gsm8k.json", "extract": "tail", "max_new_tokens": 200})
>>> # task.evaluate(model, tokenizer, "dev")     # {'accuracy': 0.41}
"""

from __future__ import annotations

import numpy as np

from evogm.errors import EvogmError
from evogm.tasks.data import EncodingCache, TaskData, check_items, matched_answer, prompt_text
from evogm.tasks.prompts import EXACT_MATCH, fewshot_prefix, render
from evogm.tasks.text import EXTRACT_MODES, match


class ExactMatchTask:
    """Accuracy of generated answers."""

    primary = "accuracy"
    per_item = True  # the metric is a mean over items: a slice of dev can be scored alone

    def __init__(self, name: str, data: TaskData, *, weight: float = 1.0, template: str = EXACT_MATCH,
                 fewshot: str | list[dict] | None = None, batch_size: int = 200, max_new_tokens: int = 32,
                 stop: list[str] | None = None, extract: str = "whole", normalize: bool = True, tail_words: int = 10):
        if extract not in EXTRACT_MODES:
            raise EvogmError(f"task {name}: unknown extract {extract!r}", f"expected one of {EXTRACT_MODES}",
                             "pick one of them")
        self.name, self.data, self.weight = name, data, float(weight)
        self.template, self.batch_size, self.max_new_tokens = template, int(batch_size), int(max_new_tokens)
        self.stop, self.extract = tuple(stop or ()), extract
        self.normalize, self.tail_words = bool(normalize), int(tail_words)
        self.prefix = fewshot_prefix(fewshot if fewshot is not None else data.extras.get("icl_prompt"), template)
        check_items(name, data, {"question": prompt_text, "answer": matched_answer(extract, self.normalize)})
        self._cache = EncodingCache()

    def prompts(self, split: str) -> list[str]:
        return [self.prefix + render(self.template, item) for item in self.data.items(split)]

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]:
        correct = self.outcomes(model, tokenizer, split)
        return {"accuracy": float(np.mean(correct)) if correct else 0.0}

    def outcomes(self, model, tokenizer, split: str) -> list[bool]:
        """Whether each item's answer matched (accuracy is their mean)."""
        outputs = self.generate(model, tokenizer, split)
        return [self.is_correct(out, item) for out, item in zip(outputs, self.data.items(split))]

    def generate(self, model, tokenizer, split: str) -> list[str]:
        from evogm.tasks.scoring import generate_texts
        batches = self._cache.get(tokenizer, split, self._encode)
        return generate_texts(model, tokenizer, batches, max_new_tokens=self.max_new_tokens, stop=self.stop,
                              where=f"task {self.name}")

    def _encode(self, tokenizer, split: str):
        from evogm.tasks.scoring import encode_prompts
        return encode_prompts(tokenizer, self.prompts(split), self.batch_size)

    def is_correct(self, output: str, item: dict) -> bool:
        return match(output, str(item["answer"]), extract=self.extract, normalized=self.normalize,
                     tail_words=self.tail_words)
