"""How well EvoGM+'s GP predicts held-out merges, by the kernel's inputs: the coefficients λ alone,
λ with their sum (EvoGM+'s default), or λ mapped into merged-weight geometry, G^{1/2}·λ with G the
experts' Gram matrix ⟨τᵢ, τⱼ⟩ (so that kernel distance is the distance between the merged weights).

    python benchmarks/surrogate_inputs.py --landscapes zoo zoo-interior zoo-correlated

Reads the evaluations of the landscape suite's finished quick-mode runs (runs/landscapes-quick,
``--optimizers``), pools them per landscape, and ``--repeats`` times fits each GP on ``--train``
random points and predicts ``--test`` others. Prints, per input, the Spearman correlation of the
predicted and the measured loss and the share of the test set's best tenth that the prediction's
best tenth finds (mean ± std over the repeats). The derived landscapes' experts must be built
(``benchmarks/landscapes.py`` builds them on first use); one coefficient per expert only.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from landscapes import ROOT, gram, zoo_models

from evogm.search.surrogate import GaussianProcess


class MetricGP(GaussianProcess):
    """The GP with inputs λ·R (R = G^{1/2}, scaled to unit mean diagonal)."""

    def __init__(self, root: np.ndarray, **options):
        super().__init__(**options)
        self.root = torch.as_tensor(root)

    def _inputs(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.root


def sqrt_metric(G: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(G)
    return V @ np.diag(np.sqrt(np.clip(w, 0.0, None))) @ V.T / math.sqrt(np.mean(np.diag(G)))


def landscape_gram(name: str, zoo_gram: np.ndarray, cache: Path) -> np.ndarray:
    if name == "zoo":
        return zoo_gram
    M = np.array(json.loads((cache / name / "experts.json").read_text())["matrix"])
    return M @ zoo_gram @ M.T  # τ' = M τ


def pooled(runs: Path, optimizers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for optimizer in optimizers:
        for path in sorted((runs / "runs" / optimizer).glob("seed*/evaluations.jsonl")):
            for record in map(json.loads, path.open()):
                if record["loss"] is not None and not record.get("error"):
                    xs.append(record["coefficients"])
                    ys.append(record["loss"])
    return np.array(xs), np.array(ys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landscapes", nargs="+", default=["zoo", "zoo-interior", "zoo-correlated"],
                        choices=["zoo", "zoo-interior", "zoo-correlated"])
    parser.add_argument("--optimizers", default="evogm-plus,tpe,cmaes,de,random")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "landscapes-quick")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "evogm" / "landscapes")
    parser.add_argument("--train", type=int, default=120)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    zoo_gram = gram(zoo_models().experts)
    for name in args.landscapes:
        X, y = pooled(args.runs / name, args.optimizers.split(","))
        G = landscape_gram(name, zoo_gram, args.cache)
        root = sqrt_metric(G)
        gps = {"λ": GaussianProcess, "λ and Σλ": lambda: GaussianProcess(sum_input=True),
               "G^½·λ": lambda: MetricGP(root)}
        scores = {k: [] for k in gps}
        rng = np.random.default_rng(0)
        for _ in range(args.repeats):
            order = rng.permutation(len(X))
            train, test = order[: args.train], order[args.train : args.train + args.test]
            best = set(np.argsort(y[test])[: len(test) // 10])
            for label, make in gps.items():
                mean, _ = make().fit(X[train], y[train]).predict(X[test])
                found = set(np.argsort(mean)[: len(test) // 10])
                scores[label].append((spearmanr(mean, y[test]).statistic, len(best & found) / len(best)))
        print(f"{name}: {len(X)} evaluations, condition number of G {np.linalg.cond(G):.1f}")
        for label, values in scores.items():
            (rho, top), (rho_sd, top_sd) = np.mean(values, axis=0), np.std(values, axis=0)
            print(f"  {label:9s} Spearman {rho:.3f} ± {rho_sd:.3f}   best tenth found {top:.3f} ± {top_sd:.3f}")


if __name__ == "__main__":
    main()
