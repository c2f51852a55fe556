"""Switching a resident model to a new candidate: evogm's Merger against the reference way.

(a) evogm: LoRA factors stacked per module, θ₀ + B_cat · diag(λ s) · A_cat written in place.
(b) reference: every expert's dense task vector kept in memory, a dense weighted sum on the CPU,
    load_state_dict of the merge, then load_state_dict of the base again to reset.

Each (shape, method) runs in its own process so that peak memory is its own. Prints one table.

    python -m benchmarks.merge_speed                 # tiny zoo-sized model and a Qwen2.5-1.5B-shaped stack
    python -m benchmarks.merge_speed --device cuda   # on a GPU: adds device time and device memory

`--space` prints the switches of a search space's candidates instead (evogm/space.py), side by side,
per candidate (random weights in [0, 1] and densities in [0.1, 1] per expert), on the packaged zoo
(8 experts: 6 LoRA, 2 full) and on a random model of Qwen2.5-0.5B's shape (4 rank-16 LoRA experts on
every linear module), one CPU thread unless --threads:

- task arithmetic in place (today's switch);
- TIES in place (`Merger.merge`: trim, elect, disjoint mean on the resident model);
- mergekit-evolve's default path: the TIES merge as mergekit computes it (`sparsify.magnitude`'s
  argsort per task vector, sign consensus, normalize), written to disk (`save_pretrained`,
  safetensors) and loaded again (`from_pretrained`); its two parts, merging and writing + reloading,
  are printed too. It is given the experts' dense task vectors in memory (mergekit reads the experts'
  checkpoints for every merge), so it is, if anything, faster than mergekit-evolve's.

    python -m benchmarks.merge_speed --space --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {
    # name: (Qwen2Config keyword arguments, LoRA rank)
    "tiny (zoo-sized)": (dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                              num_key_value_heads=2, vocab_size=104), 8),
    "qwen2.5-1.5b x4 layers": (dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=4, num_attention_heads=12,
                                    num_key_value_heads=2, vocab_size=2048), 16),
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build(shape: str, experts: int, device: str):
    """A random base of the given shape and `experts` random LoRA experts on every linear module."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from evogm.lora import LoraFactors
    from evogm.models import Expert

    config, rank = SHAPES[shape]
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**config, tie_word_embeddings=False)).to(device).eval().requires_grad_(False)
    out = []
    for i in range(experts):
        factors = {}
        for name, p in model.named_parameters():
            if name.endswith(".weight") and name.split(".")[-2] in TARGETS:
                a = torch.randn(rank, p.shape[1], device=device) / p.shape[1] ** 0.5
                b = torch.randn(p.shape[0], rank, device=device) * 0.01
                factors[name] = LoraFactors(A=a, B=b, scaling=2.0)
        out.append(Expert(f"e{i}", "lora", "", factors=factors))
    return model, out


class Reference:
    """The reference implementation's switch: dense τ per expert, CPU weighted sum, two load_state_dicts."""

    def __init__(self, model, experts):
        self.model = model
        self.base = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.vectors = [{k: f.delta().cpu() for k, f in e.factors.items()} for e in experts]

    def __call__(self, lam):
        merged = dict(self.base)
        for key in self.vectors[0]:
            merged[key] = self.base[key] + sum(float(l) * tv[key] for l, tv in zip(lam, self.vectors))
        self.model.load_state_dict(merged)
        return self.model

    def reset(self):
        self.model.load_state_dict(self.base)


