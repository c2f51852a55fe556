"""The variants the benchmarks compare, by name: data, not code. Each is a method as `evogm compare`
reads it (an optimizer with inline options), so a new variant is one line here.

>>> method("cmaes-pycma"), method("pso")
('cmaes-pycma=cmaes:pycma_popsize=true', 'pso')
"""

from __future__ import annotations

VARIANTS = {
    # the paper's ablations of EvoGM, each at the paper's budget
    "evogm-single": "evogm:generator=single",
    "evogm-nocycle": "evogm:cycle_scale=0",
    "evogm-norounds": "evogm:rounds=1,iterations=7",
    "evogm-reset-iteration": "evogm:reset=iteration",
    # EvoGM+ without the GP's screening (the generators and local steps alone), and in one round
    "evogm-plus-noscreen": "evogm-plus:screen=false",
    "evogm-plus-1round": "evogm-plus:rounds=1,iterations=7",
    # the baselines at their libraries' recommended settings, next to the paper's P = 20
    "cmaes-pycma": "cmaes:pycma_popsize=true",
    "bo-seq": "bo:batch=1",
}
ABLATIONS = ("evogm-single", "evogm-nocycle", "evogm-norounds", "evogm-reset-iteration")


def method(name: str) -> str:
    """A variant's method spec under its name (`NAME=SPEC`), or the name itself (an optimizer, or an
    inline spec)."""
    return f"{name}={VARIANTS[name]}" if name in VARIANTS else name


def methods(text: str) -> str:
    """A comma-separated list of methods with every variant's name made its spec (inline specs and
    their options pass as they are).

    >>> methods("evogm-plus,bo-seq,evogm-plus:batch=5,screen=false")
    'evogm-plus,bo-seq=bo:batch=1,evogm-plus:batch=5,screen=false'
    """
    return ",".join(item if ":" in item or "=" in item else method(item) for item in text.split(","))
