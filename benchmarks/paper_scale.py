"""The paper's setting at its real size: seconds per evaluation, where they go, and peak memory.

Builds (or reuses from --cache) a random-weight Qwen2.5 of the named shape, N random rank-r LoRA
experts on every linear module and the paper's 8 tasks as synthetic items of the real lengths
(`paper_scale_build.py`), loads them through the run config as `evogm run` does, then runs K
evaluations through the normal Objective and, in the same process, a reference-style evaluator
(dense task vectors, weighted sum, load_state_dict, HF generate; `paper_scale_reference.py`).
Prints per evaluation: merge (switch) / prefill forwards / generation steps / other seconds,
tokens per second, peak host RSS and device memory, and evaluations per hour, side by side.

    # this project's CPU (one core), Qwen2.5-0.5B shape, 10 items per task:
    OMP_NUM_THREADS=1 python -m benchmarks.paper_scale --shape qwen2.5-0.5b --items 10 \\
        --evaluations 2 --reference-evaluations 1 --reference-layers 2
    # a GPU, the paper's setting (Qwen2.5-1.5B, bf16, 200 dev items per task):
    python -m benchmarks.paper_scale --shape qwen2.5-1.5b --device cuda --dtype bfloat16 --items 200

`--build-only` writes the folder and its run.yaml, for `evogm run <folder>/run.yaml`.
A random model never emits EOS: every generation runs to its max_new_tokens (an upper bound).
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.paper_scale_build import SHAPES, build, folder_for

GiB = 2**30


class Peak:
    """Peak resident memory of this process (sampled every 5 ms) and the device's peak allocation."""

    def __init__(self, device: torch.device):
        self.device, self.host, self._stop = device, 0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.gpu = torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0

    def _sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.wait(0.005):
            with open("/proc/self/statm") as f:
                self.host = max(self.host, int(f.read().split()[1]) * page)


class Clock:
    """Seconds inside the model's forward calls, split into prefills and one-token generation steps."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.totals = {"prefill": 0.0, "generation": 0.0, "tokens": 0}
        model.register_forward_pre_hook(self._enter, with_kwargs=True)
        model.register_forward_hook(self._leave)

    def _enter(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._kind = "generation" if ids.shape[1] == 1 else "prefill"
        self.totals["tokens"] += ids.numel()
        self.sync()
        self._start = time.perf_counter()

    def _leave(self, *_):
        self.sync()
        self.totals[self._kind] += time.perf_counter() - self._start

    def snapshot(self) -> dict:
        return dict(self.totals)


def timed(fn, sync):
    """fn wrapped to add its seconds to `.seconds`."""
    def call(*args):
        start = time.perf_counter()
        out = fn(*args)
        sync()
        call.seconds += time.perf_counter() - start
        return out
    call.seconds, call.__wrapped__ = 0.0, fn
    return call


def measure(evaluate, switch, clock: Clock, xs: np.ndarray, device: torch.device, switch_scale: float = 1.0) -> dict:
    """Medians over `xs` of one evaluation's parts (the first call, which tokenizes, is dropped when K > 1)."""
    rows = []
    with Peak(device) as peak:
        for x in xs:
            before, switch.seconds = clock.snapshot(), 0.0
            start = time.perf_counter()
            evaluate(x)
            total = time.perf_counter() - start
            after = clock.snapshot()
            row = {k: after[k] - before[k] for k in after}
            row["merge"] = switch.seconds * switch_scale
            row["total"] = total + switch.seconds * (switch_scale - 1)
            row["other"] = row["total"] - row["merge"] - row["prefill"] - row["generation"]
            rows.append(row)
    steady = rows[1:] if len(rows) > 1 else rows
    out = {k: float(np.median([r[k] for r in steady])) for k in rows[0]}
    return {**out, "first": rows[0]["total"], "host": peak.host, "gpu": peak.gpu}


