"""The text-to-label task format (GLUE as FusionBench writes it): loading, its options and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_tasks_fixtures import char_tokenizer, tiny_model

from evogm.errors import EvogmError
from evogm.tasks import load_task
from evogm.tasks.label import LabelTask
from evogm.tasks.scoring import option_inputs, option_logprobs

ITEMS = [{"input": "Is x good?", "target": "yes"}, {"input": "Is y good?", "target": "no"},
         {"input": "Is z good?", "target": "yes"}]


def write(path, **payload):
    path.write_text(json.dumps(payload))
    return str(path)


def test_a_file_of_inputs_and_targets_is_a_label_task(tmp_path):
    task = load_task(write(tmp_path / "rte.json", dev=ITEMS, test=ITEMS[:1]))
    assert isinstance(task, LabelTask) and (task.name, task.primary, task.scoring) == ("rte", "accuracy", "loglik")
    assert task.labels == ["yes", "no"]  # the targets, in order of appearance
    named = load_task(write(tmp_path / "qnli.json", labels=["no", "yes", "maybe"], dev=ITEMS, test=ITEMS))
    assert named.labels == ["no", "yes", "maybe"]
    stsb = load_task(write(tmp_path / "stsb.json", metric="spearman", dev=[{"input": "a", "target": "3.8"}], test=[]))
    assert (stsb.primary, stsb.scoring) == ("spearman", "generate")  # an open label set is always generated
    spec = load_task({"path": str(tmp_path / "stsb.json"), "metric": "accuracy", "scoring": "generate"})
    assert spec.primary == "accuracy"  # the spec overrides the file
    with pytest.raises(EvogmError, match="item 0: target must be a number \\(metric: spearman\\): got 'yes'"):
        load_task({"path": str(tmp_path / "rte.json"), "metric": "spearman"})  # yes/no has no rank correlation


def test_bad_items_and_options_are_one_line_errors(tmp_path):
    with pytest.raises(EvogmError, match=r"item 1 lacks target"):
        load_task({"path": write(tmp_path / "bad.json", dev=[ITEMS[0], {"input": "q"}], test=[]), "type": "label"})
    with pytest.raises(EvogmError, match="unknown metric 'f1'"):
        load_task({"path": write(tmp_path / "ok.json", dev=ITEMS, test=[]), "metric": "f1"})
    with pytest.raises(EvogmError, match="unknown key 'metrics': did you mean 'metric'"):
        load_task({"path": str(tmp_path / "ok.json"), "metrics": "spearman"})


def test_loglik_picks_the_label_with_the_most_likely_distinguishing_token_on_a_causal_lm(tmp_path):
    tokenizer = char_tokenizer()
    model = tiny_model(len(tokenizer), seed=3)
    task = load_task(write(tmp_path / "t.json", labels=["yes", "no"], dev=ITEMS, test=[]))
    scores = option_logprobs(model, option_inputs(tokenizer, task.prompts("dev"), [[" yes", " no"]] * 3, batch_size=8))
    assert task.predict(model, tokenizer, "dev") == [["yes", "no"][k] for k in scores.argmax(axis=1)]
    expected = np.mean([p == x["target"] for p, x in zip(task.predict(model, tokenizer, "dev"), ITEMS)])
    assert task.evaluate(model, tokenizer, "dev") == {"accuracy": expected}
    generated = load_task({"path": str(tmp_path / "t.json"), "scoring": "generate", "max_new_tokens": 3})
    assert all(isinstance(text, str) and len(text) <= 3 for text in generated.predict(model, tokenizer, "dev"))
