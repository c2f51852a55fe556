"""lm-evaluation-harness tasks as fitness (`type: lm_eval`), scored on the resident merged model.

The task names an lm-eval task or group (`include_path` adds your own YAML tasks). Which of its
splits is dev and which is test is explicit: `dev_split: validation, test_split: test`, or one split
named twice, divided into dev and test by `seed` (`dev_fraction` of its documents to dev). The
model lm-eval scores is evogm's resident model and tokenizer, wrapped in lm-eval's own `HFLM`
(no copy, no disk). lm-eval's setup (task loading, datasets, prompts, requests, the scored documents)
runs once per split and task object; each candidate reruns only the model calls and lm-eval's scoring
of their outputs. Greedy generate-until requests run on evogm's own decoding loop
(`evogm.tasks.harness_generate`), with lm-eval's stop strings, filters and metrics.

Metrics are lm-eval's, named as lm-eval names them (`acc`, `acc_norm`, `exact_match,strict-match`:
the filter follows a comma unless it is `none`); a lower-is-better metric (perplexity) is negated,
so every metric is higher-is-better. `metric` names the one the search optimizes.

>>> # task = load_task({"name": "arc", "type": "lm_eval", "task": "arc_easy", "dev_split": "validation",
>>> #                   "test_split": "test", "metric": "acc_norm", "limit": 200})
>>> # task.evaluate(model, tokenizer, "dev")      # {'acc': 0.61, 'acc_norm': 0.64}
"""

from __future__ import annotations

import functools
import itertools
import logging

import numpy as np

from evogm.errors import EvogmError
from evogm.registry import did_you_mean
from evogm.tasks.harness_generate import route_greedy

INSTALL = "pip install 'evogm[lm-eval]'"
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed, so few-shot prompts are those lm_eval picks


def require_harness() -> None:
    """lm-eval is an optional extra, imported only when a task needs it."""
    try:
        import lm_eval.evaluator  # noqa: F401
    except ImportError as exc:
        raise EvogmError("a task has type: lm_eval but lm-eval is not installed", f"{type(exc).__name__}: {exc}",
                         INSTALL) from exc


@functools.lru_cache(maxsize=8)
def task_manager(include_path: str | None, include_defaults: bool = True):
    """lm-eval's task index, once per process and folders: reading lm-eval's own task YAMLs takes
    seconds (`include_defaults: false` indexes include_path alone)."""
    from lm_eval.tasks import TaskManager

    logger = logging.getLogger("lm_eval")
    if logger.level == logging.NOTSET:  # its INFO lines would flood a search's output; a level set by the user stays
        logger.setLevel(logging.WARNING)
    return TaskManager(include_path=include_path, include_defaults=include_defaults)


