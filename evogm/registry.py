"""Registries are plain dicts; an unknown name gets the closest valid one in its error.

>>> unknown_name("optimizer", "cmaess", {"cmaes": 1, "pso": 2})
EvogmError("unknown optimizer 'cmaess': valid names are cmaes, pso; fix: did you mean 'cmaes'?")
>>> did_you_mean("budjet", ["budget", "seed"]), did_you_mean("x", ["budget"], otherwise="no key like it")
("did you mean 'budget'?", 'no key like it')
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from evogm.errors import EvogmError


def closest(name: str, choices: Iterable[str], cutoff: float = 0.5) -> str | None:
    """The valid name nearest to a misspelt one, if any is near."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return match[0] if match else None


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = "", cutoff: float = 0.5) -> str:
    """"did you mean 'x'?" for the closest valid name, else `otherwise`."""
    guess = closest(name, choices, cutoff)
    return f"did you mean {guess!r}?" if guess else otherwise


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> EvogmError:
    """The error for an unknown `kind` called `name` (return it, then raise it)."""
    choices = sorted(choices)
    fix = did_you_mean(name, choices, otherwise=f"use one of {', '.join(choices)}")
    return EvogmError(f"unknown {kind} {name!r}", f"valid names are {', '.join(choices)}", fix)
