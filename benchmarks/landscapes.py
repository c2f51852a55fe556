"""The landscape suite: every optimizer × seed on merge problems of different shape, one table.

    python -m benchmarks.landscapes --quick --seeds 3 --workers 2         # while iterating
    python -m benchmarks.landscapes --seeds 5 --workers 2                 # for the record
    python -m benchmarks.landscapes --landscapes zoo zoo-groups --optimizers evogm-plus,pso --seeds 2
    python -m benchmarks.landscapes --quick --seeds 5 --report     # the table of what has finished
    python -m benchmarks.landscapes --quick --seeds 5 --report --every 20   # and best dev so far every 20

Each landscape is a real merge of real experts scored by evogm's own objective on the zoo's ten
tasks (multi-task mode, 160 evaluations unless --budget):

- ``zoo``: the packaged zoo (8 experts). Its best known merge uses three experts at λ = 1 and the
  rest at 0: a corner of the box.
- ``zoo-groups``: the same experts with one λ per expert and layer group (4 groups: 32 dimensions).
- ``zoo-seed1``: a zoo built from seed 1 (another base, other experts, another optimum).
- ``zoo-interior``: experts τ'ᵢ = 1.6·(τᵢ + 0.6·τᵢ₊₁) (cyclic) made from the zoo's task vectors. The
  zoo's best merge is then at about (0.48, 0.34, −0.2, 0.12, −0.07, 0.67, −0.4, 0.24): inside the
  box, with negative coefficients.
- ``zoo-correlated``: experts τ'ᵢ = τᵢ + c, with c = (3/8)·Σⱼ (ν/‖τⱼ‖)·τⱼ a component every expert
  shares (ν the mean norm), as instruction-tuned adapters share one. Pairwise cosine 0.69 on
  average (0.02 in the zoo); the best merge needs negative weights to cancel c.

Two landscapes search another space than λ (`space:`, docs/guide/merging.md), on the zoo's experts:

- ``zoo-ties``: TIES merges, each expert's weight and density (in [0.1, 1]) searched: 16 dimensions.
- ``zoo-filters``: task arithmetic with the attention modules (``self_attn``), the MLPs (``mlp``) and
  the rest (embeddings, norms, head) each weighted on its own: 24 dimensions. (A filter is a part of
  the tensors' names, as mergekit's; ``attention`` would take the zoo's ``post_attention_layernorm``
  only.)

Two more are the large spaces: ``zoo-64``, task arithmetic per expert, layer group (4) and module
family (the attention modules, and the rest): 64 dimensions; ``zoo-128``, the same as TIES merges,
each weight and density searched: 128 dimensions.

They are not in the default suite (whose recorded results are the five above): name them with
``--landscapes``.

The derived experts are full fine-tunes written once, with evogm's own exact merge, into
``--cache`` (default ``~/.cache/evogm/landscapes``); ``zoo-seed1`` is built there once (about 8
minutes). A build of ``zoo-seed1`` on another machine (another CPU) can train to other
weights (another landscape): the suite runs such runs again, but ``--report`` tables whatever has
finished, so run the suite, not only ``--report``, after moving runs between machines. (The derived
experts of ``zoo-interior`` and ``zoo-correlated``, written on another machine, had other file
hashes, so the suite runs their runs again too; each expert alone and the uniform merge scored the
same on both.)
Every landscape is one ``evogm compare`` (OUT/LANDSCAPE/), so finished runs are reused and a
killed suite resumes. ``--quick`` scores 50 items per task split instead of 200 dev / 1000 test.

Prints, and writes to OUT/suite.md and suite.json: per landscape, each optimizer's best dev and its
test score (mean ± std over seeds) at half the budget and at the full budget (the best of the first
80 evaluations is scored on test once, with ``evogm eval``); the mean rank of each optimizer's
mean test score over landscapes; and for every landscape whether each optimizer is within one
standard error of the best mean test score. A baseline given at both its settings (CMA-ES at the
paper's P = 20 and at pycma's own population size; BO in batches of P and one candidate at a time)
is ranked once, at whichever of the two has the higher mean test score on each landscape.
``--whole-test`` (with ``--quick``) also scores each run's best on every test item of its tasks: a
quick test split's 50 items per task are noisier than the differences the suite reads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from benchmarks.variants import methods as variant_methods
from evogm.runlog import is_full

ROOT = Path(__file__).resolve().parent.parent
ZOO_CONFIG = ROOT / "configs" / "zoo.yaml"
ZOO = ROOT / "evogm" / "zoo" / "data"
LANDSCAPES = ("zoo", "zoo-groups", "zoo-seed1", "zoo-interior", "zoo-correlated")  # the default suite
BUILT = ("zoo-seed1", "zoo-interior", "zoo-correlated")  # landscapes with models of their own (`BUILDS`, `HASHES`)
SPACES = {  # landscapes on the zoo's models that search another space than λ: their overrides
    "zoo-ties": ["space.method=ties", "space.density=[0.1, 1.0]"],
    "zoo-filters": ["space.filters=[self_attn, mlp]"],
    "zoo-64": ["models.groups=4", "space.filters=[self_attn]"],
    "zoo-128": ["models.groups=4", "space.filters=[self_attn]", "space.method=ties", "space.density=[0.1, 1.0]"],
}
FULL = ["search.evaluation=full"]  # the suite scores every candidate in full (adaptive evaluation: adaptive_eval.py)
BUILDS = "landscape-builds"  # the archive (runs-archive branch) of the suite's built landscapes
HASHES = Path(__file__).with_name("landscape_hashes.json")  # their models' hashes: what the suite's runs ran on
OPTIMIZERS = "evogm,evogm-plus,pso,cmaes,cmaes-pycma,de,random,bo,tpe"
# A baseline at the paper's P = 20 and at its library's own setting: ranked once, at the better one.
SETTINGS = (("cmaes", "cmaes-pycma"), ("bo", "bo-seq"))


def interior_matrix(n: int) -> np.ndarray:
    """τ'ᵢ = 1.6·(τᵢ + 0.6·τᵢ₊₁): row i holds expert i's weights on the zoo's experts."""
    return 1.6 * (np.eye(n) + 0.6 * np.roll(np.eye(n), 1, axis=1))


