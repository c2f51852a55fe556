"""`search.timeout` is enforced by process: a candidate past it fails, its worker is replaced, and the
search goes on; locally and in the final stage (on Ray: tests/test_ray_executor.py). A fitness cannot defeat it by catching
exceptions, and its SystemExit is a failed evaluation, not the end of the run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from evogm.cli import main as cli

JUDGE = """
import os, time

MARK = os.environ["EVOGM_TEST_MARK"]

def _first_time(tag):
    path = f"{MARK}.{tag}"
    if os.path.exists(path):
        return False
    open(path, "w").close()
    return True

def stubborn(model, tokenizer, split="dev"):
    '''Hangs the first time it is called on `split`, and swallows every exception while it does.'''
    if _first_time(split):
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except Exception:
                pass
    return {"score": float(model.model.norm.weight.float().mean())}

def exits(model, tokenizer, split="dev"):
    if _first_time("exit"):
        raise SystemExit(3)
    return {"score": 0.5}
"""

# random search: the time limits, not the optimizer, are under test; one round, 4 candidates
SMALL = ["search.optimizer=random", "search.budget=4", "search.popsize=4", "baselines.methods=[uniform]",
         "baselines.scales=[1.0]"]


@pytest.fixture
def judge(tmp_path, monkeypatch):
    """A module `stubbornjudge` on sys.path; its marks (which call hangs) under tmp_path."""
    import sys

    folder = tmp_path / "fitness"
    folder.mkdir()
    (folder / "stubbornjudge.py").write_text(JUDGE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("EVOGM_TEST_MARK", str(tmp_path / "mark"))
    yield folder
    sys.modules.pop("stubbornjudge", None)


def run_judged(zoo: Path, out: Path, function: str, *extra: str) -> int:
    return cli(["run", str(zoo / "run.yaml"), *SMALL, f"tasks=[{{name: judge, type: python, function: {function}}}]",
                *extra, f"output={out}", "--quiet"])


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]


def test_a_hung_candidate_that_swallows_exceptions_is_stopped_and_the_search_goes_on(zoo_tiny, judge, tmp_path):
    out = tmp_path / "local"
    start = time.monotonic()
    assert run_judged(zoo_tiny, out, "stubbornjudge:stubborn", "search.timeout=5") == 0  # a tiny evaluation takes well under a second
    assert time.monotonic() - start < 110  # the 120 s hang did not run out, on dev or on test
    log = records(out)
    assert log[0]["loss"] is None and log[0]["error"].startswith("TimeoutError: it took longer than 5 s")
    assert all(r["error"] is None for r in log[1:])  # the replaced worker evaluated the rest
    final = json.loads((out / "final.json").read_text())["candidates"]
    timed_out = [(name, split) for name, entry in final.items() for split in ("dev", "test")
                 if (entry[split].get("error") or "").startswith("WorkerTimeout")]
    assert timed_out and {split for _, split in timed_out} == {"test"}  # the first test scoring hung (the best,
    assert final["uniform"]["test"].get("error") is None  # and the initial best, the same merge); the rest was scored
    assert "WorkerTimeout" in (out / "report.md").read_text()


def test_system_exit_in_a_fitness_is_a_failed_evaluation(zoo_tiny, judge, tmp_path):
    out = tmp_path / "exits"
    assert run_judged(zoo_tiny, out, "stubbornjudge:exits") == 0
    log = records(out)
    assert log[0]["error"] == "SystemExit: 3" and all(r["error"] is None for r in log[1:])
