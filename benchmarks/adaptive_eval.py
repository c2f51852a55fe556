"""Adaptive evaluation against full scoring: items scored, time, best dev and its test, the error rate.

    python -m benchmarks.adaptive_eval --quick --seeds 2 --workers 1     # while iterating
    python -m benchmarks.adaptive_eval --seeds 5 --workers 2             # for the record
    python -m benchmarks.adaptive_eval --quick --seeds 2 --keep 5 --confidence 0.9 --chunks 8 --out runs/ae-k5
    python -m benchmarks.adaptive_eval --quick --seeds 5 --full-from runs/landscapes-quick/zoo   # full arm: the suite's

Runs the packaged zoo (multi-task, 160 evaluations) for each optimizer and seed twice, with
``search.evaluation: full`` and ``adaptive``, as two ``evogm compare`` runs (OUT/full, OUT/adaptive;
finished runs are reused, killed ones resumed). ``--quick`` scores 50 items per task split (as
benchmarks/landscapes.py does). Static baselines are not scored (they do not depend on the search).

Prints, and writes to OUT/adaptive.md and adaptive.json, per optimizer and mode (mean ± std over
seeds): dev items scored per run and the saving against full scoring, search seconds per run (the
sum of its evaluations' times), best dev and its test score, and whether adaptive's mean test is
within one standard error (of the difference of means) of full scoring's. Then the stopping rule's
error rate: up to ``--sample`` stopped candidates per adaptive run, drawn with a fixed seed, are
scored in full; an error is one whose full dev score is above the cut-off it was stopped against
(it would have entered the kept set). The stated rate bounds the chance of any such error per
candidate at 1 − confidence. What other settings would save on the same candidates:
`benchmarks/adaptive_replay.py`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from benchmarks.landscapes import FULL, ZOO_CONFIG, _mean_std, quick_overrides
from benchmarks.variants import methods as variant_methods

ROOT = Path(__file__).resolve().parent.parent
MODES = ("full", "adaptive")


def mode_overrides(mode: str, args) -> list[str]:
    """The overrides of one arm; the adaptive knobs only where the command line sets them."""
    if mode == "full":
        return ["baselines.methods=[]", *FULL]
    knobs = {"confidence": args.confidence, "chunks": args.chunks, "keep": args.keep, "bound": args.bound}
    return ["baselines.methods=[]", "search.evaluation=adaptive",
            *(f"search.{k}={v}" for k, v in knobs.items() if v is not None)]


def run_mode(mode: str, args, base: list[str]) -> dict:
    from evogm.compare import compare

    print(f"== {mode}", flush=True)
    if mode == "full" and args.full_from:
        return suite_runs(args, base)
    return compare(str(ZOO_CONFIG), methods=variant_methods(args.optimizers), seeds=list(range(args.seeds)),
                   out=args.out / mode, budget=args.budget, overrides=[*base, *mode_overrides(mode, args)],
                   workers=args.workers, on_done=lambda job, how: print(f"  {job.method} seed {job.seed}: {how}",
                                                                        flush=True))


def suite_runs(args, base: list[str]) -> dict:
    """The full arm read, not run, from the landscape suite's zoo runs (benchmarks/landscapes.py: the
    same config, overrides and seeds, scored in full): each must be finished with unchanged inputs,
    the check `evogm compare` makes before it reuses a run."""
    from evogm.compare import make_jobs, parse_methods, summarize
    from evogm.config import load_config, resolve
    from evogm.inputs import changed_inputs
    from evogm.rundir import RunDir

    specs = parse_methods(variant_methods(args.optimizers))
    jobs = make_jobs(str(ZOO_CONFIG), [*FULL, *base], specs, list(range(args.seeds)), args.budget, args.full_from.resolve(), 1)
    for job in jobs:
        run_dir = RunDir(job.run_dir)
        changed = changed_inputs(run_dir, resolve(load_config(job.config, list(job.overrides)), run_dir.path))
        changed = [key for key in changed if not key.startswith("baselines.")]  # static merges: not the search
        if not run_dir.finished() or changed:
            sys.exit(f"{job.run_dir}: not a finished run of this config; run python -m benchmarks.landscapes "
                     f"--seeds {args.seeds}{' --quick' if args.quick else ''} first, or leave out --full-from")
        print(f"  {job.method} seed {job.seed}: read from {job.run_dir}", flush=True)
    summary = summarize(jobs, specs, args.budget)
    for method in summary["methods"].values():
        for run in method["runs"]:
            if not run["items_full"]:  # a run from before final.json counted dev items: every one was scored
                run["items"] = run["items_full"] = full_items(Path(run["run_dir"]))
    return summary


def full_items(run_dir: Path) -> int:
    """Dev items a run scoring every evaluation in full scored: evaluations × its tasks' dev items."""
    from evogm.config import load_config
    from evogm.tasks import load_tasks

    tasks = load_tasks(load_config(run_dir / "config.yaml").tasks, ("dev",))
    evaluations = sum(1 for _ in (run_dir / "evaluations.jsonl").open())
    return evaluations * sum(len(t.data.items("dev")) for t in tasks if hasattr(t, "data"))


def run_seconds(run_dir: Path) -> float:
    return sum(json.loads(line)["seconds"] for line in (run_dir / "evaluations.jsonl").open())


