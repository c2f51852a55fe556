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
