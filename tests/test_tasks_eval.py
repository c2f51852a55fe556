"""`evogm eval` on tiny local models: folders, adapters, merges, configs, splits, errors."""

import json

import pytest
import yaml
from test_tasks_fixtures import em_items, mc_items, one_thread, write_task  # noqa: F401

from evogm.cli import main


@pytest.fixture(scope="module")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_tasks")
    return [write_task(root / "mc.json", mc_items(6, 0), mc_items(5, 7)), write_task(root / "em.json", em_items(6, 1), em_items(4, 8))]


def evaluate(capsys, *argv) -> dict:
    assert main(["eval", *map(str, argv), "--json", "--device", "cpu"]) == 0
    return json.loads(capsys.readouterr().out)


def metrics(report: dict) -> dict:
    return {name: row["metrics"] for name, row in report["tasks"].items()}


def test_a_model_folder_on_dev_and_test(capsys, tiny_models, task_files):
    dev = evaluate(capsys, tiny_models["base"], "--tasks", *task_files)
    assert dev["split"] == "dev" and dev["model"] == str(tiny_models["base"])
    assert set(dev["tasks"]) == {"mc", "em"} and dev["tasks"]["mc"]["type"] == "MultipleChoiceTask"
    assert dev["score"] == pytest.approx((dev["tasks"]["mc"]["metrics"]["accuracy"] + dev["tasks"]["em"]["metrics"]["accuracy"]) / 2)
    test = evaluate(capsys, tiny_models["base"], "--tasks", *task_files, "--split", "test")
    assert test["split"] == "test" and all(row["seconds"] >= 0 for row in test["tasks"].values())
    generate = evaluate(capsys, tiny_models["base"], "--tasks", task_files[0], "--scoring", "generate", "--limit", "2")
    assert set(generate["tasks"]) == {"mc"}


def test_an_adapter_folder_equals_its_merge_at_weight_one(capsys, tiny_models, task_files):
    alone = evaluate(capsys, tiny_models["lora_qv"], "--tasks", *task_files)
    assert alone["model"].endswith("+ 1·lora_qv")
    merged = evaluate(capsys, "--base", tiny_models["base"], "--expert", f"lora_qv={tiny_models['lora_qv']}", "--tasks", *task_files)
    assert metrics(alone) == metrics(merged)
    full = evaluate(capsys, tiny_models["full_all"], "--tasks", *task_files)
    as_merge = evaluate(capsys, "--base", tiny_models["base"], "--expert", f"f={tiny_models['full_all']}", "--weights", "f=1", "--tasks", *task_files)
    assert metrics(full) == metrics(as_merge)


def test_a_run_config_gives_models_and_tasks(capsys, tiny_models, task_files, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"models": {"base": str(tiny_models["base"]), "experts": {"a": str(tiny_models["lora_qv"]), "b": str(tiny_models["full_mlp"])}},
                                      "tasks": [{"path": task_files[0], "limit": 3}]}))  # no output: a run's key
    base = evaluate(capsys, config)
    assert list(base["tasks"]) == ["mc"] and base["model"].endswith("0·a + 0·b")
    weighted = evaluate(capsys, config, "--weights", "b=0.5")
    assert weighted["model"].endswith("0·a + 0.5·b")
    assert main(["eval", str(config), "--expert", f"a={tiny_models['full_all']}"]) == 2  # not: replace the config's a
    assert "--expert a is also an expert of" in capsys.readouterr().err


def test_the_table_and_the_one_line_errors(capsys, tiny_models, task_files, tmp_path):
    assert main(["eval", str(tiny_models["base"]), "--tasks", *task_files, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{tiny_models['base']} on dev" and "weighted mean" in out and "\nmc " in out
    missing = tmp_path / "gone.json"
    assert main(["eval", str(tiny_models["base"]), "--tasks", str(missing)]) == 2
    assert f"task file not found: {missing}" in capsys.readouterr().err
    assert main(["eval", str(tiny_models["base"])]) == 2
    assert "no tasks to score" in capsys.readouterr().err
    assert main(["eval", "--tasks", task_files[0]]) == 2
    assert "no model to score" in capsys.readouterr().err


def test_the_json_is_strict_when_a_metric_is_not_finite():
    """A perplexity that overflowed is null in --json, as the run's files store it, never `Infinity`."""
    from types import SimpleNamespace

    from evogm.commands.eval import as_json
    from evogm.evaluate import Evaluation

    task = SimpleNamespace(name="lm", primary="perplexity", weight=1.0)
    result = Evaluation("m", "dev", [task], {"lm": {"perplexity": float("inf"), "tokens": 3.0}}, {"lm": 0.1},
                        float("-inf"))
    shown = json.loads(json.dumps(as_json(result), allow_nan=False))
    assert shown["score"] is None and shown["tasks"]["lm"]["metrics"] == {"perplexity": None, "tokens": 3.0}
