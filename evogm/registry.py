"""Registries are plain dicts; an unknown name gets the closest valid one in its error.

>>> unknown_name("optimizer", "cmaess", {"cmaes": 1, "pso": 2})
EvogmError("unknown optimizer 'cmaess': valid names are cmaes, pso; fix: did you mean 'cmaes'?")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from evogm.errors import EvogmError


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The valid name nearest to a misspelt one, if any is near."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return match[0] if match else None


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> EvogmError:
    """The error for an unknown `kind` called `name` (return it, then raise it)."""
    choices = sorted(choices)
    guess = closest(name, choices)
    fix = f"did you mean {guess!r}?" if guess else f"use one of {', '.join(choices)}"
    return EvogmError(f"unknown {kind} {name!r}", f"valid names are {', '.join(choices)}", fix)
