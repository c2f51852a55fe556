"""The installed versions of the libraries evogm's numbers depend on, in one line.

CI installs the newest releases that pyproject's ranges allow (`scripts/setup.sh` upgrades a reused
`.venv` too); the test run prints this line at its top (pytest's header) and setup prints it when it
is done, so that a pass or a failure names the versions it was on.

>>> line({"torch": "2.13.0", "ray": None})
'torch 2.13.0 | ray not installed'
>>> import torch; installed(["torch"])["torch"] == torch.__version__
True
"""

from __future__ import annotations

from importlib import metadata

PACKAGES = ("torch", "transformers", "peft", "lm-eval", "ray", "optuna")  # the core, then the extras


def installed(packages=PACKAGES) -> dict[str, str | None]:
    """Package name → its installed version (None: not installed), without importing the package."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def line(versions: dict[str, str | None] | None = None) -> str:
    """`name version | …` for `versions` (default: the installed PACKAGES)."""
    versions = installed() if versions is None else versions
    return " | ".join(f"{name} {version or 'not installed'}" for name, version in versions.items())
