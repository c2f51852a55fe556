"""How long one multi-task evaluation takes on the zoo, and how much of it is outside the model.

Prints, side by side, one Objective call (merge + every task on dev) with multiple choice scored by
the letters' log-likelihood and by greedy generation + parsing, and the share of the call spent
outside the model's forward passes (merge, padding, argmax, decoding, parsing). The first call
tokenizes every task; the steady state (median of --repeats calls) is what a search pays.

    python -m benchmarks.eval_speed                       # the packaged zoo, or a zoo-shaped stand-in
    python -m benchmarks.eval_speed --config zoo/run.yaml --threads 1 2

Without a built zoo the stand-in is the full zoo preset's shape with random weights: its 4-layer
Qwen2, tokenizer, task files (200 dev items each, the zoo's own task entries) and one random LoRA
adapter per expert. A random model never emits EOS, so its generation runs to max_new_tokens: an
upper bound on the zoo's. On a shared machine the CPU-time rows are the steadier figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

class ForwardClock:
    """Wall and CPU time inside the model's top-level forward calls, and the tokens it read (hooks)."""

    def __init__(self, model: torch.nn.Module):
        self.wall = self.cpu = 0.0
        self.calls = self.tokens = 0
        self._start = (0.0, 0.0)
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave)

    def _enter(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.tokens += ids.numel() if ids is not None else 0
        self._start = (time.perf_counter(), time.process_time())

    def _leave(self, *_):
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]
        self.calls += 1

    def snapshot(self) -> tuple[float, float, int, int]:
        return self.wall, self.cpu, self.calls, self.tokens


def zoo_workspace(config: str | None):
    """(Workspace, label): the given or packaged zoo config, else a stand-in built in a temp folder."""
    from evogm.config import load_config
    from evogm.workspace import build_workspace

    if config is None:
        packaged = Path(__file__).resolve().parents[1] / "evogm" / "zoo" / "data" / "run.yaml"
        config = str(packaged) if packaged.is_file() else None
    if config is not None:
        overrides = [f"output={tempfile.mkdtemp()}/run", "models.device=cpu"]
        return build_workspace(load_config(config, overrides)), f"zoo ({config})"
    return stand_in(Path(tempfile.mkdtemp(prefix="eval_speed_"))), "zoo-shaped stand-in (random weights)"


