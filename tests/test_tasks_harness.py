"""lm-evaluation-harness tasks (`type: lm_eval`) on the resident merged model: the scores lm-eval's own
simple_evaluate gives on the exported model folder, a search that resumes after SIGKILL, and the
one-line errors. Local YAML tasks over local JSON Lines; nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("lm_eval", reason="lm-eval is an optional extra: pip install 'evogm[lm-eval]'")

from evogm.zoo.harness_tasks import write_harness_tasks  # noqa: E402
from test_resume import assert_sigkill_resumes  # noqa: E402

from evogm.cli import main as cli  # noqa: E402
from evogm.errors import EvogmError  # noqa: E402
from evogm.evaluate import load_merged  # noqa: E402
from evogm.export import merge_and_export  # noqa: E402
from evogm.tasks import load_task  # noqa: E402

WEIGHTS = {"successor": 0.4, "capitals": 1.0, "add": 0.8}


@pytest.fixture(scope="module")
def harness(zoo_tiny: Path, tmp_path_factory) -> Path:
    return write_harness_tasks(zoo_tiny, tmp_path_factory.mktemp("harness"), items=12)


def spec(harness: Path, task: str, **options) -> dict:
    return {"type": "lm_eval", "task": task, "include_path": str(harness), "dev_split": "validation",
            "test_split": "test", "batch_size": 4, "include_defaults": False, **options}


def test_scores_are_lm_evals_own_on_the_exported_model(zoo_tiny, harness, tmp_path):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    experts = {name: str(zoo_tiny / "experts" / name) for name in WEIGHTS}
    lam = np.array([[w] for w in WEIGHTS.values()])
    folder = merge_and_export(str(zoo_tiny / "base"), experts, lam, tmp_path / "merged")
    reference = simple_evaluate(model="hf", model_args={"pretrained": str(folder), "dtype": "float32", "device": "cpu"},
                                tasks=["zoo_capitals", "zoo_add"], num_fewshot=1, batch_size=4, bootstrap_iters=0,
                                task_manager=TaskManager(include_path=str(harness), include_defaults=False),
                                log_samples=True)

    model, tokenizer, _ = load_merged(str(zoo_tiny / "base"), experts, [f"{n}={w}" for n, w in WEIGHTS.items()], {})
    mc = load_task({**spec(harness, "zoo_capitals", num_fewshot=1), "name": "mc"})
    gen = load_task({**spec(harness, "zoo_add", num_fewshot=1, metric="exact_match,strip"), "name": "gen"})
    mc_test, gen_test = mc.evaluate(model, tokenizer, "test"), gen.evaluate(model, tokenizer, "test")
    assert mc_test == {"acc": reference["results"]["zoo_capitals"]["acc,none"]}
    assert gen_test == {"exact_match,strip": reference["results"]["zoo_add"]["exact_match,strip"]}
    outputs = [i.resps[0] for i in gen._prepared["test"]["instances"]]  # what the model generated, item by item
    assert outputs == [s["resps"][0][0] for s in reference["samples"]["zoo_add"]]
    assert gen._lm[2].evogm_generate_calls == {"greedy": 3, "transformers": 0}  # evogm's loop, not transformers'
    choices = [i.resps[0][0] for i in mc._prepared["test"]["instances"]]  # every choice's log-likelihood
    assert choices == pytest.approx([r[0][0] for s in reference["samples"]["zoo_capitals"] for r in s["resps"]], abs=1e-5)
    assert 0 < mc_test["acc"] < 1  # the merge picks some answers right, not all: a score that could differ

    assert mc.evaluate(model, tokenizer, "test") == mc_test  # a second candidate reuses the built requests
    assert mc.evaluate(model, tokenizer, "dev") != mc_test or gen.evaluate(model, tokenizer, "dev")
    assert set(mc._prepared) == {"dev", "test"}


def test_evogm_eval_scores_a_config_with_lm_eval_and_own_tasks(zoo_tiny, harness, tmp_path, capsys):
    config = mixed_config(zoo_tiny, harness, tmp_path)
    weights = [f"--weights={n}={w}" for n, w in WEIGHTS.items()]
    assert cli(["eval", str(config), *weights, "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["tasks"]) == {"capitals_lm", "add_lm", "successor"}
    assert report["tasks"]["capitals_lm"]["primary"] == "acc" and report["tasks"]["add_lm"]["primary"] == "exact_match,strip"
    model, tokenizer, _ = load_merged(str(zoo_tiny / "base"), {n: str(zoo_tiny / "experts" / n) for n in WEIGHTS},
                                      [f"{n}={w}" for n, w in WEIGHTS.items()], {})
    direct = load_task({**spec(harness, "zoo_capitals", limit=8), "name": "capitals_lm"}).evaluate(model, tokenizer, "test")
    assert report["tasks"]["capitals_lm"]["metrics"] == direct


def test_one_split_divided_by_seed(harness):
    task = load_task(spec(harness, "zoo_capitals", dev_split="test", test_split="test", seed=3))
    from lm_eval.tasks import TaskManager

    loaded = TaskManager(include_path=str(harness), include_defaults=False).load(["zoo_capitals"])
    n = len(loaded["tasks"]["zoo_capitals"].eval_docs)
    dev, test = task._share(n, "dev"), task._share(n, "test")
    assert sorted(dev + test) == list(range(n)) and len(dev) == n // 2
    assert dev != load_task(spec(harness, "zoo_capitals", dev_split="test", test_split="test", seed=4))._share(n, "dev")


def test_a_search_over_lm_eval_fitness_resumes_after_sigkill(zoo_tiny, harness, tmp_path):
    whole = assert_sigkill_resumes(mixed_config(zoo_tiny, harness, tmp_path), tmp_path)
    final = json.loads((whole / "final.json").read_text())
    assert "capitals_lm/acc" in json.dumps(final) and "add_lm/exact_match,strip" in json.dumps(final)
    assert (whole / "report.md").is_file() and "capitals_lm" in (whole / "report.md").read_text()


def test_single_task_mode_runs_one_search_per_lm_eval_task(zoo_tiny, harness, tmp_path):
    config = mixed_config(zoo_tiny, harness, tmp_path, tasks=2)
    out = tmp_path / "single"
    assert cli(["run", str(config), "mode=single_task", "search.optimizer=random", "search.budget=3",
                "search.popsize=3", "baselines.methods=[]", f"output={out}", "--quiet"]) == 0
    for name in ("capitals_lm", "add_lm"):
        records = [json.loads(line) for line in (out / name / "evaluations.jsonl").read_text().splitlines()]
        assert len(records) == 3 and all(set(r["metrics"]) == {f"{name}/acc" if name == "capitals_lm"
                                                                  else f"{name}/exact_match,strip"} for r in records)


def test_an_unknown_task_names_the_closest(harness):
    with pytest.raises(EvogmError, match="lm-eval has no task 'zoo_capitls': did you mean 'zoo_capitals'") as caught:
        load_task(spec(harness, "zoo_capitls"))
    assert "\n" not in str(caught.value)
    with pytest.raises(EvogmError, match="unknown key 'num_fewshots': did you mean 'num_fewshot'"):
        load_task(spec(harness, "zoo_capitals", num_fewshots=2))


def test_a_metric_the_task_lacks_is_refused_at_load(harness):
    with pytest.raises(EvogmError, match=r"task t: lm-eval's zoo_capitals reports no metric 'f1': it reports \['acc'\]; "
                                         r"fix: set metric to one of \['acc'\]"):
        load_task({**spec(harness, "zoo_capitals", metric="f1"), "name": "t"})
    with pytest.raises(EvogmError, match="reports no metric 'exact_match': did you mean 'exact_match,strip'"):
        load_task(spec(harness, "zoo_add", metric="exact_match"))  # the filter is part of the name


def test_left_out_the_metric_is_the_first_the_task_reports_and_scores(zoo_tiny, harness):
    generate = load_task({**spec(harness, "zoo_add", limit=2), "name": "gen"})  # a generate task: no acc
    assert generate.primary == "exact_match,strip" and load_task(spec(harness, "zoo_capitals")).primary == "acc"
    model, tokenizer, _ = load_merged(str(zoo_tiny / "base"), {}, [], {})
    assert set(generate.evaluate(model, tokenizer, "dev")) == {"exact_match,strip"}


def test_left_out_splits_are_read_from_the_tasks_yaml_else_refused(zoo_tiny, tmp_path):
    folder = write_harness_tasks(zoo_tiny, tmp_path / "h", items=4)
    (folder / "zoo_novalid.yaml").write_text((folder / "zoo_capitals.yaml").read_text()
                                             .replace("task: zoo_capitals", "task: zoo_novalid")
                                             .replace("test_split: test\n", ""))
    (folder / "zoo_group.yaml").write_text("group: zoo_group\ntask: [zoo_capitals, zoo_add]\n"
                                           "aggregate_metric_list:\n  - {metric: acc}\n")
    base = {"type": "lm_eval", "include_path": str(folder), "include_defaults": False}
    task = load_task({**base, "task": "zoo_capitals"})
    assert task.lm_splits == {"dev": "validation", "test": "test"} and not task.divided
    with pytest.raises(EvogmError, match=r"task zoo_novalid: dev_split and test_split missing: .*its YAML names "
                                         r"\{'validation_split': 'validation'\}; fix: add dev_split: SPLIT and test_split"):
        load_task({**base, "task": "zoo_novalid"})
    with pytest.raises(EvogmError, match="task zoo_capitals: test_split missing: the splits are read from the task's "
                                         "YAML only when both are left out"):
        load_task({**base, "task": "zoo_capitals", "dev_split": "validation"})
    with pytest.raises(EvogmError, match="dev_split and test_split missing: .*its YAML names no splits") as caught:
        load_task({**base, "task": "zoo_group"})
    assert "\n" not in str(caught.value)
    group = load_task({**base, "task": "zoo_group", "dev_split": "validation", "test_split": "test"})
    assert group.primary == "acc"  # its aggregate metric
    with pytest.raises(EvogmError, match="task x: task missing: a task of type lm_eval needs task; fix: add task: ..."):
        load_task({**base, "name": "x"})


def test_tags_and_groups_without_a_score_of_their_own_are_refused_at_load(zoo_tiny, tmp_path):
    folder = write_harness_tasks(zoo_tiny, tmp_path / "h", items=4)
    (folder / "zoo_capitals.yaml").write_text((folder / "zoo_capitals.yaml").read_text() + "tag: zoo_tag\n")
    (folder / "zoo_bare.yaml").write_text("group: zoo_bare\ntask: [zoo_capitals]\n")
    base = {"type": "lm_eval", "include_path": str(folder), "include_defaults": False, "dev_split": "validation",
            "test_split": "test"}
    with pytest.raises(EvogmError, match="task zoo_tag: lm-eval's 'zoo_tag' is a tag: a list of 1 tasks"):
        load_task({**base, "task": "zoo_tag"})
    with pytest.raises(EvogmError, match="zoo_bare reports no metric of its own: a group without an aggregate_metric_list"):
        load_task({**base, "task": "zoo_bare", "metric": "acc"})


def test_reported_metrics_read_from_yaml_as_lm_eval_names_them():
    from lm_eval.tasks._index import Entry, Kind

    from evogm.tasks.harness import reported_metrics

    def task(name, **cfg):
        return name, Entry(name, Kind.TASK, None, {"task": name, **cfg})

    strict = [{"name": "strict-match", "filter": []}, {"name": "flexible-extract", "filter": []}]
    index = dict([
        task("gsm", output_type="generate_until", metric_list=[{"metric": "exact_match"}], filter_list=strict),
        task("mc", output_type="multiple_choice"),  # no metric_list: lm-eval's defaults for its output type
        task("custom", output_type="generate_until", process_results="/x/utils.process"),
        task("fn", metric_list=[{"metric": "/x/utils.my_metric"}]),  # a !function metric, as the index reads it
        ("grp", Entry("grp", Kind.GROUP, None, {"group": "grp", "task": ["gsm", "sub"],
                                                 "aggregate_metric_list": [{"metric": "exact_match"}]})),
        ("sub", Entry("sub", Kind.GROUP, None, {"group": "sub", "task": ["tagged"]})),
        ("tagged", Entry("tagged", Kind.TAG, None, None, tags={"gsm"})),
        ("one", Entry("one", Kind.GROUP, None, {"group": "one", "task": ["custom"],
                                                 "aggregate_metric_list": [{"metric": "acc", "filter_list": "none"}]})),
        ("opaque", Entry("opaque", Kind.GROUP, None, {"group": "opaque", "task": ["custom"],
                                                       "aggregate_metric_list": [{"metric": "acc"}]})),
    ])
    assert reported_metrics(index, "gsm") == ["exact_match,strict-match", "exact_match,flexible-extract"]
    assert reported_metrics(index, "mc") == ["acc", "acc_norm"]
    assert reported_metrics(index, "custom") is None and reported_metrics(index, "opaque") is None
    assert reported_metrics(index, "fn") == ["my_metric"]
    assert reported_metrics(index, "grp") == ["exact_match,flexible-extract", "exact_match,strict-match"]
    assert reported_metrics(index, "one") == ["acc"] and reported_metrics(index, "sub") == []


def mixed_config(zoo: Path, harness: Path, tmp_path: Path, tasks: int = 3) -> Path:
    """The zoo's run config with two lm-eval tasks (include_path relative to the config) and one of evogm's own."""
    raw = yaml.safe_load((zoo / "run.yaml").read_text())
    raw["models"]["base"] = str(zoo / "base")
    raw["models"]["experts"] = {name: str(zoo / "experts" / name) for name in raw["models"]["experts"]}
    raw["tasks"] = [
        {"name": "capitals_lm", "type": "lm_eval", "task": "zoo_capitals", "include_path": harness.name,
         "include_defaults": False, "dev_split": "validation", "test_split": "test", "limit": 8, "batch_size": 8},
        {"name": "add_lm", "type": "lm_eval", "task": "zoo_add", "include_path": harness.name,
         "include_defaults": False, "dev_split": "validation", "test_split": "test", "metric": "exact_match,strip",
         "limit": 8, "batch_size": 8},
        {"name": "successor", "path": str(zoo / "tasks/successor.json"), "type": "exact_match", "max_new_tokens": 3,
         "limit": 8},
    ][:tasks]
    path = harness.parent / f"lm_eval_run_{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_setup_runs_once_per_split_while_candidates_change(zoo_tiny, harness, monkeypatch):
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    from evogm.merge import Merger
    from evogm.models import load_models

    counts = {"load": 0, "build": 0}
    for cls, method, key in ((TaskManager, "load", "load"), (ConfigurableTask, "build_all_requests", "build")):
        original = getattr(cls, method)

        def counted(self, *args, _original=original, _key=key, **kwargs):
            counts[_key] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, counted)
    models = load_models(str(zoo_tiny / "base"), {n: str(zoo_tiny / "experts" / n) for n in WEIGHTS})
    merger = Merger(models.model, models.experts)
    task = load_task(spec(harness, "zoo_capitals"))
    scores = [task.evaluate(merger(np.full((3, 1), w)), models.tokenizer, "dev")["acc"] for w in (0.0, 1.0, 3.0, 1.0)]
    assert counts == {"load": 1, "build": 1}
    assert scores[1] == scores[3] and len(set(scores)) > 1  # each candidate's own score, from one set of requests
    task.evaluate(merger(np.zeros((3, 1))), models.tokenizer, "test")
    assert counts == {"load": 2, "build": 2}