def correlated_matrix(norms: np.ndarray, share: float = 3.0) -> np.ndarray:
    """τ'ᵢ = τᵢ + (share/n)·Σⱼ (ν/‖τⱼ‖)·τⱼ."""
    n = len(norms)
    return np.eye(n) + (share / n) * np.outer(np.ones(n), norms.mean() / norms)


def landscape_config(name: str, cache: Path) -> tuple[Path, list[str]]:
    """The config file and overrides of one landscape: the suite's own builds where the runs-archive
    branch holds them (`BUILDS`), else built into the cache once; a build that differs from the
    suite's (`HASHES`) is said in one line."""
    if name == "zoo":
        return ZOO_CONFIG, []
    if name == "zoo-groups":
        return ZOO_CONFIG, ["models.groups=4"]
    if name in SPACES:
        return ZOO_CONFIG, list(SPACES[name])
    if name not in BUILT:
        raise SystemExit(f"unknown landscape {name!r}: the landscapes are {', '.join((*LANDSCAPES, *SPACES))}")
    folder = cache / name
    if not folder.exists():
        fetch_builds(cache)
    if name == "zoo-seed1":
        from evogm.zoo.build import build

        build(folder, seed=1, threads=1)
        config = _write_config(cache / "zoo-seed1.yaml", folder / "run.yaml", {})
    else:
        if not (folder / "experts.json").exists():
            derive_experts(folder, name)
        experts = {e: str(folder / "experts" / e) for e in json.loads((folder / "experts.json").read_text())["experts"]}
        config = _write_config(cache / f"{name}.yaml", ZOO / "run.yaml", {"models": {"experts": experts}})
    check_build(name, config)
    return config, []


def fetch_builds(cache: Path) -> None:
    """The suite's builds of the landscapes, from the runs-archive branch, where it has them."""
    from benchmarks import archive

    if archive.branch_exists() and BUILDS in archive.archives():
        archive.fetch([BUILDS], into=cache)


