"""The report of a run directory: report.md with its tables, and PNG plots under plots/.

Everything is read back from the run's files (config.yaml, evaluations.jsonl, best.json,
final.json), so a report can be redrawn at any time. Plots use matplotlib's Figure API with the
Agg canvas: no pyplot, no global backend switch, no display needed.

>>> write_report("runs/zoo")              # doctest: +SKIP
PosixPath('runs/zoo/report.md')
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evogm.adaptive import items_scored
from evogm.rundir import RunDir
from evogm.runlog import best_so_far, flip, write_atomic
from evogm.scoring import MULTI_TASK, normalized_weights

LABELS = {"best": "best (search)", "initial_best": "initial best", "best_expert": "best single expert",
          "uniform": "uniform",
          "task_arithmetic": "task arithmetic", "ties": "TIES", "dare": "DARE"}


def write_report(run_dir) -> Path:
    """Draw the plots and write report.md for one search (multi-task run or single-task sub-run)."""
    run = RunDir(run_dir)
    config, final, records = run.saved_config(), run.read_final(), run.records()
    plots = {"best_so_far": plot_best_so_far(records, run.plots / "best_so_far.png"),
             "coefficients": plot_coefficients(final, run.plots / "coefficients.png"),
             "tasks": plot_tasks(final, run.plots / "tasks.png")}
    text = "\n".join([header(run.path, config, final, records), results_table(final),
                      coefficients_table(final, config), plots_section(plots)])
    write_atomic(run.report, text)
    return run.report


def write_summary_report(run_dir, finals: dict[str, dict]) -> Path:
    """The single-task summary: one row per task, every candidate's test score, links to sub-reports."""
    run = RunDir(run_dir)
    config = run.saved_config()
    names = _candidate_names(next(iter(finals.values())))
    rows = [["task", *(f"{LABELS.get(n, n)} test" for n in names), "best dev", "report"]]
    for task, final in finals.items():
        c = final["candidates"]
        rows.append([task, *(_fmt(c[n]["test"]["score"]) for n in names), _fmt(c["best"]["dev"]["score"]),
                     f"[{task}/report.md]({task}/report.md)"])
    plot = plot_summary(finals, names, run.plots / "summary.png")
    text = "\n".join([
        f"# evogm single-task run: {run.path.name}\n",
        f"One full search per task: optimizer `{config['search']['optimizer']}`, "
        f"{config['search']['budget']} evaluations each, seed {config['seed']}.\n",
        "## Test score per task\n", markdown_table(rows), "", f"![summary]({plot})\n"])
    write_atomic(run.report, text)
    return run.report


# --- text ---------------------------------------------------------------------------------------


def header(run_dir: Path, config: dict, final: dict, records: list[dict]) -> str:
    failed = sum(r["loss"] is None or bool(r.get("error")) for r in records)
    seconds = [r["seconds"] for r in records]
    best = final["candidates"]["best"]
    return "\n".join([
        f"# evogm run: {run_dir.name}\n",
        f"- target: {final['target']} (tasks: {', '.join(final['tasks'])})",
        f"- optimizer: `{config['search']['optimizer']}`, seed {config['seed']}, budget {config['search']['budget']}",
        f"- evaluations: {len(records)} ({failed} failed), {np.mean(seconds) if seconds else 0:.2f} s each on average",
        f"- experts: {', '.join(final['experts'])}; {final['groups']} coefficient group(s) each",
        *([space_line(final["space"])] if "space" in final else []),
        f"- best: evaluation {best['evaluation']} — dev {_fmt(best['dev']['score'])}, "
        f"test {_fmt(best['test']['score'])}; exported to [model/](model/)",
        search_gain(config, final), items_line(records, final), ""])


def items_line(records: list[dict], final: dict) -> str:
    """Dev items the search scored, and the saving of adaptive evaluation against scoring every item."""
    if not final.get("dev_items"):
        return "- dev items scored: not counted (a task without a data file)"
    scored, whole = items_scored(records, final["dev_items"])
    partial = sum(bool(r.get("partial")) for r in records)
    if scored == whole:
        return f"- dev items scored: {scored:,} (every evaluation in full)"
    return (f"- dev items scored: {scored:,} of {whole:,} for full scoring ({whole / max(scored, 1):.2f}× fewer); "
            f"{partial} of {len(records)} evaluations stopped early (partial: estimates, never the best)")


