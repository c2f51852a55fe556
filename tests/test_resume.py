"""Resume: a run killed at any point ends exactly where an uninterrupted run of the same seed ends,
without evaluating any logged row again."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from evogm.errors import EvogmError
from evogm.executors import LocalExecutor
from evogm.runlog import Result
from evogm.runlog import RunLog, record, to_result
from evogm.search import OPTIMIZERS
from evogm.search.loop import search


# --- the log ------------------------------------------------------------------------------------


def result(x, loss, error=None) -> Result:
    metrics = {"t/acc": -loss if math.isfinite(loss) else 0.0}
    return Result(coefficients=tuple(x), loss=loss, metrics=metrics, seconds=0.1, error=error)


def test_log_round_trips_floats_exactly_and_failures_as_inf(tmp_path: Path):
    log = RunLog(tmp_path / "e.jsonl")
    x = np.random.default_rng(0).normal(size=4)
    log.append(record(0, 0, result(x, -0.123456789012345)))
    log.append(record(0, 1, result(x, math.inf, error="CUDA out of memory")))
    a, b = (to_result(r) for r in log.records())
    assert a.coefficients == tuple(x) and a.loss == -0.123456789012345 and a.ok
    assert b.loss == math.inf and not b.ok and b.error == "CUDA out of memory"


def test_a_truncated_last_line_is_dropped_and_cut_from_the_file(tmp_path: Path):
    path = tmp_path / "e.jsonl"
    log = RunLog(path)
    for row in range(3):
        log.append(record(0, row, result([row], -row)))
    log.close()
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 7])  # a kill in the middle of writing the third record
    log = RunLog(path)
    assert [r["row"] for r in log.records()] == [0, 1]
    log.append(record(0, 2, result([2], -2)))  # the next append starts on a clean line
    assert [r["row"] for r in RunLog(path).records()] == [0, 1, 2]


def test_a_corrupt_line_inside_the_log_is_an_error(tmp_path: Path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"gen": 0}\nnot json\n{"gen": 1}\n')
    with pytest.raises(EvogmError, match="line 2 is not a JSON record"):
        RunLog(path).records()


# --- the loop: replay after a kill at any evaluation --------------------------------------------


class Quadratic:
    """A real objective on numbers (no model): loss = |x − 0.3|²; counts its evaluations."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x: np.ndarray) -> Result:
        self.calls += 1
        return result(x, float(np.sum((x - 0.3) ** 2)))


def small_evogm(seed=3):
    return OPTIMIZERS["evogm"](3, popsize=6, seed=seed, iterations=2, steps=5, hidden_sizes=(8, 8))


def run_loop(log_path: Path, budget: int) -> Quadratic:
    objective = Quadratic()
    log = RunLog(log_path)
    search(small_evogm(), LocalExecutor(lambda: objective), log, budget)
    log.close()
    return objective


def test_resume_from_any_cut_point_repeats_nothing_and_ends_identically(tmp_path: Path):
    budget = 40  # 2 rounds of 6 + 2·6 = 18, then 4 more in the last round; the last ask is cut short
    whole = tmp_path / "whole.jsonl"
    assert run_loop(whole, budget).calls == budget
    lines = whole.read_text().splitlines(keepends=True)
    assert len(lines) == budget
    for cut in (0, 1, 5, 6, 13, 18, 19, 39):
        killed = tmp_path / f"killed{cut}.jsonl"
        killed.write_text("".join(lines[:cut]) + lines[cut][:20])  # a partial record after the kill
        objective = run_loop(killed, budget)
        assert objective.calls == budget - cut, f"cut {cut}: logged rows were evaluated again"
        resumed = [(r["gen"], r["row"], r["coefficients"], r["loss"]) for r in RunLog(killed).records()]
        expected = [(r["gen"], r["row"], r["coefficients"], r["loss"]) for r in RunLog(whole).records()]
        assert resumed == expected, f"cut {cut}"


def test_a_log_from_another_seed_is_refused(tmp_path: Path):
    path = tmp_path / "e.jsonl"
    run_loop(path, 6)
    log = RunLog(path)
    with pytest.raises(EvogmError, match="differs from what the optimizer asks now"):
        search(small_evogm(seed=4), LocalExecutor(Quadratic), log, 12)


# --- a real run, killed with SIGKILL --------------------------------------------------------------


@pytest.fixture(scope="session")
def zoo(request) -> Path:
    try:
        return Path(request.getfixturevalue("zoo_tiny"))
    except pytest.FixtureLookupError:
        pytest.skip("the zoo_tiny fixture (tests/conftest.py) is not there yet")


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(zoo: Path, tmp_path: Path):
    assert_sigkill_resumes(zoo / "run.yaml", tmp_path)