def load(args, folder: Path):
    from evogm.config import load_config
    from evogm.workspace import build_workspace

    overrides = [f"models.device={args.device}", f"models.dtype={args.dtype}",
                 f"models.base_copy={args.base_copy}", *args.set]
    cfg = load_config(folder / "run.yaml", overrides)
    return cfg, build_workspace(cfg)


def loglik_tasks(cfg) -> list:
    """The run's tasks with multiple choice (and AbstainQA) scored by log-likelihood."""
    from evogm.tasks import load_task

    choice = ("multiple_choice", "abstain")
    return [load_task({**spec, "scoring": "loglik"} if spec.get("type") in choice else spec) for spec in cfg.tasks]


def run_evogm(ws, tasks: list, xs, device) -> dict:
    from evogm.objective import Objective

    clock = Clock(ws.merger.model, device)
    merger = timed(ws.merger, clock.sync)
    objective = Objective(merger, ws.models.tokenizer, tasks)
    failed = []
    result = measure(lambda x: failed.append(objective(x).error), merger, clock, xs, device)
    if any(failed):
        raise SystemExit(f"an evogm evaluation failed: {next(e for e in failed if e)}")
    return result


def run_switches(ws, xs, device, layers) -> None:
    """Switch time alone: evogm's merger against the reference switch (no scoring), medians over `xs`."""
    from benchmarks.paper_scale_reference import ReferenceSwitch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ours = median_seconds(ws.merger, xs, sync)
    ws.merger.reset()
    with Peak(device) as peak:
        reference = ReferenceSwitch(ws.merger.model, ws.merger.experts, layers)
        theirs = median_seconds(reference, xs, sync) * reference.scale
    print(f"switch, median of {len(xs)}: evogm {ours:.3f} s (base copy: {ws.merger.base.place}), reference "
          f"{theirs:.3f} s ({measured(reference)}): {theirs / ours:.1f}× faster; peak host RSS with the "
          f"reference's vectors {peak.host / GiB:.2f} GiB, a whole reference holds "
          f"{reference.bytes_whole() / GiB:.1f} GiB of θ₀ and dense τ (computed)")


def counted(k: int) -> str:
    return f"median of {k - 1} evaluations after the first" if k > 1 else "one evaluation (it tokenizes too)"


def measured(reference) -> str:
    if reference.scale == 1:
        return "measured over every layer"
    return f"{reference.layers} of {reference.n_layers} layers measured, scaled ×{reference.scale:.1f}"


def median_seconds(switch, xs, sync) -> float:
    times = []
    for x in xs:
        start = time.perf_counter()
        switch(x)
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_reference(ws, xs, device, layers) -> tuple[dict, object]:
    from benchmarks.paper_scale_reference import ReferenceSwitch, reference_score

    ws.merger.reset()
    clock = Clock(ws.merger.model, device)
    switch = timed(ReferenceSwitch(ws.merger.model, ws.merger.experts, layers), clock.sync)
    tokenizer = ws.models.tokenizer
    evaluate = lambda x: reference_score(switch(x), tokenizer, ws.tasks)  # noqa: E731
    return measure(evaluate, switch, clock, xs, device, switch_scale=switch.__wrapped__.scale), switch.__wrapped__


ROWS = [("first evaluation (tokenizes), s", "first", "{:.2f}"), ("one evaluation, s", "total", "{:.2f}"),
        ("  merge (switch), s", "merge", "{:.3f}"), ("  prefill forwards, s", "prefill", "{:.2f}"),
        ("  generation steps, s", "generation", "{:.2f}"), ("  other (outside forwards), s", "other", "{:.3f}"),
        ("tokens read by the model", "tokens", "{:.0f}")]


