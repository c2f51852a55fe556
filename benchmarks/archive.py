"""Archived benchmark runs, kept out of the source tree: tarballs on the repository's `runs-archive`
branch, unpacked into runs/ where the benchmarks find (and reuse) them.

    python -m benchmarks.archive list                       # the archives on the branch
    python -m benchmarks.archive fetch                      # unpack every one into runs/NAME
    python -m benchmarks.archive fetch landscapes-quick     # one of them
    python -m benchmarks.archive save landscapes-quick      # pack runs/landscapes-quick onto the branch
    python -m benchmarks.archive save landscape-builds --from ~/.cache/evogm/landscapes

The branch holds nothing but `NAME.tar.xz` files, each a folder's contents (runs/NAME unless `--from`
or `--into` says otherwise), each written by `save` as one commit (git plumbing: no checkout, the
working tree is not touched). `landscape-builds` holds the landscape suite's built models
(benchmarks/landscapes.py unpacks it into its cache before building anything). Where a clone lacks the
branch, `git fetch origin runs-archive:runs-archive` brings it; without it, every benchmark's own
command runs its runs again (docs/results.md names them).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs"
BRANCH = "runs-archive"
LEFT_OUT = {"model", "plots", ".lock"}  # a run's exported weights, its plots and its lock: remade, not records


def git(*args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(["git", "-C", str(ROOT), *args], input=data, capture_output=True)
    if result.returncode:
        raise SystemExit(f"git {' '.join(args)} failed: {result.stderr.decode().strip()}")
    return result.stdout


def branch_exists() -> bool:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "-q", BRANCH],
                          capture_output=True).returncode == 0


def archives() -> list[str]:
    """The archives' names on the branch (without .tar.xz)."""
    if not branch_exists():
        raise SystemExit(f"no {BRANCH} branch in this clone: `git fetch origin {BRANCH}:{BRANCH}` brings it, "
                         "or run the benchmarks' own commands to make the runs again (docs/results.md)")
    names = git("ls-tree", "--name-only", BRANCH).decode().split()
    return [n.removesuffix(".tar.xz") for n in names if n.endswith(".tar.xz")]


def fetch(names: list[str], into: Path | None = None) -> None:
    """Unpack archives: each into runs/NAME, or all into `into`."""
    known = archives()
    for name in names or known:
        if name not in known:
            raise SystemExit(f"no archive {name!r} on {BRANCH}: it holds {', '.join(known)}")
        target = into or RUNS / name
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(git("show", f"{BRANCH}:{name}.tar.xz")), mode="r:xz") as tar:
            tar.extractall(target, filter="data")
        print(f"{name}: unpacked into {target}")


def save(name: str, folder: Path | None = None) -> None:
    """A folder's contents (runs/NAME by default) packed as NAME.tar.xz and committed onto the branch
    (which is made if missing); runs leave out their exported model, plots and lock (`LEFT_OUT`)."""
    folder = folder or RUNS / name
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder")
    with tempfile.NamedTemporaryFile(suffix=".tar.xz") as tmp:
        with tarfile.open(tmp.name, "w:xz") as tar:
            for child in sorted(folder.iterdir()):
                tar.add(child, arcname=child.name,
                        filter=lambda member: None if Path(member.name).name in LEFT_OUT else member)
        blob = git("hash-object", "-w", tmp.name).decode().strip()
    entries = git("ls-tree", BRANCH).decode().splitlines() if branch_exists() else []
    entries = [e for e in entries if not e.endswith(f"\t{name}.tar.xz")] + [f"100644 blob {blob}\t{name}.tar.xz"]
    tree = git("mktree", data=("\n".join(entries) + "\n").encode()).decode().strip()
    parent = ["-p", BRANCH] if branch_exists() else []
    commit = git("commit-tree", tree, *parent, "-m", f"runs: {name}").decode().strip()
    git("update-ref", f"refs/heads/{BRANCH}", commit)
    print(f"{name}: saved on {BRANCH} ({commit[:10]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the archives on the branch")
    f = sub.add_parser("fetch", help="unpack archives into runs/NAME (all of them by default)")
    f.add_argument("names", nargs="*")
    f.add_argument("--into", type=Path, help="unpack here instead")
    s = sub.add_parser("save", help="pack runs/NAME (or --from DIR) onto the branch")
    s.add_argument("name")
    s.add_argument("--from", dest="folder", type=Path, help="pack this folder's contents instead")
    args = parser.parse_args()
    if args.action == "list":
        print("\n".join(archives()))
    elif args.action == "fetch":
        fetch(args.names, args.into)
    else:
        save(args.name, args.folder)


if __name__ == "__main__":
    main()
