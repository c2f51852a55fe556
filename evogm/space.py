"""The search space: what the vector an optimizer searches means as a merge.

Every optimizer searches one flat vector x in a box. The space (the run config's `space:` section)
says which merge x is: its method (task arithmetic, TIES, DARE-TIES or a linear average), which of
the method's parameters are searched (each expert's `weight`, always; its `density` for TIES and
DARE-TIES, in a range, or fixed), and where each value applies (per layer group, per module filter,
or anchors interpolated across depth with `smooth`). `Space.decode(x)` gives the merge
(`Candidate`), `Space.encode(candidate)` the vector back, `Space.describe()` says how, for the
recipe and the report. Pure numpy: a config check and an optimizer need no torch.

The default space is today's search, exactly: task arithmetic, x is λ, one per expert and group.

Coordinates are expert-major: expert e owns `per_expert` consecutive coordinates, its weights first,
then (when searched) its densities, each over the cells (filter, group) in the order
filter · groups + group, with the configured filters first and the rest of the modules last.

- a weight coordinate is the weight itself (task arithmetic's λ: any real number, as today);
- a density coordinate maps the box [-1, 1] linearly onto the density range, [-1, 1] → [low, high]
  (clipped outside the box, which rounds of elites can reach), so that every optimizer searches one
  box and a density never leaves the range.

>>> space = Space(SpaceConfig(method="ties", density=(0.2, 1.0)), ["a", "b"])
>>> space.dim, space.names()[:2]
(4, ['a.weight', 'a.density'])
>>> c = space.decode([0.5, -1.0, 1.0, 1.0])
>>> c.weight[:, 0, 0].tolist(), c.density[:, 0, 0].tolist()
([0.5, 1.0], [0.2, 1.0])
>>> space.encode(c).tolist()
[0.5, -1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from evogm.errors import EvogmError
from evogm.registry import did_you_mean

METHODS = ("task_arithmetic", "ties", "dare_ties", "linear")  # mergekit's names for the same merges
SPARSE = ("ties", "dare_ties")  # the methods that take a density
DEFAULT_DENSITY = (0.1, 1.0)  # a sparse method's density range when the config gives none
NORMALIZE = {"ties": True, "dare_ties": False}  # mergekit's defaults of `normalize`
REST = "rest"  # the cell of the modules no filter matches

# a transformer layer's parameter: model.layers.3.…, transformer.h.3.…, encoder.block.3.…
LAYER = re.compile(r"\.(?:layers|h|blocks|block|layer)\.(\d+)\.")
_DECODER = re.compile(r"(?:^|\.)decoder\.")
GROUP_RULES = {
    False: "layers split into contiguous blocks; embeddings follow the first group, final norm and head the last",
    True: "encoder and decoder layers each split into contiguous blocks by depth, group g holding the g-th block of "
          "both; embeddings follow the first group, final norms and head the last",
}
SMOOTH_RULE = ("groups are anchors at equal steps of depth: layer k of a stack of n takes the anchors' linear "
               "interpolation at t = k/(n−1) (mergekit's gradients); tensors before the layers take t = 0, those after "
               "them t = 1")


def stack_of(name: str, match: re.Match, seq2seq: bool) -> str:
    """Which layer stack a layer's parameter is in: "" in a decoder-only model, else "encoder" or "decoder"."""
    if not seq2seq:
        return ""
    return "decoder" if _DECODER.search(name[: match.start() + 1]) else "encoder"


def filter_matches(pattern: str, name: str) -> bool:
    """Whether a module filter applies to a tensor: a substring of its name, as mergekit's `filter`."""
    return pattern in name


@dataclass(frozen=True)
class SpaceConfig:
    """The run config's `space:` section (every key optional; the default is today's search)."""

    method: str = "task_arithmetic"  # task_arithmetic | ties | dare_ties | linear
    density: Any = None  # ties, dare_ties: [low, high] searched (default [0.1, 1]), or a number: fixed
    filters: tuple[str, ...] = ()  # module-name substrings, each a cell of its own; the rest one more cell
    smooth: bool = False  # the groups' values are anchors interpolated across depth (needs models.groups ≥ 2)
    normalize: bool | None = None  # ties, dare_ties: divide by the agreeing weights; null: mergekit's default
    scale: float = 1.0  # a global scale of the merged update (mergekit's lambda); linear takes none


