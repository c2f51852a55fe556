"""evogm's cached greedy decoding against Hugging Face `generate`, on the same batch, interleaved.

Loads a paper-scale folder's base (`paper_scale_build.py`; built first if missing), takes one task's
first dev prompts as one left-padded batch (no shared prefix, so that only the decode loops differ)
and runs, --repeats times in alternation, evogm's `greedy_generate` and `model.generate` (greedy)
for --new-tokens tokens. Prints per method the median seconds of the prefill, of one generation
step's forward pass and of one step outside it (argmax, stop checks, cache bookkeeping), and the
ratio evogm / generate; it fails if the two produce different tokens.

    OMP_NUM_THREADS=1 python -m benchmarks.generate_speed --shape small --rows 10 --repeats 5
    OMP_NUM_THREADS=1 python -m benchmarks.generate_speed --shape qwen2.5-0.5b --items 1 --rows 1 \\
        --new-tokens 50 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import yaml

from benchmarks.paper_scale_build import build, folder_for


class Timer:
    """Seconds inside the model's forward calls of one run: the first (prefill), then each step."""

    def __init__(self, model: torch.nn.Module):
        self.calls: list[float] = []
        model.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
        model.register_forward_hook(lambda *_: self.calls.append(time.perf_counter() - self._start))

    def run(self, fn) -> dict:
        self.calls = []
        start = time.perf_counter()
        tokens = fn()
        total = time.perf_counter() - start
        steps = len(self.calls) - 1
        return {"tokens": tokens, "prefill": self.calls[0], "step": sum(self.calls[1:]) / steps,
                "outside": (total - sum(self.calls)) / steps}


def load(folder: Path, task_name: str, rows: int):
    from evogm.models import load_base
    from evogm.tasks import load_task
    from evogm.tasks.batching import encode, left_pad, pad_id

    model, tokenizer = load_base(folder / "base")
    spec = next(t for t in yaml.safe_load((folder / "run.yaml").read_text())["tasks"] if t["name"] == task_name)
    prompts = load_task(spec).prompts("dev")[:rows]
    pad = pad_id(tokenizer)
    return model.eval(), left_pad(encode(tokenizer, prompts), rows, pad, min_prefix=10**9)[0], pad


def methods(model, batch, pad: int, new_tokens: int) -> dict:
    from evogm.tasks.inference import greedy_generate

    stops = {int(model.generation_config.eos_token_id)}

    def evogm():
        return greedy_generate(model, batch, max_new_tokens=new_tokens, stop_ids=stops, pad_id=pad)

    @torch.inference_mode()
    def hf():
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                             max_new_tokens=new_tokens, pad_token_id=pad, eos_token_id=sorted(stops))
        return out[:, batch.input_ids.shape[1]:]

    return {"evogm": evogm, "generate": hf}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small")
    p.add_argument("--items", type=int, default=10, help="the paper-scale folder's items per task")
    p.add_argument("--cache", default="~/.cache/evogm-paper-scale")
    p.add_argument("--task", default="gsm8k")
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--new-tokens", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    folder = folder_for(Path(a.cache), a.shape, experts=10, rank=16, items=a.items, dtype="float32")
    if not (folder / "run.yaml").exists():
        build(a.shape, folder, experts=10, rank=16, items=a.items, dtype="float32")
    model, batch, pad = load(folder, a.task, a.rows)
    timer, runs = Timer(model), {"evogm": [], "generate": []}
    for _ in range(a.repeats):
        for name, fn in methods(model, batch, pad, a.new_tokens).items():
            runs[name].append(timer.run(fn))
    report(a, batch, runs)


def report(a, batch, runs: dict) -> None:
    mine, theirs = runs["evogm"][0]["tokens"], runs["generate"][0]["tokens"]
    if mine.shape != theirs.shape or not torch.equal(mine, theirs):
        raise SystemExit(f"different tokens: evogm {tuple(mine.shape)}, generate {tuple(theirs.shape)}")
    print(f"{a.shape}, {a.task}: {batch.input_ids.shape[0]} rows × {batch.input_ids.shape[1]} prompt tokens, "
          f"{mine.shape[1]} new tokens, {a.repeats} runs each, alternated; tokens identical; medians:")
    median = {name: {k: statistics.median(r[k] for r in rs) for k in ("prefill", "step", "outside")}
              for name, rs in runs.items()}
    print(f"{'':10} {'prefill s':>10} {'step fwd ms':>12} {'step other ms':>14} {'step total ms':>14}")
    for name, m in median.items():
        print(f"{name:10} {m['prefill']:10.3f} {1e3 * m['step']:12.2f} {1e3 * m['outside']:14.2f} "
              f"{1e3 * (m['step'] + m['outside']):14.2f}")
    e, g = median["evogm"], median["generate"]
    print(f"evogm / generate: step forward {e['step'] / g['step']:.3f}, step total "
          f"{(e['step'] + e['outside']) / (g['step'] + g['outside']):.3f}")
    spread = {name: [round(1e3 * (r['step'] + r['outside']), 1) for r in rs] for name, rs in runs.items()}
    print(f"every run's step total (ms): {spread}")


if __name__ == "__main__":
    main()
