"""Switching a resident model to a new candidate: evogm's Merger against the reference way.

(a) evogm: LoRA factors stacked per module, θ₀ + B_cat · diag(λ s) · A_cat written in place.
(b) reference: every expert's dense task vector kept in memory, a dense weighted sum on the CPU,
    load_state_dict of the merge, then load_state_dict of the base again to reset.

Each (shape, method) runs in its own process so that peak memory is its own. Prints one table.

    python -m benchmarks.merge_speed                 # tiny zoo-sized model and a Qwen2.5-1.5B-shaped stack
    python -m benchmarks.merge_speed --device cuda   # on a GPU: adds device time and device memory
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
    times, device_times = [], []
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
    args = parser.parse_args()
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
