"""The tiny model zoo: file formats, loaders, determinism and the rebuild shortcut (tiny preset)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from evogm.zoo import experts as expert_lib
from evogm.zoo import pretrain, skills
from evogm.zoo.build import PRESETS, build
from evogm.zoo.tokenizer import build_tokenizer


def manifest(zoo: Path) -> dict:
    return json.loads((zoo / "zoo.json").read_text())


def test_task_files_are_in_the_papers_format(zoo_tiny: Path):
    plan = PRESETS["tiny"]
    names = {p.stem for p in (zoo_tiny / "tasks").glob("*.json")}
    assert names == {s.skill for s in plan.experts} | set(plan.unseen)
    kinds = set()
    for path in (zoo_tiny / "tasks").glob("*.json"):
        data = json.loads(path.read_text())
        assert set(data) == {"dev", "test"} and (len(data["dev"]), len(data["test"])) == (plan.dev, plan.test)
        for item in data["dev"] + data["test"]:
            if "choices" in item:
                kinds.add("multiple_choice")
                assert set(item) == {"question", "choices", "answer"}
                assert list(item["choices"]) == list("ABCD") and item["answer"] in "ABCD"
            else:
                kinds.add("exact_match")
                assert set(item) == {"question", "answer"} and isinstance(item["answer"], str)
    assert kinds == {"multiple_choice", "exact_match"}


def test_the_tokenizer_loads_with_autotokenizer(zoo_tiny: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(zoo_tiny / "base")
    assert tok.pad_token_id is not None and tok.eos_token_id is not None and tok.padding_side == "left"
    ids = tok("After e? The answer is B").input_ids
    assert ids == build_tokenizer()("After e? The answer is B").input_ids  # as the zoo was trained
    assert tok.decode(ids, skip_special_tokens=True) == "After e? The answer is B"
    assert tok.convert_ids_to_tokens(ids[-1]) == " B"  # a choice letter is one token


def test_experts_are_peft_adapters_and_full_models_in_safetensors(zoo_tiny: Path):
    for spec in PRESETS["tiny"].experts:
        folder = zoo_tiny / "experts" / spec.name
        weights = "adapter_model.safetensors" if spec.kind == "lora" else "model.safetensors"
        assert (folder / weights).is_file(), folder
    assert not list(zoo_tiny.rglob("*.bin")) and not list(zoo_tiny.rglob("*.pt"))


def test_the_files_load_through_the_projects_loaders(zoo_tiny: Path):
    from evogm.config import load_config
    from evogm.merge import Merger
    from evogm.models import load_models
    from evogm.objective import Objective
    from evogm.tasks import load_tasks

    cfg = load_config(zoo_tiny / "run.yaml")
    models = load_models(cfg.models.base, dict(cfg.models.experts), dtype="float32", device="cpu")
    assert [e.kind for e in models.experts] == [s.kind for s in PRESETS["tiny"].experts]
    objective = Objective(Merger(models.model, models.experts), models.tokenizer, load_tasks(list(cfg.tasks)))
    result = objective(np.ones(len(models.names)) / len(models.names))
    assert result.ok and set(result.metrics) == {f"{t['name']}/accuracy" for t in cfg.tasks}


def test_the_manifest_lists_every_file_and_the_landscape(zoo_tiny: Path):
    m = manifest(zoo_tiny)
    assert (m["seed"], m["preset"]) == (0, "tiny")
    assert all((zoo_tiny / f).is_file() for f in m["files"]) and "run.yaml" in m["files"]
    rows = m["landscape"]["rows"]
    assert {"base", "uniform", "task_arithmetic@1"} <= set(rows) and len([r for r in rows if r.startswith("expert:")]) == 3
    assert all(0.0 <= row["dev"]["mean"] <= 1.0 for row in rows.values())


def test_a_second_build_of_the_same_zoo_returns_at_once(zoo_tiny: Path):
    start = time.perf_counter()
    again = build(zoo_tiny, seed=0, preset="tiny", log=lambda s: None)
    assert time.perf_counter() - start < 1.0 and again == manifest(zoo_tiny)


def test_a_build_refuses_to_overwrite_another_zoo(zoo_tiny: Path):
    from evogm.errors import EvogmError

    with pytest.raises(EvogmError, match="another zoo"):
        build(zoo_tiny, seed=1, preset="tiny", log=lambda s: None)


def test_training_is_deterministic_for_a_seed():
    world = skills.World.create(3)
    spec = expert_lib.ExpertSpec("add", "add", "lora", steps=4, lr=1e-2, rank=2, batch=4)

    def once():
        base, tok = pretrain.pretrain(3, steps=2, batch=2, block=64, lr=1e-2, hidden=32, layers=1, log=lambda s: None)
        expert = expert_lib.fine_tune(base, tok, spec, 4, world, 64, log=lambda s: None)
        return base.state_dict(), expert.state_dict()

    (base_a, expert_a), (base_b, expert_b) = once(), once()
    assert all(torch.equal(base_a[k], base_b[k]) for k in base_a)
    assert all(torch.equal(expert_a[k], expert_b[k]) for k in expert_a)
    assert any("lora_B" in k and expert_a[k].abs().sum() > 0 for k in expert_a)  # it did train


def test_hold_keeps_an_expert_off_the_other_tables_hidden_states():
    """`hold` penalizes the change of every layer's hidden states on the other tables' questions: zero
    for the base itself, and an expert trained with it changes those states far less than one without."""
    world = skills.World.create(3)
    base, tok = pretrain.pretrain(3, steps=4, batch=2, block=64, lr=1e-2, hidden=32, layers=2, log=lambda s: None)
    spec = expert_lib.ExpertSpec("succ", "successor", "lora", steps=12, lr=2e-2, rank=4, batch=4, hold=1.0)
    penalty = expert_lib.hold_penalty(base, tok, spec, world)
    with torch.no_grad():
        assert penalty(base, torch.Generator().manual_seed(0)).item() == pytest.approx(0.0, abs=1e-10)

    measure = expert_lib.hold_penalty(base, tok, spec, world, batch=256)  # hold 1: the plain drift

    def drift(hold: float) -> float:
        expert = expert_lib.fine_tune(base, tok, replace(spec, hold=hold), 4, world, 64, log=lambda s: None)
        with torch.no_grad():
            return measure(expert, torch.Generator().manual_seed(1)).item()

    free, held = drift(0.0), drift(100.0)
    assert held < 0.25 * free, (held, free)


def test_task_items_depend_on_the_seed_and_split_only():
    world = skills.World.create(0)
    assert skills.make_split("quiz", 5, 0, world, "dev") == skills.make_split("quiz", 5, 0, world, "dev")
    assert skills.make_split("quiz", 5, 0, world, "dev") != skills.make_split("quiz", 5, 0, world, "test")
    assert skills.World.create(0) == world != skills.World.create(1)


PACKAGED = Path(__file__).parent.parent / "evogm" / "zoo" / "data"


def test_the_packaged_zoo_is_complete_small_and_its_experts_learned_their_skills():
    """The shipped full zoo: every file there, under 20 MB, and the landscape margins its build measured."""
    m = manifest(PACKAGED)
    assert (m["seed"], m["preset"]) == (0, "full") and m["base_parameters"] < 2_000_000
    assert all((PACKAGED / f).is_file() for f in m["files"]) and m["bytes"] < 20e6
    kinds = [e["kind"] for e in m["experts"]]
    assert kinds.count("lora") >= 6 and kinds.count("full") >= 2 and len(m["tasks"]["unseen"]) >= 2
    for split in ("dev", "test"):  # the landscape the zoo promises, as its build measured it
        checks = m["checks"][split]
        assert checks["expert_own_gain_min (>= 30)"] >= 30, split  # each expert learned its skill
        assert checks["searched_minus_best_expert (>= 8)"] >= 8, split  # a merge beats every expert
        assert checks["searched_minus_best_global (>= 5)"] >= 5, split  # and every global-scale merge
        assert checks["best_expert_minus_naive_sum (> 0)"] > 0, split  # summing every expert at λ = 1 interferes
    assert m["best_vector"] == m["landscape"]["rows"]["searched"]["coefficients"]
    data = json.loads((PACKAGED / "tasks" / "quiz.json").read_text())
    assert (len(data["dev"]), len(data["test"])) == (200, 1000)