def build_hashes(config: Path) -> dict[str, str]:
    """{"models.base" | "models.experts.NAME": hash} of a landscape's models, as a run records them."""
    from evogm.config import load_config
    from evogm.inputs import fingerprint

    files = fingerprint(load_config(config, run=False))["files"]
    return {key: value for key, value in files.items() if key.startswith("models.")}


def check_build(name: str, config: Path) -> None:
    """Say in one line when the models here are not the suite's (another machine's build trains to
    other weights): this machine's runs of the landscape then do not compare with archived ones."""
    suite = json.loads(HASHES.read_text()).get(name) if HASHES.exists() else None
    if suite is not None and build_hashes(config) != suite:
        print(f"  {name}: the models in the cache are not the suite's build ({HASHES.name}); its runs here do not "
              f"compare with archived ones: `python -m benchmarks.archive fetch {BUILDS} --into CACHE` gives "
              "the suite's build", flush=True)


def _write_config(path: Path, include: Path, over: dict) -> Path:
    search = yaml.safe_load(ZOO_CONFIG.read_text())
    body = {"include": str(include), **{k: search[k] for k in ("seed", "mode", "search", "executor")}, **over}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def derive_experts(folder: Path, name: str) -> None:
    """Write the derived experts as full fine-tunes: expert i = the zoo's merge at row i of M."""
    import torch

    from evogm.merge import Merger

    models = zoo_models()
    products = gram(models.experts)  # one pass over every parameter
    norms = np.sqrt(np.diag(products))
    matrix = interior_matrix(len(norms)) if name == "zoo-interior" else correlated_matrix(norms)
    merger = Merger(models.model, models.experts)
    paths = {}
    for row, expert in zip(matrix, models.experts):
        out = folder / "experts" / expert.name
        with torch.no_grad():
            merger(row).save_pretrained(out, safe_serialization=True)
        models.tokenizer.save_pretrained(out)
        paths[expert.name] = str(out)
    merger.reset()
    derived = matrix @ products @ matrix.T
    scale = np.sqrt(np.diag(derived))
    cosines = derived / np.outer(scale, scale)
    (folder / "experts.json").write_text(json.dumps({
        "matrix": matrix.tolist(), "experts": paths,
        "mean_cosine": float(cosines[~np.eye(len(scale), dtype=bool)].mean())}, indent=1))


def zoo_models():
    """The packaged zoo's base and experts, in float32 on the CPU."""
    from evogm.models import load_models

    spec = yaml.safe_load((ZOO / "run.yaml").read_text())["models"]
    return load_models(ZOO / spec["base"], {k: ZOO / v for k, v in spec["experts"].items()},
                       dtype="float32", device="cpu")


def gram(experts) -> np.ndarray:
    """⟨τᵢ, τⱼ⟩ over every parameter the experts touch."""
    import torch

    n = len(experts)
    out = np.zeros((n, n))
    for param in sorted(set().union(*(e.params for e in experts))):
        dense = [e.dense(param) for e in experts]
        like = next(d for d in dense if d is not None)
        flat = torch.stack([(torch.zeros_like(like) if d is None else d).reshape(-1).double() for d in dense])
        out += (flat @ flat.T).numpy()
    return out


def quick_overrides(config: Path, overrides: list[str]) -> list[str]:
    from evogm.config import load_config

    tasks = load_config(config, overrides).tasks
    return [f"tasks.{i}.limit=50" for i in range(len(tasks))]


# --- the table -----------------------------------------------------------------------------------