def check_space(space: SpaceConfig, groups: int) -> None:
    """Refuse, in one line, a space no merge can be: an unknown method, a density outside (0, 1] or one
    for a method without densities, an empty or repeated filter, smooth with one group, a normalize or a
    scale the method does not take. (A filter matching no module needs the model: `Space.check_filters`.)"""
    if space.method not in METHODS:
        raise EvogmError(f"space.method is {space.method!r}", did_you_mean(str(space.method), METHODS, "no method like it"),
                         f"choose one of {', '.join(METHODS)}")
    _check_density(space)
    seen = set()
    for i, pattern in enumerate(space.filters):
        if not pattern or pattern == "*":
            raise EvogmError(f"space.filters.{i} is {pattern!r}", "a filter is a part of module names (self_attn, mlp) "
                             "and this one would match every tensor or none", "give a part of the module names")
        if pattern in seen:
            raise EvogmError(f"space.filters holds {pattern!r} twice", "the second could match nothing the first takes",
                             "give each filter once")
        seen.add(pattern)
    if space.smooth and groups < 2:
        raise EvogmError("space.smooth is true with one layer group", "smooth interpolates between the groups' values "
                         "across depth, which takes at least two groups", "set models.groups to 2 or more, or smooth: false")
    if space.normalize is not None and space.method not in SPARSE:
        raise EvogmError(f"space.normalize is set for {space.method}", "only ties and dare_ties divide by the agreeing "
                         "weights (linear always averages, task arithmetic never does)", "remove space.normalize")
    if isinstance(space.scale, bool) or not isinstance(space.scale, (int, float)) or not math.isfinite(space.scale):
        raise EvogmError(f"space.scale is {space.scale!r}", "it scales the merged update", "give a finite number (1: none)")
    if space.method == "linear" and space.scale != 1:
        raise EvogmError("space.scale is set for linear", "a linear merge is the weighted average of the experts, "
                         "with no update to scale", "remove space.scale, or use task_arithmetic")


def _check_density(space: SpaceConfig) -> None:
    density = space.density
    if density is None:
        return
    if space.method not in SPARSE:
        raise EvogmError(f"space.density is set for {space.method}", f"{space.method} keeps every entry: only ties and "
                         "dare_ties take a density", "remove space.density, or choose method: ties or dare_ties")
    values = list(density) if isinstance(density, (list, tuple)) else [density]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(values) not in (1, 2) or not numbers or not all(0 < v <= 1 for v in values):
        raise EvogmError(f"space.density {density!r} is not a density in (0, 1] or a range [low, high] of them",
                         "a density is the fraction of each task vector kept: 0 keeps nothing, above 1 is no fraction",
                         "write e.g. density: [0.1, 1] (searched) or density: 0.5 (fixed)")
    if len(values) == 2 and not values[0] < values[1]:
        raise EvogmError(f"space.density {list(density)} is an empty range", "a searched range needs low < high",
                         f"write density: {values[0]} to fix it, or a range [low, high]")


@dataclass(frozen=True)
class Place:
    """Where one tensor takes its values: its cell (filter) and its layer group, or with `smooth` its
    depth t in [0, 1]."""

    cell: int
    group: int = 0
    t: float | None = None


@dataclass(frozen=True, eq=False)
class Candidate:
    """One merge of the space: each expert's values per cell (filter) and group, and the method's fixed
    options. `weight` and `density` have shape (experts, cells, groups); density is None for methods
    without one."""

    method: str
    weight: np.ndarray
    density: np.ndarray | None = None
    normalize: bool = False
    scale: float = 1.0
    smooth: bool = False
    seed: int = 0  # dare_ties: the seed of its drops (one candidate is one merge)

    def at(self, place: Place) -> tuple[list[float], list[float] | None]:
        """Every expert's weight and density (None without one) for a tensor at `place`."""
        return self._values(self.weight, place), None if self.density is None else self._values(self.density, place)

    def _values(self, values: np.ndarray, place: Place) -> list[float]:
        row = values[:, place.cell]
        if place.t is None:
            return [float(v) for v in row[:, place.group]]
        return [interpolate([float(v) for v in anchors], place.t) for anchors in row]