def report(columns: dict[str, dict], ws, args, notes: list[str]) -> None:
    model = ws.merger.model
    params = sum(p.numel() for p in model.parameters())
    items = {name: len(task.data.items("dev")) for name, task in ws.tasks.items()}
    print(f"\n{args.shape}: {params / 1e6:.0f}M parameters ({params * 4 / GiB:.2f} GiB in float32), {args.dtype} on "
          f"{args.device}, {len(ws.merger.experts)} rank-{args.rank} LoRA experts, {len(items)} tasks × "
          f"{max(items.values())} dev items, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'':34}" + "".join(f"{name:>14}" for name in columns))
    for title, key, fmt in ROWS:
        print(f"{title:34}" + "".join(f"{fmt.format(c[key]):>14}" for c in columns.values()))
    derived = [("  share outside forwards", lambda c: f"{(c['merge'] + c['other']) / c['total']:.1%}"),
               ("tokens per second (in forwards)", lambda c: f"{c['tokens'] / (c['prefill'] + c['generation']):.0f}"),
               ("evaluations per hour", lambda c: f"{3600 / c['total']:.1f}"),
               ("peak host RSS, GiB", lambda c: f"{c['host'] / GiB:.2f}"),
               ("peak device memory, GiB", lambda c: f"{c['gpu'] / GiB:.2f}")]
    for title, fn in derived:
        print(f"{title:34}" + "".join(f"{fn(c):>14}" for c in columns.values()))
    if "reference" in columns:
        ours, ref = columns["evogm"], columns["reference"]
        print(f"evogm / reference: {ref['total'] / ours['total']:.2f}× evaluations per hour, "
              f"switch {ref['merge'] / ours['merge']:.1f}× faster")
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="small")
    parser.add_argument("--experts", type=int, default=10)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--items", type=int, default=10, help="dev (and test) items per task file")
    parser.add_argument("--evaluations", type=int, default=3, help="evogm evaluations (the first is not in the median)")
    parser.add_argument("--reference-evaluations", type=int, default=2, help="0: no reference")
    parser.add_argument("--reference-layers", type=int, help="layers whose dense task vectors the reference keeps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--cache", default="~/.cache/evogm-paper-scale")
    parser.add_argument("--base-copy", default="device", choices=["device", "host", "disk"],
                        help="where the merger keeps θ₀ (models.base_copy)")
    parser.add_argument("--loglik", action="store_true", help="add a column: multiple choice scored by log-likelihood")
    parser.add_argument("--set", nargs="*", default=[], help="run-config overrides, e.g. tasks.0.batch_size=50")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--switches", type=int, default=0, help="only time this many switches, evogm vs reference")
    args = parser.parse_args()
    device = torch.device(args.device)
    start = time.perf_counter()
    sizes = dict(experts=args.experts, rank=args.rank, items=args.items, dtype=args.dtype)
    folder = folder_for(args.cache, args.shape, **sizes)
    build(args.shape, folder, **sizes)
    if args.build_only:
        print(f"built {folder} in {time.perf_counter() - start:.0f} s (run config: {folder / 'run.yaml'})")
        return
    cfg, ws = load(args, folder)
    print(f"{folder}: built or reused and loaded in {time.perf_counter() - start:.0f} s; "
          f"peak host RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    xs = np.random.default_rng(0).uniform(-1, 1, size=(max(args.evaluations, args.reference_evaluations, args.switches),
                                                        ws.merger.dim))
    if args.switches:
        return run_switches(ws, xs[: args.switches], device, args.reference_layers)
    columns = {"evogm": run_evogm(ws, list(ws.tasks.values()), xs[: args.evaluations], device)}
    if args.loglik:
        columns["evogm loglik"] = run_evogm(ws, loglik_tasks(cfg), xs[: args.evaluations], device)
    notes = [f"evogm: {counted(args.evaluations)}; merge measured in full"]
    if args.reference_evaluations:
        xs_ref = xs[: args.reference_evaluations]
        columns["reference"], ref = run_reference(ws, xs_ref, device, args.reference_layers)
        notes.append(f"reference: {counted(len(xs_ref))}; switch "
                     + measured(ref) + ("" if ref.scale == 1 else f"; a whole reference would hold "
                                        f"{ref.bytes_whole() / GiB:.1f} GiB of θ₀ and dense τ on the host "
                                        "(computed), its peak RSS here is for the kept layers"))
    report(columns, ws, args, notes)


if __name__ == "__main__":
    main()
