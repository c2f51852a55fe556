"""The comparison's outputs: comparison.json, comparison.md and two plots, read from the summary.

>>> write(Path("runs/cmp"), summary)      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from evogm.report import LABELS, _fmt, _save, markdown_table
from evogm.runlog import write_atomic, write_json




def write(out: Path, summary: dict) -> Path:
    plots = {"best so far": plot_curves(summary, out / "plots" / "best_so_far.png"),
             "dev vs test": plot_dev_test(summary, out / "plots" / "dev_vs_test.png")}
    write_json(out / "comparison.json", summary)
    write_atomic(out / "comparison.md", markdown(summary, plots))
    return out / "comparison.md"


def markdown(summary: dict, plots: dict[str, str]) -> str:
    seeds = summary["seeds"]
    rows = [["method", "best dev (mean ± std)", "its test (mean ± std)", "evals to reach the best static dev",
             "dev items scored per run", "fewer than full scoring"]]
    for name, m in summary["methods"].items():
        reach = m["evals_to_static"]
        rows.append([name, _pm(m["dev_mean"], m["dev_std"]), _pm(m["test_mean"], m["test_std"]),
                     f"{_fmt1(reach['mean'])} ({reach['reached']}/{reach['of']} seeds)", *_items(m)])
    static = [["static baseline", "dev", "test"]] + [
        [LABELS.get(k, k), _fmt(v["dev"]), _fmt(v["test"])] for k, v in summary["static"].items()]
    return "\n".join([
        "# Comparison\n",
        f"Budget {summary['budget']} evaluations per run, seeds {', '.join(map(str, seeds))}. "
        "Dev picks each run's best; its test score is measured once. "
        f"Best static dev score: {_fmt(summary['static_best_dev'])}.\n",
        markdown_table(rows), "", markdown_table(static), "",
        *(f"![{k}]({v})\n" for k, v in plots.items()),
    ])


def plot_curves(summary: dict, path: Path) -> str:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, m in summary["methods"].items():
        curves = np.array([[np.nan if v is None else v for v in r["curve"]] for r in m["runs"]], dtype=float)
        x = np.arange(1, curves.shape[1] + 1)
        mean, lo, hi = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
        ax.plot(x, mean, label=name)
        ax.fill_between(x, lo, hi, alpha=0.15)
    if summary["static_best_dev"] is not None:
        ax.axhline(summary["static_best_dev"], color="gray", linestyle="--", label="best static (dev)")
    ax.set(xlabel="evaluations", ylabel="best dev score so far", title="mean over seeds, band: min–max")
    ax.legend(fontsize="small", loc="lower right")
    return _save(fig, path)


def plot_dev_test(summary: dict, path: Path) -> str:
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for name, m in summary["methods"].items():
        ax.scatter([r["dev"] for r in m["runs"]], [r["test"] for r in m["runs"]], label=name, alpha=0.8)
    for name, v in summary["static"].items():
        ax.scatter([v["dev"]], [v["test"]], marker="x", color="black")
        ax.annotate(LABELS.get(name, name), (v["dev"], v["test"]), fontsize="x-small")
    ax.set(xlabel="dev score", ylabel="test score", title="each run's best (x: static baselines)")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _items(m: dict) -> list[str]:
    """Mean dev items scored per run, and the saving of adaptive evaluation against full scoring."""
    items, whole = m.get("items"), m.get("items_full")
    if not items or not whole:
        return ["–", "–"]
    return [f"{items:,.0f}", f"{whole / items:.2f}×"]


def _pm(mean, std) -> str:
    return "–" if mean is None else f"{mean:.4f} ± {std:.4f}"


def _fmt1(value) -> str:
    return "–" if value is None else f"{value:.1f}"