def search_gain(config: dict, final: dict) -> str:
    """The best's dev gain over the initial population's best, against the dev split's noise: the
    standard error of that difference, bounded as for scores in [0, 1] (SE² ≤ Σ w²·p(1−p)/n per
    candidate, w the weights normalized as the fitness normalizes them, the two added as if
    independent; a conservative bound)."""
    best, initial, items = final["candidates"]["best"], final["candidates"].get("initial_best"), final.get("dev_items")
    if not initial:
        return "- search gain: no initial population logged"
    difference = best["dev"]["score"] - initial["dev"]["score"]
    gain = f"- search gain over the initial population's best: {difference:+.4f} dev"
    if not items or set(items) != set(final["tasks"]):
        return gain
    given = {t["name"]: t.get("weight", 1.0) for t in config["tasks"]}
    weights = dict(zip(final["tasks"], normalized_weights(
        [given[t] if final["target"] == MULTI_TASK else 1.0 for t in final["tasks"]])))

    def variance(entry: dict) -> float:
        p = {t: min(max(entry["dev"]["metrics"][m], 0.0), 1.0) for t, m in final["tasks"].items()}
        return sum(weights[t] ** 2 * p[t] * (1 - p[t]) / items[t] for t in p)

    noise = math.sqrt(variance(best) + variance(initial))
    ratio = difference / noise if noise else math.inf
    return f"{gain}, {ratio:.1f} × the dev split's noise (one standard error: ±{noise:.4f})"



def results_table(final: dict) -> str:
    """Rows: candidates; columns: the mean score and each task's primary metric, dev and test."""
    tasks, c = final["tasks"], final["candidates"]
    head = ["candidate", "dev", "test", *(f"{t} {s}" for t in tasks for s in ("dev", "test"))]
    rows = [head]
    for name in _candidate_names(final):
        e = c[name]
        per_task = [_fmt(e[s]["metrics"].get(tasks[t])) for t in tasks for s in ("dev", "test")]
        rows.append([_label(name, e), _fmt(e["dev"]["score"]), _fmt(e["test"]["score"]), *per_task])
    metric = ", ".join(f"{t}: `{m}`" for t, m in tasks.items())
    failures = final_failures(c)
    failed = ["## Failures in the final stage\n", *(f"- {line}" for line in failures),
              "\nTheir scores (–) could not be computed; the search's log is complete, and `evogm eval` "
              "scores a merge again once the cause is fixed.\n"] if failures else []
    return "\n".join(["## Results (dev picks, test reports)\n", markdown_table(rows), "",
                      f"Scores are the tasks' weighted mean; per task the primary metric ({metric}).\n", *failed])


def final_failures(candidates: dict) -> list[str]:
    """'CANDIDATE on SPLIT: ERROR' for every score the final stage could not compute."""
    return [f"{LABELS.get(name, name)} on {split}: {entry[split]['error']}" for name, entry in candidates.items()
            for split in ("dev", "test") if entry[split].get("error")]


def space_line(space: dict) -> str:
    """What the search searched, for a run with a `space:` section."""
    parts = [f"method {space['method']}", f"weight {space['weight'].split(': ')[0]}"]
    if "density" in space:
        parts.append(f"density {space['density'] if isinstance(space['density'], float) else space['density'].split(':')[0]}")
    if len(space["cells"]) > 1:
        parts.append(f"cells {', '.join(space['cells'])}")
    if space["smooth"]:
        parts.append("groups are anchors interpolated across depth (smooth)")
    return f"- search space: {'; '.join(parts)} ({space['dim']} coordinates)"


def coefficients_table(final: dict, config: dict | None = None) -> str:
    if "space" in final and config is not None:
        return space_table(final, config)
    lam = np.asarray(final["candidates"]["best"]["coefficients"]).reshape(len(final["experts"]), -1)
    rows = [["expert", *(f"group {g}" for g in range(lam.shape[1]))]]
    rows += [[name, *(f"{v:+.3f}" for v in lam[i])] for i, name in enumerate(final["experts"])]
    return "\n".join(["## Best coefficients λ (θ = θ₀ + Σ λ τ)\n", markdown_table(rows), ""])


