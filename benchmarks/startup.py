"""How long the `evogm` command takes before it does any work: `--help`, and a run config checked.

    python -m benchmarks.startup               # the packaged zoo's config, 5 repeats each
    python -m benchmarks.startup --repeats 10

Each figure is a fresh process (`python -m evogm.cli ...`), timed from start to exit; the median of
the repeats is printed with the heavy libraries the process imported (none is the aim: torch,
transformers and peft load when a command needs a model, not to print help or refuse a config).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "transformers", "peft", "cma", "optuna", "matplotlib", "lm_eval", "ray")
CHECK = """
import sys
from evogm.config import load_config
from evogm.zoo.packaged import zoo_config
load_config(zoo_config(), ["output=/tmp/evogm-startup"])
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""
HELP = """
import sys
from evogm.cli import build_parser
build_parser().format_help()
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def timed(code: str, repeats: int) -> tuple[float, str]:
    seconds, imported = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        imported = subprocess.run([sys.executable, "-c", code.format(heavy=HEAVY)], check=True, capture_output=True,
                                  text=True).stdout.strip()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), imported or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("| what | median seconds | heavy libraries imported |\n|---|---|---|")
    for name, code in (("evogm --help", HELP), ("check the zoo's run config", CHECK)):
        seconds, imported = timed(code, args.repeats)
        print(f"| {name} | {seconds:.2f} | {imported} |")


if __name__ == "__main__":
    main()
