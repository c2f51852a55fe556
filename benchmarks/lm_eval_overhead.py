"""What an lm-eval task costs per candidate beyond the model's forward passes.

On the packaged zoo, two lm-eval YAML tasks over local JSON Lines (multiple choice on `capitals`,
greedy generation on `add`, --items dev items each; `evogm.zoo.harness_tasks` writes them) are scored
through evogm (`type: lm_eval`) for --candidates merged candidates, next to evogm's own task types on
the same items. The generate-until task runs twice: as evogm runs it (lm-eval's greedy requests on
evogm's decoding loop) and with lm-eval's own `_model_generate` (transformers' `generate`), side by
side. Printed per task set: the first candidate (lm-eval's setup: task loading, datasets, prompts,
requests), the steady state (median over the rest) and the share of it spent outside the model's
forward calls (hooks on the model's top-level forward: everything else, lm-eval's batching and
scoring and the decoding loop between steps included; wall time, and beside it the same in CPU time,
which leaves out the time other processes take the core on a shared machine), the share outside the model calls lm-eval
makes (`_model_call`, `_model_generate`: what lm-eval adds around them), and for comparison a fresh
`simple_evaluate` per candidate on the same resident model (setup repeated every time, transformers'
`generate`). The merge itself is outside these figures.

--width 896 runs the same on a random-weight model of Qwen2.5-0.5B's width (896 hidden, 4864 MLP,
14 query and 2 key-value heads) with --layers layers and the zoo's tokenizer and vocabulary, in
place of the zoo (no merge: every candidate is that model; its scores mean nothing).

    python -m benchmarks.lm_eval_overhead                       # 200 items, 6 candidates, 1 thread
    python -m benchmarks.lm_eval_overhead --items 50 --candidates 4 --threads 2
    python -m benchmarks.lm_eval_overhead --width 896 --layers 2 --items 96
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.eval_speed import ForwardClock
from evogm.zoo.harness_tasks import write_harness_tasks

from evogm.merge import Merger
from evogm.models import load_models
from evogm.scoring import score
from evogm.tasks import load_task

ZOO = ROOT / "evogm" / "zoo" / "data"


def task_sets(folder: Path, items: int) -> dict[str, list]:
    """{label: tasks}: the lm-eval tasks and evogm's own on the same items."""
    harness = {"type": "lm_eval", "include_path": str(folder), "include_defaults": False,
               "dev_split": "validation", "test_split": "test", "batch_size": 32}
    generate = {**harness, "task": "zoo_add", "metric": "exact_match,strip"}
    return {
        "lm_eval multiple choice": [load_task({**harness, "task": "zoo_capitals"})],
        "lm_eval generate_until": [load_task(generate)],
        "  same, transformers": [load_task(generate)],
        "evogm multiple_choice": [load_task({"path": str(ZOO / "tasks/capitals.json"), "limit": items})],
        "evogm exact_match": [load_task({"path": str(ZOO / "tasks/add.json"), "type": "exact_match",
                                         "max_new_tokens": 4, "limit": items})],
    }


class CallClock:
    """Wall time inside the model calls of lm-eval's HFLM (a forward pass; a whole batch's generation,
    by evogm's loop or transformers' `generate`)."""

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


def timed(clocks: tuple[ForwardClock, CallClock], model, tokenizer, tasks: list) -> tuple:
    """(seconds, seconds inside forward calls, seconds inside lm-eval's model calls, metrics, CPU seconds,
    CPU seconds inside forward calls) of one evaluation on dev."""
    forward, calls = clocks
    before, cpu_before, inside = forward.wall, forward.cpu, calls.wall
    start, cpu = time.perf_counter(), time.process_time()
    metrics = score(model, tokenizer, tasks, "dev")
    calls.attach(tasks)
    return (time.perf_counter() - start, forward.wall - before, calls.wall - inside, metrics,
            time.process_time() - cpu, forward.cpu - cpu_before)


def transformers_generate(tasks: list, model, tokenizer) -> None:
    """lm-eval's own `_model_generate` (transformers' generate) in place of evogm's loop."""
    del tasks[0]._wrapped(model, tokenizer)._model_generate  # the instance's routing; the class's method remains