def worker(shape: str, method: str, experts: int, switches: int, device: str, threads: int) -> dict:
    from evogm.merge import Merger

    if threads:
        torch.set_num_threads(threads)
    model, experts_ = build(shape, experts, device)
    rss_model = _rss_mib()
    merger = Merger(model, experts_) if method == "evogm" else Reference(model, experts_)
    del experts_  # the reference keeps its dense copies; evogm keeps the stacked factors
    rng = np.random.default_rng(0)
    merger(rng.uniform(-1, 1, experts))  # warm-up
    times = []
    for _ in range(switches):
        lam = rng.uniform(-1, 1, experts)
        start = time.perf_counter()
        merger(lam)
        if method == "reference":
            merger.reset()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    row = {"shape": shape, "method": method, "experts": experts, "switch_s": float(np.median(times)),
           "peak_rss_mib": _rss_mib(), "model_rss_mib": rss_model,
           "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    if device.startswith("cuda"):
        row["device_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return row


SPACE_SHAPES = {
    # name: Qwen2Config keyword arguments of a random model and its LoRA experts (None: the packaged zoo)
    "zoo": None,
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}
SPACE_EXPERTS = 4  # LoRA experts of the random model (rank 16, every linear module)


def space_models(shape: str):
    """(model, experts, tokenizer or None) of a --space shape, float32 on the CPU."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from evogm.lora import LoraFactors
    from evogm.models import Expert

    if SPACE_SHAPES[shape] is None:
        from benchmarks.landscapes import zoo_models

        models = zoo_models()
        return models.model, models.experts, models.tokenizer
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SPACE_SHAPES[shape])).eval().requires_grad_(False)
    experts = []
    for i in range(SPACE_EXPERTS):
        factors = {name: LoraFactors(A=torch.randn(16, p.shape[1]) / p.shape[1] ** 0.5, B=torch.randn(p.shape[0], 16) * 0.01,
                                     scaling=2.0)
                   for name, p in model.named_parameters() if name.endswith(".weight") and name.split(".")[-2] in TARGETS}
        experts.append(Expert(f"e{i}", "lora", "", factors=factors))
    return model, experts, None


def mergekit_ties(merger, weights: np.ndarray, densities: np.ndarray) -> dict:
    """The TIES merge of every touched tensor as mergekit computes it (mergekit 0.1.5's
    GeneralizedTaskArithmeticMerge with sparsify.magnitude: an argsort per task vector), θ₀ included."""
    state = {}
    for slot in merger._slots:
        experts = slot.experts()
        deltas = slot.dense()
        kept = []
        for delta, d in zip(deltas, densities[experts]):
            k = max(1, int(float(d) * delta.numel()))
            mask = torch.zeros(delta.numel(), dtype=delta.dtype)
            mask[torch.argsort(delta.abs().reshape(-1).float(), descending=True)[:k]] = 1
            kept.append(delta * mask.reshape_as(delta))
        w = torch.tensor(weights[experts], dtype=torch.float32).view(-1, *[1] * deltas[0].dim())
        kept = torch.stack(kept) * w
        mask = kept.sign() == ((kept.sum(0) >= 0).float() * 2 - 1)
        divisor = (w * mask).sum(0)
        divisor[divisor == 0] = 1
        state[slot.name] = merger.base.get(slot.index).float() + (kept * mask).sum(0) / divisor
    return state


def space_worker(shape: str, switches: int, threads: int) -> dict:
    """Seconds per candidate of each switch of --space, medians over `switches` candidates."""
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM

    from evogm.merge import Merger
    from evogm.space import Candidate, Place

    if threads:
        torch.set_num_threads(threads)
    model, experts, tokenizer = space_models(shape)
    merger = Merger(model, experts)
    n = len(experts)
    for slot in merger._slots:
        slot.place = Place(0)  # one cell, one group: each expert's weight and density apply to every tensor
    rng = np.random.default_rng(0)
    candidates = [(rng.uniform(0, 1, n), rng.uniform(0.1, 1, n)) for _ in range(switches + 1)]

    def ties(weights, densities):
        return Candidate("ties", weights[:, None, None], densities[:, None, None], normalize=True)

    times = {key: [] for key in ("task_arithmetic", "ties", "mergekit_merge", "write_reload")}
    folder = Path(tempfile.mkdtemp(prefix="merge-speed-"))
    merger(candidates[0][0])  # the in-place switches warm up once (the others take minutes at 0.5B: no warm-up)
    merger.merge(ties(*candidates[0]))
    for weights, densities in candidates[1:]:
        start = time.perf_counter()
        merger(weights)
        ta = time.perf_counter() - start
        start = time.perf_counter()
        merger.merge(ties(weights, densities))
        in_place = time.perf_counter() - start
        merger.reset()
        start = time.perf_counter()
        state = mergekit_ties(merger, weights, densities)
        merged = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            for name, value in state.items():
                dict(model.named_parameters())[name].data.copy_(value)
        model.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        written = time.perf_counter() - start
        merger.reset()
        for key, value in zip(times, (ta, in_place, merged, written)):
            times[key].append(value)
    shutil.rmtree(folder, ignore_errors=True)
    return {"shape": shape, "experts": n, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "touched_m": sum(slot.param.numel() for slot in merger._slots) / 1e6,
            **{key: float(np.median(v)) for key, v in times.items()}}


def print_space_table(rows: list[dict], args) -> None:
    print(f"# search-space switch, seconds per candidate: median of {args.switches} candidates, CPU, "
          f"torch threads {args.threads or torch.get_num_threads()}")
    print(f"{'shape':14} {'params':>8} {'experts':>7} {'TA in place':>12} {'TIES in place':>14} "
          f"{'mergekit TIES':>14} {'write+reload':>13} {'mergekit path':>14} {'path / in place':>16}")
    for r in rows:
        path = r["mergekit_merge"] + r["write_reload"]
        print(f"{r['shape']:14} {r['params_m']:7.1f}M {r['experts']:7d} {r['task_arithmetic']:12.4f} {r['ties']:14.4f} "
              f"{r['mergekit_merge']:14.4f} {r['write_reload']:13.4f} {path:14.4f} {path / r['ties']:15.1f}x")
    print("mergekit path = mergekit's TIES merge + writing it to disk + loading it (mergekit-evolve's default); "
          "TIES in place = evogm's Merger on the resident model")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=10)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--space", action="store_true",
                        help="a search space's switches: task arithmetic and TIES in place, and write+reload")
    parser.add_argument("--space-shapes", nargs="*", default=list(SPACE_SHAPES))
    parser.add_argument("--space-worker", metavar="SHAPE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.space_worker:
        print(json.dumps(space_worker(args.space_worker, args.switches, args.threads)))
        return
    if args.space:
        rows = []
        for shape in args.space_shapes:
            cmd = [sys.executable, "-m", "benchmarks.merge_speed", "--space-worker", shape, "--switches",
                   str(args.switches), "--threads", str(args.threads)]
            run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
            rows.append(json.loads(run.stdout.splitlines()[-1]))
        print_space_table(rows, args)
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, args.experts, args.switches, args.device, args.threads)))
        return
    rows = []
    for shape in args.shapes:
        for method in ("evogm", "reference"):
            cmd = [sys.executable, "-m", "benchmarks.merge_speed", "--worker", shape, method, "--experts", str(args.experts),
                   "--switches", str(args.switches), "--device", args.device, "--threads", str(args.threads)]
            run = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
            rows.append(json.loads(run.stdout.splitlines()[-1]))
    print_table(rows, args)


def print_table(rows: list[dict], args) -> None:
    print(f"# merge switch: {args.experts} LoRA experts, median of {args.switches} switches, device {args.device}, "
          f"torch threads {args.threads or torch.get_num_threads()}")
    gpu = any("device_peak_mib" in r for r in rows)
    print(f"{'shape':26} {'params':>8} {'method':10} {'switch s':>9} {'peak RSS MiB':>13} {'over model':>11}"
          + (f" {'GPU peak MiB':>13}" if gpu else ""))
    for r in rows:
        print(f"{r['shape']:26} {r['params_m']:7.1f}M {r['method']:10} {r['switch_s']:9.4f} {r['peak_rss_mib']:13.0f} "
              f"{r['peak_rss_mib'] - r['model_rss_mib']:11.0f}" + (f" {r['device_peak_mib']:13.0f}" if gpu else ""))
    for shape in args.shapes:
        ours, ref = (next(r for r in rows if r["shape"] == shape and r["method"] == m) for m in ("evogm", "reference"))
        mem = (ref["device_peak_mib"] / ours["device_peak_mib"]) if gpu else ref["peak_rss_mib"] / ours["peak_rss_mib"]
        print(f"{shape}: evogm switches {ref['switch_s'] / ours['switch_s']:.1f}x faster, "
              f"{mem:.1f}x less peak memory than the reference")


if __name__ == "__main__":
    main()