def rows(summaries: dict) -> list[dict]:
    """One row per optimizer and mode: items, saving, seconds, dev, test (mean, std) over seeds."""
    out = []
    for name in summaries["full"]["methods"]:
        for mode in MODES:
            m = summaries[mode]["methods"][name]
            runs = m["runs"]
            out.append({"optimizer": name, "mode": mode, "seeds": len(runs),
                        "items": _mean_std([r["items"] for r in runs]),
                        "saving": float(np.mean([r["items_full"] / r["items"] for r in runs])),
                        "seconds": _mean_std([run_seconds(Path(r["run_dir"])) for r in runs]),
                        "dev": _mean_std([r["dev"] for r in runs]), "test": _mean_std([r["test"] for r in runs])})
    return out


def within_one_se(full: dict, adaptive: dict) -> bool:
    """Adaptive's mean test is at most one standard error (of the difference of means) below full's."""
    se = math.hypot(full["test"][1] / math.sqrt(full["seeds"]), adaptive["test"][1] / math.sqrt(adaptive["seeds"]))
    return full["test"][0] - adaptive["test"][0] <= se


def error_rate(summary: dict, sample: int) -> dict:
    """Stopped candidates scored in full: how many would have entered the kept set after all."""
    checked, errors, gaps = 0, 0, []
    for method in summary["methods"].values():
        for r in method["runs"]:
            c, e, g = check_run(Path(r["run_dir"]), sample)
            checked, errors, gaps = checked + c, errors + e, gaps + g
    return {"checked": checked, "errors": errors, "rate": errors / checked if checked else None,
            "mean_abs_estimate_error": float(np.mean(np.abs(gaps))) if gaps else None}


def check_run(run_dir: Path, sample: int) -> tuple[int, int, list[float]]:
    """(stopped candidates checked, errors among them, partial estimate − full score of each)."""
    from evogm.adaptive import thresholds
    from evogm.config import load_config, to_dict
    from evogm.scoring import MULTI_TASK
    from evogm.workspace import make_objective

    cfg = load_config(run_dir / "config.yaml")
    records = [json.loads(line) for line in (run_dir / "evaluations.jsonl").open()]
    cut = thresholds(records, cfg.search.keep or cfg.search.popsize)
    stopped = [r for r in records if r.get("partial")]
    chosen = np.random.default_rng(0).permutation(len(stopped))[:sample]
    full = make_objective({**to_dict(cfg), "search": {**to_dict(cfg)["search"], "evaluation": "full"}}, MULTI_TASK)
    errors, gaps = 0, []
    for i in chosen:
        rec = stopped[i]
        score = full(np.asarray(rec["coefficients"])).fitness
        errors += score > cut[rec["gen"]]
        gaps.append(-rec["loss"] - score)
    return len(chosen), errors, gaps


def table(lines: list[dict], errors: dict, confidence: float) -> str:
    head = ["| optimizer | mode | seeds | dev items per run | fewer than full | search s per run | best dev | its test "
            "| test within 1 SE of full |", "|---|---|---|---|---|---|---|---|---|"]
    full = {r["optimizer"]: r for r in lines if r["mode"] == "full"}
    body = [f"| {r['optimizer']} | {r['mode']} | {r['seeds']} | {r['items'][0]:,.0f} | {r['saving']:.2f}× | "
            f"{r['seconds'][0]:.0f} ± {r['seconds'][1]:.0f} | {r['dev'][0]:.4f} ± {r['dev'][1]:.4f} | "
            f"{r['test'][0]:.4f} ± {r['test'][1]:.4f} | "
            f"{'–' if r['mode'] == 'full' else ('yes' if within_one_se(full[r['optimizer']], r) else 'no')} |"
            for r in lines]
    rate = "–" if errors["rate"] is None else f"{errors['rate']:.3f}"
    gap = "–" if errors["mean_abs_estimate_error"] is None else f"{errors['mean_abs_estimate_error']:.4f}"
    tail = [f"\nstopping rule: {errors['errors']} of {errors['checked']} sampled stopped candidates would have "
            f"entered the kept set when scored in full (rate {rate}; stated bound {1 - confidence:.2f}); "
            f"mean |partial estimate − full score| {gap}"]
    return "\n".join(head + body + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="evogm,evogm-plus,pso", help="comma-separated, as for evogm compare")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=160)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="50 items per task split (for iterating)")
    parser.add_argument("--sample", type=int, default=20, help="stopped candidates per run scored in full")
    parser.add_argument("--confidence", type=float, default=None, help="search.confidence (default: evogm's)")
    parser.add_argument("--chunks", type=int, default=None, help="search.chunks (default: evogm's)")
    parser.add_argument("--keep", type=int, default=None, help="search.keep (default: evogm's, 1)")
    parser.add_argument("--bound", default=None, help="search.bound (default: evogm's, paired)")
    parser.add_argument("--out", type=Path, default=None, help="default runs/adaptive-eval[-quick]")
    parser.add_argument("--full-from", type=Path, default=None,
                        help="read the full arm from the landscape suite's zoo runs (e.g. runs/landscapes-quick/zoo) "
                             "instead of running it")
    args = parser.parse_args()
    args.out = (args.out or ROOT / "runs" / ("adaptive-eval-quick" if args.quick else "adaptive-eval")).resolve()

    from evogm.config import SearchConfig

    base = quick_overrides(ZOO_CONFIG, []) if args.quick else []
    summaries = {mode: run_mode(mode, args, base) for mode in MODES}
    errors = error_rate(summaries["adaptive"], args.sample)
    lines = rows(summaries)
    confidence = args.confidence or SearchConfig.confidence
    text = table(lines, errors, confidence)
    (args.out / "adaptive.md").write_text(text + "\n")
    (args.out / "adaptive.json").write_text(json.dumps({"rows": lines, "errors": errors}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
