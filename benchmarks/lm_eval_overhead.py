"""What an lm-eval task costs per candidate beyond the model's forward passes.

On the packaged zoo, two lm-eval YAML tasks over local JSON Lines (multiple choice on `capitals`,
greedy generation on `add`, --items dev items each; `tests/lm_eval_zoo.py` writes them) are scored
through evogm (`type: lm_eval`) for --candidates merged candidates, next to evogm's own task types on
the same items. Printed per task set: the first candidate (lm-eval's setup: task loading, datasets,
prompts, requests), the steady state (median over the rest) and the share of it spent outside the
model's forward calls (lm-eval's batching and scoring; for generation also transformers' decoding
loop between steps), the share outside the model calls lm-eval makes (`_model_call`,
`_model_generate`: what lm-eval and evogm add, the decoding loop aside), and for comparison a fresh
`simple_evaluate` per candidate on the same resident model (setup repeated every time). The merge
itself is outside these figures.

    python benchmarks/lm_eval_overhead.py                       # 200 items, 6 candidates, 1 thread
    python benchmarks/lm_eval_overhead.py --items 50 --candidates 4 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from eval_speed import ForwardClock  # noqa: E402
from lm_eval_zoo import write_harness_tasks  # noqa: E402

from evogm.merge import Merger  # noqa: E402
from evogm.models import load_models  # noqa: E402
from evogm.scoring import score  # noqa: E402
from evogm.tasks import load_task  # noqa: E402

ZOO = ROOT / "evogm" / "zoo" / "data"


def task_sets(folder: Path, items: int) -> dict[str, list]:
    """{label: tasks}: the lm-eval tasks and evogm's own on the same items."""
    harness = {"type": "lm_eval", "include_path": str(folder), "include_defaults": False,
               "dev_split": "validation", "test_split": "test", "batch_size": 32}
    return {
        "lm_eval multiple choice": [load_task({**harness, "task": "zoo_capitals"})],
        "lm_eval generate_until": [load_task({**harness, "task": "zoo_add", "metric": "exact_match,strip"})],
        "evogm multiple_choice": [load_task({"path": str(ZOO / "tasks/capitals.json"), "limit": items})],
        "evogm exact_match": [load_task({"path": str(ZOO / "tasks/add.json"), "type": "exact_match",
                                         "max_new_tokens": 4, "limit": items})],
    }


class CallClock:
    """Wall time inside the model calls of lm-eval's HFLM (a forward pass; a whole `generate`)."""

    def __init__(self):
        self.wall, self.lm = 0.0, None

    def attach(self, tasks: list) -> None:
        lm = getattr(tasks[0], "_lm", None)
        if lm is None or lm[2] is self.lm:
            return
        self.lm = lm[2]
        for name in ("_model_call", "_model_generate"):
            setattr(self.lm, name, self._timed(getattr(self.lm, name)))

    def _timed(self, method):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.wall += time.perf_counter() - start
        return call


def timed(clocks: tuple[ForwardClock, CallClock], model, tokenizer, tasks: list) -> tuple[float, float, float, dict]:
    """(seconds, seconds inside forward calls, seconds inside lm-eval's model calls, metrics) of one
    evaluation on dev."""
    forward, calls = clocks
    before, inside, start = forward.wall, calls.wall, time.perf_counter()
    metrics = score(model, tokenizer, tasks, "dev")
    calls.attach(tasks)
    return time.perf_counter() - start, forward.wall - before, calls.wall - inside, metrics


def fresh_simple_evaluate(model, tokenizer, folder: Path, task: str) -> float:
    """Seconds of one lm-eval simple_evaluate from nothing (index, load, build, run) on the resident model."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=32), tasks=[task],
                    task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                    bootstrap_iters=0, log_samples=False, verbosity="ERROR")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()

    folder = write_harness_tasks(ZOO, Path(tempfile.mkdtemp(prefix="lm_eval_overhead_")), items=args.items)
    models = load_models(str(ZOO / "base"), {n: str(ZOO / "experts" / n) for n in ("successor", "capitals", "add")})
    merger, forward = Merger(models.model, models.experts), ForwardClock(models.model)
    candidates = np.random.default_rng(0).uniform(0, 1, size=(args.candidates, len(models.experts), 1))
    print(f"zoo {ZOO}, {args.items} dev items per task, {args.candidates} candidates, {args.threads} thread(s)")
    print(f"{'tasks':<26} {'first (s)':>9} {'steady (s)':>10} {'forward (s)':>11} {'outside':>8} "
          f"{'outside calls':>13} {'fresh simple_evaluate (s)':>26}  score")
    for label, tasks in task_sets(folder, args.items).items():
        clocks = (forward, CallClock())
        rows = [timed(clocks, merger(lam), models.tokenizer, tasks) for lam in candidates]
        steady = rows[1:]
        seconds = statistics.median(r[0] for r in steady)
        inside = statistics.median(r[1] for r in steady)
        outside = statistics.median((r[0] - r[1]) / r[0] for r in steady)
        calls, fresh = "", ""
        if label.startswith("lm_eval"):
            calls = f"{statistics.median((r[0] - r[2]) / r[0] for r in steady):.1%}"
            fresh = f"{fresh_simple_evaluate(merger(candidates[-1]), models.tokenizer, folder, tasks[0].task):.3f}"
        metric = next(iter(rows[-1][3].values()))
        print(f"{label:<26} {rows[0][0]:>9.3f} {seconds:>10.3f} {inside:>11.3f} {outside:>7.1%} {calls:>13} "
              f"{fresh:>26}  {metric:.3f}")


if __name__ == "__main__":
    main()