def assert_sigkill_resumes(config: Path, tmp_path: Path) -> Path:
    """A short run of `config`, killed with SIGKILL inside its second generation, resumes to what the same
    run uninterrupted logs and picks; returns the uninterrupted run's directory."""
    from evogm.cli import main as cli

    budget = 12  # round 1: 4 + 4 evaluations; round 2: 4
    args = ["run", str(config), f"search.budget={budget}", "search.popsize=4", "search.options.iterations=1",
            "search.options.steps=5", "search.options.hidden_sizes=[16, 16]", "baselines.methods=[]"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli([*args, f"output={whole}", "--quiet"]) == 0

    process = subprocess.Popen([sys.executable, "-m", "evogm.cli", *args, f"output={killed}", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = killed / "evaluations.jsonl"
    deadline = time.monotonic() + 300
    while (not log.exists() or log.read_text().count("\n") < 5) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    logged = log.read_text().count("\n")
    assert 5 <= logged < budget and not (killed / "final.json").exists()  # killed inside the second generation or later

    assert cli(["run", "--resume", str(killed), "--quiet"]) == 0
    keep = ("gen", "row", "coefficients", "metrics", "loss", "error")
    assert [{k: r[k] for k in keep} for r in RunLog(killed / "evaluations.jsonl").records()] == \
           [{k: r[k] for k in keep} for r in RunLog(whole / "evaluations.jsonl").records()]
    assert json.loads((killed / "best.json").read_text()) == json.loads((whole / "best.json").read_text())
    a, b = (json.loads((d / "final.json").read_text())["candidates"] for d in (killed, whole))
    assert a == b
    return whole


# --- what a resume refuses --------------------------------------------------------------------------

SHORT = ["search.popsize=4", "search.options.iterations=1", "search.options.steps=5",
         "search.options.hidden_sizes=[16, 16]", "baselines.methods=[]"]


@pytest.fixture(scope="module")
def stopped_run(zoo: Path, tmp_path_factory) -> Path:
    """A run of a copy of the zoo (its files are edited below), killed after it started: what the runner
    writes first (config.yaml, inputs.json) and one logged evaluation."""
    import shutil

    from evogm.config import load_config, resolve
    from evogm.inputs import start
    from evogm.rundir import RunDir

    root = tmp_path_factory.mktemp("changed")
    shutil.copytree(zoo, root / "zoo")
    out = root / "run"
    cfg = resolve(load_config(root / "zoo" / "run.yaml", ["search.budget=4", *SHORT, f"output={out}"]), out)
    start(RunDir(out), cfg, resume=False, force=False)
    RunLog(out / "evaluations.jsonl").append(record(0, 0, result([0.5] * len(cfg.models.experts), -0.25)))
    return out


def _edit_config(run: Path) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["tasks"][0]["limit"] = 5
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _edit_task(run: Path) -> None:
    task = Path(yaml.safe_load((run / "config.yaml").read_text())["tasks"][0]["path"])
    data = json.loads(task.read_text())
    task.write_text(json.dumps({**data, "dev": data["dev"][:-1]}))


def _edit_expert(run: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = Path(next(iter(yaml.safe_load((run / "config.yaml").read_text())["models"]["experts"].values())))
    file = next(folder.glob("*.safetensors"))
    state = load_file(file)
    key = next(iter(state))
    state[key] = state[key] * 1.01
    save_file(state, file)


@pytest.mark.parametrize("edit, changed", [
    (_edit_config, "tasks.0.limit"),
    (_edit_task, "the files of tasks."),
    (_edit_expert, "the files of models.experts."),
])
def test_a_resume_after_its_inputs_changed_is_refused_saying_what_changed(stopped_run: Path, capsys, edit, changed):
    import shutil

    from evogm.cli import main as cli

    backup = stopped_run.parent / "backup"
    shutil.copytree(stopped_run.parent, backup, ignore=shutil.ignore_patterns("backup"))
    try:
        edit(stopped_run)
        lines = RunLog(stopped_run / "evaluations.jsonl").records()
        assert cli(["run", "--resume", str(stopped_run), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "was started with other inputs" in err and changed in err and len(err.splitlines()) == 1
        assert RunLog(stopped_run / "evaluations.jsonl").records() == lines and (stopped_run / "config.yaml").exists()
    finally:
        for item in ("zoo", "run"):
            shutil.rmtree(stopped_run.parent / item)
            shutil.copytree(backup / item, stopped_run.parent / item)
        shutil.rmtree(backup)


def test_a_second_process_in_a_working_run_directory_is_refused(zoo: Path, tmp_path: Path, capsys):
    from evogm.cli import main as cli

    run_dir = tmp_path / "busy"
    endless = [str(zoo / "run.yaml"), "search.optimizer=random", "search.budget=100000", "search.popsize=4",
               "baselines.methods=[]", f"output={run_dir}", "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "evogm.cli", "run", *endless], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "config.yaml").exists() and time.monotonic() < deadline:  # written under the lock
            assert first.poll() is None, "the first run ended before the second started"
            time.sleep(0.02)
        for second in (["--resume", str(run_dir), "--quiet"], [*endless, "--force"]):  # this process is the second
            assert cli(["run", *second]) == 2
            err = capsys.readouterr().err.strip()
            assert f"{run_dir} is in use by another evogm process (pid {first.pid})" in err and len(err.splitlines()) == 1
        (run_dir / ".lock").unlink()  # the lock is the folder's, not that file's
        assert cli(["run", "--resume", str(run_dir), "--quiet"]) == 2
        assert f"{run_dir} is in use by another evogm process" in capsys.readouterr().err
        assert first.poll() is None and (run_dir / "config.yaml").exists()  # --force removed nothing of the live run
    finally:
        first.kill()
        first.wait()


def test_an_archived_run_is_upgraded_once_by_a_script(stopped_run: Path, tmp_path: Path):
    """A run saved before options were retired is refused by the library as it is, and read again
    after benchmarks/upgrade_runs.py rewrote it; a run of a retired setting is removed."""
    import shutil

    from benchmarks.upgrade_runs import upgrade
    from evogm.config import resolve
    from evogm.inputs import changed_inputs, read_config
    from evogm.rundir import RunDir

    def archived(name: str, **retired) -> Path:
        run = tmp_path / name
        shutil.copytree(stopped_run, run)
        config = yaml.safe_load((run / "config.yaml").read_text())
        options = config["search"]["options"]
        options["surrogate"] = options.pop("screen")
        options.update({**dict(warp=True, sum_input=True, lengthscale="auto", gp_restarts=False,
                               acquisition="thompson", dense_share=0.5, recombine=0.2, scale_shift=0.2,
                               round_start="screened", start="hybrid"), **retired})
        (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        inputs = json.loads((run / "inputs.json").read_text())
        inputs["config"]["search"]["options"] = options
        (run / "inputs.json").write_text(json.dumps(inputs))
        records = [{**r, "x": r["coefficients"]} for r in RunLog(run / "evaluations.jsonl").records()]
        (run / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return run

    run = archived("current")
    assert config_error(run) and "surrogate is not an option of optimizer 'evogm-plus'" in config_error(run)
    assert upgrade(run, dry_run=False) == "upgraded" and upgrade(run, dry_run=False) == "already current"
    cfg = read_config(RunDir(run))
    assert cfg.search.options["screen"] is True and changed_inputs(RunDir(run), resolve(cfg, run)) == []
    assert all("x" not in r for r in RunLog(run / "evaluations.jsonl").records())

    retired = archived("retired", warp=False)
    assert upgrade(retired, dry_run=True).startswith("removed: made with warp=False") and retired.exists()
    assert upgrade(retired, dry_run=False).startswith("removed") and not retired.exists()


def config_error(run: Path) -> str:
    from evogm.inputs import read_config
    from evogm.rundir import RunDir

    try:
        read_config(RunDir(run))
    except EvogmError as exc:
        return str(exc)
    return ""


def test_a_run_is_the_same_run_where_its_inputs_moved_but_not_with_its_experts_reordered(stopped_run: Path, tmp_path):
    """Where the inputs lie is no input (their contents are hashed): a run made in another checkout is
    reused there. The experts' order is: it is what each coordinate of λ means."""
    import shutil

    from evogm.config import load_config, resolve
    from evogm.inputs import changed_inputs
    from evogm.rundir import RunDir

    moved = tmp_path / "elsewhere"
    shutil.copytree(stopped_run.parent / "zoo", moved)
    overrides = ["search.budget=4", *SHORT, f"output={stopped_run}"]
    assert changed_inputs(RunDir(stopped_run), resolve(load_config(moved / "run.yaml", overrides), stopped_run)) == []
    run = yaml.safe_load((moved / "run.yaml").read_text())
    run["models"]["experts"] = dict(reversed(list(run["models"]["experts"].items())))
    (moved / "run.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
    cfg = resolve(load_config(moved / "run.yaml", overrides), stopped_run)
    changed = changed_inputs(RunDir(stopped_run), cfg)
    assert changed and all(key.startswith("models.experts.") for key in changed)  # which positions changed
