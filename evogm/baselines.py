"""The static baselines of a run's final stage: each picks on dev, then is scored on test once.

The best single expert is picked on dev; the static merges (uniform, task arithmetic, TIES, DARE)
choose their global scale on dev (uniform: 1/N, no choice). Their names are `config.BASELINES`.

>>> entry = evaluate("ties", cfg, scoring)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from evogm.config import RunConfig
from evogm.scoring import Scoring


def evaluate(method: str, cfg: RunConfig, scoring: Scoring) -> dict:
    """A static merge at its best global scale on dev (uniform: 1/N, no choice), then test once."""
    experts, dim = list(cfg.models.experts), len(cfg.models.experts) * cfg.models.groups
    if method == "best_expert":
        return best_expert(experts, dim, scoring)
    options = dict(cfg.baselines.options.get(method, {}))
    if method == "uniform":
        scales = [1.0 / len(experts)]
    else:
        scales = [options.pop("scale")] if "scale" in options else list(cfg.baselines.scales)
    linear = method in ("uniform", "task_arithmetic")  # λ = scale · 1: exact and fast through the merger

    def score(scale: float, split: str) -> dict:
        if linear:
            return scoring.merged([scale] * dim, split)
        return scoring.static(method, split, seed=cfg.seed, scale=scale, **options)

    sweep = [score(scale, "dev") for scale in scales]
    pick = best_of(sweep)
    entry = {"scale": scales[pick], "options": options, "dev": sweep[pick], "test": score(scales[pick], "test")}
    if linear:
        entry["coefficients"] = [scales[pick]] * dim
    if len(scales) > 1:
        entry["sweep"] = {f"{s:g}": d["score"] for s, d in zip(scales, sweep)}
    return entry


def best_expert(experts: list[str], dim: int, scoring: Scoring) -> dict:
    """Each expert alone (λ = 1 on its every group, 0 elsewhere) on dev; the best one on test, once."""
    groups = dim // len(experts)
    one_hots = [np.kron(np.eye(len(experts))[e], np.ones(groups)).tolist() for e in range(len(experts))]
    sweep = [scoring.merged(x, "dev") for x in one_hots]
    pick = best_of(sweep)
    return {"expert": experts[pick], "coefficients": one_hots[pick], "dev": sweep[pick],
            "test": scoring.merged(one_hots[pick], "test"),
            "sweep": {name: d["score"] for name, d in zip(experts, sweep)}}


def best_of(sweep: list[dict]) -> int:
    """The index of the best dev score (first of equals; one that could not be scored is never picked
    over one that could)."""
    return int(np.argmax([-np.inf if s["score"] is None else s["score"] for s in sweep]))
