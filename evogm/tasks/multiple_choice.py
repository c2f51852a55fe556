"""Multiple choice: the paper's prompt, scored by the letters' log-likelihood or by generation + parsing.

Items: `{"question": str, "choices": {"A": str, ...} or [str, ...], "answer": "B" or 1}`.
`scoring: loglik` (default) reads the next-token log-probabilities of " A", " B", … after the
prompt in one forward pass; `scoring: generate` decodes greedily and parses the letter as the
paper's reference implementation does.

>>> # task = load_task({"path": "mmlu.json", "scoring": "generate", "limit": 50})
>>> # task.evaluate(model, tokenizer, "dev")     # {'accuracy': 0.62}
"""

from __future__ import annotations

import numpy as np

from evogm.errors import EvogmError
from evogm.tasks.data import (LETTERS, EncodingCache, TaskData, check_items, choice_answer, choice_options,
                              prompt_text)
from evogm.tasks.prompts import MULTIPLE_CHOICE, answer_separator, fewshot_prefix, render
from evogm.tasks.text import parse_choice

SCORINGS = ("loglik", "generate")
ITEM_RULES = {"question": prompt_text, "choices": choice_options, "answer": choice_answer}  # checked in this order


def as_choice_item(item: dict) -> dict:
    """Choices as an ordered {letter: text} dict and the answer as a letter (the item passed
    `check_items` with `ITEM_RULES`)."""
    choices = item["choices"]
    if isinstance(choices, list):
        choices = dict(zip(LETTERS, choices))
    choices = {letter: str(option) for letter, option in choices.items()}
    answer = item["answer"]
    if isinstance(answer, int) and not isinstance(answer, bool):
        answer = list(choices)[answer]
    return {**item, "choices": choices, "answer": answer}


class MultipleChoiceTask:
    """Accuracy on multiple-choice questions."""

    primary = "accuracy"
    per_item = True  # the metric is a mean over items: a slice of dev can be scored alone

    def __init__(self, name: str, data: TaskData, *, weight: float = 1.0, scoring: str = "loglik",
                 template: str = MULTIPLE_CHOICE, fewshot: str | list[dict] | None = None,
                 batch_size: int = 200, max_new_tokens: int = 10, stop: list[str] | None = None):
        if scoring not in SCORINGS:
            raise EvogmError(f"task {name}: unknown scoring {scoring!r}", f"expected one of {SCORINGS}",
                             "use scoring: loglik or generate")
        self.name, self.data, self.weight, self.scoring = name, data, float(weight), scoring
        self.template, self.batch_size, self.max_new_tokens = template, int(batch_size), int(max_new_tokens)
        self.stop = tuple(stop or ())
        self.prefix = fewshot_prefix(fewshot if fewshot is not None else data.extras.get("icl_prompt"), template)
        check_items(name, data, ITEM_RULES)
        self._items = {split: [as_choice_item(item) for item in data.items(split)] for split in data.filled}
        self._cache = EncodingCache()

    def items(self, split: str) -> list[dict]:
        return self._items[split] if split in self._items else self.data.items(split)  # the latter raises

    def prompts(self, split: str) -> list[str]:
        return [self.prefix + render(self.template, item) for item in self.items(split)]

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]:
        correct = self.outcomes(model, tokenizer, split)
        return {"accuracy": float(np.mean(correct)) if correct else 0.0}

    def outcomes(self, model, tokenizer, split: str) -> list[bool]:
        """Whether each item was answered correctly (accuracy is their mean)."""
        letters, _ = self.predict(model, tokenizer, split)
        return [letter == item["answer"] for letter, item in zip(letters, self.items(split))]

    def predict(self, model, tokenizer, split: str) -> tuple[list[str], list[str]]:
        """(chosen letter, the model's answer text) per item; the text is the letter under loglik."""
        from evogm.tasks.scoring import generate_texts
        if self.scoring == "loglik":
            letters = self._choose_by_loglik(model, tokenizer, split)
            return letters, letters
        batches = self._cache.get(tokenizer, split, self._encode)
        texts = generate_texts(model, tokenizer, batches, max_new_tokens=self.max_new_tokens, stop=self.stop,
                               where=f"task {self.name}")
        return [parse_choice(t, list(x["choices"]), x["choices"]) for t, x in zip(texts, self.items(split))], texts

    def _encode(self, tokenizer, split: str):
        from evogm.tasks.scoring import encode_prompts
        return encode_prompts(tokenizer, self.prompts(split), self.batch_size)

    def _choose_by_loglik(self, model, tokenizer, split: str) -> list[str]:
        from evogm.tasks.scoring import option_logprobs
        inputs = self._cache.get(tokenizer, split, self._option_inputs)
        scores = option_logprobs(model, inputs, where=f"task {self.name}")  # (n, K)
        return [list(item["choices"])[k] for k, item in zip(scores.argmax(axis=1), self.items(split))]

    def _option_inputs(self, tokenizer, split: str):
        from evogm.tasks.scoring import option_inputs
        prompts = self.prompts(split)
        items = self.items(split)
        options = [[answer_separator(p) + letter for letter in item["choices"]] for p, item in zip(prompts, items)]
        return option_inputs(tokenizer, prompts, options, self.batch_size)
