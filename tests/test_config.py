"""The run config: loading, overrides, resolution, and clear errors for user mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evogm.cli import main as cli
from evogm.config import RunConfig, dump_yaml, from_dict, load_config
from evogm.errors import EvogmError


ITEM = {"question": "q", "choices": {"A": "a", "B": "b"}, "answer": "A"}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config with relative paths to real (empty) folders and task files, as a user writes one."""
    root = tmp_path / "project"
    for folder in ("base", "experts/add", "experts/sort"):
        (root / folder).mkdir(parents=True)
    (root / "tasks").mkdir()
    for name in ("add", "mc"):
        (root / "tasks" / f"{name}.json").write_text(json.dumps({"dev": [ITEM], "test": [ITEM]}))
    config = {
        "seed": 7,
        "models": {"base": "../base", "experts": {"add": "../experts/add", "sort": "../experts/sort"}},
        "tasks": [{"name": "add", "path": "../tasks/add.json", "type": "exact_match"},
                  {"name": "mc", "path": "../tasks/mc.json", "type": "multiple_choice", "limit": 100}],
        "search": {"optimizer": "evogm", "budget": 160},
        "output": "runs/x",
    }
    path = root / "configs" / "run.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    return path


def edited(path: Path, edit) -> Path:
    """A copy of the config, next to it (same relative paths), with `edit` applied."""
    data = yaml.safe_load(path.read_text())
    edit(data)
    copy = path.with_name("edited.yaml")
    copy.write_text(yaml.safe_dump(data))
    return copy


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(EvogmError) as info:
        load_config(path, list(overrides))
    return str(info.value)


def test_loads_with_defaults_and_paths_relative_to_the_file(config_file: Path):
    cfg = load_config(config_file)
    root = config_file.parent.parent
    assert isinstance(cfg, RunConfig) and cfg.seed == 7
    assert cfg.models.base == str(root / "base")
    assert cfg.models.experts["sort"] == str(root / "experts" / "sort")
    assert cfg.tasks[1]["path"] == str(root / "tasks" / "mc.json") and cfg.tasks[1]["limit"] == 100
    assert (cfg.models.dtype, cfg.models.device, cfg.models.groups) == ("float32", "auto", 1)
    assert cfg.mode == "multi_task" and cfg.executor.kind == "local"
    with pytest.raises(AttributeError):
        cfg.seed = 1  # frozen


def test_overrides_are_typed_nested_and_index_lists(config_file: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config_file, ["search.budget=40", "models.groups=2", "tasks.1.limit=5",
                                    "mode=single_task", "models.dtype=bfloat16", "search.options={rounds: 3}"])
    assert (cfg.search.budget, cfg.models.groups, cfg.tasks[1]["limit"]) == (40, 2, 5)
    assert cfg.mode == "single_task" and cfg.models.dtype == "bfloat16" and cfg.search.options == {"rounds": 3}
    # a path given on the command line is relative to the working directory, not to the file
    cfg = load_config(config_file, ["models.base=project/base"])
    assert cfg.models.base == str(tmp_path / "project" / "base")


def test_saved_config_loads_back_identical(config_file: Path, tmp_path):
    cfg = load_config(config_file, ["search.budget=12"])
    saved = tmp_path / "saved.yaml"
    saved.write_text(dump_yaml(cfg))
    assert load_config(saved) == cfg
    assert from_dict(yaml.safe_load(saved.read_text())) == cfg


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d.update(serach=d.pop("search")), "unknown config key serach: did you mean 'search'?"),
    (lambda d: d["search"].update(budjet=3), "unknown config key search.budjet: did you mean 'budget'?"),
    (lambda d: d["models"].update(dtpye="float16"), "did you mean 'dtype'?"),
])
def test_a_typo_names_the_closest_valid_key(config_file: Path, edit, expected):
    assert expected in error_of(edited(config_file, edit))


def test_a_typo_in_an_override_names_the_closest_key(config_file: Path):
    message = error_of(config_file, ["search.optimiser=pso"])
    assert "unknown config key search.optimiser: did you mean 'optimizer'?" in message


def test_a_missing_file_names_the_path(config_file: Path):
    root = config_file.parent.parent
    message = error_of(edited(config_file, lambda d: d["models"]["experts"].update(sort="../experts/sortt")))
    assert f"models.experts.sort: {root / 'experts' / 'sortt'} not found" in message
    message = error_of(config_file, ["tasks.0.path=/nowhere/add.json"])
    assert "tasks.0.path: /nowhere/add.json not found" in message
    assert "config file /nowhere.yaml not found" in error_of(Path("/nowhere.yaml"))


def test_an_unknown_optimizer_suggests_one(config_file: Path):
    message = error_of(config_file, ["search.optimizer=evogn"])
    assert "search.optimizer 'evogn' is unknown: did you mean 'evogm'?" in message


def test_an_unknown_optimizer_option_is_checked_against_its_options(config_file: Path):
    import dataclasses

    from evogm.search import OPTIMIZERS

    valid = [f.name for f in dataclasses.fields(OPTIMIZERS["evogm"].Options)]
    typo = valid[0] + "x"
    message = error_of(config_file, [f"search.options.{typo}=1"])
    assert f"search.options.{typo} is not an option of optimizer 'evogm'" in message and f"'{valid[0]}'" in message


