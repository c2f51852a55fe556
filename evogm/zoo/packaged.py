"""Where a zoo's run config is: a zoo folder's, the packaged zoo's, or one built once into the cache.

`evogm demo` runs the packaged zoo (evogm/zoo/data/, shipped with the package); an install without
it builds the full zoo once into ~/.cache/evogm (or $XDG_CACHE_HOME/evogm) and reuses it.

>>> zoo_config().parent.name               # the packaged zoo (an install without it: the cached build)
'data'
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from evogm.errors import EvogmError

ZOO_CONFIG = "run.yaml"  # written by `evogm zoo build` next to base/, experts/ and tasks/


def zoo_config(folder: str | None = None) -> Path:
    """The run config of a zoo folder, by default the packaged one (evogm/zoo/data/run.yaml)."""
    path = Path(folder) / ZOO_CONFIG if folder else Path(str(resources.files("evogm.zoo") / "data" / ZOO_CONFIG))
    if folder and not path.is_file():
        raise EvogmError(f"{folder} holds no zoo ({path} not found)", "", "build one with `evogm zoo build DIR`")
    if not path.is_file():  # an install without the built zoo: build it once, then reuse it
        path = built_zoo_config()
    return path


def built_zoo_config() -> Path:
    """The full zoo (seed 0) built into the user's cache; a second call returns at once."""
    from evogm.zoo.build import VERSION, build

    # the recipe's version in the name: a cache built by an older evogm is left alone, not refused
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evogm" / f"zoo-v{VERSION}-seed0"
    print(f"evogm demo: no packaged zoo in this install; building it once into {folder} (minutes)")
    build(folder, seed=0, preset="full", log=print)
    return folder / ZOO_CONFIG
