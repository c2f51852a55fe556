"""Merge weights as users write them: NAME=VALUE pairs, and λ per expert (and layer group) from them.

>>> parse_weights(["add=0.5", "sort=0.2,0.4"], ["add", "sort", "copy"]).tolist()
[[0.5, 0.5], [0.2, 0.4], [1.0, 1.0]]
>>> parse_pairs(["add"], "--expert")
Traceback (most recent call last):
...
evogm.errors.EvogmError: bad --expert 'add': expected NAME=VALUE; fix: write it as --expert NAME=VALUE
"""

from __future__ import annotations

import numpy as np

from evogm.errors import EvogmError
from evogm.registry import unknown_name


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """["a=1", "b=2"] → {"a": "1", "b": "2"}, with a clear error for a malformed or repeated pair."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise EvogmError(f"bad {what} {pair!r}", "expected NAME=VALUE",
                             f"write it as {what.split()[-1]} NAME=VALUE")
        if name in out:
            raise EvogmError(f"{what} {name!r} is given twice ({name}={out[name]} and {pair})",
                             "one name stands for one value", f"give each {what.split()[-1]} name once")
        out[name] = value
    return out


def parse_weights(pairs: list[str], names: list[str]) -> np.ndarray:
    """(experts, groups) λ from NAME=V[,V...] pairs; unnamed experts get 1."""
    given = parse_pairs(pairs, "--weights")
    for name in given:
        if name not in names:
            raise unknown_name("expert", name, names)
    try:
        values = {n: [float(v) for v in given.get(n, "1").split(",")] for n in names}
    except ValueError:
        raise EvogmError(f"a weight in {pairs} is not a number", "weights are real numbers",
                         "write e.g. --weights add=0.7 or --weights add=0.7,1.2 (one per layer group)") from None
    bad = [f"{n}={given[n]}" for n, v in values.items() if not np.isfinite(v).all()]
    if bad:
        raise EvogmError(f"--weights {bad[0]} is not a finite number", "a merge with nan or inf weights is not a model",
                         "give finite weights, e.g. --weights add=0.7")
    groups = {len(v) for v in values.values() if len(v) > 1} or {1}
    if len(groups) > 1:
        raise EvogmError("experts were given different numbers of group weights", "every expert needs the same count",
                         "give each expert one weight or the same number of comma-separated weights")
    g = groups.pop()
    return np.array([v * g if len(v) == 1 else v for v in values.values()])
