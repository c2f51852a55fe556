"""`evogm compare` on the tiny zoo: 2 optimizers × 2 seeds; the table's numbers come from the run directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from evogm.cli import main as cli

FAST = ["search.popsize=4", "search.options.steps=5", "search.options.hidden_sizes=[16, 16]",
        "baselines.scales=[0.5, 1.0]", "baselines.methods=[uniform, task_arithmetic]"]


@pytest.fixture(scope="module")
def comparison(zoo_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    argv = ["compare", str(zoo_tiny / "run.yaml"), *FAST, "--optimizers", "evogm,random", "--seeds", "2",
            "--budget", "8", "--out", str(out)]
    assert cli(argv) == 0
    return out, argv


def test_table_agrees_with_the_run_directories(comparison):
    out, _ = comparison
    summary = json.loads((out / "comparison.json").read_text())
    assert set(summary["methods"]) == {"evogm", "random"} and summary["budget"] == 8
    for name, method in summary["methods"].items():
        devs, tests = [], []
        for seed in (0, 1):
            run = out / "runs" / name / f"seed{seed}"
            best = json.loads((run / "final.json").read_text())["candidates"]["best"]
            log = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
            assert len(log) == 8
            assert best["dev"]["score"] == pytest.approx(max(-r["loss"] for r in log if r["loss"] is not None))
            devs.append(best["dev"]["score"])
            tests.append(best["test"]["score"])
        assert method["dev_mean"] == pytest.approx(np.mean(devs))
        assert method["test_mean"] == pytest.approx(np.mean(tests))
        assert method["dev_std"] == pytest.approx(np.std(devs, ddof=1))
    assert set(summary["static"]) == {"uniform", "task_arithmetic"}
    assert "| evogm |" in (out / "comparison.md").read_text()
    assert (out / "plots" / "best_so_far.png").stat().st_size > 0


def test_a_second_call_reuses_finished_runs(comparison):
    out, argv = comparison
    stamp = (out / "runs" / "evogm" / "seed0" / "final.json").stat().st_mtime_ns
    assert cli(argv) == 0
    assert (out / "runs" / "evogm" / "seed0" / "final.json").stat().st_mtime_ns == stamp


def test_a_finished_run_whose_inputs_changed_is_run_again_not_reused(comparison, zoo_tiny, capsys):
    out, _ = comparison
    run = out / "runs" / "random" / "seed0"
    argv = ["compare", str(zoo_tiny / "run.yaml"), *FAST, "baselines.methods=[]", "tasks.0.limit=20",
            "--optimizers", "random", "--seeds", "1",
            "--budget", "8", "--out", str(out)]
    assert cli(argv) == 0
    err = capsys.readouterr().err
    assert "random seed 0: ran again (" in err and "tasks.0.limit" in err
    assert yaml.safe_load((run / "config.yaml").read_text())["tasks"][0]["limit"] == 20


def test_a_run_saved_without_one_of_today_s_options_counts_as_changed(comparison):
    """No option is filled in for a run saved without it: archived runs are brought up to date by
    benchmarks/upgrade_runs.py, never guessed at by the library."""
    from evogm.inputs import changes

    out, _ = comparison
    saved = json.loads((out / "runs" / "evogm" / "seed1" / "inputs.json").read_text())
    older = json.loads(json.dumps(saved))
    assert older["config"]["search"]["options"].pop("reset") == "round"
    assert changes(older, saved) == ["search.options.reset"]


def test_a_method_is_an_optimizer_with_inline_options(comparison, zoo_tiny):
    """`--optimizers` takes options inline and a label for the runs' folder; nothing is registered."""
    out, _ = comparison
    argv = ["compare", str(zoo_tiny / "run.yaml"), *FAST, "--optimizers", "r2=random:rounds=2,bounds=[-0.5, 0.5]",
            "--seeds", "1", "--budget", "8", "--out", str(out / "inline")]
    assert cli(argv) == 0
    saved = yaml.safe_load((out / "inline" / "runs" / "r2" / "seed0" / "config.yaml").read_text())
    assert saved["search"]["optimizer"] == "random"
    assert saved["search"]["options"]["rounds"] == 2 and saved["search"]["options"]["bounds"] == [-0.5, 0.5]
    summary = json.loads((out / "inline" / "comparison.json").read_text())
    assert summary["methods"]["r2"]["options"] == {"rounds": 2, "bounds": [-0.5, 0.5]}


def test_method_specs_read_well_and_refuse_in_one_line():
    from evogm.compare import Method, parse_methods
    from evogm.errors import EvogmError

    ablations = "evogm:generator=single,evogm:cycle_scale=0,evogm:rounds=1,iterations=7,evogm:reset=iteration"
    assert parse_methods(f"evogm,{ablations}") == [
        Method("evogm", "evogm", {}), Method("evogm:generator=single", "evogm", {"generator": "single"}),
        Method("evogm:cycle_scale=0", "evogm", {"cycle_scale": 0}),
        Method("evogm:rounds=1,iterations=7", "evogm", {"rounds": 1, "iterations": 7}),
        Method("evogm:reset=iteration", "evogm", {"reset": "iteration"})]
    assert parse_methods("small=evogm-plus:hidden_sizes=[16, 16],lr=1e-3") == [
        Method("small", "evogm-plus", {"hidden_sizes": [16, 16], "lr": 0.001})]
    for spec, message in [("evogm-pluss", "did you mean 'evogm-plus'"),
                          ("evogm-plus:warp=false", "warp is not an option of optimizer 'evogm-plus'"),
                          ("evogm-plus:batch=ten", "must be an integer"), ("pso,pso", "methods repeat"),
                          ("evogm:reset", "'reset' is not KEY=VALUE")]:
        with pytest.raises(EvogmError, match=message):
            parse_methods(spec)
