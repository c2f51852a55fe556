"""The zoo's landscape: what the base, each expert and the simple merges score, and a searched merge.

Everything goes through the project's own pieces (evogm.models, evogm.merge, evogm.tasks,
evogm.objective, evogm.scoring), so the table is what a user's run would see. The searched vector (greedy forward
selection, then CMA-ES, on dev) shows that a coefficient vector beats every single expert and every
global-scale merge; it is recorded in the manifest.

>>> # table = measure("zoo", names, task_specs, seed=0, budget=200)
>>> # print(format_table(table))
"""

from __future__ import annotations

import time
import warnings

import cma
import numpy as np

from evogm.merge import Merger
from evogm.models import load_models
from evogm.objective import Objective
from evogm.scoring import fitness, score
from evogm.tasks import load_tasks

SCALES = (0.3, 0.5, 0.7, 1.0)  # task arithmetic's global scales; 1.0 is the naive sum


def candidates(names: list[str], scales=SCALES) -> dict[str, np.ndarray]:
    """The reference merges: base (λ = 0), each expert alone, uniform (1/N), global scales."""
    n = len(names)
    rows = {"base": np.zeros(n)}
    rows.update({f"expert:{name}": np.eye(n)[i] for i, name in enumerate(names)})
    rows["uniform"] = np.full(n, 1.0 / n)
    rows.update({f"task_arithmetic@{s:g}": np.full(n, float(s)) for s in scales})
    return rows


def search(objective: Objective, dim: int, *, budget: int, seed: int, popsize: int = 8, log=print) -> np.ndarray:
    """The best λ found on dev in `budget` evaluations: greedy forward selection (add the expert at λ = 1
    that raises the dev mean most, while one does), then CMA-ES around that point (σ 0.2, box [-1, 2])
    with the rest of the budget. The greedy start finds the experts that compose; CMA-ES tunes the
    scales, which a few dozen evaluations from a uniform start do not reach."""
    spent = 0

    def score(x: np.ndarray) -> float:
        nonlocal spent
        spent += 1
        return -objective(x).loss

    best, one_hots = np.zeros(dim), np.eye(dim)
    best_score = score(best)
    while spent < budget:
        trials = [best + one_hots[i] for i in range(dim) if best[i] == 0][: budget - spent]
        if not trials:
            break
        scores = [score(x) for x in trials]
        if max(scores) <= best_score:
            break
        best, best_score = trials[int(np.argmax(scores))], max(scores)
        log(f"search {spent}/{budget} (greedy): best dev mean {best_score:.3f}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pycma's notes on small dimensions
        es = cma.CMAEvolutionStrategy(best, 0.2, {"popsize": popsize, "bounds": [-1.0, 2.0], "seed": seed + 1,
                                                   "verbose": -9, "verb_log": 0, "verb_disp": 0})
        while budget - spent >= popsize:
            xs = es.ask()
            scores = [score(np.asarray(x)) for x in xs]
            es.tell(xs, [-s for s in scores])
            if max(scores) > best_score:
                best, best_score = np.asarray(xs[int(np.argmax(scores))]).copy(), max(scores)
            log(f"search {spent}/{budget} (CMA-ES): best dev mean {best_score:.3f}")
    return best


def measure(base: str, experts: dict[str, str], task_specs: list[dict], *, seed: int, budget: int, log=print) -> dict:
    """{"tasks", "rows": {row: {"coefficients", "dev": {task: acc, "mean"}, "test": {...}}}, "seconds_per_eval"}."""
    models = load_models(base, experts, dtype="float32", device="cpu")
    merger = Merger(models.model, models.experts, groups=1)
    tasks = load_tasks(task_specs)
    dev = Objective(merger, models.tokenizer, tasks)
    rows = candidates(models.names)
    start = time.perf_counter()
    dev(rows["uniform"])  # first call tokenizes the tasks; time the second
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    dev(rows["uniform"])
    seconds = time.perf_counter() - start
    log(f"one multi-task evaluation on dev: {seconds:.2f}s")
    if budget > 0:
        rows["searched"] = search(dev, len(models.names), budget=budget, seed=seed, log=log)
    table = {name: _scores(merger, models.tokenizer, x, tasks) for name, x in rows.items()}
    merger.reset()
    return {"tasks": [t.name for t in tasks], "rows": table, "seconds_per_eval": round(seconds, 3)}


def _scores(merger: Merger, tokenizer, x: np.ndarray, tasks) -> dict:
    out = {"coefficients": [round(float(v), 4) for v in x]}
    model = merger(x)
    for split in ("dev", "test"):
        metrics = score(model, tokenizer, tasks, split)
        scores = {t.name: round(metrics[f"{t.name}/{t.primary}"], 4) for t in tasks}
        out[split] = {**scores, "mean": round(fitness(metrics, tasks), 4)}
    return out


def format_table(landscape: dict, split: str = "dev") -> str:
    """A plain-text table: one row per merge, one column per task, then the mean (accuracy, %)."""
    tasks = landscape["tasks"] + ["mean"]
    width = max(len(r) for r in landscape["rows"]) + 2
    lines = [f"{split:<{width}}" + "".join(f"{t[:9]:>10}" for t in tasks)]
    for name, row in landscape["rows"].items():
        lines.append(f"{name:<{width}}" + "".join(f"{100 * row[split][t]:>10.1f}" for t in tasks))
    return "\n".join(lines)


def checks(landscape: dict, split: str) -> dict[str, float]:
    """The margins the zoo promises (points of accuracy; each must be positive for the promise to hold)."""
    rows = landscape["rows"]
    experts = {k.split(":", 1)[1]: v for k, v in rows.items() if k.startswith("expert:")}
    base = rows["base"][split]
    own_gain = min(v[split][name] - base[name] for name, v in experts.items() if name in base)
    best_expert = max(v[split]["mean"] for v in experts.values())
    best_global = max(v[split]["mean"] for k, v in rows.items() if k == "uniform" or k.startswith("task_arithmetic"))
    searched = rows.get("searched", {}).get(split, {}).get("mean", float("nan"))
    naive = rows["task_arithmetic@1"][split]["mean"]
    return {
        "expert_own_gain_min (>= 30)": 100 * own_gain,
        "searched_minus_best_expert (>= 8)": 100 * (searched - best_expert),
        "searched_minus_best_global (>= 5)": 100 * (searched - best_global),
        "best_expert_minus_naive_sum (> 0)": 100 * (best_expert - naive),
    }