def finished(config: Path, overrides: list[str], methods: list[str], seeds: int, budget: int, out: Path) -> dict | None:
    """The comparison's summary over the runs already finished (the first method's seed 0 among
    them: it holds the static baselines), without running anything; its comparison.md, .json and
    plots are redrawn for those runs. A finished run made with other settings than its method's
    today (an optimizer default changed since) is left out, with a line saying so; runs made on
    other models than the cache's (another build of the landscape, which can score differently) are
    kept and named in one line, so that a table comparing optimizers across builds says so."""
    from evogm import report_compare
    from evogm.compare import make_jobs, parse_methods, summarize
    from evogm.config import load_config, resolve
    from evogm.inputs import changed_settings
    from evogm.rundir import RunDir

    specs = parse_methods(methods)
    models, jobs, elsewhere = build_hashes(config), [], []
    for job in make_jobs(str(config), overrides, specs, list(range(seeds)), budget, out.resolve(), 1):
        if not (job.run_dir / "final.json").exists():
            continue
        if run_models(job.run_dir) != models:
            elsewhere.append(f"{job.method} seed {job.seed}")
        changed = [key for key in changed_settings(
            RunDir(job.run_dir), resolve(load_config(job.config, list(job.overrides)), job.run_dir))
            if not key.startswith("baselines.")]  # the static merges are scored in whichever run came first
        if changed:
            print(f"  left out {job.run_dir}: made with other settings ({', '.join(changed)}); "
                  "run the suite without --report to run it again")
            continue
        jobs.append(job)
    if not jobs:
        print(f"  {out.name}: no finished run to report")
        return None
    summary = summarize(jobs, [m for m in specs if any(j.method == m.label for j in jobs)], budget)
    report_compare.write(out.resolve(), summary)
    if elsewhere:
        print(f"  {out.name}: {len(elsewhere)} of {len(jobs)} runs were made on other models than the cache's "
              f"(another build): {', '.join(elsewhere)}; the suite without --report runs them again on these")
    return {**summary, "other_models": elsewhere}


def at_budget(summary: dict, evaluations: int) -> dict:
    """Per method: the best dev after ``evaluations`` and that candidate's test score, each as
    (mean, std) over seeds."""
    out = {}
    for name, method in summary["methods"].items():
        pairs = [test_at(Path(r["run_dir"]), evaluations) for r in method["runs"]]
        out[name] = {split: _mean_std([p[split] for p in pairs]) for split in ("dev", "test")}
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def test_at(run_dir: Path, evaluations: int, whole: bool = False) -> dict:
    """The best of a run's first ``evaluations`` evaluations: its dev score, and its test score
    from ``evogm eval`` on the run's own config (``whole``: with its tasks' item limits lifted, so a
    quick run's pick is scored on the whole split), computed once, kept in the run directory."""
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()][:evaluations]
    best = min(filter(is_full, records), key=lambda r: r["loss"])
    cache = run_dir / f"test_at_{evaluations}{'_whole' if whole else ''}.json"
    inputs = run_inputs(run_dir)
    if cache.exists():  # reused only for the same candidate of the same inputs (a run made again on
        kept = json.loads(cache.read_text())  # another build can pick the same one-hot row)
        if kept.get("coefficients") == best["coefficients"] and kept.get("inputs") == inputs:
            return kept
    candidate = f"--candidate={','.join(map(repr, best['coefficients']))}"  # merged as the search merged it
    evogm = Path(sys.executable).parent / "evogm"
    with tempfile.TemporaryDirectory() as tmp:
        config = run_dir / "config.yaml"
        if whole:
            raw = yaml.safe_load(config.read_text())
            raw["tasks"] = [{k: v for k, v in task.items() if k != "limit"} for task in raw["tasks"]]
            config = Path(tmp) / "config.yaml"
            config.write_text(yaml.safe_dump(raw, sort_keys=False))
        shown = subprocess.run([str(evogm), "eval", str(config), "--split", "test", "--json", candidate],
                               check=True, capture_output=True, text=True).stdout
    out = {"dev": -best["loss"], "test": json.loads(shown)["score"], "evaluations": evaluations,
           "coefficients": best["coefficients"], "inputs": inputs}
    cache.write_text(json.dumps(out))
    return out