def space_table(final: dict, config: dict) -> str:
    """The best merge of a search space, decoded: each expert's weight (and density) per cell and group."""
    from evogm.schema import build
    from evogm.space import Space, SpaceConfig

    space = Space(build(SpaceConfig, config["space"], "space."), final["experts"], final["groups"], config["seed"])
    best = space.decode(final["candidates"]["best"]["coefficients"])
    arrays = [best.weight] + ([best.density] if best.density is not None else [])
    params = ["weight"] + (["density"] if best.density is not None else [])
    columns = [f"{p}{'' if len(space.cells) == 1 else ' ' + c}{'' if space.groups == 1 else f' g{g}'}"
               for p in params for c in space.cells for g in range(space.groups)]
    rows = [["expert", *columns]]
    for i, name in enumerate(space.experts):
        rows.append([name, *(f"{v:+.3f}" for a in arrays for v in a[i].reshape(-1))])
    return "\n".join([f"## Best merge ({best.method}): each expert's values per cell and group\n", markdown_table(rows), ""])


def plots_section(plots: dict[str, str]) -> str:
    return "\n".join(["## Plots\n", *(f"![{name}]({path})\n" for name, path in plots.items())])


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(str, rows[0])) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows[1:]])


def _candidate_names(final: dict) -> list[str]:
    return list(final["candidates"])


def _label(name: str, entry: dict) -> str:
    label = LABELS.get(name, name)
    if entry.get("expert"):
        return f"{label} ({entry['expert']})"
    return f"{label} (scale {entry['scale']:g})" if entry.get("scale") is not None and name != "uniform" else label


def _fmt(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


# --- plots --------------------------------------------------------------------------------------


def plot_best_so_far(records: list[dict], path: Path) -> str:
    fitness = np.array([flip(r["loss"]) if r["loss"] is not None else np.nan for r in records])
    best = np.array([np.nan if v is None else v for v in best_so_far(records)])
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(np.arange(1, len(fitness) + 1), fitness, ".", alpha=0.4, label="evaluation")
    ax.plot(np.arange(1, len(best) + 1), best, "-", label="best so far")
    ax.set(xlabel="evaluations", ylabel="dev score", title="search progress")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_coefficients(final: dict, path: Path) -> str:
    experts = final["experts"]
    lam = np.asarray(final["candidates"]["best"]["coefficients"]).reshape(len(experts), -1)
    fig = Figure(figsize=(max(5, 0.6 * len(experts) * lam.shape[1] + 2), 3.5))
    ax = fig.subplots()
    width = 0.8 / lam.shape[1]
    for g in range(lam.shape[1]):
        ax.bar(np.arange(len(experts)) + g * width, lam[:, g], width, label=f"group {g}")
    ax.set_xticks(np.arange(len(experts)) + 0.4 - width / 2, experts, rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set(ylabel="λ", title="best coefficients per expert")
    if lam.shape[1] > 1:
        ax.legend()
    return _save(fig, path)


def plot_tasks(final: dict, path: Path) -> str:
    tasks, c = final["tasks"], final["candidates"]
    names = _candidate_names(final)
    fig = Figure(figsize=(max(6, 1.2 * len(tasks) * 2 + 2), 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / len(names)
    for ax, split in zip(axes, ("dev", "test")):
        for i, name in enumerate(names):
            values = [c[name][split]["metrics"].get(m, np.nan) for m in tasks.values()]
            ax.bar(np.arange(len(tasks)) + i * width, _nan(values), width, label=LABELS.get(name, name))
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, list(tasks))
        ax.set_title(split)
    axes[0].set_ylabel("primary metric")
    axes[1].legend(fontsize="small")
    return _save(fig, path)


def plot_summary(finals: dict[str, dict], names: list[str], path: Path) -> str:
    fig = Figure(figsize=(max(6, 1.2 * len(finals) + 2), 3.8))
    ax = fig.subplots()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        scores = [f["candidates"][name]["test"]["score"] for f in finals.values()]
        ax.bar(np.arange(len(finals)) + i * width, _nan(scores), width, label=LABELS.get(name, name))
    ax.set_xticks(np.arange(len(finals)) + 0.4 - width / 2, list(finals))
    ax.set(ylabel="test score", title="single-task searches")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _nan(values) -> list[float]:
    return [np.nan if v is None else float(v) for v in values]


def _save(fig: Figure, path: Path) -> str:
    """Write a PNG atomically; return its path relative to the report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(tmp))
    os.replace(tmp, path)
    return f"{path.parent.name}/{path.name}"