class LmEvalTask:
    """One lm-eval task or group on two of its splits (dev for the search, test for the end)."""

    def __init__(self, name: str, *, task: str, dev_split: str, test_split: str, include_path: str | None = None,
                 include_defaults: bool = True,
                 metric: str = "acc", num_fewshot: int | None = None, limit: int | None = None,
                 seed: int = 0, dev_fraction: float = 0.5, apply_chat_template: bool = False,
                 fewshot_as_multiturn: bool = False, system_instruction: str | None = None,
                 batch_size: int = 16, gen_kwargs: dict | None = None, weight: float = 1.0):
        require_harness()
        self.name, self.weight, self.primary, self.task = name, float(weight), str(metric), str(task)
        self.include_path = str(include_path) if include_path else None
        self.include_defaults = bool(include_defaults)
        self.lm_splits = {"dev": str(dev_split), "test": str(test_split)}
        self.num_fewshot, self.limit, self.seed, self.dev_fraction = num_fewshot, limit, int(seed), float(dev_fraction)
        self.chat = {"apply_chat_template": apply_chat_template, "fewshot_as_multiturn": bool(fewshot_as_multiturn),
                     "system_instruction": system_instruction}
        self.batch_size, self.gen_kwargs = int(batch_size), dict(gen_kwargs or {})
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if self.divided and not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
        self._check_known()
        self._lm, self._prepared = None, {}  # (model, tokenizer, HFLM); split -> what evaluate() reruns

    @property
    def divided(self) -> bool:
        """One lm-eval split is both dev and test: its documents are divided by seed."""
        return self.lm_splits["dev"] == self.lm_splits["test"]

    def evaluate(self, model, tokenizer, split: str) -> dict[str, float]:
        from lm_eval.evaluator import evaluate

        lm = self._wrapped(model, tokenizer)
        prepared = self._prepared.get(split) or self._prepare(split, lm)
        for instance in prepared["instances"]:  # the last candidate's outputs; lm-eval appends to them
            instance.resps, instance.filtered_resps = [], {}
        results = evaluate(lm=lm, task_dict=prepared["loaded"], limit=prepared["limit"], samples=prepared["samples"],
                           bootstrap_iters=0, log_samples=False, **self.chat)
        return self._metrics(results["results"][self.task], prepared["higher"])

    # --- set up once ------------------------------------------------------------------------------

    def _check_known(self) -> None:
        known = task_manager(self.include_path, self.include_defaults).all_tasks
        if self.task not in known:
            raise EvogmError(f"task {self.name}: lm-eval has no task {self.task!r}",
                             did_you_mean(self.task, known, cutoff=0.0),
                             "name an lm-eval task or group (lm_eval ls tasks), or set include_path to your YAML folder")

    def _wrapped(self, model, tokenizer):
        """lm-eval's HF model class over the resident model: built once, it sees every in-place merge."""
        if self._lm is None or self._lm[0] is not model or self._lm[1] is not tokenizer:
            from lm_eval.models.huggingface import HFLM

            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size)
            for method in ("loglikelihood", "loglikelihood_rolling", "generate_until"):  # no progress bars
                setattr(lm, method, functools.partial(getattr(lm, method), disable_tqdm=True))
            remember_tokens(lm)
            route_greedy(lm)
            self._lm = (model, tokenizer, lm)
            self._prepared = {}  # chat-templated requests depend on the tokenizer
        return self._lm[2]

    def _prepare(self, split: str, lm) -> dict:
        """Load the task on the split, build its requests once; lm-eval's evaluate() then reuses them."""
        from lm_eval.evaluator_utils import get_sample_size

        loaded = task_manager(self.include_path, self.include_defaults).load([self.task])
        samples = {} if self.divided else None
        for task_name, task in loaded["tasks"].items():
            self._configure(task, split)
            if samples is not None:
                samples[task_name] = self._share(len(task.eval_docs), split)
            limit = None if samples is not None else get_sample_size(task, self.limit)
            task.build_all_requests(limit=limit, samples=None if samples is None else samples[task_name], rank=0, world_size=1,
                                    system_instruction=self.chat["system_instruction"],
                                    apply_chat_template=bool(self.chat["apply_chat_template"]),
                                    fewshot_as_multiturn=self.chat["fewshot_as_multiturn"],
                                    chat_template=lm.apply_chat_template if self.chat["apply_chat_template"] else None,
                                    tokenizer_name=lm.tokenizer_name if self.chat["apply_chat_template"] else "")
            if not task.instances:
                raise EvogmError(f"task {self.name}: {task_name} has no documents on its {split} split "
                                 f"({self.lm_splits[split]!r})", "nothing to score", "check the split names and limit")
            task.build_all_requests = _built  # evaluate() would build them again for every candidate
            keep_docs(task, limit)
        instances = [i for task in loaded["tasks"].values() for i in task.instances]
        higher = {k: v for task in loaded["tasks"].values() for k, v in task.higher_is_better().items()}
        self._prepared[split] = {"loaded": loaded, "instances": instances, "samples": samples,
                                 "limit": None if samples is not None else self.limit, "higher": higher}
        return self._prepared[split]

    def _configure(self, task, split: str) -> None:
        """What lm-eval's simple_evaluate sets on a loaded task, and the split this task scores."""
        task.config.test_split = self.lm_splits[split]  # eval_docs reads the test split when one is set
        if self.gen_kwargs and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value=self.gen_kwargs, update=True)
        if self.num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=self.num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)

    def _share(self, n: int, split: str) -> list[int]:
        """The documents of a divided split that are `split`'s: a seeded permutation, cut at dev_fraction."""
        order = np.random.default_rng(self.seed).permutation(n)
        cut = int(round(n * self.dev_fraction))
        share = sorted(int(i) for i in (order[:cut] if split == "dev" else order[cut:]))
        return share[:self.limit] if self.limit else share

    def _metrics(self, row: dict, higher: dict[str, bool]) -> dict[str, float]:
        out = {}
        for key, value in row.items():
            metric, _, filter_name = key.partition(",")
            if metric.endswith("_stderr") or not filter_name or isinstance(value, str):
                continue  # stderr, alias, sample counts
            name = metric if filter_name == "none" else key
            out[name] = float(value) if higher.get(metric, True) else -float(value)
        if self.primary not in out:
            raise KeyError(f"lm-eval task {self.task} gave {sorted(out)}, not {self.primary!r} "
                           f"(set the task's metric to one of them)")
        return out


def remember_tokens(lm) -> None:
    """Tokenize each request's strings once: lm-eval's HFLM tokenizes every request on every call,
    and a search calls it once per candidate with the same strings and the same tokenizer."""
    encode, batch_encode, seen, batches = lm.tok_encode, lm.tok_batch_encode, {}, {}

    def tok_encode(string: str, add_special_tokens=None, left_truncate_len=None, **kwargs) -> list[int]:
        key = (string, add_special_tokens, left_truncate_len, tuple(sorted(kwargs.items())))
        if key not in seen:
            seen[key] = encode(string, add_special_tokens=add_special_tokens, left_truncate_len=left_truncate_len,
                               **kwargs)
        return list(seen[key])  # a copy: callers own what they get

    def tok_batch_encode(strings: list[str], padding_side: str = "left", left_truncate_len=None, truncation=False):
        key = (tuple(strings), padding_side, left_truncate_len, truncation)
        if key not in batches:  # (input ids, attention mask): read, never written, by generate_until
            batches[key] = batch_encode(list(strings), padding_side=padding_side, left_truncate_len=left_truncate_len,
                                        truncation=truncation)
        return batches[key]

    lm.tok_encode, lm.tok_batch_encode = tok_encode, tok_batch_encode


def keep_docs(task, limit: int | None) -> None:
    """Read the scored split's documents once: lm-eval reads them from the dataset (and reruns the
    task's process_docs) in every evaluate(), a per-candidate cost of setup, not of the model."""
    docs = list(itertools.islice(task.eval_docs, limit))  # the first `limit`, or all (divided splits index them)
    task.test_docs = lambda: docs  # eval_docs reads test_docs() when a test split is set, as _configure does


def _built(**kwargs) -> None:
    """build_all_requests after the first: the requests are built, and kept."""
