"""A user's Python fitness (`type: python`) in real runs on the tiny zoo: auxiliary metrics that are
not finite are data (null in every file), and a resume after the fitness's source changed is refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evogm.cli import main as cli
from evogm.tasks import load_task

SMALL = ["search.budget=4", "search.popsize=4", "search.options.rounds=1", "baselines.methods=[uniform]"]

AUX_JUDGE = """
def judge(model, tokenizer, split="dev"):
    score = float(model.model.norm.weight.float().mean())
    return {"score": score, "aux": float("inf") if split == "dev" else float("nan"), "none": None}
"""


def strict_json(path: Path):
    """A JSON file read back refusing NaN and Infinity, which JSON does not have."""
    def refuse(constant: str):
        raise AssertionError(f"{path.name} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    """A module `auxjudge` on sys.path (its file: the fixture's value), forgotten after the test."""
    import sys

    path = tmp_path / "fitness" / "auxjudge.py"
    path.parent.mkdir()
    path.write_text(AUX_JUDGE)
    monkeypatch.syspath_prepend(str(path.parent))
    yield path
    sys.modules.pop("auxjudge", None)


def test_non_finite_auxiliary_metrics_are_null_and_the_run_finishes(zoo_tiny, judge_module, tmp_path, capsys):
    out = tmp_path / "judged"
    run = ["run", str(zoo_tiny / "run.yaml"), *SMALL, "tasks=[{name: judge, type: python, function: auxjudge:judge}]",
           f"output={out}", "--quiet"]
    assert cli(run) == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["error"] is None and r["loss"] is not None for r in records)
    assert all(r["metrics"]["judge/aux"] is None and r["metrics"]["judge/none"] is None for r in records)
    final = strict_json(out / "final.json")
    for name in ("best", "initial_best", "uniform"):
        for split in ("dev", "test"):
            entry = final["candidates"][name][split]
            assert math.isfinite(entry["score"]) and entry["metrics"]["judge/score"] == entry["score"], (name, split)
            assert entry["metrics"]["judge/aux"] is None and entry["metrics"]["judge/none"] is None, (name, split)
    assert strict_json(out / "best.json")["metrics"]["judge/aux"] is None
    assert "## Failures" not in (out / "report.md").read_text()

    (out / "final.json").unlink()  # as if the final stage had died: a resume runs it again
    (out / "report.md").unlink()
    assert cli(["run", "--resume", str(out), "--quiet"]) == 0
    assert strict_json(out / "final.json")["candidates"]["best"]["test"]["metrics"]["judge/aux"] is None

    judge_module.write_text(AUX_JUDGE.replace('"score": score', '"score": -score'))  # another fitness
    assert cli(["run", "--resume", str(out), "--quiet"]) == 2
    assert "the files of tasks.judge.function changed" in capsys.readouterr().err
    judge_module.write_text(AUX_JUDGE)
    assert cli(["run", "--resume", str(out), "--quiet"]) == 0  # restored: the same inputs


def test_a_primary_that_is_not_a_finite_number_fails_the_evaluation(judge_module):
    judge_module.write_text("def judge(model, tokenizer):\n    return {'score': None, 'aux': 1}\n"
                            "def wordy(model, tokenizer):\n    return {'score': 0.5, 'aux': 'high'}\n")
    task = load_task({"name": "judge", "type": "python", "function": "auxjudge:judge"})
    with pytest.raises(FloatingPointError, match="auxjudge:judge returned score=None"):
        task.evaluate(None, None, "dev")
    wordy = load_task({"name": "wordy", "type": "python", "function": "auxjudge:wordy"})
    with pytest.raises(TypeError, match="auxjudge:wordy returned aux='high', not a number"):
        wordy.evaluate(None, None, "dev")


def test_the_fingerprint_holds_the_fitness_modules_own_file(judge_module, tmp_path):
    from evogm.config import load_config
    from evogm.inputs import fingerprint, input_paths
    from evogm.zoo.packaged import zoo_config

    cfg = load_config(zoo_config(), ["tasks=[{name: judge, type: python, function: auxjudge:judge}]",
                                     f"output={tmp_path / 'run'}"])
    assert input_paths(cfg)["tasks.judge.function"] == judge_module
    before = fingerprint(cfg)["files"]["tasks.judge.function"]
    judge_module.write_text(AUX_JUDGE + "\n# edited\n")
    assert fingerprint(cfg)["files"]["tasks.judge.function"] != before
