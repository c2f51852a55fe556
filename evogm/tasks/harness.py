"""lm-evaluation-harness tasks as fitness (`type: lm_eval`), scored on the resident merged model.

The task names an lm-eval task or group (`include_path` adds your own YAML tasks; a tag, a list of
tasks lm-eval reports no score for, is refused). Which of its splits is dev and which is test:
`dev_split: validation, test_split: test`, or one split named twice, divided into dev and test by
`seed` (`dev_fraction` of its documents to dev); left out, both are read from the task's YAML
(its `validation_split` and `test_split`, when it names both), else refused at load. The
model lm-eval scores is evogm's resident model and tokenizer, wrapped in lm-eval's own `HFLM`
(no copy, no disk). lm-eval's setup (task loading, datasets, prompts, requests, the scored documents)
runs once per split and task object; each candidate reruns only the model calls and lm-eval's scoring
of their outputs. Greedy generate-until requests run on evogm's own decoding loop
(`evogm.tasks.harness_generate`), with lm-eval's stop strings, filters and metrics.

Metrics are lm-eval's, named as lm-eval names them (`acc`, `acc_norm`, `exact_match,strict-match`:
the filter follows a comma unless it is `none`); a lower-is-better metric (perplexity) is negated,
so every metric is higher-is-better. `metric` names the one the search optimizes; left out, it is
the first the task reports. Both are checked at load against the metrics the task's YAML declares
(`reported_metrics`: a task's metric_list under each filter, a group's aggregate_metric_list), read
from lm-eval's index without loading any data; where the YAML does not say (a Python task, a custom
process_results), a named metric is checked at the first evaluation and one left out is refused.

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

    def __init__(self, name: str, *, task: str, dev_split: str | None = None, test_split: str | None = None,
                 include_path: str | None = None, include_defaults: bool = True,
                 metric: str | None = None, num_fewshot: int | None = None, limit: int | None = None,
                 seed: int = 0, dev_fraction: float = 0.5, apply_chat_template: bool = False,
                 fewshot_as_multiturn: bool = False, system_instruction: str | None = None,
                 batch_size: int = 16, gen_kwargs: dict | None = None, weight: float = 1.0):
        require_harness()
        self.name, self.weight, self.task = name, float(weight), str(task)
        self.include_path = str(include_path) if include_path else None
        self.include_defaults = bool(include_defaults)
        entry = self._entry()
        self.lm_splits = self._splits(entry, dev_split, test_split)
        self.primary = self._metric(metric)
        self.num_fewshot, self.limit, self.seed, self.dev_fraction = num_fewshot, limit, int(seed), float(dev_fraction)
        self.chat = {"apply_chat_template": apply_chat_template, "fewshot_as_multiturn": bool(fewshot_as_multiturn),
                     "system_instruction": system_instruction}
        self.batch_size, self.gen_kwargs = int(batch_size), dict(gen_kwargs or {})
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        if self.divided and not 0 < self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction!r}")
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

    def _entry(self):
        """lm-eval's index entry of the task (its YAML, includes resolved, functions not imported)."""
        index = task_manager(self.include_path, self.include_defaults).task_index
        if self.task not in index:
            raise EvogmError(f"task {self.name}: lm-eval has no task {self.task!r}",
                             did_you_mean(self.task, list(index), cutoff=0.0),
                             "name an lm-eval task or group (lm_eval ls tasks), or set include_path to your YAML folder")
        entry = index[self.task]
        if entry.kind.name == "TAG":
            raise EvogmError(f"task {self.name}: lm-eval's {self.task!r} is a tag",
                             f"a list of {len(entry.tags)} tasks ({', '.join(sorted(entry.tags)[:3])}, …) that "
                             "lm-eval reports no score of its own for", "name one of its tasks, or a group")
        return entry

    def _splits(self, entry, dev_split: str | None, test_split: str | None) -> dict[str, str]:
        """{"dev": lm-eval split, "test": lm-eval split}: as given, or both read from the task's YAML."""
        if dev_split is not None and test_split is not None:
            return {"dev": str(dev_split), "test": str(test_split)}
        config = entry.cfg if entry.kind.name == "TASK" and entry.cfg else {}
        named = {key: config[key] for key in ("training_split", "validation_split", "test_split") if config.get(key)}
        if dev_split is None and test_split is None and named.get("validation_split") and named.get("test_split") \
                and named["validation_split"] != named["test_split"]:
            return {"dev": str(named["validation_split"]), "test": str(named["test_split"])}
        missing = [key for key, value in (("dev_split", dev_split), ("test_split", test_split)) if value is None]
        says = f"its YAML names {named}" if named else "its YAML names no splits (a group or Python task)"
        why = (f"evogm reads them from lm-eval's {self.task} only when its YAML names a validation_split and a "
               f"different test_split, and {says}") if len(missing) == 2 else \
            "the splits are read from the task's YAML only when both are left out"
        raise EvogmError(f"task {self.name}: {' and '.join(missing)} missing", why,
                         "add dev_split: SPLIT and test_split: SPLIT (one split named twice is divided by seed)")

    def _metric(self, metric: str | None) -> str:
        """The metric the search optimizes: the one named (checked against those the task reports, where
        its YAML says), or the first it reports."""
        index = task_manager(self.include_path, self.include_defaults).task_index
        reported = reported_metrics(index, self.task)
        if reported == []:
            raise EvogmError(f"task {self.name}: lm-eval's {self.task} reports no metric of its own",
                             "a group without an aggregate_metric_list: lm-eval scores only its tasks",
                             "add an aggregate_metric_list to the group, or name one of its tasks")
        if metric is None:
            if reported is None:
                raise EvogmError(f"task {self.name}: no metric", f"lm-eval's {self.task} does not declare its "
                                 "metrics in its YAML (a Python task, a custom process_results, or a group of them)",
                                 "set metric: one of those it reports (acc, exact_match, …)")
            return reported[0]
        if reported is not None and str(metric) not in reported:
            raise EvogmError(f"task {self.name}: lm-eval's {self.task} reports no metric {metric!r}",
                             did_you_mean(str(metric), reported, f"it reports {reported}", cutoff=0.6),
                             f"set metric to one of {reported}")
        return str(metric)

    def _wrapped(self, model, tokenizer):
        """lm-eval's HF model class over the resident model: built once, it sees every in-place merge."""
        from evogm.tasks.harness_generate import route_greedy
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


