"""Text-to-label tasks: GLUE in the text-to-text form FusionBench and the paper's Flan-T5 setting use.

Items: `{"input": str, "target": str}`: the input text is the prompt (a `template` over the item's
fields may wrap it) and the target is the word the model should generate ("acceptable",
"entailment", "yes") or, for a regression task such as STS-B, a number ("3.8"). The file may name
its closed label set and its metric: `{"labels": [...], "metric": "spearman", "dev": [...], "test":
[...]}` (else the targets of every split make up the labels, and the metric is accuracy); a task
spec's `labels` and `metric` override the file's.

- `metric: accuracy` (default): the normalized prediction equals the normalized target. With
  `scoring: loglik` (default) the prediction is the label whose distinguishing token the model
  finds most likely after the prompt (and the labels' common prefix), in one forward pass: the
  choice greedy decoding would make among the labels; `scoring: generate` decodes greedily and
  compares the generated word, as the paper does.
- `metric: spearman` (STS-B): the first number in each greedy output against the target's,
  Spearman's rank correlation over the split (an output without a number counts as `fallback`, 0.0 unless
  set); `parsed` is the share of outputs with a number. The label set is open, so it always generates.

>>> round(spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0]), 6)
0.8
>>> # task = load_task({"path": "glue/cola.json", "type": "label"})     # accuracy by log-likelihood
>>> # task = load_task({"path": "glue/stsb.json", "metric": "spearman"})
"""

from __future__ import annotations

import numpy as np

from evogm.errors import EvogmError
from evogm.tasks.data import EncodingCache, TaskData, answer_text, check_items, label_target, prompt_text
from evogm.tasks.prompts import answer_separator, render
from evogm.tasks.text import first_number, normalize

METRICS = ("accuracy", "spearman")
SCORINGS = ("loglik", "generate")


class LabelTask:
    """Accuracy of a generated (or log-likelihood-chosen) label word, or Spearman's ρ of a generated number."""

    def __init__(self, name: str, data: TaskData, *, weight: float = 1.0, metric: str | None = None,
                 scoring: str = "loglik", template: str = "{input}", labels: list[str] | None = None,
                 batch_size: int = 200, max_new_tokens: int = 8, fallback: float = 0.0):
        metric = metric or data.extras.get("metric", "accuracy")
        if metric not in METRICS or scoring not in SCORINGS:
            raise EvogmError(f"task {name}: unknown metric {metric!r} or scoring {scoring!r}",
                             f"metrics: {METRICS}; scorings: {SCORINGS}", "pick one of each")
        self.name, self.data, self.weight, self.primary = name, data, float(weight), metric
        self.scoring = "generate" if metric == "spearman" else scoring
        self.template, self.batch_size, self.max_new_tokens = template, int(batch_size), int(max_new_tokens)
        self.fallback = float(fallback)
        given = _checked_labels(name, labels or data.extras.get("labels"))
        check_items(name, data, {"input": prompt_text, "target": label_target(given, metric)})
        self.labels = given or self._targets()
        if self.scoring == "loglik" and len({normalize(label) for label in self.labels}) < 2:
            raise EvogmError(f"task {name}: one label ({self.labels})", "scored by log-likelihood, the only label "
                             "is always chosen: every candidate would score 1.0", "give `labels` (at least two), or "
                             "items with more than one target")
        self._cache = EncodingCache()

    @property
    def per_item(self) -> bool:
        """Accuracy is a mean over items (a slice of dev can be scored alone); Spearman's ρ is not."""
        return self.primary == "accuracy"

    def _targets(self) -> list[str]:
        """Every split's distinct targets, in order of appearance."""
        return list(dict.fromkeys(str(item["target"]) for split in self.data.filled for item in self.data.items(split)))

    def prompts(self, split: str) -> list[str]:
        return [render(self.template, item) for item in self.data.items(split)]

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]:
        targets = [str(item["target"]) for item in self.data.items(split)]
        if self.primary == "spearman":
            numbers = [first_number(text) for text in self.generate(model, tokenizer, split)]
            predicted = [self.fallback if n is None else n for n in numbers]
            return {"spearman": spearman(predicted, [float(t) for t in targets]),
                    "parsed": float(np.mean([n is not None for n in numbers])) if numbers else 0.0}
        correct = self.outcomes(model, tokenizer, split)
        return {"accuracy": float(np.mean(correct)) if correct else 0.0}

    def outcomes(self, model, tokenizer, split: str) -> list[bool]:
        """Whether each item's label was right (accuracy, the metric when `per_item`, is their mean)."""
        targets = [str(item["target"]) for item in self.data.items(split)]
        return [normalize(p) == normalize(t) for p, t in zip(self.predict(model, tokenizer, split), targets)]

    def predict(self, model, tokenizer, split: str) -> list[str]:
        """The predicted label (loglik) or the generated text (generate) of every item."""
        from evogm.tasks.scoring import option_logprobs
        if self.scoring == "generate":
            return self.generate(model, tokenizer, split)
        inputs = self._cache.get(tokenizer, ("options", split), self._option_inputs)
        scores = option_logprobs(model, inputs, where=f"task {self.name}")  # (n, labels)
        return [self.labels[k] for k in scores.argmax(axis=1)]

    def generate(self, model, tokenizer, split: str) -> list[str]:
        from evogm.tasks.scoring import generate_texts
        batches = self._cache.get(tokenizer, ("prompts", split), self._encode)
        return generate_texts(model, tokenizer, batches, max_new_tokens=self.max_new_tokens, where=f"task {self.name}")

    def _encode(self, tokenizer, key: tuple[str, str]):
        from evogm.tasks.scoring import encode_prompts
        return encode_prompts(tokenizer, self.prompts(key[1]), self.batch_size)

    def _option_inputs(self, tokenizer, key: tuple[str, str]):
        from evogm.tasks.scoring import option_inputs
        prompts = self.prompts(key[1])
        options = [[answer_separator(p) + label for label in self.labels] for p in prompts]
        return option_inputs(tokenizer, prompts, options, self.batch_size)


def _checked_labels(name: str, labels: object) -> list[str] | None:
    """The closed label set a spec or file names, as text (None: none named)."""
    if labels is None:
        return None
    if not isinstance(labels, list) or any(answer_text(label) for label in labels):
        raise EvogmError(f"task {name}: labels must be a list of non-empty strings", f"got {labels!r:.80}",
                         'write labels: ["yes", "no"]')
    return [str(label) for label in labels]


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); 0.0 where either side is constant."""
    if len(x) < 2:
        return 0.0
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties: the mean of their ranks
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
