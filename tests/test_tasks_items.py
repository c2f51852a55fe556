"""Bad items are refused when a task loads, naming the task, split, item and field (evogm.tasks.data's
`check_items`), for every task type that reads them; good items of every shape still load."""

from __future__ import annotations

import json

import pytest
from test_tasks_fixtures import em_items, mc_items, write_task

from evogm.errors import EvogmError
from evogm.tasks import load_task


def refused(tmp_path, items: list[dict], *, test: list[dict] | None = None, **spec) -> str:
    """The one-line message that refuses a task file (name `t`) holding `items` on dev."""
    path = write_task(tmp_path / "t.json", items, test)
    with pytest.raises(EvogmError) as caught:
        load_task({"path": path, **spec})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("task t: ")
    return message


@pytest.mark.parametrize("field, value, why", [
    ("answer", "", "answer must be a non-empty string or a number: got ''"),
    ("answer", "   ", "answer must be a non-empty string or a number"),
    ("answer", None, "answer must be a non-empty string or a number: got None"),
    ("answer", True, "answer must be a non-empty string or a number: got True"),
    ("answer", float("nan"), "answer must be a non-empty string or a finite number"),
    ("answer", "?!", "answer is empty once normalized"),
    ("question", None, "question must be a non-empty string: got None"),
    ("question", ["1+1="], "question must be a non-empty string: got ['1+1=']"),
    ("question", "", "question must be a non-empty string"),
])
def test_exact_match_items_need_a_question_and_an_answer(tmp_path, field, value, why):
    items = em_items(4, 0)
    items[2][field] = value
    message = refused(tmp_path, items, type="exact_match")
    assert "t.json [dev] item 2: " + why in message


def test_an_exact_match_answer_must_be_matchable_by_the_extract_rule(tmp_path):
    items = em_items(3, 0)
    items[1]["answer"] = "twelve"
    assert "item 1: answer holds no number" in refused(tmp_path, items, extract="last_number")
    assert load_task({"path": str(tmp_path / "t.json")}).data.items("dev")[1]["answer"] == "twelve"  # fine for whole
    items[1]["answer"] = "?!"
    assert load_task({"path": write_task(tmp_path / "raw.json", items), "normalize": False})  # compared raw: fine


def test_a_numeric_answer_loads_and_is_compared_as_its_text(tmp_path):
    items = [{"question": "6*7=", "answer": 42}, {"question": "1+1=", "answer": 2.5}]
    task = load_task({"path": write_task(tmp_path / "nums.json", items)})
    assert task.is_correct("42", items[0]) and task.is_correct("2.5", items[1]) and not task.is_correct("4", items[0])


def test_the_index_is_the_items_place_in_the_file_and_only_used_items_are_checked(tmp_path):
    items = em_items(20, 0)
    items[15]["answer"] = ""
    path = write_task(tmp_path / "t.json", items)
    assert len(load_task({"path": path, "limit": 10}).data.items("dev")) == 10  # item 15 is not scored: loads
    with pytest.raises(EvogmError, match=r"\[dev\] item 15: answer"):  # a seeded draw that holds it names its file place
        load_task({"path": path, "limit": 19, "seed": 3})
    with pytest.raises(EvogmError, match=r"task t: .*t.json \[test\] item 0: question must be"):
        load_task({"path": write_task(tmp_path / "t.json", em_items(3, 0), [{"question": None, "answer": "1"}])})


@pytest.mark.parametrize("choices, why", [
    ({"A": "Paris"}, "choices holds 1 option(s): a multiple-choice item needs at least two choices"),
    (["Paris"], "choices holds 1 option(s): a multiple-choice item needs at least two choices"),
    ({}, "choices holds 0 option(s)"),
    ("A: Paris, B: Rome", "choices must be a mapping of letters to options"),
    ({"A": "Paris", "B": ""}, "choices option B must be a non-empty string or a number"),
    ({"A": "Paris", "B": None}, "choices option B must be a non-empty string or a number"),
    ({"A": "Paris", " ": "Rome"}, "choices has the letter ' '"),
    ([f"option {i}" for i in range(27)], "choices lists 27 options, more than the letters A-Z name"),
])
@pytest.mark.parametrize("kind", ["multiple_choice", "abstain"])
def test_multiple_choice_items_need_at_least_two_non_empty_options(tmp_path, choices, why, kind):
    items = mc_items(3, 0)
    items[1] = {"question": "Capital of France?", "choices": choices, "answer": "A"}
    assert "t.json [dev] item 1: " + why in refused(tmp_path, items, type=kind)


