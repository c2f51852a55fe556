"""`evogm run` end to end on the tiny zoo: a small-budget run in multi-task and single-task mode,
every output present and consistent with the log, the exported model scoring what the log says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from evogm.cli import main as cli
from evogm.config import load_config
from evogm.inputs import start
from evogm.rundir import RunDir

# A short EvoGM+ (2 rounds of 4 + 1·4 evaluations in generations of 4 rows, the budget cutting the
# last generation to 2 rows) and a 2-point scale grid: seconds, not minutes.
FAST = ["search.budget=14", "search.popsize=4", "search.options.iterations=1", "search.options.steps=5",
        "search.options.batch=4", "search.options.hidden_sizes=[16, 16]", "baselines.scales=[0.5, 1.0]"]
CANDIDATES = ["best", "initial_best", "best_expert", "uniform", "task_arithmetic", "ties", "dare"]


@pytest.fixture(scope="session")
def zoo(request) -> Path:
    try:
        return Path(request.getfixturevalue("zoo_tiny"))
    except pytest.FixtureLookupError:
        pytest.skip("the zoo_tiny fixture (tests/conftest.py) is not there yet")


@pytest.fixture(scope="module")
def multi(zoo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "multi"
    assert cli(["run", str(zoo / "run.yaml"), *FAST, f"output={out}", "--quiet"]) == 0
    return out


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


def test_the_run_directory_holds_every_output(multi: Path):
    for name in ("config.yaml", "evaluations.jsonl", "best.json", "final.json", "report.md",
                 "model/recipe.yaml", "model/config.json", "plots/best_so_far.png", "plots/coefficients.png",
                 "plots/tasks.png"):
        assert (multi / name).is_file(), name
    assert (multi / "plots" / "tasks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = yaml.safe_load((multi / "config.yaml").read_text())
    assert saved["search"]["budget"] == 14 and saved["search"]["options"]["steps"] == 5
    assert saved["search"]["options"]["winner_portion"] == 0.3  # defaults made explicit
    assert load_config(multi / "config.yaml").search.budget == 14  # and it loads back


def test_the_log_has_every_evaluation_and_best_json_agrees(multi: Path):
    log = records(multi)
    assert len(log) == 14 and [r["gen"] for r in log].count(3) == 2  # the budget cut the last ask short
    assert all(set(r) >= {"gen", "row", "coefficients", "metrics", "loss", "seconds", "error"} for r in log)
    ok = [r for r in log if r["loss"] is not None]
    assert ok and all(r["error"] is None for r in ok)
    best = json.loads((multi / "best.json").read_text())
    top = min(ok, key=lambda r: r["loss"])
    assert (best["coefficients"], best["loss"], best["metrics"]) == (top["coefficients"], top["loss"], top["metrics"])
    assert log[best["evaluation"] - 1]["coefficients"] == best["coefficients"]


def test_final_json_reports_dev_and_test_per_task_for_every_candidate(multi: Path):
    final = json.loads((multi / "final.json").read_text())
    best = json.loads((multi / "best.json").read_text())
    assert list(final["candidates"]) == CANDIDATES
    tasks = final["tasks"]  # task → its primary metric key
    for name, entry in final["candidates"].items():
        for split in ("dev", "test"):
            assert set(tasks.values()) <= set(entry[split]["metrics"]), (name, split)
            assert math.isfinite(entry[split]["score"])
    assert final["candidates"]["best"]["dev"]["score"] == best["fitness"]
    # the initial best is the best of the first population, and the search cannot end below it on dev
    first = [r for r in records(multi) if r["gen"] == 0 and r["loss"] is not None]
    assert final["candidates"]["initial_best"]["dev"]["score"] == -min(r["loss"] for r in first)
    assert final["candidates"]["best"]["dev"]["score"] >= final["candidates"]["initial_best"]["dev"]["score"]
    ta = final["candidates"]["task_arithmetic"]
    assert ta["scale"] in (0.5, 1.0) and ta["dev"]["score"] == max(ta["sweep"].values())


def test_the_best_single_expert_is_picked_on_dev_and_matches_the_logged_one_hots(multi: Path):
    final = json.loads((multi / "final.json").read_text())
    entry, experts = final["candidates"]["best_expert"], final["experts"]
    one_hots = {r["coefficients"].index(1.0): -r["loss"] for r in records(multi)
                if r["gen"] == 0 and sorted(r["coefficients"]) == [0.0] * (len(experts) - 1) + [1.0]}
    assert sorted(one_hots) == list(range(len(experts)))  # the first population holds every expert alone
    assert entry["sweep"] == {experts[i]: score for i, score in one_hots.items()}  # same merges, same dev scores
    assert entry["dev"]["score"] == max(one_hots.values()) and entry["sweep"][entry["expert"]] == max(one_hots.values())
    assert entry["coefficients"] == [1.0 if e == entry["expert"] else 0.0 for e in experts]


def test_the_final_stage_takes_the_searchs_full_dev_scores_which_equal_scoring_again(multi: Path):
    """The best single expert's dev sweep and the uniform merge come from the log (the first population
    holds them), and they are what scoring those merges again gives."""
    from evogm import baselines
    from evogm.scoring import MULTI_TASK, Scoring, merge_request
    from evogm.workspace import workspace

    cfg, log = load_config(multi / "config.yaml"), records(multi)
    ws = workspace(cfg)
    scored = []

    def run(jobs):
        scored.extend((args[-2], args[-1]) for _, args, _ in jobs)  # (coefficients, split)
        return [fn(ws, *args) for fn, args, _ in jobs]

    fresh = Scoring(ws.tasks.values(), MULTI_TASK, run)
    for rec in [r for r in log if r["gen"] == 0][:3]:
        scored_again = fresh.score(merge_request(rec["coefficients"], "dev"))
        assert scored_again == {"score": -rec["loss"], "metrics": rec["metrics"]}
    scored.clear()
    remembering = Scoring(ws.tasks.values(), MULTI_TASK, run)
    remembering.remember(log)
    entry = baselines.evaluate("best_expert", cfg, remembering)
    assert scored == [(entry["coefficients"], "test")]  # no one-hot scored again on dev: only the pick, on test
    assert entry == json.loads((multi / "final.json").read_text())["candidates"]["best_expert"]


def test_the_report_has_the_tables_and_plots(multi: Path):
    report = (multi / "report.md").read_text()
    for text in ("## Results", "| best (search)", "| initial best", "| best single expert (", "| TIES", "## Best coefficients",
                 "plots/best_so_far.png", "plots/coefficients.png", "plots/tasks.png"):
        assert text in report, text


def test_the_exported_recipe_holds_the_best_coefficients(multi: Path):
    recipe = yaml.safe_load((multi / "model" / "recipe.yaml").read_text())
    best = json.loads((multi / "best.json").read_text())
    text = json.dumps(recipe)
    assert all(name in text for name in best["experts"])
    flat = np.array([v for v in best["coefficients"]])
    assert np.isfinite(flat).all()


def test_a_finished_run_is_never_overwritten_without_force(multi: Path, capsys):
    assert cli(["run", str(multi / "config.yaml"), f"output={multi}", "--quiet"]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert cli(["run", "--resume", str(multi), "--quiet"]) == 0  # resuming a finished run changes nothing
    assert len(records(multi)) == 14


def test_force_clears_only_the_run_files(tmp_path: Path, multi: Path):
    out = tmp_path / "copy"
    out.mkdir()
    (out / "evaluations.jsonl").write_text("")
    (out / "notes.txt").write_text("mine")
    cfg = load_config(multi / "config.yaml")
    with pytest.raises(Exception, match="already holds an unfinished run"):
        start(RunDir(out), cfg, resume=False, force=False)
    start(RunDir(out), cfg, resume=False, force=True)
    assert not (out / "evaluations.jsonl").exists() and (out / "notes.txt").exists() and (out / "config.yaml").exists()


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_run(zoo: Path, tmp_path: Path, capsys):
    from evogm.rundir import OUTPUTS

    out, not_a_model = tmp_path / "failed", tmp_path / "not_a_model"
    not_a_model.mkdir()  # exists, so the config is valid; loading it fails
    assert cli(["run", str(zoo / "run.yaml"), *FAST, f"models.experts.extra={not_a_model}", f"output={out}", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "is neither a PEFT adapter nor a model folder" in err and len(err.splitlines()) == 1
    assert not [name for name in OUTPUTS if (out / name).exists()]  # the corrected run needs no --force


JUDGE = """
def judge(model, tokenizer, split="dev"):
    if split == "test":
        raise ConnectionError("the judge is down")
    return {"score": float(model.model.norm.weight.float().mean())}
