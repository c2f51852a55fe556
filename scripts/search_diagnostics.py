"""Per-generation diagnostics of finished or running runs: how spread out the proposals are and how good.

For each generation of each run's `evaluations.jsonl`: the mean over coefficients of the standard
deviation of the proposals (the search's diversity), and the best and median dev score of the
generation. A search whose spread collapses while its median stays flat has stopped exploring.

    python scripts/search_diagnostics.py runs/compare-zoo/runs/*/seed0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def generations(run_dir: Path) -> list[tuple[int, float, float, float]]:
    """(generation, spread, best dev score, median dev score) per generation, in order."""
    by_gen: dict[int, list[dict]] = {}
    with open(run_dir / "evaluations.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if "gen" in row and "coefficients" in row:
                by_gen.setdefault(row["gen"], []).append(row)
    out = []
    for gen in sorted(by_gen):
        rows = by_gen[gen]
        coefficients = np.array([r["coefficients"] for r in rows], dtype=float)
        scores = np.array([-r["loss"] for r in rows if r.get("loss") is not None])
        best, median = (scores.max(), float(np.median(scores))) if len(scores) else (np.nan, np.nan)
        out.append((gen, float(coefficients.std(axis=0).mean()), float(best), median))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories")
    for run_dir in parser.parse_args().runs:
        rows = generations(run_dir)
        print(f"\n{run_dir}")
        print("  generation " + " ".join(f"{g:>6d}" for g, *_ in rows))
        print("  spread     " + " ".join(f"{s:6.2f}" for _, s, _, _ in rows))
        print("  best dev   " + " ".join(f"{b:6.3f}" for _, _, b, _ in rows))
        print("  median dev " + " ".join(f"{m:6.3f}" for _, _, _, m in rows))


if __name__ == "__main__":
    main()
