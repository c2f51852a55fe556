"""No deprecation warning on evogm's own paths, with the installed transformers and peft (CI installs the
newest releases in range, so a deprecation shows here before it becomes a removal): loading a base,
LoRA and full experts, merging in place, scoring multiple choice and generating with the KV cache,
the final stage, the export and the report, on a causal LM and on T5.

Every FutureWarning (what transformers and peft deprecate with), and every DeprecationWarning raised
from transformers, peft or evogm, fails a test; the failure lists them with where they were raised."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from evogm.cli import main
from evogm.config import from_dict
from evogm.run import run

ZOO = Path(__file__).resolve().parents[1] / "evogm" / "zoo" / "data"
OURS = re.compile(r"[/\\](transformers|peft|evogm)[/\\]")


@pytest.fixture
def one_thread():
    """One torch thread for the test: on a shared, busy machine two threads can be ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def deprecations(said: list[warnings.WarningMessage]) -> list[str]:
    """The deprecations among `said`, one line each (category, where, message), each line once."""
    return list(dict.fromkeys(f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in said
                              if issubclass(w.category, FutureWarning)
                              or (issubclass(w.category, DeprecationWarning) and OURS.search(w.filename))))


def recorded(call) -> tuple[object, list[str]]:
    """call()'s value and the deprecations it raised (each shown, however often)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        value = call()
    return value, deprecations(said)


def test_deprecations_are_found_when_there_are_some():
    def deprecated():
        warnings.warn("`past_key_values` is deprecated", FutureWarning)
        warnings.warn("elsewhere", DeprecationWarning)  # raised from this test file: not transformers', peft's or ours
        return 1

    assert recorded(deprecated) == (1, [f"FutureWarning at {__file__}:{deprecated.__code__.co_firstlineno + 1}: "
                                        "`past_key_values` is deprecated"])


def test_a_zoo_run_raises_no_deprecation(one_thread, tmp_path: Path):
    """A whole run on the packaged zoo: a LoRA and a full expert, generation (with the cache) and
    multiple choice, the final stage with a static baseline, the export and the report."""
    experts = {name: str(ZOO / "experts" / name) for name in ("successor", "double", "capitals")}
    tasks = [{"name": "successor", "path": str(ZOO / "tasks" / "successor.json"), "type": "exact_match",
              "max_new_tokens": 3, "limit": 6},
             {"name": "capitals", "path": str(ZOO / "tasks" / "capitals.json"), "type": "multiple_choice", "limit": 6}]
    cfg = from_dict({"models": {"base": str(ZOO / "base"), "experts": experts}, "tasks": tasks,
                     "output": str(tmp_path / "run"), "search": {"optimizer": "random", "budget": 4, "popsize": 2},
                     "baselines": {"methods": ["ties"]}})
    report, said = recorded(lambda: run(cfg))
    assert report.exists() and json.loads((tmp_path / "run" / "best.json").read_text())["loss"] is not None
    assert not said, "\n".join(said)


def test_scoring_a_t5_merge_raises_no_deprecation(one_thread, tiny_t5, tmp_path: Path, capsys):
    """An encoder-decoder: a LoRA and a full expert, scored by log-likelihood and by generation."""
    items = [{"question": "Is it A or B?", "choices": {"A": "x", "B": "y"}, "answer": "B"}]
    (tmp_path / "mc.json").write_text(json.dumps({"dev": items, "test": items}))
    (tmp_path / "em.json").write_text(json.dumps({"dev": [{"question": "1+1=", "answer": "2"}], "test": []}))
    argv = ["eval", "--base", str(tiny_t5["base"]), "--tasks", str(tmp_path / "mc.json"), str(tmp_path / "em.json"),
            "--expert", f"q={tiny_t5['lora_qv']}", "--expert", f"f={tiny_t5['full_ffn']}",
            "--weights", "q=0.5", "--weights", "f=0.5", "--json"]
    for scoring in ("loglik", "generate"):
        code, said = recorded(lambda: main(argv + ["--scoring", scoring]))
        assert code == 0 and set(json.loads(capsys.readouterr().out)["tasks"]) == {"mc", "em"}
        assert not said, "\n".join(said)