"""


def test_a_user_fitness_that_fails_in_the_final_stage_leaves_a_report_saying_so(zoo: Path, tmp_path: Path,
                                                                                  monkeypatch, capsys):
    (tmp_path / "finaljudge.py").write_text(JUDGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "judged"
    assert cli(["run", str(zoo / "run.yaml"), *FAST, "tasks=[{name: judge, type: python, function: finaljudge:judge}]",
                "baselines.methods=[uniform]", f"output={out}", "--quiet"]) == 0
    best = json.loads((out / "final.json").read_text())["candidates"]["best"]
    assert best["test"] == {"score": None, "metrics": {}, "error": "ConnectionError: the judge is down"}
    assert best["dev"]["score"] is not None
    report = (out / "report.md").read_text()
    assert "## Failures in the final stage" in report and "best (search) on test: ConnectionError: the judge is down" in report
    assert "could not score 3 candidate(s)" in capsys.readouterr().err


def test_single_task_mode_runs_one_search_per_task(zoo: Path, tmp_path: Path):
    out = tmp_path / "single"
    two = yaml.safe_load((zoo / "run.yaml").read_text())["tasks"][:2]  # two tasks are enough to show the shape
    for task in two:
        task["path"] = str(zoo / task["path"])
    budget = ["search.budget=4", "search.options.rounds=1", "baselines.methods=[uniform]",
              f"tasks={json.dumps(two)}"]
    assert cli(["run", str(zoo / "run.yaml"), *FAST, *budget, "mode=single_task", f"output={out}", "--quiet"]) == 0
    names = load_config(out / "config.yaml").task_names
    assert names == [t["name"] for t in two]
    summary = (out / "report.md").read_text()
    for name in names:
        final = json.loads((out / name / "final.json").read_text())
        assert final["target"] == name and list(final["tasks"]) == [name]
        assert len(records(out / name)) == 4 and (out / name / "model" / "recipe.yaml").is_file()
        scored = [*final["candidates"]["best"]["dev"]["metrics"], *final["candidates"]["best"]["test"]["metrics"]]
        assert scored and all(key.startswith(f"{name}/") for key in scored)  # only its own task is scored
        assert f"[{name}/report.md]" in summary
    assert set(json.loads((out / "summary.json").read_text())) == set(names)


def test_demo_runs_a_zoo_and_prints_where_the_report_is(zoo: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "demo").mkdir(parents=True)  # taken: the demo picks the next free name
    small = ["search.budget=4", "search.popsize=4", "search.options.rounds=1", "baselines.methods=[]"]
    assert cli(["demo", "--zoo", str(zoo), "--quiet", *small]) == 0
    assert capsys.readouterr().out.strip().endswith(f"report: {tmp_path / 'runs' / 'demo-2' / 'report.md'}")
    assert (tmp_path / "runs" / "demo-2" / "model" / "recipe.yaml").is_file()
    assert load_config(tmp_path / "runs" / "demo-2" / "config.yaml").search.evaluation == "adaptive"
    paper = ["search.optimizer=evogm", "search.options.rounds=1", "search.options.iterations=1", "search.popsize=4",
             "search.budget=4", "baselines.methods=[]"]
    assert cli(["demo", "--zoo", str(zoo), "--quiet", "--output", str(tmp_path / "paper"), *paper]) == 0
    assert load_config(tmp_path / "paper" / "config.yaml").search.evaluation == "full"  # reproduced as published


def test_the_packaged_zoo_config_reads(monkeypatch):
    """configs/zoo.yaml and `evogm demo` both read the zoo shipped in the package."""
    from evogm.zoo.packaged import zoo_config

    path = zoo_config()
    assert path.resolve() == (Path(__file__).parent.parent / "evogm" / "zoo" / "data" / "run.yaml").resolve()
    cfg = load_config(Path(__file__).parent.parent / "configs" / "zoo.yaml")
    assert cfg.models.base == str(path.parent / "base") and cfg.search.budget == 160


def test_the_report_weighs_the_search_gain_against_the_dev_noise(multi: Path):
    """The gain over the initial best, and its ratio to a binomial bound on the dev noise computed
    from final.json's per-task dev scores and item counts."""
    final = json.loads((multi / "final.json").read_text())
    cfg = load_config(multi / "config.yaml")
    assert final["dev_items"] == {t["name"]: t.get("limit") or len(json.loads(Path(t["path"]).read_text())["dev"])
                                  for t in yaml.safe_load((multi / "config.yaml").read_text())["tasks"]}
    best, initial = final["candidates"]["best"], final["candidates"]["initial_best"]
    variance = lambda e: sum(p * (1 - p) / final["dev_items"][t] for t, p in
                             ((t, e["dev"]["metrics"][m]) for t, m in final["tasks"].items())) / len(cfg.tasks) ** 2
    noise = math.sqrt(variance(best) + variance(initial))
    gain = best["dev"]["score"] - initial["dev"]["score"]
    line = next(x for x in (multi / "report.md").read_text().splitlines() if x.startswith("- search gain"))
    assert f"{gain:+.4f} dev" in line and f"±{noise:.4f}" in line and f"{gain / noise:.1f} ×" in line
