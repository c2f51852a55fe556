"""Which evaluated merge should a search hand over? The best dev score, or the best of a model's view.

    python benchmarks/final_pick.py --out runs/landscapes-quick --optimizers evogm-plus,pso,tpe,cmaes

A run's dev score of a merge is a sample mean over the dev items, so the best of 160 dev scores is
partly the luckiest one (the winner's curse): its test score falls. This study takes every finished
run of the landscape suite (`benchmarks/landscapes.py`; OUT/LANDSCAPE/runs/METHOD/seedN) and picks a
merge from the run's own evaluations by each rule:

- ``best``: the highest dev score (what every run reports; its test score is in final.json);
- ``gp``: the lowest posterior mean of a Gaussian process fitted to all of the run's evaluations
  (EvoGM+'s own surrogate, ``evogm.search.surrogate``), which averages each merge's dev score with
  its neighbours' and so discounts an isolated lucky one.

A pick other than ``best`` is scored on the run's test split once (kept as pick_RULE.json in the run
directory). Prints, per landscape and optimizer, the mean test score of each rule's picks and the
mean paired difference gp − best with its standard error, then the same over every run.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import yaml
from landscapes import run_inputs


def evaluations(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients, losses) of the run's full, successful evaluations."""
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    kept = [r for r in records if r["loss"] is not None and not r.get("error") and not r.get("partial")
            and math.isfinite(r["loss"])]
    return np.array([r["coefficients"] for r in kept], dtype=np.float64), np.array([r["loss"] for r in kept])


def gp_pick(X: np.ndarray, y: np.ndarray) -> int:
    """The evaluated row with the lowest posterior mean of the GP fitted to every evaluation."""
    from evogm.search.surrogate import GaussianProcess

    mean, _ = GaussianProcess(steps=30, sum_input=True).fit(X, y).predict(X)
    return int(np.argmin(mean))


class TestScorer:
    """Test scores of merges on one run config's models and tasks (the models loaded once)."""

    def __init__(self, config: Path):
        from evogm.evaluate import build_tasks, plan
        from evogm.models import load_models

        base, experts, specs, _ = plan(str(config), None, {}, [], [])
        self.tasks = build_tasks(specs, None, None, "test")
        self.models = load_models(base, experts, dtype="float32", device="cpu")

    def __call__(self, coefficients: np.ndarray) -> float:
        from evogm.evaluate import score_each, weighted_mean
        from evogm.merge import Merger

        lam = np.reshape(coefficients, (len(self.models.experts), -1))
        merger = Merger(self.models.model, self.models.experts, groups=lam.shape[1])
        rows, _ = score_each(merger(lam), self.models.tokenizer, self.tasks, "test")
        merger.reset()
        return weighted_mean(self.tasks, rows)


def picks(run_dir: Path, scorers: dict[str, TestScorer]) -> dict[str, float]:
    """Each rule's pick's test score (cached in the run directory); ``scorers`` keeps one TestScorer
    per base model, built the first time a pick needs scoring."""
    X, y = evaluations(run_dir)
    best = json.loads((run_dir / "final.json").read_text())["candidates"]["best"]
    out = {"best": best["test"]["score"]}
    cache, row = run_dir / "pick_gp.json", gp_pick(X, y)
    key = {"coefficients": X[row].tolist(), "inputs": run_inputs(run_dir)}
    kept = json.loads(cache.read_text()) if cache.exists() else {}
    if all(kept.get(k) == v for k, v in key.items()):
        out["gp"] = kept["test"]
    else:
        if int(np.argmin(y)) == row:
            out["gp"] = out["best"]
        else:
            config = run_dir / "config.yaml"
            base = yaml.safe_load(config.read_text())["models"]["base"]
            if base not in scorers:
                scorers[base] = TestScorer(config)
            out["gp"] = scorers[base](X[row])
        cache.write_text(json.dumps({**key, "dev": -float(y[row]), "test": out["gp"]}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/landscapes-quick"))
    parser.add_argument("--optimizers", default="evogm-plus,pso,tpe,cmaes,bo")
    parser.add_argument("--landscapes", nargs="+")
    args = parser.parse_args()
    landscapes = args.landscapes or sorted(p.name for p in args.out.iterdir() if (p / "runs").is_dir())
    every: dict[str, list[float]] = {}
    print("| landscape | optimizer | runs | test of best dev | test of gp pick | gp − best (± SE) |")
    print("|---|---|---|---|---|---|")
    for landscape in landscapes:
        scorers: dict[str, TestScorer] = {}
        for method in args.optimizers.split(","):
            diffs, rows = [], []
            for run_dir in sorted((args.out / landscape / "runs" / method).glob("seed*")):
                if not (run_dir / "final.json").exists():
                    continue
                got = picks(run_dir, scorers)
                rows.append(got)
                diffs.append(got["gp"] - got["best"])
            if not rows:
                continue
            every.setdefault(method, []).extend(diffs)
            se = np.std(diffs, ddof=1) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
            print(f"| {landscape} | {method} | {len(rows)} | {np.mean([r['best'] for r in rows]):.4f} | "
                  f"{np.mean([r['gp'] for r in rows]):.4f} | {np.mean(diffs):+.4f} ± {se:.4f} |", flush=True)
    print("\nover every landscape and seed:")
    for method, diffs in every.items():
        se = np.std(diffs, ddof=1) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        print(f"  {method}: gp − best {np.mean(diffs):+.4f} ± {se:.4f} over {len(diffs)} runs")


if __name__ == "__main__":
    main()