def test_the_test_split_is_refused_in_the_search(config_file: Path):
    message = error_of(config_file, ["search.split=test"])
    assert "the test split is scored once, at the end, never in the search" in message
    assert "tasks.0.split is 'test'" in error_of(config_file, ["tasks.0.split=test"])


@pytest.mark.parametrize("override, expected", [
    ("search.budget=many", "config key search.budget must be an integer"),
    ("search.budget=0", "search.budget must be a positive number"),
    ("mode=multitask", "mode is 'multitask': did you mean 'multi_task'?"),
    ("models.dtype=fp16", "models.dtype is 'fp16'"),
    ("models.base_copy=disc", "models.base_copy is 'disc': did you mean 'disk'?"),
    ("executor.kind=slurm", "executor.kind is 'slurm'"),
    ("tasks.1.name=add", "task name 'add' appears twice"),
    ("baselines.methods=[ties, dara]", "did you mean 'dare'?"),
    ("search", "override 'search' is not key=value"),
    ("tasks.0.name=a/b", "task name 'a/b' cannot be used"),
    ("tasks.1.limt=5", "task mc: unknown key 'limt': did you mean 'limit'?"),
])
def test_bad_values_are_clear_errors(config_file: Path, override, expected):
    assert expected in error_of(config_file, [override])


def test_a_missing_required_key_is_named(config_file: Path):
    assert "config key models.base is missing" in error_of(edited(config_file, lambda d: d["models"].pop("base")))


def test_the_cli_prints_one_line_and_exits_2(config_file: Path, capsys):
    assert cli(["run", str(config_file), "serach.budget=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evogm run: error: unknown config key serach") and "\n" not in err


def test_the_shipped_paper_config_is_valid(tmp_path: Path):
    """configs/qwen2.5-1.5b-tulu.yaml with its /path/to placeholders pointed at stand-in files:
    every key, task option and optimizer option it sets is accepted."""
    text = (Path(__file__).parent.parent / "configs" / "qwen2.5-1.5b-tulu.yaml").read_text()
    path = tmp_path / "paper.yaml"
    path.write_text(text.replace("/path/to", str(tmp_path)))
    raw = yaml.safe_load(path.read_text())
    for folder in [raw["models"]["base"], *raw["models"]["experts"].values()]:
        Path(folder).mkdir(parents=True, exist_ok=True)
    item = {"question": "q", "choices": {"A": "a", "B": "b"}, "answer": "A"}
    for task in raw["tasks"]:
        Path(task["path"]).parent.mkdir(parents=True, exist_ok=True)
        Path(task["path"]).write_text(json.dumps({"dev": [item], "test": [item]}))
    cfg = load_config(path)
    assert len(cfg.models.experts) == 10 and len(cfg.tasks) == 8 and cfg.models.dtype == "bfloat16"
    assert (cfg.search.optimizer, cfg.search.budget, cfg.search.popsize) == ("evogm", 160, 20)


def test_include_lays_a_file_over_another(config_file: Path):
    """configs/zoo.yaml includes the packaged zoo's run.yaml: paths stay relative to their own file."""
    top = config_file.parent.parent / "experiments" / "short.yaml"
    top.parent.mkdir()
    top.write_text("include: ../configs/run.yaml\nsearch: {budget: 40}\nmodels: {groups: 2}\n")
    cfg = load_config(top)
    assert (cfg.search.budget, cfg.search.optimizer, cfg.models.groups, cfg.seed) == (40, "evogm", 2, 7)
    assert cfg.models.base == str(config_file.parent.parent / "base")
    top.write_text("include: short.yaml\n")
    assert "includes itself" in error_of(top)


def test_a_key_repeated_in_the_yaml_is_refused(config_file: Path):
    text = config_file.read_text().replace("experts:\n", "experts:\n    add: ../experts/sort\n", 1)
    assert text.count("add: ../experts/") == 2
    config_file.write_text(text)
    message = error_of(config_file)
    assert "is not valid YAML" in message and "key 'add' appears twice in one mapping" in message


@pytest.mark.parametrize("splits, expected", [
    ({"dev": [], "test": [ITEM]}, "the 'dev' split is empty: a task with no items would score 0.0"),
    ({"dev": [ITEM]}, "has no 'test' split"),  # the final stage needs it: refused before the search
    ({"dev": [ITEM], "test": []}, "the 'test' split is empty"),
])
def test_a_task_without_items_in_a_split_the_run_scores_is_refused_at_load(config_file: Path, splits, expected):
    (config_file.parent.parent / "tasks" / "add.json").write_text(json.dumps(splits))
    assert expected in error_of(config_file)


def test_a_run_needs_an_output_and_scoring_a_config_does_not(config_file: Path):
    no_output = edited(config_file, lambda d: d.pop("output"))
    assert "config key output is missing" in error_of(no_output)
    assert load_config(no_output, run=False).output == ""
