"""The static baselines of a run's final stage: each picks on dev, then is scored on test once.

The best single expert is picked on dev; the static merges (uniform, task arithmetic, TIES, DARE)
choose their global scale on dev (uniform: 1/N, no choice). Their names are `config.BASELINES`.

>>> entry = evaluate("ties", cfg, scoring)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from evogm.config import RunConfig
from evogm.scoring import Request, Scoring, merge_request, static_request


def evaluate(method: str, cfg: RunConfig, scoring: Scoring) -> dict:
    """A static merge at its best global scale on dev (uniform: 1/N, no choice; the best single expert:
    the best expert alone), then test once."""
    labels, sweep, scores, pick = picked(method, cfg, scoring)
    entry = {"dev": scores[pick], "test": scoring.score(sweep[pick].on("test"))}
    if method == "best_expert":
        entry = {"expert": labels[pick], "coefficients": list(sweep[pick].coefficients), **entry}
    else:
        entry = {"scale": labels[pick], "options": options_of(method, cfg), **entry}
        if not sweep[pick].method:
            entry["coefficients"] = list(sweep[pick].coefficients)
    if len(sweep) > 1:
        entry["sweep"] = {(label if method == "best_expert" else f"{label:g}"): d["score"] for label, d in zip(labels, scores)}
    return entry


def pick_on_test(method: str, cfg: RunConfig, scoring: Scoring) -> Request:
    """What the method's test score will be: its dev pick on test (its dev sweep scored first)."""
    _, sweep, _, pick = picked(method, cfg, scoring)
    return sweep[pick].on("test")


def picked(method: str, cfg: RunConfig, scoring: Scoring) -> tuple[list, list[Request], list[dict], int]:
    """The method's dev sweep scored, and which of it is picked: (labels, requests, scores, index)."""
    labels, sweep = dev_sweep(method, cfg)
    scores = [scoring.score(request) for request in sweep]
    return labels, sweep, scores, best_of(scores)


def dev_sweep(method: str, cfg: RunConfig) -> tuple[list, list[Request]]:
    """The choices a baseline picks among on dev, as (labels, requests): each expert alone (λ = 1 on
    its every group, 0 elsewhere) for the best single expert, else each global scale (uniform: 1/N)."""
    experts, dim = list(cfg.models.experts), len(cfg.models.experts) * cfg.models.groups
    if method == "best_expert":
        groups = dim // len(experts)
        return experts, [merge_request(np.kron(np.eye(len(experts))[e], np.ones(groups)), "dev")
                         for e in range(len(experts))]
    given = cfg.baselines.options.get(method, {})
    if method == "uniform":
        scales = [1.0 / len(experts)]
    else:
        scales = [given["scale"]] if "scale" in given else list(cfg.baselines.scales)
    if method in ("uniform", "task_arithmetic"):  # λ = scale · 1: exact and fast through the merger
        return scales, [merge_request([scale] * dim, "dev") for scale in scales]
    options = options_of(method, cfg)
    return scales, [static_request(method, "dev", seed=cfg.seed, scale=scale, **options) for scale in scales]


def options_of(method: str, cfg: RunConfig) -> dict:
    """The method's options from the config, its scale aside (the sweep's to choose)."""
    return {k: v for k, v in cfg.baselines.options.get(method, {}).items() if k != "scale"}


def best_of(sweep: list[dict]) -> int:
    """The index of the best dev score (first of equals; one that could not be scored is never picked
    over one that could)."""
    return int(np.argmax([-np.inf if s["score"] is None else s["score"] for s in sweep]))
