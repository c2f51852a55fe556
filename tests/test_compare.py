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


def test_an_option_added_after_a_run_counts_at_its_default(comparison):
    """A run from before an optimizer gained an option (its inputs.json does not name it) is reused:
    the option's default is the behaviour the run had; the same option at another value is a change."""
    from evogm.inputs import changes

    out, argv = comparison
    run = out / "runs" / "evogm" / "seed1"
    saved = json.loads((run / "inputs.json").read_text())
    assert saved["config"]["search"]["options"].pop("local_share") == 0.0
    (run / "inputs.json").write_text(json.dumps(saved))
    stamp = (run / "final.json").stat().st_mtime_ns
    assert cli(argv) == 0
    assert (run / "final.json").stat().st_mtime_ns == stamp
    now = json.loads(json.dumps(saved))
    now["config"]["search"]["options"]["local_share"] = 0.25
    assert changes(saved, now) == ["search.options.local_share"]


def test_variants_are_named_and_ablations_stay_the_papers():
    from evogm.compare import ABLATIONS, method_specs

    specs = method_specs(["evogm", "evogm-local"], ablations=True)
    assert specs["evogm-local"] == ("evogm", {"local_share": 0.25}) and specs["evogm"] == ("evogm", {})
    assert set(specs) == {"evogm", "evogm-local", *ABLATIONS}
    assert "evogm-local" not in method_specs(["evogm"], ablations=True)