def interpolate(anchors: Sequence[float], t: float) -> float:
    """The anchors' linear interpolation at t ∈ [0, 1], in mergekit's arithmetic (its gradients), so that
    an exported merge resolves to the same float.

    >>> interpolate([0.0, 1.0, 3.0], 0.75)
    2.0
    """
    scaled = t * (len(anchors) - 1)
    i0 = int(scaled)
    i1 = min(len(anchors) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * anchors[i0] + frac * anchors[i1]


class Space:
    """The map between an optimizer's vector and a merge (see the module docstring). Built from the
    config's section, the experts' names, the layer groups and the run's seed (dare_ties' drops)."""

    def __init__(self, config: SpaceConfig, experts: Sequence[str], groups: int = 1, seed: int = 0):
        self.config, self.experts, self.groups, self.seed = config, tuple(experts), int(groups), int(seed)
        self.params = ("weight", "density") if isinstance(self.density, tuple) else ("weight",)

    # -- shape ---------------------------------------------------------------------------------
    @property
    def plain(self) -> bool:
        """Today's search: task arithmetic with x = λ (the Merger's own coefficients)."""
        return self.config == SpaceConfig()

    @property
    def cells(self) -> tuple[str, ...]:
        """The filters, then the rest of the modules."""
        return (*self.config.filters, REST)

    @property
    def per_expert(self) -> int:
        """Coordinates each expert owns (what an optimizer's `groups` option counts)."""
        return len(self.params) * len(self.cells) * self.groups

    @property
    def dim(self) -> int:
        return len(self.experts) * self.per_expert

    @property
    def density(self) -> tuple[float, float] | float | None:
        """The density: a searched range (low, high), a fixed number, or None for methods without one."""
        if self.config.method not in SPARSE:
            return None
        d = self.config.density
        if d is None:
            return DEFAULT_DENSITY
        if isinstance(d, (list, tuple)):
            return (float(d[0]), float(d[1])) if len(d) == 2 else float(d[0])
        return float(d)

    @property
    def normalize(self) -> bool:
        if self.config.method == "linear":
            return True
        return NORMALIZE.get(self.config.method, False) if self.config.normalize is None else self.config.normalize

    def names(self) -> list[str]:
        """Every coordinate's name, in order: EXPERT.PARAM[.CELL][.gGROUP] (cells and groups named only
        when there are several)."""
        suffixes = [("" if len(self.cells) == 1 else f".{cell}") + ("" if self.groups == 1 else f".g{g}")
                    for cell in self.cells for g in range(self.groups)]
        return [f"{e}.{p}{s}" for e in self.experts for p in self.params for s in suffixes]

    # -- the map -------------------------------------------------------------------------------
    def decode(self, x) -> Candidate:
        """The merge a vector is."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.shape != (self.dim,):
            raise ValueError(f"a vector of {x.size} coordinates does not fit a space of {self.dim}")
        if not np.isfinite(x).all():
            raise ValueError("coordinates must be finite")
        blocks = x.reshape(len(self.experts), len(self.params), len(self.cells), self.groups)
        weight = blocks[:, 0].copy()
        density = None
        if isinstance(self.density, tuple):
            low, high = self.density
            density = low + (np.clip(blocks[:, 1], -1.0, 1.0) + 1.0) / 2.0 * (high - low)
        elif self.density is not None:
            density = np.full_like(weight, self.density)
        return Candidate(self.config.method, weight, density, self.normalize, float(self.config.scale),
                         self.config.smooth, self.seed)

    def encode(self, candidate: Candidate) -> np.ndarray:
        """The vector of a merge of this space (the inverse of `decode` inside the box)."""
        parts = [np.asarray(candidate.weight, dtype=np.float64)]
        if isinstance(self.density, tuple):
            low, high = self.density
            parts.append(2.0 * (np.asarray(candidate.density, dtype=np.float64) - low) / (high - low) - 1.0)
        return np.stack(parts, axis=1).reshape(-1)

    # -- where a tensor takes its values ----------------------------------------------------------
    def cell_of(self, name: str) -> int:
        """The first filter that matches the tensor's name (mergekit's rule), else the rest."""
        return next((i for i, f in enumerate(self.config.filters) if filter_matches(f, name)), len(self.config.filters))

    def place(self, name: str, layer: tuple[int, int] | None, before_layers: bool) -> Place:
        """Where a tensor takes its values. `layer`: (its layer's index, its stack's depth), or None for a
        tensor outside the layers (before them: embeddings; after: final norm and head)."""
        cell = self.cell_of(name)
        if layer is None:
            if self.config.smooth:
                return Place(cell, t=0.0 if before_layers else 1.0)
            return Place(cell, group=0 if before_layers else self.groups - 1)
        index, depth = layer
        if self.config.smooth:
            return Place(cell, t=index / (depth - 1) if depth > 1 else 1.0)  # mergekit's t
        return Place(cell, group=index * self.groups // depth)

    def check_filters(self, names: Sequence[str]) -> None:
        """Refuse a filter that takes no tensor the experts change (it would search values that change
        nothing): one that matches none of them, or only ones an earlier filter takes."""
        owned = {self.cell_of(n) for n in names}
        for i, pattern in enumerate(self.config.filters):
            if i in owned:
                continue
            matched = [n for n in names if filter_matches(pattern, n)]
            why = (f"every tensor it matches ({matched[0]}, …) is taken by an earlier filter" if matched else
                   f"it is no part of the names of the {len(names)} tensors the experts change (e.g. {_example(names)})")
            raise EvogmError(f"space.filters.{i} {pattern!r} matches no module", why,
                             "give a part of those names (self_attn, mlp; T5: SelfAttention, DenseReluDense), or remove it")

    # -- words ---------------------------------------------------------------------------------
    def describe(self) -> dict:
        """How the space maps a vector to a merge, as plain data (recipe.yaml, final.json, the report)."""
        density = self.density
        out = {"method": self.config.method, "groups": self.groups, "cells": list(self.cells),
               "smooth": self.config.smooth, "dim": self.dim,
               "weight": "searched: the coordinate is the weight"}
        if isinstance(density, tuple):
            out["density"] = (f"searched in [{density[0]:g}, {density[1]:g}]: the coordinate's box [-1, 1] maps "
                              "linearly onto the range (clipped outside it)")
        elif density is not None:
            out["density"] = density
        if self.config.method in SPARSE:
            out["normalize"] = self.normalize
        if self.config.method != "linear":
            out["scale"] = float(self.config.scale)
        if self.config.method == "dare_ties":
            out["seed"] = self.seed
        out["layout"] = "expert-major; per expert its weights, then its densities, each over cells × groups"
        return out


def _example(names: Sequence[str]) -> str:
    return next((n for n in names if LAYER.search(n)), names[0] if names else "none")
