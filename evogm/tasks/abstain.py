"""AbstainQA: answer a multiple-choice question, then judge the own answer; "false" means abstain.

The paper's two-pass protocol. Pass 1 is a multiple-choice task (same items, prompt, scorers).
Pass 2 appends "Proposed answer: …" and asks "Is the proposed answer true or false?"; under
`scoring: generate` the model's text is searched for "false", under `scoring: loglik` the
probabilities of " true"/" True" and " false"/" False" are compared. The score is effective
reliability: (answered correctly − answered wrongly) / total.

>>> # task = load_task({"path": "mmlu.json", "type": "abstain"})
>>> # task.evaluate(model, tokenizer, "dev")     # {'effective_reliability': 0.12, 'accuracy': 0.55}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evogm.tasks.data import TaskData
from evogm.tasks.multiple_choice import MultipleChoiceTask
from evogm.tasks.prompts import REFLECTION, answer_separator
from evogm.tasks.text import effective_reliability, says_false

if TYPE_CHECKING:
    from evogm.tasks.scoring import OptionInputs

TRUE, FALSE = ("true", "True"), ("false", "False")
_MEMO_LIMIT = 100_000  # tokenized reflection prompts kept; the memo restarts past this many


class AbstainTask:
    """Effective reliability under the paper's self-reflection abstention."""

    primary = "effective_reliability"

    def __init__(self, name: str, data: TaskData, **options):
        self.answerer = MultipleChoiceTask(name, data, **options)  # pass 1, and the options' validation
        self.name, self.weight, self.data = name, self.answerer.weight, data
        self._memo: dict[tuple[str, int, str], list[int]] = {}  # (split, item, proposal) → prompt ids
        self._memo_tokenizer = None

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]:
        letters, proposals = self.answerer.predict(model, tokenizer, split)
        correct = [letter == item["answer"] for letter, item in zip(letters, self.answerer.items(split))]
        abstained = self.abstains(model, tokenizer, split, proposals)
        return {"effective_reliability": effective_reliability(correct, abstained),
                "accuracy": float(np.mean(correct)) if correct else 0.0}

    def abstains(self, model, tokenizer, split: str, proposals: list[str]) -> list[bool]:
        """Pass 2: does the model call its own proposal false?"""
        from evogm.tasks.batching import left_pad, pad_id
        from evogm.tasks.scoring import generate_texts, option_logprobs
        sequences = self._reflections(tokenizer, split, proposals)
        where = f"task {self.name} (reflection)"
        if self.answerer.scoring == "generate":
            batches = left_pad(sequences, self.answerer.batch_size, pad_id(tokenizer))
            texts = generate_texts(model, tokenizer, batches, max_new_tokens=self.answerer.max_new_tokens,
                                   stop=self.answerer.stop, where=where)
            return [says_false(text) for text in texts]
        scores = option_logprobs(model, self._verdict_inputs(tokenizer, sequences), where=where)  # (n, 4)
        p_true = np.logaddexp.reduce(scores[:, : len(TRUE)], axis=1)
        return list(np.logaddexp.reduce(scores[:, len(TRUE) :], axis=1) > p_true)

    def _reflections(self, tokenizer, split: str, proposals: list[str]) -> list[list[int]]:
        """Token ids of each pass-2 prompt, memoized: proposals repeat across candidates."""
        from evogm.tasks.batching import encode
        if tokenizer is not self._memo_tokenizer or len(self._memo) > _MEMO_LIMIT:
            self._memo, self._memo_tokenizer = {}, tokenizer
        keys = [(split, i, proposal) for i, proposal in enumerate(proposals)]
        missing = [key for key in dict.fromkeys(keys) if key not in self._memo]
        if missing:
            prompts = self.answerer.prompts(split)
            texts = [REFLECTION.format(prompt=prompts[i], proposal=p) for _, i, p in missing]
            self._memo.update(zip(missing, encode(tokenizer, texts)))
        return [self._memo[key] for key in keys]

    def _verdict_inputs(self, tokenizer, sequences: list[list[int]]) -> OptionInputs:
        import torch

        from evogm.tasks.batching import encode, left_pad, pad_id
        from evogm.tasks.scoring import OptionInputs, split_options
        verdicts = tuple(answer_separator(REFLECTION) + word for word in TRUE + FALSE)
        common, firsts = split_options(verdicts, encode(tokenizer, list(verdicts), special_tokens=False))
        batches = left_pad([s + common for s in sequences], self.answerer.batch_size, pad_id(tokenizer))
        candidates = torch.tensor(firsts)[None]  # (1, 4), the same verdicts for every item
        return OptionInputs(batches, [candidates.expand(len(b.rows), -1) for b in batches], len(firsts),
                            [len(common)] * len(sequences), pad_id(tokenizer))