def reported_metrics(index: dict, name: str) -> list[str] | None:
    """The metrics lm-eval reports for task or group `name`, named as `LmEvalTask` names them
    ("acc"; "exact_match,strict-match" under a filter other than none), in lm-eval's order; [] for a
    group that aggregates none; None where the YAML does not say (a Python task, a custom
    process_results, an inline subtask). `index`: lm-eval's task index (TaskManager.task_index)."""
    entry = index.get(name)
    if entry is None or entry.cfg is None or entry.kind.name not in ("TASK", "GROUP"):
        return None
    config = entry.cfg
    if entry.kind.name == "TASK":
        if config.get("metric_list") is None and config.get("process_results") is not None:
            return None  # its metrics are whatever process_results returns
        metrics = [_metric_name(m.get("metric")) for m in config.get("metric_list") or [] if isinstance(m, dict)] \
            if config.get("metric_list") is not None else list(_default_metrics(config.get("output_type")))
        filters = [f.get("name") for f in config.get("filter_list") or [] if isinstance(f, dict)] or ["none"]
        return [_named(metric, f) for f in filters for metric in metrics]
    names = []
    for aggregate in config.get("aggregate_metric_list") or []:
        metric = _metric_name(aggregate.get("metric")) if isinstance(aggregate, dict) else None
        filters = aggregate.get("filter_list") if metric else None
        filters = [filters] if isinstance(filters, str) else filters  # as lm-eval reads one filter's name
        if filters is None:  # lm-eval takes the filters its tasks report the metric under
            leaves = _leaf_metrics(index, name, frozenset())
            if metric is None or leaves is None:
                return None
            filters = sorted({key.partition(",")[2] or "none" for key in leaves if key.partition(",")[0] == metric})
        names += [_named(metric, f) for f in filters]
    return names


def _leaf_metrics(index: dict, name: str, seen: frozenset) -> list[str] | None:
    """The metrics every task under a group or tag reports (None: one of them does not say)."""
    entry = index.get(name)
    if entry is None or name in seen:
        return None
    if entry.kind.name == "TASK":
        return reported_metrics(index, name)
    if entry.kind.name == "TAG":
        members = sorted(entry.tags)
    elif entry.kind.name == "GROUP" and entry.cfg is not None:
        members = entry.cfg.get("task") if isinstance(entry.cfg.get("task"), list) else [entry.cfg.get("task")]
    else:
        return None
    found = []
    for member in members:
        leaf = _leaf_metrics(index, member, seen | {name}) if isinstance(member, str) else None
        if leaf is None:
            return None
        found += leaf
    return found


def _metric_name(metric: object) -> str:
    """A metric_list entry's name; a `!function` one (the YAML's path to it) is reported by its function's name."""
    text = str(metric)
    return text.rsplit(".", 1)[-1] if "/" in text else text


def _default_metrics(output_type: str | None) -> list[str]:
    from lm_eval.api.registry import DEFAULT_METRIC_REGISTRY

    return DEFAULT_METRIC_REGISTRY.get(output_type or "generate_until", [])


def _named(metric: str, filter_name: str) -> str:
    return metric if filter_name == "none" else f"{metric},{filter_name}"


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