def wide_model(tokenizer, width: int, layers: int):
    """A random-weight Qwen2 of Qwen2.5-0.5B's proportions at `width` (896: its own), `layers` deep."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    heads = max(1, width // 64)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 38 // 7,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 7),
                         max_position_embeddings=2048, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    return Qwen2ForCausalLM(config).eval()


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


def resident(args) -> tuple:
    """(candidate -> merged resident model, tokenizer, candidates, description): the zoo and its experts,
    or a random model of --width (every candidate is that model)."""
    if args.width:
        base = load_models(str(ZOO / "base"), {})
        model = wide_model(base.tokenizer, args.width, args.layers)
        described = (f"random Qwen2 width {args.width}, {args.layers} layers, zoo vocabulary {len(base.tokenizer)} "
                     f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
        return (lambda lam: model), base.tokenizer, np.zeros((args.candidates, 1, 1)), described
    models = load_models(str(ZOO / "base"), {n: str(ZOO / "experts" / n) for n in ("successor", "capitals", "add")})
    candidates = np.random.default_rng(0).uniform(0, 1, size=(args.candidates, len(models.experts), 1))
    return Merger(models.model, models.experts), models.tokenizer, candidates, f"zoo {ZOO}"


def row(label: str, tasks: list, merge, tokenizer, candidates, forward: ForwardClock, folder: Path) -> str:
    """One printed line: the task set scored on every candidate."""
    if label.endswith("transformers"):
        transformers_generate(tasks, merge(candidates[0]), tokenizer)
    clocks = (forward, CallClock())
    rows = [timed(clocks, merge(lam), tokenizer, tasks) for lam in candidates]
    steady = rows[1:]
    seconds, inside = statistics.median(r[0] for r in steady), statistics.median(r[1] for r in steady)
    outside = statistics.median((r[0] - r[1]) / r[0] for r in steady)
    cpu = statistics.median((r[4] - r[5]) / r[4] for r in steady)  # in CPU time: other processes' share left out
    calls, fresh = "", ""
    if hasattr(tasks[0], "_lm"):  # an lm-eval task
        calls = f"{statistics.median((r[0] - r[2]) / r[0] for r in steady):.1%}"
    if label.startswith("lm_eval"):
        fresh = f"{fresh_simple_evaluate(merge(candidates[-1]), tokenizer, folder, tasks[0].task):.3f}"
    metric = next(iter(rows[-1][3].values()))
    return (f"{label:<26} {rows[0][0]:>9.3f} {seconds:>10.3f} {inside:>11.3f} {outside:>7.1%} {cpu:>9.1%} {calls:>13} "
            f"{fresh:>26}  {metric:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=int, default=0,
                        help="a random model this wide in place of the zoo (896: Qwen2.5-0.5B)")
    parser.add_argument("--layers", type=int, default=2, help="its layers (with --width)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    import datasets

    datasets.disable_progress_bars()
    folder = write_harness_tasks(ZOO, Path(tempfile.mkdtemp(prefix="lm_eval_overhead_")), items=args.items)
    merge, tokenizer, candidates, described = resident(args)
    forward = ForwardClock(merge(candidates[0]))
    print(f"{described}, {args.items} dev items per task, {args.candidates} candidates, {args.threads} thread(s)")
    print(f"{'tasks':<26} {'first (s)':>9} {'steady (s)':>10} {'forward (s)':>11} {'outside':>8} "
          f"{'(cpu)':>9} {'outside calls':>13} {'fresh simple_evaluate (s)':>26}  score")
    sets = task_sets(folder, args.items)
    if args.width:  # multiple choice on a wide model is minutes per candidate on a CPU: generation alone
        sets = {label: tasks for label, tasks in sets.items() if "multiple" not in label}
    for label, tasks in sets.items():
        print(row(label, tasks, merge, tokenizer, candidates, forward, folder), flush=True)
    roads = sets["lm_eval generate_until"][0]._lm[2].evogm_generate_calls
    print(f"lm_eval generate_until: {roads['greedy']} batches through evogm's loop, {roads['transformers']} through "
          f"transformers' generate; 'same, transformers': all through transformers' generate")


if __name__ == "__main__":
    main()
