"""The T5 zoo end to end: GLUE-shaped label tasks, LoRA and full T5 experts, `evogm run` with its report,
an exported model that reloads and scores the logged best, and a run killed with SIGKILL that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_resume import assert_sigkill_resumes

from evogm.cli import main as cli
from evogm.tasks import load_task
from evogm.tasks.label import spearman
from evogm.zoo.t5 import LABELS, T5_LINEAR, T5_PRESETS

def test_task_files_and_experts_have_glue_shape(zoo_t5: Path):
    plan = T5_PRESETS["t5"]
    for spec in plan.experts:
        data = json.loads((zoo_t5 / "tasks" / f"{spec.skill}.json").read_text())
        assert data["labels"] == LABELS[spec.skill] and (len(data["dev"]), len(data["test"])) == (plan.dev, plan.test)
        assert all(set(x) == {"input", "target"} and x["target"] in data["labels"] for x in data["dev"] + data["test"])
        folder = zoo_t5 / "experts" / spec.name
        if spec.kind == "lora":
            config = json.loads((folder / "adapter_config.json").read_text())
            assert config["task_type"] == "SEQ_2_SEQ_LM" and set(config["target_modules"]) == set(T5_LINEAR)
        else:
            assert json.loads((folder / "config.json").read_text())["is_encoder_decoder"] is True
    assert {s.kind for s in plan.experts} == {"lora", "full"} and len(plan.experts) >= 4


def test_loglik_and_generation_agree_on_a_trained_expert(zoo_t5: Path):
    from evogm.merge import Merger
    from evogm.models import load_models

    models = load_models(zoo_t5 / "base", {"sentiment": zoo_t5 / "experts" / "sentiment"}, device="cpu")
    model = Merger(models.model, models.experts)([1.0])
    path = zoo_t5 / "tasks" / "sentiment.json"
    fast, slow = (load_task({"path": str(path), "scoring": s}) for s in ("loglik", "generate"))
    assert type(fast).__name__ == "LabelTask"  # inferred from the items
    assert fast.predict(model, models.tokenizer, "dev") == slow.predict(model, models.tokenizer, "dev")
    assert fast.evaluate(model, models.tokenizer, "dev")["accuracy"] >= 0.9  # the expert learned its task
    stsb = load_task(zoo_t5 / "tasks" / "similarity.json")  # the file names its metric
    metrics = stsb.evaluate(model, models.tokenizer, "dev")
    assert set(metrics) == {"spearman", "parsed"} and -1 <= metrics["spearman"] <= 1 and metrics["parsed"] > 0.5


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 40).astype(float), rng.normal(size=40)
    assert spearman(list(x), list(y)) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


def test_a_run_reports_exports_the_logged_best_and_survives_sigkill(zoo_t5: Path, tmp_path: Path, capsys):
    out = assert_sigkill_resumes(zoo_t5 / "run.yaml", tmp_path)
    assert "## Results" in (out / "report.md").read_text()
    best = json.loads((out / "best.json").read_text())
    capsys.readouterr()
    assert cli(["eval", str(out / "model"), "--tasks", *[str(p) for p in sorted((zoo_t5 / "tasks").glob("*.json"))],
                "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert {f"{task}/{metric}" for task, entry in scored["tasks"].items() for metric in entry["metrics"]} == set(best["metrics"])
    for task, entry in scored["tasks"].items():
        for metric, value in entry["metrics"].items():
            assert value == pytest.approx(best["metrics"][f"{task}/{metric}"], abs=1e-9), (task, metric)
