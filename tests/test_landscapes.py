"""The landscape suite's builds: a landscape built here that is not the suite's says so in one line."""

from __future__ import annotations

import json

from benchmarks import landscapes


def test_a_build_that_is_not_the_suites_is_said(zoo_tiny, tmp_path, monkeypatch, capsys):
    config = zoo_tiny / "run.yaml"
    hashes = tmp_path / "landscape_hashes.json"
    monkeypatch.setattr(landscapes, "HASHES", hashes)
    hashes.write_text(json.dumps({"zoo-seed1": landscapes.build_hashes(config)}))
    landscapes.check_build("zoo-seed1", config)
    assert capsys.readouterr().out == ""
    other = landscapes.build_hashes(config)
    other["models.base"] = "0" * 64  # the suite's base was another build
    hashes.write_text(json.dumps({"zoo-seed1": other}))
    landscapes.check_build("zoo-seed1", config)
    out = capsys.readouterr().out
    assert "zoo-seed1: the models in the cache are not the suite's build" in out and len(out.splitlines()) == 1


def test_the_space_landscapes_are_the_zoo_searching_another_space(tmp_path):
    from evogm.config import load_config, search_space

    dims = {}
    for name in landscapes.SPACES:
        config, overrides = landscapes.landscape_config(name, tmp_path)
        assert config == landscapes.ZOO_CONFIG and name not in landscapes.LANDSCAPES  # named, not in the default suite
        dims[name] = search_space(load_config(config, [*overrides, f"output={tmp_path / name}"])).dim
    # 8 experts × (weight, density); × (self_attn, mlp, rest); × 4 groups × (self_attn, rest); and × (weight, density)
    assert dims == {"zoo-ties": 16, "zoo-filters": 24, "zoo-64": 64, "zoo-128": 128}


def test_runs_made_on_other_models_are_named_in_the_report(zoo_tiny, tmp_path, capsys):
    """Builds of a landscape differ from machine to machine, and a run on another build searched
    another landscape: a table that compares optimizers across builds says which runs those are."""
    from evogm.compare import compare

    config, out = zoo_tiny / "run.yaml", tmp_path / "suite"
    overrides = ["search.optimizer=random", "search.options={}", "search.popsize=4", "baselines.methods=[]"]
    compare(str(config), methods="random", seeds=[0, 1], out=out, budget=4, overrides=overrides)
    assert landscapes.finished(config, overrides, "random", 2, 4, out)["other_models"] == []
    capsys.readouterr()
    inputs = out / "runs" / "random" / "seed1" / "inputs.json"
    record = json.loads(inputs.read_text())
    record["files"]["models.base"] = "0" * 64  # seed 1 ran on another build of the base
    inputs.write_text(json.dumps(record))
    summary = landscapes.finished(config, overrides, "random", 2, 4, out)
    assert len(summary["methods"]["random"]["runs"]) == 2 and summary["other_models"] == ["random seed 1"]
    assert "1 of 2 runs were made on other models than the cache's (another build): random seed 1" in capsys.readouterr().out
    assert "made on another build of the models than the cache's: random seed 1" in landscapes.suite_table(
        {"tiny": summary})[0]
