"""Upgrade archived run directories to today's evogm, once: what the library no longer reads is
rewritten here, never kept alive in the library.

    python -m benchmarks.upgrade_runs runs/landscapes-quick            # every run directory below
    python -m benchmarks.upgrade_runs runs/landscapes-quick --dry-run  # say what would change

A run directory (config.yaml and evaluations.jsonl) is upgraded in place:
- the log's records and best.json lose ``x``, the copy of ``coefficients`` they used to carry;
- EvoGM+'s options that are no longer options are dropped where they hold the behaviour that is
  now the only one (``warp: true``, ``gp_restarts: false``, …), ``surrogate`` becomes ``screen``;
  EvoGM's ``local_share: 0.0`` is dropped; in config.yaml and inputs.json alike (the landscape
  suite's cached test scores follow inputs.json's new hash).
A run made with a setting evogm no longer has (a retired variant: ``warp: false``, a run from before
an option existed, …) cannot be replayed or reused, and is removed (``--dry-run`` only lists it).
Prints one line per run directory: upgraded, already current, or removed, and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import yaml

from evogm.runlog import write_atomic, write_json
from evogm.search import default_options

# optimizer → {option: the value that is now the only behaviour}; any other value (or the option's
# absence: a run from before it) is a setting evogm no longer has
FIXED = {
    "evogm-plus": {"acquisition": "thompson", "dense_share": 0.5, "recombine": 0.2,
                   "scale_shift": 0.2, "sum_input": True, "warp": True, "lengthscale": "auto",
                   "round_start": "screened", "start": "hybrid", "gp_restarts": False},
    "evogm": {"local_share": 0.0},
}
RENAMED = {"evogm-plus": {"surrogate": "screen"}}


def run_dirs(roots: list[Path]) -> list[Path]:
    return sorted({p.parent for root in roots for p in root.rglob("config.yaml") if (p.parent / "evaluations.jsonl").exists()})


def upgraded_options(optimizer: str, options: dict) -> tuple[dict | None, str]:
    """(today's options, "") or (None, why the run cannot be upgraded); a run saved with exactly
    today's options comes back as it is."""
    today = set(default_options(optimizer))
    if set(options) == today:
        return dict(options), ""
    options = dict(options)
    for old, new in RENAMED.get(optimizer, {}).items():
        if old in options:
            options[new] = options.pop(old)
    for key, value in FIXED.get(optimizer, {}).items():
        if key not in options:
            return None, f"made before option {key} existed"
        if options[key] != value:
            return None, f"made with {key}={options[key]!r}, a setting evogm no longer has"
        del options[key]
    if optimizer == "evogm-plus" and options.get("batch") is None and "batch" in options:
        return None, "made with batch=null, a setting evogm no longer has"
    if today - set(options):
        return None, f"made before option {sorted(today - set(options))[0]} existed"
    if set(options) - today:
        return None, f"made with option {sorted(set(options) - today)[0]}, which evogm no longer has"
    return options, ""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upgrade(run_dir: Path, dry_run: bool) -> str:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    search = config["search"]
    options, why = upgraded_options(search["optimizer"], search.get("options") or {})
    if options is None:
        if not dry_run:
            shutil.rmtree(run_dir)
        return f"removed: {why}"
    changed = options != search.get("options") or "split" in search
    search.pop("split", None)
    search["options"] = options
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines() if line.strip()]
    for rec in (r for r in records if "x" in r):
        if rec.pop("x") != rec["coefficients"]:
            raise SystemExit(f"{run_dir}: a record's x differs from its coefficients; not a log evogm wrote")
        changed = True
    if not changed:
        return "already current"
    if not dry_run:
        write_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        write_atomic(run_dir / "evaluations.jsonl", "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))
        if (run_dir / "inputs.json").exists():
            before = digest(run_dir / "inputs.json")
            inputs = json.loads((run_dir / "inputs.json").read_text())
            inputs["config"]["search"].pop("split", None)
            inputs["config"]["search"]["options"] = options
            write_json(run_dir / "inputs.json", inputs)
            for cache in run_dir.glob("test_at_*.json"):  # benchmarks.landscapes' test scores of this run
                kept = json.loads(cache.read_text())
                if kept.get("inputs") == before:
                    write_json(cache, {**kept, "inputs": digest(run_dir / "inputs.json")})
        if (run_dir / "best.json").exists():
            best = json.loads((run_dir / "best.json").read_text())
            best.pop("x", None)
            write_json(run_dir / "best.json", best)
    return "upgraded"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders holding run directories")
    parser.add_argument("--dry-run", action="store_true", help="change nothing; say what would change")
    args = parser.parse_args()
    for run_dir in run_dirs(args.roots):
        print(f"{run_dir}: {upgrade(run_dir, args.dry_run)}")


if __name__ == "__main__":
    main()