def whole_test_table(summaries: dict[str, dict]) -> str:
    """Per landscape, each method's best at the full budget scored on the landscape's whole test
    split (a quick run's test has 50 items per task: its noise hides differences of a point)."""
    lines = ["\n### The best at the full budget on the whole test split (mean ± std over seeds)\n",
             "| landscape | method | seeds | test, quick split | test, whole split |", "|---|---|---|---|---|"]
    for landscape, summary in summaries.items():
        for name, method in summary["methods"].items():
            quick = [r["test"] for r in method["runs"]]
            full = [test_at(Path(r["run_dir"]), summary["budget"], whole=True)["test"] for r in method["runs"]]
            lines.append(f"| {landscape} | {name} | {len(quick)} | {'%.4f ± %.4f' % _mean_std(quick)} | "
                         f"{'%.4f ± %.4f' % _mean_std(full)} |")
    return "\n".join(lines)


def run_models(run_dir: Path) -> dict[str, str]:
    """{"models.base" | "models.experts.NAME": hash} of the models a run was made on (its inputs.json),
    as `build_hashes` gives them for a landscape's cache."""
    files = json.loads((Path(run_dir) / "inputs.json").read_text())["files"]
    return {key: value for key, value in files.items() if key.startswith("models.")}


def run_inputs(run_dir: Path) -> str:
    """A fingerprint of the run's inputs (its models' and tasks' files, as the runner recorded them)."""
    return hashlib.sha256((run_dir / "inputs.json").read_bytes()).hexdigest()


def suite_table(summaries: dict[str, dict]) -> tuple[str, dict]:
    """Per landscape, each method's mean ± std over its seeds; then each method's mean rank over the
    landscapes it ran on, and on how many it is within one standard error of the best. A baseline run
    at two settings (``SETTINGS``) is ranked once, at its better setting on each landscape."""
    methods = list(dict.fromkeys(m for s in summaries.values() for m in s["methods"]))
    entries = ranked_entries(methods)
    lines, ranks, close = [], {e: [] for e in entries}, {e: 0 for e in entries}
    for landscape, summary in summaries.items():
        stats = summary["methods"]
        present = [m for m in methods if m in stats]
        half_budget = summary["budget"] // 2
        half = at_budget(summary, half_budget)
        lines += [f"\n### {landscape} (budget {summary['budget']})\n",
                  f"| method | seeds | best dev at {half_budget} | its test | best dev at {summary['budget']} | its test |",
                  "|---|---|---|---|---|---|"]
        for m in present:
            s = stats[m]
            cells = [*half[m]["dev"], *half[m]["test"], s["dev_mean"], s["dev_std"], s["test_mean"], s["test_std"]]
            lines.append(f"| {m} | {len(s['runs'])} | "
                         + " | ".join(f"{a:.4f} ± {b:.4f}" for a, b in zip(cells[::2], cells[1::2])) + " |")
        chosen = {e: max((m for m in members if m in stats), key=lambda m: stats[m]["test_mean"])
                  for e, members in entries.items() if any(m in stats for m in members)}
        best = max(chosen.values(), key=lambda m: stats[m]["test_mean"])
        for rank, e in enumerate(sorted(chosen, key=lambda e: -stats[chosen[e]]["test_mean"]), 1):
            ranks[e].append(rank)
        for e, m in chosen.items():  # within one standard error (of the difference of means) of the best
            se = math.hypot(*(stats[k]["test_std"] / math.sqrt(len(stats[k]["runs"])) for k in (m, best)))
            close[e] += stats[best]["test_mean"] - stats[m]["test_mean"] <= se
        settings = [f"{e}: {m}" for e, m in chosen.items() if len(entries[e]) > 1]
        if settings:
            lines.append("\nranked at the better setting: " + ", ".join(settings))
        static = summary["static"]
        lines.append("\nstatic merges (dev / test): " + ", ".join(
            f"{k} {v['dev']:.4f} / {v['test']:.4f}" for k, v in static.items()))
        if summary.get("other_models"):
            lines.append("\nmade on another build of the models than the cache's: " + ", ".join(summary["other_models"]))
    head = ["| method | mean rank of mean test | landscapes within 1 SE of the best |", "|---|---|---|"]
    head += [f"| {e} | {np.mean(ranks[e]):.2f} | {close[e]} of {len(ranks[e])} |"
             for e in sorted(entries, key=lambda e: np.mean(ranks[e]))]
    return "\n".join(head + lines), {"mean_rank": {e: float(np.mean(r)) for e, r in ranks.items()},
                                      "within_one_se": close}