@pytest.mark.parametrize("field, value, why", [
    ("answer", "", "answer must be one of the choices ['A', 'B', 'C', 'D'] (or an index from 0 to 3): got ''"),
    ("answer", 4, "answer must be one of the choices"),
    ("answer", None, "answer must be one of the choices"),
    ("question", None, "question must be a non-empty string: got None"),
    ("question", {"text": "q"}, "question must be a non-empty string"),
])
@pytest.mark.parametrize("kind", ["multiple_choice", "abstain"])
def test_multiple_choice_items_need_a_question_and_an_answer_among_the_choices(tmp_path, field, value, why, kind):
    items = mc_items(3, 0)
    items[0][field] = value
    assert "t.json [dev] item 0: " + why in refused(tmp_path, items, type=kind)


def test_good_multiple_choice_shapes_load(tmp_path):
    items = [{"question": "2+2?", "choices": [3, 4, "five"], "answer": 1},
             {"question": "Capital of France?", "choices": {"A": "Rome", "B": "Paris"}, "answer": "B"}]
    task = load_task({"path": write_task(tmp_path / "mc.json", items)})
    assert task.items("dev")[0]["choices"] == {"A": "3", "B": "4", "C": "five"} and task.items("dev")[0]["answer"] == "B"
    assert "A: 3\nB: 4\nC: five" in task.prompts("dev")[0]


LABELED = [{"input": "Is x good?", "target": "yes"}, {"input": "Is y good?", "target": "no"}]


@pytest.mark.parametrize("items, extras, spec, why", [
    ([{"input": None, "target": "yes"}], {}, {}, "item 1: input must be a non-empty string: got None"),
    ([{"input": ["x"], "target": "yes"}], {}, {}, "item 1: input must be a non-empty string"),
    ([{"input": "x", "target": ""}], {}, {}, "item 1: target must be a non-empty string or a number: got ''"),
    ([{"input": "x", "target": "maybe"}], {"labels": ["yes", "no"]}, {}, "item 1: target is not one of the labels ['yes', 'no']"),
    ([{"input": "x", "target": "maybe"}], {}, {"labels": ["yes", "no"]}, "item 1: target is not one of the labels"),
    ([{"input": "x", "target": "3.5"}, {"input": "y", "target": "high"}], {}, {"metric": "spearman"},
     "item 1: target must be a number (metric: spearman): got 'high'"),
])
def test_label_items_need_an_input_and_a_target_among_the_labels(tmp_path, items, extras, spec, why):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"dev": [LABELED[0], *items][-2:], "test": [], **extras}))
    with pytest.raises(EvogmError) as caught:
        load_task({"path": str(path), "type": "label", **spec})
    assert why in str(caught.value) and str(caught.value).startswith("task t: ")


def test_label_sets_are_checked(tmp_path):
    path = write_task(tmp_path / "t.json", LABELED)
    assert load_task({"path": path, "labels": ["Yes", "NO"]}).labels == ["Yes", "NO"]  # compared as the scorer does
    with pytest.raises(EvogmError, match="labels must be a list of non-empty strings.*got 'yes'"):
        load_task({"path": path, "labels": "yes"})
    one = write_task(tmp_path / "one.json", [{"input": "x", "target": "yes"}], [{"input": "y", "target": "yes"}])
    with pytest.raises(EvogmError, match=r"task one: one label \(\['yes'\]\): scored by log-likelihood"):
        load_task(one)
    assert load_task({"path": one, "scoring": "generate"}).labels == ["yes"]  # generated text is compared: fine
    stsb = write_task(tmp_path / "stsb.json", [{"input": "a", "target": "3.8"}, {"input": "b", "target": 1}])
    assert load_task({"path": stsb, "metric": "spearman"}).primary == "spearman"