def stand_in(root: Path):
    """The full zoo preset's shapes with random weights: base, one LoRA adapter per expert, the task files."""
    import warnings

    from peft import LoraConfig, get_peft_model

    from evogm.merge import Merger
    from evogm.models import load_models
    from evogm.tasks import load_task
    from evogm.workspace import Workspace
    from evogm.zoo import build as zoo_build
    from evogm.zoo import pretrain, skills
    from evogm.zoo.tokenizer import build_tokenizer

    plan = zoo_build.PRESETS["full"]
    new_base = lambda: pretrain.new_model(seed=0, hidden=plan.hidden, layers=plan.layers)  # noqa: E731
    new_base().save_pretrained(root / "base")
    build_tokenizer().save_pretrained(root / "base")
    for i, spec in enumerate(plan.experts):
        torch.manual_seed(100 + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lora = LoraConfig(r=spec.rank, lora_alpha=2 * spec.rank, init_lora_weights=False,
                              target_modules=list(spec.targets))
            get_peft_model(new_base(), lora).save_pretrained(root / spec.name)
    models = load_models(root / "base", {s.name: root / s.name for s in plan.experts}, dtype="float32", device="cpu")
    items = plan.dev
    world, files = skills.World.create(0), {}
    for name in [n for n in skills.SKILLS if n not in skills.FORMAT_ONLY]:
        files[name] = root / f"{name}.json"
        files[name].write_text(json.dumps({"dev": skills.make_split(name, items, 0, world, "dev"), "test": []}))
    tasks = {spec["name"]: load_task(spec) for spec in zoo_build.task_specs(files)}  # the zoo's own task entries
    return Workspace(models, Merger(models.model, models.experts), tasks)


def with_scoring(tasks: dict, scoring: str) -> list:
    """The same tasks, multiple choice scored by `scoring` (tokenization caches start empty)."""
    from evogm.tasks import load_task
    from evogm.tasks.abstain import AbstainTask
    from evogm.tasks.multiple_choice import MultipleChoiceTask

    out = []
    for name, task in tasks.items():
        if isinstance(task, (MultipleChoiceTask, AbstainTask)):
            mc = task.answerer if isinstance(task, AbstainTask) else task  # its options, scoring aside
            spec = {"name": name, "path": str(mc.data.path), "scoring": scoring, "template": mc.template,
                    "batch_size": mc.batch_size, "max_new_tokens": mc.max_new_tokens, "limit": mc.data.limit,
                    "seed": mc.data.seed, **({"type": "abstain"} if isinstance(task, AbstainTask) else {})}
            out.append(load_task(spec))
        else:
            out.append(task)
    return out


def measure(ws, tasks: list, repeats: int) -> dict:
    """Medians over `repeats` steady-state Objective calls (after a first call that tokenizes)."""
    from evogm.objective import Objective

    clock = ForwardClock(ws.merger.model)
    objective = Objective(ws.merger, ws.models.tokenizer, tasks)
    xs = np.random.default_rng(0).uniform(-1, 1, size=(repeats + 1, ws.merger.dim))
    first = objective(xs[0])
    assert first.ok, first.error
    rows = []
    for x in xs[1:]:
        start = time.perf_counter()
        ws.merger(x)
        merge = time.perf_counter() - start
        before, cpu_before = clock.snapshot(), time.process_time()
        result = objective(x)
        after = clock.snapshot()
        rows.append({"total": result.seconds, "cpu": time.process_time() - cpu_before, "merge": merge,
                     "forward": after[0] - before[0], "forward_cpu": after[1] - before[1],
                     "calls": after[2] - before[2], "tokens": after[3] - before[3]})
    out = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    return {**out, "first": first.seconds, "fitness": first.fitness}


def report(label: str, ws, rows: dict[str, dict], threads: int) -> None:
    params = sum(p.numel() for p in ws.merger.model.parameters())
    print(f"\n{label}: {len(ws.tasks)} tasks ({', '.join(ws.tasks)}), {ws.merger.dim} experts, "
          f"{params / 1e6:.2f}M parameters, "
          f"torch threads={threads}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':40}" + "".join(f"{name:>12}" for name in rows))
    lines = [("first evaluation (tokenizes), s", "first", "{:.3f}"),
             ("one evaluation (steady state), s", "total", "{:.3f}"),
             ("  of which in forward passes, s", "forward", "{:.3f}"),
             ("  merge alone, s", "merge", "{:.4f}"),
             ("one evaluation, CPU s", "cpu", "{:.3f}"),
             ("  of which in forward passes, CPU s", "forward_cpu", "{:.3f}"),
             ("forward calls", "calls", "{:.0f}"),
             ("tokens read by the model", "tokens", "{:.0f}")]
    for title, key, fmt in lines:
        print(f"{title:40}" + "".join(f"{fmt.format(r[key]):>12}" for r in rows.values()))
    shares = (("outside forward passes (wall)", "forward", "total"),
              ("outside forward passes (CPU)", "forward_cpu", "cpu"))
    for title, inside, total in shares:
        print(f"{title:40}" + "".join(f"{1 - r[inside] / r[total]:>12.1%}" for r in rows.values()))
    throughput = "".join(f"{r['tokens'] / r['forward_cpu']:>12.0f}" for r in rows.values())
    print(f"{'model throughput, tokens/CPU s':40}" + throughput)
    print(f"generate / loglik, wall time: {rows['generate']['total'] / rows['loglik']['total']:.2f}×, "
          f"CPU time: {rows['generate']['cpu'] / rows['loglik']['cpu']:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a zoo run config (default: the packaged zoo, else a stand-in)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    args = parser.parse_args()
    ws, label = zoo_workspace(args.config)
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows = {s: measure(ws, with_scoring(ws.tasks, s), args.repeats) for s in ("loglik", "generate")}
        report(label, ws, rows, threads)


if __name__ == "__main__":
    main()