def curve_table(summaries: dict[str, dict], every: int) -> str:
    """Per landscape, each method's best dev so far after every ``every`` evaluations (mean over its
    seeds of the runs' curves, which the comparison summary already holds; a run with no successful
    evaluation yet does not count)."""
    from evogm.compare import mean_std

    lines = []
    for landscape, summary in summaries.items():
        marks = list(range(every, summary["budget"] + 1, every))
        lines += [f"\n### {landscape}: mean best dev so far\n", "| method | " + " | ".join(map(str, marks)) + " |",
                  "|---|" + "---|" * len(marks)]
        for m, method in summary["methods"].items():
            means = [mean_std([r["curve"][k - 1] for r in method["runs"]])["mean"] for k in marks]
            lines.append(f"| {m} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in means) + " |")
    return "\n".join(lines)


def ranked_entries(methods: list[str]) -> dict[str, list[str]]:
    """The rank table's rows: each method alone, except a baseline's settings of ``SETTINGS``
    together in one row, named by its members (not with "|": the name is a cell of a Markdown table).

    >>> ranked_entries(["evogm-plus", "cmaes", "pso", "cmaes-pycma"])
    {'evogm-plus': ['evogm-plus'], 'cmaes / cmaes-pycma': ['cmaes', 'cmaes-pycma'], 'pso': ['pso']}
    """
    entries, seen = {}, set()
    for m in methods:
        if m in seen:
            continue
        members = next(([k for k in group if k in methods] for group in SETTINGS if m in group), [m])
        entries[" / ".join(members)] = members
        seen.update(members)
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landscapes", nargs="+", default=list(LANDSCAPES), choices=[*LANDSCAPES, *SPACES])
    parser.add_argument("--optimizers", default=OPTIMIZERS,
                        help="comma-separated, as for evogm compare; names of benchmarks/variants.py too")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50 items per task split (for iterating)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "evogm" / "landscapes")
    parser.add_argument("--out", type=Path, default=None, help="default runs/landscapes[-quick]")
    parser.add_argument("--every", type=int, default=0,
                        help="also print each method's mean best dev so far every N evaluations")
    parser.add_argument("--whole-test", action="store_true",
                        help="with --quick: also score each run's best on the landscape's whole test split")
    parser.add_argument("--report", action="store_true",
                        help="run nothing: the table of the runs already finished (a suite grown in steps)")
    parser.add_argument("--save-hashes", action="store_true",
                        help=f"record the cache's builds as the suite's ({HASHES.name}) and stop")
    args = parser.parse_args()
    if args.save_hashes:
        built = {name: build_hashes(landscape_config(name, args.cache)[0]) for name in BUILT}
        HASHES.write_text(json.dumps(built, indent=1, sort_keys=True) + "\n")
        print(f"{HASHES}: {', '.join(built)}")
        return

    from evogm.compare import compare

    out = args.out or ROOT / "runs" / ("landscapes-quick" if args.quick else "landscapes")
    summaries = {}
    for name in args.landscapes:
        config, overrides = landscape_config(name, args.cache)
        overrides = [*FULL, *overrides]
        if args.quick:
            overrides += quick_overrides(config, overrides)
        print(f"== {name}: {config} {' '.join(overrides)}", flush=True)
        if args.report:
            summary = finished(config, overrides, variant_methods(args.optimizers), args.seeds, args.budget, out / name)
            if summary is not None:
                summaries[name] = summary
            continue
        summaries[name] = compare(
            str(config), methods=variant_methods(args.optimizers), seeds=list(range(args.seeds)), out=out / name,
            budget=args.budget, overrides=overrides, workers=args.workers,
            on_done=lambda job, how: print(f"  {job.method} seed {job.seed}: {how}", flush=True))
    text, totals = suite_table(summaries)
    if args.every:
        text += "\n" + curve_table(summaries, args.every)
    if args.whole_test and args.quick:
        text += "\n" + whole_test_table(summaries)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.md").write_text(text + "\n")
    (out / "suite.json").write_text(json.dumps({"summaries": summaries, **totals}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
